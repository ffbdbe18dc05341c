"""CUDA graphs for the denoisers: one kernel-launch replay per denoising step instead of hundreds.

At batch 1 a full-size U-Net step is bound by the host launching its kernels, not by the GPU running
them (measured: benchmarks/README.md, "The GPU path"). A CUDA graph records those
launches once and replays them with one call (NVIDIA, "CUDA Graphs"; PyTorch's `torch.cuda.graph`),
which is what torch.compile's "reduce-overhead" mode does after minutes of compiling; here it
takes the time of three eager calls per model: two warm-ups and the one recorded.

A graph runs on fixed memory: inputs are copied into static buffers before each replay and the
output is copied out after it, and a new graph is captured for each new input signature (shapes,
dtypes, non-tensor arguments). The weights must stay where they were at capture, which is why
moving a pipeline or offloading it to the CPU drops its graphs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten, tree_map_only, tree_unflatten

WARMUP_CALLS = 2  # cuDNN's autotuning and lazy initialisation must happen before capture, not in it


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph  # anything with replay(), for the tests' stand-in
    inputs: list[torch.Tensor]  # static buffers, in the order of the call's tensor leaves
    output: object  # the forward's output, made of static tensors the replay overwrites


def _signature(leaves: list) -> tuple:
    """What fixes a graph: each tensor's shape and dtype, and every other argument's value."""
    return tuple((tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else ("value", x) for x in leaves)


class CUDAGraphed:
    """A module's forward replayed from CUDA graphs, one per input signature.

    Installed as the module's `forward`, so every caller (ours or diffusers' reference pipeline
    sharing the module) gets it; `uninstall` restores the module's own forward.
    """

    def __init__(self, forward: Callable, device: torch.device, pool: tuple):
        self.forward, self.device, self.pool = forward, device, pool
        self.graphs: dict[tuple, _Graph] = {}

    def __call__(self, *args, **kwargs):
        leaves, spec = tree_flatten((args, kwargs))
        key = (str(spec), _signature(leaves))
        # Inside inference mode the static buffers never join autograd, whoever calls (diffusers
        # samples under no_grad, we under inference_mode).
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        with torch.inference_mode():
            entry = self.graphs.get(key) or self._capture(key, leaves, spec, tensors)
            for static, x in zip(entry.inputs, tensors):
                static.copy_(x, non_blocking=True)
            entry.graph.replay()
            # A copy, so the next replay cannot overwrite what the caller still holds.
            return tree_map_only(torch.Tensor, torch.clone, entry.output)

    def _capture(self, key: tuple, leaves: list, spec, tensors: list[torch.Tensor]) -> _Graph:
        inputs = [x.detach().to(self.device, copy=True) for x in tensors]
        it = iter(inputs)
        args, kwargs = tree_unflatten([next(it) if isinstance(x, torch.Tensor) else x for x in leaves], spec)
        graph, output = record(lambda: self.forward(*args, **kwargs), self.device, self.pool)
        self.graphs[key] = entry = _Graph(graph, inputs, output)
        return entry


def record(fn: Callable[[], object], device: torch.device, pool: tuple) -> tuple[torch.cuda.CUDAGraph, object]:
    """Warm `fn` up on a side stream (as capture requires), then capture one call of it."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        output = fn()
    return graph, output


def install(module: torch.nn.Module, pool: tuple, forward: Callable | None = None) -> CUDAGraphed:
    """Replace `module`'s forward by graph replays of `forward` (default: its own forward).

    Graphs of one pipeline share `pool`: they run one after another on one stream, and each
    replay's output is copied out at once, so one graph's scratch memory may be another's.
    """
    device = next(module.parameters()).device
    if device.type != "cuda":
        raise ValueError(f"CUDA graphs need the model on a CUDA device; it is on {device}")
    graphed = CUDAGraphed(forward or module.forward, device, pool)
    module.forward = graphed
    return graphed


def installed(module: torch.nn.Module) -> CUDAGraphed | None:
    graphed = module.__dict__.get("forward")
    return graphed if isinstance(graphed, CUDAGraphed) else None


def uninstall(module: torch.nn.Module) -> None:
    """Give `module` back its own forward, and free its graphs."""
    if installed(module) is not None:
        del module.__dict__["forward"]
