"""The study's three models behind one call: images for prompts and seeds, with what a claim varies.

The three architectures are the shipped packages, loaded as the app loads them (Stable unCLIP, `lab.stable_unclip`,
with unCLIP's prior shared): images drawn from a prompt are made by the harness (`Harness.make`, the path every
row of the tool takes), images from an embedding that stands in for the prior's by the pipelines' own
decode_embeddings. Every image is read back by the checker and embedded by the judge, so a claim gets rows of
verdicts and readings plus the judge's embeddings.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from comparisons.metrics import Judge
from comparisons.settings import Settings
from lab.captions import parse_caption
from lab.checker import check
from lab.stable_unclip import NAME as STABLE_UNCLIP
from lab.world import region_of, scene_for
from pipelines.latent_diffusion import LatentDiffusionSettings
from pipelines.outputs import to_uint8
from pipelines.unclip import UnCLIPSettings
from research.evaluate import lab_harness

UNCLIP, LATENT_DIFFUSION = "unclip", "latent_diffusion"
MODELS = (UNCLIP, LATENT_DIFFUSION, STABLE_UNCLIP)
LABELS = {
    UNCLIP: "unCLIP",
    LATENT_DIFFUSION: "latent diffusion",
    STABLE_UNCLIP: "Stable unCLIP (prior + latent U-Net)",
}
EMBEDDINGS = ("prior", "text", "oracle")  # where the image embedding comes from (models with one)


@dataclass(frozen=True)
class Steps:
    """Each model's sampling steps: the pipelines' defaults, or fewer for a quick run."""

    prior: int = UnCLIPSettings.prior_steps
    decoder: int = UnCLIPSettings.decoder_steps
    super_res: int = UnCLIPSettings.super_res_steps
    unet: int = LatentDiffusionSettings.steps


@dataclass(frozen=True)
class Knobs:
    """What a claim varies. `guidance` is the image denoiser's (unCLIP's decoder, the latent U-Nets), None its
    default; `steps` the image denoiser's steps, None the run's; `embedding` where the image embedding comes from:
    the prior, the caption's text embedding in its place, or the oracle (a true render's CLIP image embedding)."""

    guidance: float | None = None
    steps: int | None = None
    embedding: str = "prior"

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")


DEFAULT_GUIDANCE = {
    UNCLIP: UnCLIPSettings.decoder_guidance,
    LATENT_DIFFUSION: LatentDiffusionSettings.guidance,
    STABLE_UNCLIP: LatentDiffusionSettings.guidance,  # its U-Net is latent diffusion's, trained as it was
}
PRIOR_GUIDANCE = UnCLIPSettings.prior_guidance


def oracle_render(prompt: str, seed: int) -> np.ndarray:
    """A true image (32, 32, 3) uint8 of the caption, the same for the same prompt and seed."""
    rng = np.random.default_rng([seed, zlib.crc32(prompt.encode())])
    return scene_for(parse_caption(prompt), rng).render()


def reading(image: np.ndarray, prompt: str) -> dict:
    """The checker's verdicts (check_* columns, as the harness names them) and what it read for object 1."""
    result = check(image, prompt)
    row = {f"check_{k}": v for k, v in result.as_dict().items() if k != "caption"}
    found = result.matched[0] if result.matched else None
    row["read_region"] = None if found is None else region_of(found.centre)
    row["read_size"] = None if found is None else found.size
    row["read_colours"] = sorted(d.colour for d in result.detected)
    return row


class LabModels:
    """The three lab models (through the comparisons harness), their judge, and images made and read for a claim."""

    def __init__(self, weights: Path, device: torch.device, steps: Steps = Steps(), batch_size: int = 32):
        self.harness = lab_harness(Path(weights), device)
        self.unclip, self.stable = self.harness.pipeline(UNCLIP), self.harness.pipeline(STABLE_UNCLIP)
        self.judge: Judge = self.harness.judge
        self.steps, self.batch_size = steps, batch_size

    def settings(self, model: str, knobs: Knobs = Knobs()) -> Settings:
        """The model's settings for `knobs`: the image denoiser's guidance and steps, the prior's defaults."""
        guidance = DEFAULT_GUIDANCE[model] if knobs.guidance is None else knobs.guidance
        s = self.steps
        return {
            UNCLIP: lambda: Settings(
                prior_steps=s.prior,
                prior_guidance=PRIOR_GUIDANCE,
                decoder_steps=knobs.steps or s.decoder,
                super_res_steps=s.super_res,
                decoder_guidance=guidance,
            ),
            LATENT_DIFFUSION: lambda: Settings(steps=knobs.steps or s.unet, guidance=guidance),
            STABLE_UNCLIP: lambda: Settings(
                stable_unclip_prior_steps=s.prior,
                stable_unclip_prior_guidance=PRIOR_GUIDANCE,
                stable_unclip_steps=knobs.steps or s.unet,
                stable_unclip_guidance=guidance,
            ),
        }[model]()

    def generate(self, model: str, prompts: Sequence[str], seeds: Sequence[int], knobs: Knobs = Knobs()) -> np.ndarray:
        """Images (N, H, W, 3) in [0, 1] for one batch."""
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; the study has {MODELS}")
        prompts, seeds, settings = list(prompts), [int(s) for s in seeds], self.settings(model, knobs)
        if knobs.embedding == "prior":  # as every row of the tool is made
            return self.harness.make(model, prompts, seeds, settings).output.images
        if model == LATENT_DIFFUSION:
            raise ValueError("latent diffusion has no image embedding to replace")
        embeds = self.embeddings(prompts, seeds, knobs.embedding)
        kwargs = settings.pipeline_kwargs(model, "variations")  # the settings that follow the embedding
        if model == STABLE_UNCLIP:
            return self.stable.decode_embeddings(embeds, prompts, seed=seeds, **kwargs).images
        text = self.unclip.encode_prompt(prompts, with_uncond=True)
        return self.unclip.decode_embeddings(embeds, text, seed=seeds, **kwargs).images

    @torch.inference_mode()
    def embeddings(self, prompts: list[str], seeds: list[int], kind: str) -> torch.Tensor:
        """(B, D) image embeddings that stand in for the prior's: the caption's text embedding, or a true render's."""
        if kind == "text":
            return self.unclip.encode_prompt(prompts, with_uncond=False).embeds
        renders = torch.from_numpy(np.stack([oracle_render(p, s) for p, s in zip(prompts, seeds)])).float() / 255
        return self.unclip.encode_image(renders.permute(0, 3, 1, 2) * 2 - 1)  # the feature extractor's [-1, 1]

    def rows(
        self, model: str, prompts: Sequence[str], seeds: Sequence[int], knobs: Knobs = Knobs(), **columns
    ) -> tuple[list[dict], np.ndarray]:
        """One row per image (model, prompt, seed, knobs, readings, seconds per image) and the judge's unit-norm
        image embeddings (N, D), made in batches of `batch_size`."""
        rows, embeds = [], []
        label = model if knobs.embedding == "prior" else f"{model}/{knobs.embedding}"
        for start in range(0, len(prompts), self.batch_size):
            batch_p, batch_s = (
                list(prompts[start : start + self.batch_size]),
                list(seeds[start : start + self.batch_size]),
            )
            tick = time.perf_counter()
            images = self.generate(model, batch_p, batch_s, knobs)
            seconds = (time.perf_counter() - tick) / len(batch_p)
            embeds.append(self.judge.embed_images(images).numpy())
            for image, prompt, seed in zip(to_uint8(images), batch_p, batch_s):
                rows.append(
                    {
                        "architecture": label,
                        "model": model,
                        "prompt": prompt,
                        "seed": seed,
                        "guidance": DEFAULT_GUIDANCE[model] if knobs.guidance is None else knobs.guidance,
                        "steps": knobs.steps,
                        "embedding": knobs.embedding,
                        "seconds_per_image": seconds,
                        **columns,
                        **reading(image, prompt),
                    }
                )
        return rows, np.concatenate(embeds)

    def seconds_per_image(self, model: str, prompt: str, knobs: Knobs, repeats: int = 3) -> float:
        """Median seconds of a one-image call (the app's case), after one warm-up call."""
        self.generate(model, [prompt], [0], knobs)
        times = []
        for i in range(repeats):
            tick = time.perf_counter()
            self.generate(model, [prompt], [i + 1], knobs)
            times.append(time.perf_counter() - tick)
        return float(np.median(times))

    def flops_per_image(self, model: str, prompt: str, knobs: Knobs) -> int:
        """FLOPs of a one-image call (every stage, guidance's doubled batch included), by torch's FlopCounterMode."""
        with FlopCounterMode(display=False) as counter:
            self.generate(model, [prompt], [0], knobs)
        return int(counter.get_total_flops())
