"""The lab's third model: unCLIP's prior feeding a latent-diffusion U-Net conditioned on the CLIP image
embedding, the design of Stable unCLIP and Kandinsky 2.

unCLIP and latent diffusion differ twice: unCLIP has a prior over CLIP image embeddings, and it
denoises pixels where latent diffusion denoises a VAE latent. This model has unCLIP's prior (the same
trained weights) and latent diffusion's space (its VAE, its U-Net's widths and blocks), so a
difference it shares with unCLIP comes from the prior, one it shares with latent diffusion from the
space (`lab.study`, claim 6). Its U-Net reads the caption's hidden states by cross-attention, as
latent diffusion's does, and the image embedding as Stable unCLIP's does: projected and added to the
time embedding (diffusers' `class_embed_type="projection"`); its unconditional branch is the empty
caption with a zero image embedding (Stable unCLIP's negative image embedding).

Packaged in diffusers' layout under `lab/weights/latent_unclip/` (unet, vae, prior and their
schedulers, model_index.json); its text encoder is the unCLIP package's (the same generator CLIP).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, PriorTransformer, UnCLIPScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

from lab.trainer import TrainConfig
from pipelines.base import guide
from pipelines.checks import check_guidance
from pipelines.latent_diffusion import LatentDiffusion
from pipelines.registry import signature_default
from pipelines.unclip import UnCLIP

NAME = "latent_unclip"  # its folder under lab/weights and its name in the study's tables


@dataclass(frozen=True)
class LatentUnclipConfig:
    """Latent diffusion's U-Net (same widths, depths, blocks, objective) with the image embedding added."""

    block_out_channels: tuple[int, ...] = (32, 64, 128)  # as LdUnetConfig
    layers_per_block: int = 1
    heads: int = 4
    p_uncond: float = 0.1  # caption -> "" and image embedding -> 0: the unconditional branch for guidance
    p_drop_text: float = 0.1  # caption -> "" alone, as unCLIP's decoder trains, so the embedding carries the content
    prediction_type: str = "v_prediction"
    # Steps for equal training compute: latent diffusion spent 96.3 TFLOP (VAE 10.8 + U-Net 85.5); this model
    # shares the VAE and unCLIP's prior (13.5), which leaves 72.0 for its U-Net at 56.2 GFLOP a step (the image
    # encoder's forward included): 1,280 steps.
    train: TrainConfig = TrainConfig(steps=1280, batch_size=64, lr=5e-4, ema_decay=0.999)


def build_unet(
    config: LatentUnclipConfig, latent_size: int, cross_attention_dim: int, embed_dim: int
) -> UNet2DConditionModel:
    """Latent diffusion's U-Net builder, with the image embedding projected into the time embedding."""
    from lab.models import build_ld_unet  # lab.models holds this module's config among the lab's

    return build_ld_unet(
        config,
        latent_size,
        cross_attention_dim,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=embed_dim,
    )


@dataclass(frozen=True)
class LatentUnclipSettings:
    """Sampling settings: the prior's as unCLIP's defaults, the U-Net's as latent diffusion's."""

    prior_num_inference_steps: int = signature_default(UnCLIP, "prior_num_inference_steps")
    prior_guidance_scale: float = signature_default(UnCLIP, "prior_guidance_scale")
    num_inference_steps: int = signature_default(LatentDiffusion, "num_inference_steps")
    guidance_scale: float = signature_default(LatentDiffusion, "guidance_scale")


class LatentUnCLIP:
    """text encoder -> prior (both unCLIP's) -> U-Net in the VAE latent -> VAE decoder."""

    def __init__(self, unclip: UnCLIP, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDIMScheduler):
        self.unclip, self.unet, self.vae, self.scheduler = unclip, unet.eval(), vae.eval(), scheduler
        self.device = unclip.device

    @classmethod
    def load(cls, directory: str | Path, unclip: UnCLIP) -> LatentUnCLIP:
        """The packaged model; `unclip` (the lab's unCLIP package) lends its text encoder and prior."""
        directory = Path(directory)
        if not (directory / "model_index.json").is_file():
            raise ValueError(f"no {NAME} package at {directory}: run `python -m lab.train {NAME}` and `package`")
        dtype = unclip.dtype
        unet = UNet2DConditionModel.from_pretrained(str(directory / "unet"), torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(str(directory / "vae"), torch_dtype=dtype)
        scheduler = DDIMScheduler.from_pretrained(str(directory / "scheduler"))
        return cls(unclip, unet.to(unclip.device), vae.to(unclip.device), scheduler)

    @torch.inference_mode()
    def __call__(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        settings: LatentUnclipSettings = LatentUnclipSettings(),
        image_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1], one per prompt and seed; `image_embeds` (B, D) replaces the prior's."""
        # 1. Check inputs
        prompts = list(prompts)
        if not prompts or len(prompts) != len(seeds):
            raise ValueError(f"need one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
        scale = check_guidance(settings.guidance_scale, "guidance_scale")
        cfg = scale > 1.0
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        # 2. Encode the prompt (the empty one too: the prior guides with it, and so does the U-Net)
        text = self.unclip.encode_prompt(prompts, with_uncond=True)
        # 3. Prior: text embedding -> image embedding, unless one is given (an oracle's)
        if image_embeds is None:
            image_embeds = self.unclip.run_prior(
                text, generators, settings.prior_num_inference_steps, settings.prior_guidance_scale
            )
        elif image_embeds.shape[0] != len(prompts):
            raise ValueError(f"image_embeds must have one row per prompt, got {tuple(image_embeds.shape)}")
        image_embeds = image_embeds.to(self.device, self.unet.dtype)
        # 4. Denoise in the latent: caption by cross-attention, image embedding with the time embedding
        hidden = torch.cat([text.uncond.hidden_states, text.hidden_states]) if cfg else text.hidden_states
        labels = torch.cat([torch.zeros_like(image_embeds), image_embeds]) if cfg else image_embeds
        self.scheduler.set_timesteps(settings.num_inference_steps, device=self.device)
        size = self.unet.config.sample_size
        shape = (len(prompts), self.unet.config.in_channels, size, size)
        latents = randn_tensor(shape, generator=generators, device=self.device, dtype=hidden.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if cfg else latents
            pred = self.unet(model_input, t, encoder_hidden_states=hidden, class_labels=labels).sample
            latents = self.scheduler.step(guide(pred, scale) if cfg else pred, t, latents, eta=0.0).prev_sample
        # 5. Decode
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return (images.float().clamp(-1, 1) + 1) / 2


def save_package(
    directory: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    prior: PriorTransformer,
    scheduler: DDIMScheduler,
    prior_scheduler: UnCLIPScheduler,
) -> None:
    """diffusers' layout (fp16), one folder per component and a model_index.json naming them."""
    for name, component in (("unet", unet), ("vae", vae), ("prior", prior)):
        component.half().save_pretrained(str(directory / name))
    scheduler.save_pretrained(str(directory / "scheduler"))
    prior_scheduler.save_pretrained(str(directory / "prior_scheduler"))
    index = {
        "_class_name": "LatentUnCLIP",
        "_note": "text encoder and tokenizer: the unCLIP package's (the generator CLIP); see lab/latent_unclip.py",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "prior": ["diffusers", "PriorTransformer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "prior_scheduler": ["diffusers", "UnCLIPScheduler"],
    }
    (directory / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
