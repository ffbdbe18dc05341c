"""CPU speed-ups of a pipeline's models, each on its own so that the benchmark can time it alone and with the others
(`python -m comparisons.bench --preset lab`; figures and which are kept: benchmarks/README.md).

- `trace`: the denoisers run from frozen TorchScript traces (pipelines.traced), one per input signature.
- `fast_attention`: diffusers' `Attention.forward` reads its processor's signature with `inspect.signature` on every
  call, to drop keyword arguments the processor does not take; our pipelines pass none, so the processor is called
  directly (the same call diffusers makes when there are none to drop).
- `onednn_off`: these models run with oneDNN (mkldnn) convolutions off, the native ones being faster for tiny
  convolutions. The switch is process-wide (torch.backends.mkldnn), so it also changes, for as long as the model
  runs, the kernels of anything running at the same time in another thread.

Each is installed as an instance attribute `forward` (of a denoiser, of each Attention module) and removed by
deleting it, as pipelines.cuda_graphs installs its graphs; the images stay those of the eager models (tested:
tests/pipelines/test_cpu_speed.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.models.attention_processor import Attention

from pipelines import traced


@dataclass(frozen=True)
class CPUSpeed:
    """Which CPU speed-ups a pipeline runs with; the default is none (eager)."""

    trace: bool = False  # denoisers from frozen traces, one per input signature (~2 s to trace each the first time)
    fast_attention: bool = False  # Attention modules call their processor without inspect.signature per call
    onednn_off: tuple[str, ...] = ()  # component names whose forward runs with oneDNN convolutions off
    trace_cache: Path | None = None  # where frozen traces are saved for later processes (pipelines.traced); None: not

    @property
    def label(self) -> str:
        parts = ["traced denoisers"] * self.trace + ["attention without inspect"] * self.fast_attention
        parts += [f"oneDNN off in {', '.join(self.onednn_off)}"] if self.onednn_off else []
        return " + ".join(parts) or "eager"


class _WithoutOneDNN:
    """A forward run with oneDNN convolutions switched off (see the module docstring: the switch is global)."""

    def __init__(self, forward) -> None:
        self.forward = forward

    def __call__(self, *args, **kwargs):
        with torch.backends.mkldnn.flags(enabled=False):
            return self.forward(*args, **kwargs)


def _direct_attention(attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
    if kwargs:  # keyword arguments to filter: diffusers' own forward, which warns about unknown ones
        return Attention.forward(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)
    return attn.processor(
        attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask
    )


def _own_forward(module: torch.nn.Module) -> None:
    module.__dict__.pop("forward", None)


def apply(modules: dict[str, torch.nn.Module], denoisers: tuple[str, ...], speed: CPUSpeed, cache: dict) -> None:
    """Put `modules` (a pipeline's, by component name) in the state `speed` asks for, from whatever state they were
    in. `cache` keeps each denoiser's traces between calls, so that switching tracing off and on again re-traces
    nothing (Pipeline.to empties it)."""
    for name, module in modules.items():
        _own_forward(module)
        for sub in module.modules():
            if isinstance(sub, Attention):
                _own_forward(sub)
                if speed.fast_attention:
                    sub.forward = functools.partial(_direct_attention, sub)
        if speed.trace and name in denoisers:
            if name not in cache:
                cache[name] = traced.Traced(module, module.forward, speed.trace_cache)
            module.forward = cache[name]
        if name in speed.onednn_off:
            module.forward = _WithoutOneDNN(module.forward)
