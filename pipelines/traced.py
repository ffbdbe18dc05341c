"""Traced, frozen denoisers for the CPU: one TorchScript graph per input signature instead of Python per layer.

The lab's models are small (16 px latents, 32-128 channels), so on a CPU a denoiser call is dominated by its fixed
cost, diffusers' Python and the dispatch of ~50 small convolutions, not by arithmetic (benchmarks/README.md, "The
lab preset on two CPU cores"). `torch.jit.trace` records one call's operators and `torch.jit.freeze` folds the
weights into the graph as constants and fuses what it can (convolution with its bias and activation): the lab's
latent-diffusion U-Net step then takes about two thirds of its eager time, after two seconds of tracing, where
inductor (`torch.compile` with freezing) gained the same after 40-130 s of compiling.

A trace is a recording, so it is kept per input signature (shapes, dtypes, every non-tensor argument), like
pipelines.cuda_graphs' graphs; the values of tensors (the timestep, the latents) stay inputs. Where something
watches the eager forward (a TorchDispatchMode such as pipelines.measure's TensorMeter, a forward hook, another
attention processor such as the app's cross-attention recorder), the eager forward runs, so it sees what it always saw.

With a `cache_dir`, each frozen trace is also saved there, named by a digest of the weights, the signature and the
torch version, and a later process loads it (0.08 s where tracing the lab's U-Net takes 1.5 s): the first image of a
fresh app then pays no tracing. A file that does not load is traced again and rewritten.

A frozen graph runs as frozen (`torch.jit.optimized_execution(False)`): TorchScript's profiling executor otherwise
profiles and re-optimises each graph over its first calls, ~3 s for the lab's five denoisers across four comparisons,
and the graphs it made were no faster (a comparison 1.09 s against 1.04 s).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks
from torch.utils._python_dispatch import _get_current_dispatch_mode
from torch.utils._pytree import tree_flatten, tree_unflatten

OUT_SPEC = "out_spec.pkl"  # the saved trace's extra file: how its output tensors rebuild the forward's output
MAX_TRACES = 8  # per model: each holds a frozen copy of the weights, and a sweep's last batch is another shape


def _signature(leaves: list) -> tuple:
    """What fixes a trace: each tensor's shape and dtype, and every other argument's value."""
    return tuple((tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else ("value", x) for x in leaves)


class _Flat(torch.nn.Module):
    """A forward as a function of its tensor arguments alone, returning its output's tensors: what trace records."""

    def __init__(self, module: torch.nn.Module, forward: Callable, leaves: list, spec) -> None:
        super().__init__()
        self.module = module  # a submodule, so that freezing folds its weights
        self._forward, self._leaves, self._spec = forward, leaves, spec
        self.out_spec = None

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        it = iter(tensors)
        leaves = [next(it) if isinstance(x, torch.Tensor) else x for x in self._leaves]
        args, kwargs = tree_unflatten(leaves, self._spec)
        flat, self.out_spec = tree_flatten(self._forward(*args, **kwargs))
        return tuple(flat)


class Traced:
    """A module's forward run from frozen traces, one per input signature (the latest MAX_TRACES kept).

    Installed as the module's `forward` (pipelines.cpu_speed.apply), so every caller (ours, or diffusers' pipeline
    sharing the module) gets it.
    """

    def __init__(self, module: torch.nn.Module, forward: Callable, cache_dir: Path | None = None) -> None:
        self.module, self.forward, self.cache_dir = module, forward, cache_dir
        self._weights_digest: str | None = None
        self.traces: OrderedDict[tuple, tuple[torch.jit.ScriptModule, object]] = OrderedDict()
        self._submodules = list(module.modules())
        self._processors = [(m, m.processor) for m in self._submodules if hasattr(m, "set_processor")]

    def instrumented(self) -> bool:
        """Whether something watches the eager forward, which a trace would silently skip: a dispatch mode (the
        memory meter), a forward hook, or an attention processor other than the one traced (the app's recorder of
        cross-attention, comparisons.app.recorders)."""
        if _get_current_dispatch_mode() is not None or _global_forward_hooks or _global_forward_pre_hooks:
            return True
        if any(m._forward_hooks or m._forward_pre_hooks for m in self._submodules):
            return True
        return any(m.processor is not p for m, p in self._processors)

    def __call__(self, *args, **kwargs):
        if self.instrumented():
            return self.forward(*args, **kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        key = (str(spec), _signature(leaves))
        tensors = tuple(x for x in leaves if isinstance(x, torch.Tensor))
        if key not in self.traces:
            self.traces[key] = self._cached_trace(key, leaves, spec, tensors)
            while len(self.traces) > MAX_TRACES:
                self.traces.popitem(last=False)
        graph, out_spec = self.traces[key]
        # As frozen, with no re-optimising (module docstring); the switch is per thread, as are the calls.
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return tree_unflatten(list(graph(*tensors)), out_spec)

    def _file(self, key: tuple) -> Path:
        """Where the trace of `key` is saved: a digest of the weights (names, dtypes, values), the call's signature
        and torch's version, so that other weights, inputs or a torch upgrade never load a stale graph."""
        if self._weights_digest is None:
            digest = hashlib.sha256(type(self.module).__qualname__.encode())
            for name, tensor in self.module.state_dict().items():
                digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._weights_digest = digest.hexdigest()
        call = hashlib.sha256(f"{torch.__version__}|{self._weights_digest}|{key}".encode()).hexdigest()
        return Path(self.cache_dir) / f"{type(self.module).__name__}-{call[:32]}.pt"

    def _cached_trace(self, key: tuple, leaves: list, spec, tensors: tuple) -> tuple[torch.jit.ScriptModule, object]:
        if self.cache_dir is None:
            return self._trace(leaves, spec, tensors)
        path = self._file(key)
        if path.is_file():
            try:
                extra = {OUT_SPEC: ""}
                with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript's load and save; both still work
                    warnings.simplefilter("ignore", FutureWarning)
                    graph = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
                return graph, pickle.loads(extra[OUT_SPEC])  # our own file, written below
            except Exception:  # noqa: BLE001 - a truncated or foreign file: trace again and overwrite it
                pass
        graph, out_spec = self._trace(leaves, spec, tensors)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(graph, str(partial), _extra_files={OUT_SPEC: pickle.dumps(out_spec)})
        os.replace(partial, path)  # atomic: another process never loads half a file
        return graph, out_spec

    def _trace(self, leaves: list, spec, tensors: tuple) -> tuple[torch.jit.ScriptModule, object]:
        flat = _Flat(self.module, self.forward, leaves, spec).eval()
        # Tracing saves no autograd state, so inference tensors from the pipelines' inference_mode are fine inputs;
        # trace's own warnings name shape checks that are constant for one signature, as a trace per signature is.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.jit.freeze(torch.jit.trace(flat, tensors, check_trace=False))
        return graph, flat.out_spec
