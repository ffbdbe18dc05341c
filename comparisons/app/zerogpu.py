"""The seconds each GPU function asks ZeroGPU for (`spaces.GPU(duration=...)`): a call that runs past them is
killed, a bigger ask waits longer in the queue. Computed from the steps the call's settings ask for.
"""

from __future__ import annotations

import math

from comparisons.app.progress import stage_steps
from comparisons.settings import Settings
from comparisons.sweep import Job
from pipelines import registry
from pipelines.registry import TEXT_TO_IMAGE

GPU_CALL_OVERHEAD_S = 30  # a cold ZeroGPU worker first moves the weights onto its GPU (Karlo + SD: 17.5 GB)
# ZeroGPU's default device is an H200 MIG 3g.71gb slice (60 SMs; an H100 has 132), and a call past its duration
# is killed: ask for four times the H100's time
GPU_SAFETY = 4


def gpu_duration(work: list[tuple[str, Settings, int]], strength: float | None = None, image_in: bool = False) -> int:
    """Seconds to ask ZeroGPU for, for (architecture, settings, images) each: the registry's seconds per step of
    each stage, times the steps asked, with a margin (an unknown stage counts 0.1 s a step). With `image_in`, each
    architecture's image-in mode at that strength."""
    seconds = 0.0
    for architecture, settings, images in work:
        a = registry.get(architecture)
        mode = a.image_in.mode if image_in and a.image_in is not None else TEXT_TO_IMAGE
        steps = stage_steps(architecture, settings, mode, strength)
        seconds += images * sum(n * a.gpu_seconds_per_step.get(stage, 0.1) for stage, n in steps.items())
    return math.ceil(GPU_CALL_OVERHEAD_S + GPU_SAFETY * seconds)


def compare_duration(architectures: tuple[str, ...], settings: Settings) -> int:
    return gpu_duration([(a, settings, 1) for a in architectures])


def image_in_duration(architectures: tuple[str, ...], settings: Settings, strength: float | None) -> int:
    """The "Image in" tab's call: each architecture that takes an image, in its mode (a strength out of range
    counts as 1: the call refuses it anyway)."""
    taken = [a for a in architectures if registry.get(a).image_in is not None]
    fraction = strength if isinstance(strength, (int, float)) and 0 < strength <= 1 else 1.0
    return gpu_duration([(a, settings, 1) for a in taken], fraction, image_in=True)


def walk_duration(architectures: tuple[str, ...], settings: Settings, num_frames: int) -> int:
    """A latent-space walk of `num_frames` frames per architecture, each frame counted as a text-to-image image
    (unCLIP's prior runs for two of them only: a margin)."""
    return gpu_duration([(a, settings, num_frames) for a in architectures])


def batch_duration(batch: list[Job]) -> int:
    return gpu_duration([(batch[0].architecture, batch[0].settings, len(batch))])
