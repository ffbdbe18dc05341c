"""How much work a request is: the steps of each denoising loop, a progress bar over all of them, and the seconds
to ask ZeroGPU for (`spaces.GPU(duration=...)`: a call that runs past them is killed, a bigger ask waits longer).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from comparisons.settings import Settings
from comparisons.sweep import Job
from pipelines import registry
from pipelines.outputs import StepState
from pipelines.registry import TEXT_TO_IMAGE

GPU_CALL_OVERHEAD_S = 30  # a cold ZeroGPU worker first moves the weights onto its GPU (Karlo + SD: 17.5 GB)
# ZeroGPU's default device is an H200 MIG 3g.71gb slice (60 SMs; an H100 has 132), and a call past its duration
# is killed: ask for four times the H100's time
GPU_SAFETY = 4
# A progress bar redrawn 5 times a second. Every update is a message to the page: per step, gradio's queue (which
# sends what is pending every 10 ms) sent 69 for a lab comparison's 107 steps, 6 throttled (counted on app.py);
# in chromium a click took 2.38 s against 2.01 s throttled, the page and the server paying beside the models.
PROGRESS_EVERY_S = 0.2


def throttled(
    progress: Callable[[float, str], None],
    every: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[float, str], None]:
    """`progress` passed on at most once per `every` seconds (default PROGRESS_EVERY_S), the first call and the last
    (fraction 1) always; safe from the threads of architectures running side by side."""
    every = PROGRESS_EVERY_S if every is None else every
    last, lock = -math.inf, threading.Lock()

    def report(fraction: float, what: str) -> None:
        nonlocal last
        now = clock()
        with lock:
            if fraction < 1 and now - last < every:
                return
            last = now
        progress(fraction, what)

    return report


def stage_steps(
    architecture: str, settings: Settings, mode: str = TEXT_TO_IMAGE, strength: float | None = None
) -> dict[str, int]:
    """The steps of each denoising loop, in pipeline order (an image taken in: its mode's, img2img's shortened)."""
    a = registry.get(architecture)
    return a.steps_of_stages(settings.for_architecture(architecture, mode), mode, strength)


def total_steps(
    architecture: str, settings: Settings, mode: str = TEXT_TO_IMAGE, strength: float | None = None
) -> int:
    return sum(stage_steps(architecture, settings, mode, strength).values())


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


def steps_done(
    architecture: str, state: StepState, settings: Settings, mode: str = TEXT_TO_IMAGE, strength: float | None = None
) -> float:
    """Denoising steps of this architecture done at `state`, for one progress bar over every stage.
    Scaled by the loop's own length, which can exceed the steps asked for (PNDM adds a warm-up step)."""
    sizes = stage_steps(architecture, settings, mode, strength)
    stages = list(sizes)
    before = sum(sizes[s] for s in stages[: stages.index(state.stage)])
    return before + sizes[state.stage] * (state.step + 1) / state.num_steps
