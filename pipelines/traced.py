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
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks
from torch.utils._python_dispatch import _get_current_dispatch_mode
from torch.utils._pytree import tree_flatten, tree_unflatten

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

    def __init__(self, module: torch.nn.Module, forward: Callable) -> None:
        self.module, self.forward = module, forward
        self.traces: OrderedDict[tuple, tuple[torch.jit.ScriptModule, object]] = OrderedDict()
        self._submodules = list(module.modules())
        self._processors = [(m, m.processor) for m in self._submodules if hasattr(m, "set_processor")]

    def instrumented(self) -> bool:
        """Whether something watches the eager forward, which a trace would silently skip: a dispatch mode (the
        memory meter), a forward hook, or an attention processor other than the one traced (the app's recorder of
        cross-attention, comparisons.app.inside)."""
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
            self.traces[key] = self._trace(leaves, spec, tensors)
            while len(self.traces) > MAX_TRACES:
                self.traces.popitem(last=False)
        graph, out_spec = self.traces[key]
        with torch.no_grad():
            return tree_unflatten(list(graph(*tensors)), out_spec)

    def _trace(self, leaves: list, spec, tensors: tuple) -> tuple[torch.jit.ScriptModule, object]:
        flat = _Flat(self.module, self.forward, leaves, spec).eval()
        # Tracing saves no autograd state, so inference tensors from the pipelines' inference_mode are fine inputs;
        # trace's own warnings name shape checks that are constant for one signature, as a trace per signature is.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.jit.freeze(torch.jit.trace(flat, tensors, check_trace=False))
        return graph, flat.out_spec
