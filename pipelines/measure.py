"""Stage measurement: wall time and peak memory of each stage of a call.

On a GPU the peak is CUDA's max allocated since the stage began; on the CPU it is the process's
peak resident set, reset per stage where Linux allows it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from pipelines.outputs import StageStats


def _rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024


def _reset_rss_peak() -> bool:
    # Linux resets VmHWM (peak RSS) when "5" is written to clear_refs; this makes the CPU
    # peak a per-stage figure rather than the peak of the whole process lifetime.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class StageRecorder:
    """Times stages and records their peak memory; the pipelines call `stage(name)` around each."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stages: list[StageStats] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_rss_peak()
        start = time.perf_counter()
        yield
        if cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        if cuda:
            peak, kind = torch.cuda.max_memory_allocated(self.device), "cuda_max_allocated"
        else:
            peak, kind = _rss_peak_bytes(), "process_peak_rss"
        self.stages.append(StageStats(name, seconds, peak, kind))
