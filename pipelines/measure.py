"""Stage measurement: wall time and peak memory of each stage of a call.

On a GPU the peak is CUDA's max allocated since the stage began. On the CPU a plain call records the
process's peak resident set (reset per stage where Linux allows it): torch, gradio and every model
loaded, not what a stage uses. What a stage uses is measured by a `TensorMeter` pass: the peak bytes of
torch tensors alive during the stage above those alive at its start, plus the weight bytes of the
models it runs. The meter sees every op, which slows a call (about 1.7x on the lab models), so it runs
in a pass of its own (comparisons.harness runs one per configuration, at the fewest steps: a stage's
peak does not depend on how many steps it takes).
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from pipelines.outputs import StageStats

TENSORS_AND_WEIGHTS = "cpu_tensors_and_weights"  # a StageStats.memory_kind: what a TensorMeter pass records


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


class TensorMeter(TorchDispatchMode):
    """Bytes of torch storages created while it is active and still alive, and their peak since `mark()`.
    Outputs that share a storage with an input (views, in-place ops) are not new memory."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}  # data pointer -> bytes, of the storages this meter saw made
        self._weights: dict[int, int] = {}  # id(module) -> bytes, of the models the current stage runs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = pytree.tree_leaves(out)
        if any(isinstance(t, torch.Tensor) for t in leaves):
            inputs = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs)) if _dense(t)}
            for t in leaves:
                if _dense(t):
                    self._made(t.untyped_storage(), inputs)
        return out

    def _made(self, storage: torch.UntypedStorage, inputs: set[int]) -> None:
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in inputs or key in self._sizes:
            return
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._freed, key)

    def _freed(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def mark(self) -> int:
        """Start a stage: its peak counts from the bytes alive now, which this returns."""
        self.peak = self.live
        self._weights = {}
        return self.live

    def runs(self, modules: Iterable[torch.nn.Module]) -> None:
        """The current stage runs these models (their weights count once per stage)."""
        for m in modules:
            self._weights.setdefault(id(m), module_bytes(m))

    def stage_bytes(self, start: int) -> int:
        """The stage's tensors above `start` at their peak, plus its models' weights."""
        return self.peak - start + sum(self._weights.values())


def _dense(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.layout == torch.strided and t.device.type != "meta"


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
    """Times stages and records their peak memory; the pipelines call `stage(name)` around each. With a
    `meter` (a TensorMeter pass on the CPU), the memory is the stage's tensors and weights."""

    def __init__(self, device: torch.device, meter: TensorMeter | None = None):
        self.device = device
        self.meter = meter
        self.stages: list[StageStats] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_rss_peak()
        alive = self.meter.mark() if self.meter is not None else 0
        start = time.perf_counter()
        yield
        if cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        if cuda:
            peak, kind = torch.cuda.max_memory_allocated(self.device), "cuda_max_allocated"
        elif self.meter is not None:
            peak, kind = self.meter.stage_bytes(alive), TENSORS_AND_WEIGHTS
        else:
            peak, kind = _rss_peak_bytes(), "process_peak_rss"
        self.stages.append(StageStats(name, seconds, peak, kind))
