"""How a request reports its progress (at most a few updates a second, the first and the last always), and what it
asks ZeroGPU for."""

from __future__ import annotations

import math
import threading

from comparisons.app.work import (
    GPU_CALL_OVERHEAD_S,
    GPU_SAFETY,
    PROGRESS_EVERY_S,
    compare_duration,
    gpu_duration,
    image_in_duration,
    throttled,
)
from comparisons.settings import Settings


def test_progress_is_passed_on_at_most_once_per_interval_with_the_first_and_the_last():
    now = [0.0]
    seen = []
    report = throttled(lambda f, what: seen.append((f, what)), every=0.2, clock=lambda: now[0])
    for t, fraction in ((0.0, 0.1), (0.05, 0.2), (0.19, 0.3), (0.21, 0.4), (0.3, 0.5), (0.42, 0.6), (0.43, 1.0)):
        now[0] = t
        report(fraction, f"step at {t}")
    assert seen == [(0.1, "step at 0.0"), (0.4, "step at 0.21"), (0.6, "step at 0.42"), (1.0, "step at 0.43")]
    assert PROGRESS_EVERY_S >= 0.1  # no more than ten redraws a second


def test_two_threads_reporting_side_by_side_share_one_budget():
    now = [0.0]
    seen = []
    report = throttled(lambda f, _: seen.append(f), every=0.2, clock=lambda: now[0])

    def steps() -> None:
        for _ in range(1000):
            report(0.5, "")

    threads = [threading.Thread(target=steps) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [0.5]  # the clock never moved: only the very first of 2,000 calls went through
    now[0] = 0.2
    report(1.0, "done")
    assert seen == [0.5, 1.0]


def test_stable_unclip_asks_zerogpu_for_its_prior_and_its_u_nets_steps():
    """Its seconds per step are the registry's (Karlo's prior as measured; the U-Net's scaled from SD 1.5's by latent
    area, an estimate until a GPU measures it), so a comparison of three asks for its steps on top of the others'."""
    two, three = ("unclip", "latent_diffusion"), ("unclip", "latent_diffusion", "stable_unclip")
    defaults = Settings()  # Stable unCLIP: 25 prior steps, 20 U-Net steps
    alone = 25 * 0.015 + 20 * 0.072
    assert gpu_duration([("stable_unclip", defaults, 1)]) == math.ceil(GPU_CALL_OVERHEAD_S + GPU_SAFETY * alone)
    assert compare_duration(three, defaults) > compare_duration(two, defaults)
    more = defaults.replace(stable_unclip_steps=100)
    assert compare_duration(three, more) > compare_duration(three, defaults)
    # its variations skip the prior: only the U-Net's steps count
    assert image_in_duration(("stable_unclip",), defaults, None) < gpu_duration([("stable_unclip", defaults, 1)])
