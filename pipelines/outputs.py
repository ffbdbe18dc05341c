"""What a pipeline hands out: the state of each denoising step, and the record of a whole call.

Both architectures return the same `PipelineOutput`, so the comparison harness can put an unCLIP
image and a latent-diffusion image in the same table without knowing which produced which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class StageStats:
    """Cost of one pipeline stage."""

    name: str  # "text_encoder", "prior", "decoder", "super_res", "unet", "vae_decode", ...
    seconds: float  # wall time, CUDA synchronised at both ends
    peak_memory_bytes: int  # see memory_kind
    memory_kind: str  # "cuda_max_allocated" (VRAM) or "process_peak_rss" (whole process, CPU)


@dataclass(frozen=True)
class StepState:
    """What a per-step callback receives (k-diffusion style: the state of one denoising step)."""

    stage: str  # which denoising loop: "prior", "decoder", "super_res" or "unet"
    step: int  # 0-based index within the stage
    num_steps: int  # steps in this stage
    timestep: int  # the scheduler's timestep t
    sample: torch.Tensor  # x_t after this step, (B, ...)
    denoised: torch.Tensor  # predicted clean sample x_0 at this step, same shape as sample


StepCallback = Callable[[StepState], None]


@dataclass
class PipelineOutput:
    """Images of one call plus everything needed to log, reproduce and explain them."""

    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    seeds: list[int]  # seed of each image; image i is reproduced alone with seeds[i]
    prompts: list[str]  # prompt of each image (repeated for num_images_per_prompt)
    stages: list[StageStats]
    total_seconds: float
    device: str
    dtype: str
    # how it computed, which a row made again needs to give the same pixels (comparisons.regeneration)
    threads: int  # torch's intra-op threads in the calling thread
    cpu_kernels: str  # pipelines.devices.cpu_kernels()
    cpu_speed: str  # the CPU speed-ups it ran with (pipelines.cpu_speed.CPUSpeed.label): "eager" or which
    # unCLIP only: the CLIP image embedding that conditioned the decoder, (N, D)
    image_embeds: torch.Tensor | None = None
    # the CLIP text embedding (projected) of each image's prompt, (N, D), where the model has one
    text_embeds: torch.Tensor | None = None
    extras: dict[str, object] = field(default_factory=dict)

    def pil_images(self) -> list[Image.Image]:
        return [Image.fromarray(img) for img in to_uint8(self.images)]

    def stage(self, name: str) -> StageStats:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages are {[s.name for s in self.stages]}")


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] -> uint8, rounded as diffusers' numpy_to_pil rounds."""
    return (images * 255).round().astype(np.uint8)


def postprocess(image: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) float32 numpy in [0, 1], as diffusers does."""
    image = (image * 0.5 + 0.5).clamp(0, 1)
    return image.cpu().permute(0, 2, 3, 1).float().numpy()
