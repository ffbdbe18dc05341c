"""Our pipelines against diffusers' on identical components and settings (`python -m comparisons.bench`).

Tiny: the seeded tiny components of `pipelines.tiny`, the three architectures. Full size: Karlo and SD 1.5 built from
their configs with random weights (`pipelines.full_size`), fp16 on CUDA, both co-resident on the
device; SD at 512², 50 steps, batch 1; Karlo at 25/25/7 steps. Runs are interleaved (ours,
theirs, theirs, ours, ...) after a warm-up of each, so drift in the machine's speed falls on both
sides alike. Reported per architecture: medians and the ratio ours/diffusers, seconds per stage,
peak memory, FLOPs counted with `torch.utils.flop_counter` and the achieved TFLOP/s. Then, per
speed-up asked for (CUDA graphs, torch.compile, both), the same again: both pipelines share the
denoisers, so ours and diffusers' run the same sped-up models and the ratio stays a like-for-like.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from diffusers import StableDiffusionPipeline, StableUnCLIPPipeline
from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline
from torch.utils.flop_counter import FlopCounterMode

from comparisons.settings import Settings
from pipelines import PipelineOutput
from pipelines.base import GRAPHING_COMPILE_MODES, Pipeline
from pipelines.devices import cpu_name
from pipelines.full_size import build_full_size_latent_diffusion, build_full_size_unclip
from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_stable_unclip, build_tiny_unclip

PROMPT = "a red circle above a blue square"
SETTINGS = {
    "tiny": {
        "unclip": dict(prior_num_inference_steps=10, decoder_num_inference_steps=10, super_res_num_inference_steps=4),
        "latent_diffusion": dict(num_inference_steps=20, guidance_scale=7.5),
        "stable_unclip": dict(prior_num_inference_steps=10, num_inference_steps=20),
    },
    # the pipelines' own defaults (Karlo's 25/25/7, SD's 50 steps), SD at its 512 px; Stable unCLIP has no full-size
    # build yet: tiny only
    "full": {
        "unclip": Settings().pipeline_kwargs("unclip"),
        "latent_diffusion": Settings().pipeline_kwargs("latent_diffusion") | dict(height=512, width=512),
    },
}
# Dense fp16/bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, SXM parts.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "A10": 125.0}


@dataclass
class BenchResult:
    architecture: str
    ours_median_s: float
    diffusers_median_s: float
    ratio: float  # ours / diffusers: below 1 is faster
    max_abs_diff: float  # between ours and diffusers' images, same seed
    run_to_run_max_abs_diff: float  # between two of our own runs, same seed
    stage_median_s: dict[str, float]
    peak_memory_bytes: int
    memory_kind: str
    flops: int
    achieved_tflops: float
    peak_tflops: float | None
    repeats: int
    settings: dict
    speedups: list[dict] = field(default_factory=list)  # see add_speedup


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def wall(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds one call takes, the device's queued work included, and what it returned."""
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return time.perf_counter() - start, out


def interleaved(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int
) -> tuple[list[float], list[float], list]:
    """Wall times of both after one warm-up each (the order alternates every round), and our outputs."""
    ours(), theirs()
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    outputs = []
    for r in range(repeats):
        order = [("ours", ours), ("theirs", theirs)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            seconds, out = wall(fn)
            times[name].append(seconds)
            if name == "ours":
                outputs.append(out)
    return times["ours"], times["theirs"], outputs


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def runners(ours: Pipeline, theirs, settings: dict) -> tuple[Callable[[], PipelineOutput], Callable[[], np.ndarray]]:
    """One image from each pipeline, same prompt, seed and settings."""
    run_ours = lambda: ours(PROMPT, generator=_gen(), **settings)  # noqa: E731
    run_theirs = lambda: theirs(PROMPT, generator=_gen(), output_type="np", **settings).images  # noqa: E731
    return run_ours, run_theirs


def timings(run_ours: Callable[[], PipelineOutput], run_theirs: Callable[[], np.ndarray], repeats: int) -> dict:
    """Interleaved medians of both, the ratio, the images' difference, our stages and peak memory."""
    t_ours, t_theirs, outs = interleaved(run_ours, run_theirs, repeats)
    median = statistics.median(t_ours)
    return dict(
        ours_median_s=median,
        diffusers_median_s=statistics.median(t_theirs),
        ratio=median / statistics.median(t_theirs),
        max_abs_diff=float(np.abs(outs[-1].images - run_theirs()).max()),
        # Ours against ours: what of max_abs_diff is the device's own run-to-run noise (0 on a CPU).
        run_to_run_max_abs_diff=float(np.abs(outs[-1].images - outs[0].images).max()),
        stage_median_s={s.name: statistics.median(o.stage(s.name).seconds for o in outs) for s in outs[0].stages},
        peak_memory_bytes=max(s.peak_memory_bytes for o in outs for s in o.stages),
        memory_kind=outs[0].stages[0].memory_kind,
    )


def bench_one(name: str, ours: Pipeline, theirs, settings: dict, repeats: int) -> BenchResult:
    run_ours, run_theirs = runners(ours, theirs, settings)
    measured = timings(run_ours, run_theirs, repeats)
    flops = count_flops(run_ours)
    return BenchResult(
        architecture=name,
        **measured,
        flops=flops,
        achieved_tflops=flops / measured["ours_median_s"] / 1e12,
        peak_tflops=peak_tflops(ours.device),
        repeats=repeats,
        settings=settings,
    )


DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def build(full_size: bool, device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Pipeline]:
    """Full size: random weights in `dtype` (fp16 on CUDA, fp32 on CPU by default), Karlo and SD 1.5; tiny: fp32,
    and Stable unCLIP beside them."""
    if full_size:
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        return {
            "unclip": build_full_size_unclip(device=device, dtype=dtype),
            "latent_diffusion": build_full_size_latent_diffusion(device=device, dtype=dtype),
        }

    return {
        "unclip": build_tiny_unclip(0).to(device),
        "latent_diffusion": build_tiny_latent_diffusion(0).to(device),
        "stable_unclip": build_tiny_stable_unclip(0).to(device),
    }


def reference(name: str, pipe: Pipeline):
    """diffusers' pipeline of an architecture on the very modules of ours."""
    parts = pipe.components()
    if name == "unclip":
        return UnCLIPPipeline(**parts)
    if name == "latent_diffusion":
        return StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    # text to image takes no image encoder
    return StableUnCLIPPipeline(**{k: v for k, v in parts.items() if k not in ("image_encoder", "feature_extractor")})


def run_bench(
    full_size: bool, device: torch.device, repeats: int, dtype: torch.dtype | None = None
) -> tuple[dict, dict, dict]:
    """Ours against diffusers, eager, on the same components; returns the report, our pipelines and
    diffusers' (which share their modules, so a speed-up of ours is one of theirs too)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        torch.cuda.reset_peak_memory_stats(device)
    pipes = build(full_size, device, dtype)
    for pipe in pipes.values():
        pipe.optimize(channels_last=device.type == "cuda")
    refs = {name: reference(name, pipe) for name, pipe in pipes.items()}
    for ref in refs.values():
        ref.set_progress_bar_config(disable=True)  # a progress bar is not what we compare
    settings = SETTINGS["full" if full_size else "tiny"]
    results = [bench_one(name, pipe, refs[name], settings[name], repeats) for name, pipe in pipes.items()]
    report = {
        "size": "full" if full_size else "tiny",
        "device": str(device),
        "dtype": str(pipes["unclip"].dtype).removeprefix("torch."),
        "machine": machine(),
        "parameters": {name: pipe.parameter_counts() for name, pipe in pipes.items()},
        "results": [asdict(r) for r in results],
    }
    if device.type == "cuda":
        # Both pipelines' weights stay on the device throughout: this is the co-resident peak at batch 1.
        report["co_resident_peak_vram_bytes"] = torch.cuda.max_memory_allocated(device)
    return report, pipes, refs


@dataclass(frozen=True)
class Speedup:
    """A way of running the denoisers faster than eager: torch.compile, CUDA graphs, or both."""

    compile: bool
    compile_mode: str | None  # torch.compile's mode; None is its default
    cuda_graphs: bool  # our captured graphs (pipelines.cuda_graphs)

    @property
    def label(self) -> str:
        parts = [f"compile ({self.compile_mode or 'default'})"] if self.compile else []
        return " + ".join(parts + ["CUDA graphs"] * self.cuda_graphs)


def speedups(compile: bool, compile_mode: str | None, cuda_graphs: bool) -> list[Speedup]:
    """The passes the flags ask for, cheapest first: graphs alone take three eager calls per model
    to capture, compiling minutes. With both flags the compiled forward is captured in our graphs,
    unless the compile mode captures its own."""
    passes = [Speedup(False, None, True)] if cuda_graphs else []
    if compile:
        passes.append(Speedup(True, compile_mode, cuda_graphs and compile_mode not in GRAPHING_COMPILE_MODES))
    return passes


def add_speedup(report: dict, pipes: dict, refs: dict, name: str, speedup: Speedup, repeats: int) -> dict:
    """Time one architecture again, ours and diffusers', with `speedup` on the denoisers they share.

    The first call (compiling, capturing) is timed on its own; the medians exclude it. A failure is
    recorded and the next pass still runs: device time is scarce and the eager table is already saved.
    """
    result = next(r for r in report["results"] if r["architecture"] == name)
    pipe = pipes[name]
    entry: dict = {"label": speedup.label, **asdict(speedup)}
    try:
        pipe.optimize(
            channels_last=pipe.device.type == "cuda",
            compile=speedup.compile,
            compile_mode=speedup.compile_mode,
            cuda_graphs=speedup.cuda_graphs,
        )
        run_ours, run_theirs = runners(pipe, refs[name], result["settings"])
        entry["first_call_s"] = wall(run_ours)[0]
        entry |= timings(run_ours, run_theirs, repeats)
        entry["achieved_tflops"] = result["flops"] / entry["ours_median_s"] / 1e12
        entry["cuda_graphs_captured"] = pipe.cuda_graph_count()
    except Exception as err:  # noqa: BLE001 - recorded in the report, which says what failed
        entry["error"] = f"{type(err).__name__}: {err}"
        pipe.disable_cuda_graphs()
    result["speedups"].append(entry)
    return entry


def machine() -> dict[str, str]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "threads": str(torch.get_num_threads()),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
