"""The lab's Stable unCLIP: unCLIP's prior feeding a latent-diffusion U-Net conditioned on the CLIP image embedding,
the design of Stability AI's Stable unCLIP (and Kandinsky 2), run by the same pipeline as the real one
(`pipelines.stable_unclip`).

unCLIP and latent diffusion differ twice: unCLIP has a prior over CLIP image embeddings, and it denoises pixels
where latent diffusion denoises a VAE latent. This model has unCLIP's prior (the same trained weights, shared with
the unCLIP pipeline in memory) and latent diffusion's space (its VAE and CLIP, shared likewise, its U-Net's widths
and blocks), so a difference it shares with unCLIP comes from the prior, one it shares with latent diffusion from the
space (research.study, claim 6). Its U-Net reads the caption's hidden states by cross-attention, as latent diffusion's
does, and the image embedding as Stable unCLIP's does: projected and added to the time embedding (diffusers'
`class_embed_type="projection"`), beside the embedding of its noise level; its unconditional branch is the empty
caption with zeros (Stable unCLIP's negative image embedding).

The lab trains without noise augmentation: its noise level is 0, where its image normalizer (identity) and noising
schedule (no noise at step 0) hand the U-Net the embedding as it is. Packaged as stabilityai's unCLIP repos are
(diffusers' StableUnCLIPImg2ImgPipeline layout) with only what is its own: `lab/weights/stable_unclip/`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

from lab.trainer import TrainConfig
from pipelines.stable_unclip import noise_image_embeddings

NAME = "stable_unclip"  # its part, its folder under lab/weights and its architecture


@dataclass(frozen=True)
class StableUnclipConfig:
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


def image_normalizer(embed_dim: int) -> StableUnCLIPImageNormalizer:
    """Stable unCLIP's normaliser with CLIP's mean 0 and std 1: the lab's embeddings go in as they are."""
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=embed_dim)
    with torch.no_grad():
        normalizer.mean.zero_()
        normalizer.std.fill_(1.0)
    return normalizer


def noising_scheduler() -> DDPMScheduler:
    """Stable unCLIP's image noising schedule, with no noise at level 0 (beta_0 = 0): the lab's level."""
    return DDPMScheduler(beta_schedule="linear", beta_start=0.0, beta_end=0.02)


def class_labels(image_embeds: torch.Tensor) -> torch.Tensor:
    """What the pipeline hands the U-Net at the lab's noise level 0: the embedding beside its level's (B, 2D)."""
    normalizer = image_normalizer(image_embeds.shape[-1]).to(image_embeds.device)
    return noise_image_embeddings(image_embeds, 0, normalizer, noising_scheduler(), None)


def save_package(directory: Path, unet: UNet2DConditionModel, scheduler: DDIMScheduler, embed_dim: int) -> Path:
    """stabilityai's unCLIP layout, fp16, with its own parts alone: the U-Net, its scheduler, the image normaliser
    and noising schedule; its text encoder, tokenizer and VAE are latent diffusion's, its prior and image encoder
    unCLIP's (the `shares` of pipelines.registry: the loader takes them from those pipelines in memory)."""
    if directory.exists():
        shutil.rmtree(directory)
    unet.half().save_pretrained(str(directory / "unet"))
    image_normalizer(embed_dim).half().save_pretrained(str(directory / "image_normalizer"))
    scheduler.save_pretrained(str(directory / "scheduler"))
    noising_scheduler().save_pretrained(str(directory / "image_noising_scheduler"))
    index = {
        "_class_name": "StableUnCLIPImg2ImgPipeline",
        "_note": "text encoder, tokenizer and VAE: the latent diffusion package's; prior and image encoder: the "
        "unCLIP package's (lab/stable_unclip.py)",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "image_normalizer": ["stable_diffusion", "StableUnCLIPImageNormalizer"],
        "image_noising_scheduler": ["diffusers", "DDPMScheduler"],
        **dict.fromkeys(("text_encoder", "tokenizer", "vae", "image_encoder", "feature_extractor"), [None, None]),
    }
    (directory / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return directory
