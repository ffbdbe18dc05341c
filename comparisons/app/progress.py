"""How far a request has got: the steps of each denoising loop, the steps done at a pipeline's step callback, and
a progress bar over all of them, passed on to the page a few times a second.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from comparisons.settings import Settings
from pipelines import registry
from pipelines.outputs import StepState
from pipelines.registry import TEXT_TO_IMAGE

Progress = Callable[[float, str], None]  # (fraction done, what is running)
# A progress bar redrawn 5 times a second. Every update is a message to the page: per step, gradio's queue (which
# sends what is pending every 10 ms) sent 69 for a lab comparison's 107 steps, 6 throttled (counted on app.py);
# in chromium a click took 2.38 s against 2.01 s throttled, the page and the server paying beside the models.
PROGRESS_EVERY_S = 0.2


def throttled(progress: Progress, every: float | None = None, clock: Callable[[], float] = time.monotonic) -> Progress:
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


def steps_done(
    architecture: str, state: StepState, settings: Settings, mode: str = TEXT_TO_IMAGE, strength: float | None = None
) -> float:
    """Denoising steps of this architecture done at `state`, for one progress bar over every stage.
    Scaled by the loop's own length, which can exceed the steps asked for (PNDM adds a warm-up step)."""
    sizes = stage_steps(architecture, settings, mode, strength)
    stages = list(sizes)
    before = sum(sizes[s] for s in stages[: stages.index(state.stage)])
    return before + sizes[state.stage] * (state.step + 1) / state.num_steps
