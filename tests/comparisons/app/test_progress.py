"""How a request reports its progress: at most a few updates a second, the first and the last always."""

from __future__ import annotations

import threading

from comparisons.app.progress import PROGRESS_EVERY_S, throttled


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
