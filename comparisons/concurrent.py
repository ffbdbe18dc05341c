"""The architectures of one comparison side by side, one core each, instead of one after the other.

The lab's models are bound by per-call overhead, not arithmetic: one intra-op thread runs their denoisers about as
fast as two (benchmarks/README.md, "The lab preset on two CPU cores"), so one architecture leaves the second core
idle. Here each architecture runs in a thread of its own with one intra-op thread; torch releases the GIL inside its
operators (and inside a traced graph, pipelines.traced), so the two overlap. Their rows say how their seconds were
measured, `timing` = "concurrent" (each shared the machine with the other), not "isolated".
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch

from comparisons.settings import Settings
from pipelines.outputs import StepCallback

if TYPE_CHECKING:
    from comparisons.harness import Harness, Made

TIMING = "timing"  # the rows' column: how their seconds were measured
ISOLATED, CONCURRENT = "isolated", "concurrent"  # one architecture at a time; all of one comparison at once


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pays(architectures: int) -> bool:
    """Whether running `architectures` side by side can gain: more than one, and more than one core."""
    return architectures > 1 and cores() > 1


def workers(architectures: int) -> int:
    """Threads for `architectures` side by side: one per core at most (a third architecture on two cores waits for
    the first free core, rather than slowing both by sharing one)."""
    return max(1, min(architectures, cores()))


def _one_thread(fn: Callable[[], Made]) -> Made:
    # Per thread: torch's intra-op thread count is the calling thread's OpenMP setting, restored after.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


def make_each(
    harness: Harness,
    prompt: str,
    seed: int,
    settings: Settings,
    run_id: str,
    callbacks: dict[str, StepCallback | None],
    concurrent: bool,
) -> list[Made]:
    """Every architecture of `harness` on one prompt and seed (Harness.make, nothing written), in its order;
    side by side when `concurrent`, else one after the other. A failure is raised once all have finished."""

    def job(arch: str, timing: str) -> Callable[[], Made]:
        return lambda: harness.make(
            arch, [prompt], [seed], settings, run_id=run_id, callback=callbacks.get(arch), timing=timing
        )

    if not concurrent:
        return [job(arch, ISOLATED)() for arch in harness.architectures]
    with ThreadPoolExecutor(workers(len(harness.architectures)), thread_name_prefix="architecture") as pool:
        # Each in a copy of the caller's context: what it keeps in context variables (gradio's progress bar)
        # reaches the callbacks; one copy each, as a context runs in one thread at a time.
        futures = [
            pool.submit(contextvars.copy_context().run, _one_thread, job(arch, CONCURRENT))
            for arch in harness.architectures
        ]
    return [f.result() for f in futures]


WARM_UP_PROMPT = "a red circle"


def warm_up(harness: Harness) -> None:
    """One comparison at the default settings' fewest steps, kept nowhere, as the app's Compare runs it: the
    denoisers' traces (one per input signature, which the step count does not change; loaded from the trace cache, or
    made) and the default configuration's stage-memory pass (made at the fewest steps) are then paid while the models
    load, not by the user's first image."""
    settings = Settings().fewest_steps(harness.architectures)
    make_each(harness, WARM_UP_PROMPT, 0, settings, "warm-up", {}, harness.concurrent)
