"""The "Inside the models" tab's backend: what each architecture computes on the way to its image.

For one prompt and seed, `Inside.explain` runs every pipeline once, instrumented (comparisons.app.recorders), and
collects:
  - the denoising trajectory: the predicted clean image x_0 at ~8 evenly spaced steps of every
    image-making stage (unCLIP: decoder and super-res in pixel space; latent diffusion: the U-Net's
    x_0 latent, decoded through the VAE), k-diffusion's `denoised` view of sampling;
  - unCLIP: how the prior's image embedding relates to the text embedding it was conditioned on
    and to the CLIP embedding of the image finally produced;
  - latent diffusion: the final latent's channels, and cross-attention maps per prompt token
    (averaged over heads, attn2 layers and steps, conditional half only), as in prompt-to-prompt
    (Hertz et al. 2022, arXiv:2208.01626);
  - each pipeline's components with parameter counts and the tensor shapes between stages.
The instrumented runs are not logged: hooks and recording change what a timing would measure. GPU work only (it may
run in a forked ZeroGPU worker): it changes nothing and returns images and tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from comparisons.app.inputs import parse_prompt, parse_seed
from comparisons.app.recorders import (
    AttentionRecorder,
    TrajectoryRecorder,
    first_output_shapes,
    prompt_tokens,
    recording_cross_attention,
    token_maps,
)
from comparisons.app.session import Session
from comparisons.metrics import embedding_cosine
from comparisons.settings import Settings
from pipelines import LatentDiffusion, UnCLIP
from pipelines.base import Pipeline
from pipelines.checks import check_count, check_prompts, check_seed
from pipelines.outputs import postprocess, to_uint8
from pipelines.stable_unclip import StableUnCLIP

GAP = 2  # px of white between frames and tiles
TILE = 256  # a latent channel is upscaled (nearest, whole factor) to about this many px
HEAT_ALPHA = 0.5  # weight of the heatmap over the image


# ----------------------------------------------------------------------------- images


def mosaic(tiles: Sequence[np.ndarray], cols: int, gap: int = GAP) -> Image.Image:
    """Equal-size (H, W, 3) uint8 tiles row by row on white, `gap` px apart."""
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / cols)
    canvas = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return Image.fromarray(canvas)


def strip(images: torch.Tensor) -> Image.Image:
    """(F, 3, H, W) in [-1, 1] -> the F frames side by side."""
    return mosaic(list(to_uint8(postprocess(images))), cols=images.shape[0])


def latent_channels_image(latent: torch.Tensor, tile: int = TILE) -> Image.Image:
    """(C, h, w) latent -> a mosaic of its channels, each min-max normalised to grey, upscaled nearest."""
    factor = max(1, tile // max(latent.shape[1:]))
    tiles = []
    for channel in latent.float().cpu():
        lo, hi = channel.min(), channel.max()
        grey = to_uint8(((channel - lo) / (hi - lo) if hi > lo else torch.zeros_like(channel)).numpy())
        grey = grey.repeat(factor, axis=0).repeat(factor, axis=1)
        tiles.append(np.stack([grey] * 3, axis=-1))
    return mosaic(tiles, cols=math.ceil(math.sqrt(len(tiles))))


def heatmap(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) in [0, 1], blue (low) to red (high): the 'jet' colour map."""
    return np.clip(1.5 - np.abs(4 * values[..., None] - np.array([3.0, 2.0, 1.0])), 0, 1)


def overlay(image: Image.Image, attention: np.ndarray) -> Image.Image:
    """A (h, w) map in [0, 1] upscaled bilinearly to the image and blended over it as a heatmap."""
    up = F.interpolate(
        torch.from_numpy(attention)[None, None].float(),
        size=(image.height, image.width),
        mode="bilinear",
        align_corners=False,
    )
    heat = heatmap(up[0, 0].clamp(0, 1).numpy())
    pixels = np.asarray(image.convert("RGB"), np.float32) / 255
    return Image.fromarray(to_uint8((1 - HEAT_ALPHA) * pixels + HEAT_ALPHA * heat))


# ----------------------------------------------------------------------------- tables


def component_table(architecture: str, pipe: Pipeline) -> pd.DataFrame:
    """Each component's class and parameter count (0 for tokenizers and schedulers), read from the loaded pipeline."""
    counts = pipe.parameter_counts()
    return pd.DataFrame(
        [
            {
                "architecture": architecture,
                "component": name,
                "class": type(c).__name__,
                "parameters": counts.get(name, 0),
            }
            for name, c in pipe.components().items()
        ]
    )


def shape_table(architecture: str, shapes: list[tuple[str, str, tuple[int, ...]]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"architecture": architecture, "stage": s, "tensor": t, "shape": str(tuple(shape))} for s, t, shape in shapes]
    )


# ----------------------------------------------------------------------------- per architecture


@dataclass(frozen=True)
class UnCLIPInside:
    """What one unCLIP run shows from inside."""

    image: Image.Image
    decoder_strip: Image.Image  # x_0 of the decoder at the steps in frame_steps["decoder"]
    super_res_strip: Image.Image
    frame_steps: dict[str, list[int]]  # stage -> step indices shown
    prior_text_cosine: float  # prior's image embedding vs the CLIP text embedding it was conditioned on
    prior_image_cosine: float | None  # ... vs the CLIP image embedding of the final image; None without image_encoder
    shapes: pd.DataFrame


@dataclass(frozen=True)
class LatentDiffusionInside:
    """What one run of a latent U-Net (latent diffusion's, Stable unCLIP's) shows from inside."""

    image: Image.Image
    unet_strip: Image.Image  # the U-Net's x_0 latents, VAE-decoded
    frame_steps: dict[str, list[int]]
    latent_channels: Image.Image  # the final latent's channels as a grey mosaic
    token_maps: list[tuple[str, np.ndarray]]  # (token, (h, w) mean cross-attention in [0, 1]) per prompt token
    token_overlays: list[tuple[str, Image.Image]]  # (token, heatmap over the image)
    shapes: pd.DataFrame
    prior_text_cosine: float | None = None  # Stable unCLIP: its prior's embedding vs the text one, as unCLIP's
    prior_image_cosine: float | None = None  # ... vs the final image's, where it has an image encoder


def explain_unclip(
    pipe: UnCLIP, prompt: str, seed: int, settings: Settings = Settings(), num_frames: int = 8
) -> UnCLIPInside:
    """One instrumented unCLIP run: decoder and super-res trajectories, the prior's cosines, stage shapes."""
    trajectory = TrajectoryRecorder(("decoder", "super_res"), check_count(num_frames, "num_frames"))
    with first_output_shapes(pipe.text_encoder) as text_shapes:
        out = pipe(prompt, seed=seed, callback=trajectory, **settings.pipeline_kwargs("unclip"))
    image = out.pil_images()[0]
    cosine = float(embedding_cosine(out.image_embeds, out.text_embeds)[0])
    image_cosine = (
        None
        if pipe.image_encoder is None
        else float(embedding_cosine(pipe.encode_image([image]).cpu(), out.image_embeds)[0])
    )
    shapes = [("text_encoder", k, s) for k, s in text_shapes.items()] + [
        ("prior", "image_embeds", out.image_embeds.shape),
        ("decoder", "sample", trajectory.final["decoder"].shape),
        ("super_res", "sample", trajectory.final["super_res"].shape),
        ("output", "images", out.images.shape),
    ]
    return UnCLIPInside(
        image,
        strip(trajectory.stacked("decoder")),
        strip(trajectory.stacked("super_res")),
        {s: trajectory.steps(s) for s in trajectory.stages},
        cosine,
        image_cosine,
        shape_table("unclip", shapes),
    )


def explain_latent_diffusion(
    pipe: LatentDiffusion | StableUnCLIP,
    prompt: str,
    seed: int,
    settings: Settings = Settings(),
    num_frames: int = 8,
    architecture: str = "latent_diffusion",
) -> LatentDiffusionInside:
    """One instrumented run of a latent U-Net's architecture: U-Net trajectory, final latent, cross-attention per
    token, shapes; with a prior (Stable unCLIP), the prior's cosines as unCLIP's."""
    trajectory = TrajectoryRecorder(("unet",), check_count(num_frames, "num_frames"))
    latent_size = (pipe.image_size // pipe.vae_scale_factor,) * 2  # the pipeline's default height and width
    attention = AttentionRecorder(latent_size)
    with first_output_shapes(pipe.text_encoder) as text_shapes, recording_cross_attention(pipe.unet, attention):
        out = pipe(prompt, seed=seed, callback=trajectory, **settings.pipeline_kwargs(architecture))
    image = out.pil_images()[0]
    # One frame at a time: a batch of full-size VAE decodes is the largest activation of the pipeline.
    decoded = torch.cat([pipe.decode(x0[None].to(pipe.device, pipe.dtype)).cpu() for x0 in trajectory.stacked("unet")])
    maps = token_maps(attention.mean(), prompt_tokens(pipe.tokenizer, prompt))
    latent = trajectory.final["unet"]
    prior = [("prior", "image_embeds", out.image_embeds.shape)] if out.image_embeds is not None else []
    shapes = [("text_encoder", k, s) for k, s in text_shapes.items()] + [
        *prior,
        ("unet", "latent", latent.shape),
        ("vae_decode", "images", out.images.shape),
    ]
    text_cosine = image_cosine = None
    if out.image_embeds is not None:
        text_cosine = float(embedding_cosine(out.image_embeds, out.text_embeds)[0])
        if pipe.image_encoder is not None:
            image_cosine = float(embedding_cosine(pipe.encode_image([image]).cpu(), out.image_embeds)[0])
    return LatentDiffusionInside(
        image,
        strip(decoded),
        {"unet": trajectory.steps("unet")},
        latent_channels_image(latent[0]),
        maps,
        [(t, overlay(image, m)) for t, m in maps],
        shape_table(architecture, shapes),
        text_cosine,
        image_cosine,
    )


# ----------------------------------------------------------------------------- both


@dataclass(frozen=True)
class InsideReport:
    """Every architecture from inside, for one prompt and seed."""

    prompt: str
    seed: int
    unclip: UnCLIPInside
    latent_diffusion: LatentDiffusionInside
    components: pd.DataFrame  # architecture, component, class, parameters
    stable_unclip: LatentDiffusionInside | None = None  # where the models hold one

    @property
    def shapes(self) -> pd.DataFrame:
        """architecture, stage, tensor, shape: every pipeline's tensors between stages, from this run."""
        shown = [self.unclip, self.latent_diffusion, *([self.stable_unclip] if self.stable_unclip else [])]
        return pd.concat([r.shapes for r in shown], ignore_index=True)


def explain(
    pipes: Mapping[str, Pipeline], prompt: str, seed: int, settings: Settings = Settings(), *, num_frames: int = 8
) -> InsideReport:
    """One instrumented, unlogged run of each architecture (architecture -> pipeline: unCLIP, latent diffusion and,
    where there is one, Stable unCLIP) with the Compare screen's settings."""
    if not isinstance(prompt, str):
        raise ValueError(f"`prompt` must be one prompt string, got {type(prompt).__name__}")
    prompt = check_prompts(prompt)[0]
    seed = check_seed(seed)
    components = pd.concat([component_table(a, pipe) for a, pipe in pipes.items()], ignore_index=True)
    stable = pipes.get("stable_unclip")
    return InsideReport(
        prompt,
        seed,
        explain_unclip(pipes["unclip"], prompt, seed, settings, num_frames),
        explain_latent_diffusion(pipes["latent_diffusion"], prompt, seed, settings, num_frames),
        components,
        None
        if stable is None
        else explain_latent_diffusion(stable, prompt, seed, settings, num_frames, architecture="stable_unclip"),
    )


# ----------------------------------------------------------------------------- the tab's request


class Inside:
    """The tab's request on a session's models: GPU work that changes nothing and returns an InsideReport."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def explain(self, prompt: str | None, seed: str | float | int | None, settings: Settings) -> InsideReport:
        """An instrumented, unlogged run of every architecture with the Compare tab's prompt, seed and settings."""
        prompt, seed = parse_prompt(prompt), parse_seed(seed)
        harness = self.session.harness()
        with self.session.gpu_turn():
            return explain(harness.pipelines, prompt, seed, settings)
