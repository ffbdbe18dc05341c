"""Benchmark: our pipelines against diffusers' on identical components and settings.

    python -m comparisons.bench [--repeats 7] [--json FILE]                  # tiny models, CPU
    python -m comparisons.bench --full-size --device cuda [--compile] [--json FILE]

Tiny: the seeded tiny components of `pipelines.tiny`. Full size: Karlo and SD 1.5 built from
their configs with random weights (`pipelines.full_size`), fp16 on CUDA, both co-resident on the
device; SD at 512², 50 steps, batch 1; Karlo at 25/25/7 steps. Runs are interleaved (ours,
theirs, theirs, ours, ...) after a warm-up of each, so drift in the machine's speed falls on both
sides alike. Reported per architecture: medians and the ratio ours/diffusers, seconds per stage,
peak memory, FLOPs counted with `torch.utils.flop_counter` and the achieved TFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
import transformers
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline
from torch.utils.flop_counter import FlopCounterMode

from comparisons.presets import DEFAULT_PRESET, pick_device
from pipelines import LatentDiffusion, PipelineOutput, UnCLIP

PROMPT = "a red circle above a blue square"
SETTINGS = {
    "tiny": {
        "unclip": dict(prior_num_inference_steps=10, decoder_num_inference_steps=10, super_res_num_inference_steps=4),
        "latent_diffusion": dict(num_inference_steps=20, guidance_scale=7.5),
    },
    "full": {
        "unclip": dict(prior_num_inference_steps=25, decoder_num_inference_steps=25, super_res_num_inference_steps=7),
        "latent_diffusion": dict(num_inference_steps=50, guidance_scale=7.5, height=512, width=512),
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
    stage_median_s: dict[str, float]
    peak_memory_bytes: int
    memory_kind: str
    flops: int
    achieved_tflops: float
    peak_tflops: float | None
    repeats: int
    settings: dict
    compiled_median_s: float | None = None
    compile_first_call_s: float | None = None
    extra: dict = field(default_factory=dict)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(ours: Callable[[], object], theirs: Callable[[], object], repeats: int) -> tuple[list[float], list[float], list]:
    """Wall times of both after one warm-up each (the order alternates every round), and our outputs."""
    ours(), theirs()
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    outputs = []
    for r in range(repeats):
        order = [("ours", ours), ("theirs", theirs)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            _sync()
            start = time.perf_counter()
            out = fn()
            _sync()
            times[name].append(time.perf_counter() - start)
            if name == "ours":
                outputs.append(out)
    return times["ours"], times["theirs"], outputs


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(first-call seconds, median of `repeats` later calls): for compiled models."""
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    first = time.perf_counter() - start
    fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_one(name: str, ours: UnCLIP | LatentDiffusion, theirs, settings: dict, repeats: int) -> BenchResult:
    run_ours: Callable[[], PipelineOutput] = lambda: ours(PROMPT, generator=_gen(), **settings)  # noqa: E731
    run_theirs = lambda: theirs(PROMPT, generator=_gen(), output_type="np", **settings).images  # noqa: E731
    t_ours, t_theirs, outs = interleaved(run_ours, run_theirs, repeats)
    diff = float(np.abs(outs[-1].images - run_theirs()).max())
    stages = {s.name: statistics.median(o.stage(s.name).seconds for o in outs) for s in outs[0].stages}
    flops = count_flops(run_ours)
    median = statistics.median(t_ours)
    return BenchResult(
        architecture=name, ours_median_s=median, diffusers_median_s=statistics.median(t_theirs),
        ratio=median / statistics.median(t_theirs), max_abs_diff=diff, stage_median_s=stages,
        peak_memory_bytes=max(s.peak_memory_bytes for o in outs for s in o.stages), memory_kind=outs[0].stages[0].memory_kind,
        flops=flops, achieved_tflops=flops / median / 1e12, peak_tflops=peak_tflops(ours.device), repeats=repeats,
        settings=settings,
    )


DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def build(full_size: bool, device: torch.device, dtype: torch.dtype | None = None) -> tuple[UnCLIP, LatentDiffusion]:
    """Full size: random weights in `dtype` (fp16 on CUDA, fp32 on CPU by default); tiny: fp32."""
    if full_size:
        from pipelines.full_size import build_full_size_latent_diffusion, build_full_size_unclip

        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        return build_full_size_unclip(device=device, dtype=dtype), build_full_size_latent_diffusion(device=device, dtype=dtype)
    from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_unclip

    return build_tiny_unclip(0).to(device), build_tiny_latent_diffusion(0).to(device)


def run_bench(full_size: bool, device: torch.device, repeats: int,
              dtype: torch.dtype | None = None) -> tuple[dict, dict[str, UnCLIP | LatentDiffusion]]:
    """Ours against diffusers, eager, on the same components; returns the report and our pipelines."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        torch.cuda.reset_peak_memory_stats(device)
    unclip, ld = build(full_size, device, dtype)
    pipes = {"unclip": unclip, "latent_diffusion": ld}
    for pipe in pipes.values():
        pipe.optimize(channels_last=device.type == "cuda")
    refs = {
        "unclip": UnCLIPPipeline(**unclip.components()),
        "latent_diffusion": StableDiffusionPipeline(**ld.components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False),
    }
    for ref in refs.values():
        ref.set_progress_bar_config(disable=True)  # a progress bar is not what we compare
    settings = SETTINGS["full" if full_size else "tiny"]
    results = [bench_one(name, pipe, refs[name], settings[name], repeats) for name, pipe in pipes.items()]
    report = {"size": "full" if full_size else "tiny", "device": str(device), "dtype": str(unclip.dtype).removeprefix("torch."),
              "machine": machine(), "parameters": {name: pipe.parameter_counts() for name, pipe in pipes.items()},
              "results": [asdict(r) for r in results]}
    if device.type == "cuda":
        # Both pipelines' weights stay on the device throughout: this is the co-resident peak at batch 1.
        report["co_resident_peak_vram_bytes"] = torch.cuda.max_memory_allocated(device)
    return report, pipes


def add_compiled(report: dict, pipes: dict[str, UnCLIP | LatentDiffusion], name: str, repeats: int, mode: str | None) -> None:
    """Time one architecture again with torch.compile'd denoisers (the first call compiles)."""
    result = next(r for r in report["results"] if r["architecture"] == name)
    pipe = pipes[name]
    pipe.optimize(channels_last=pipe.device.type == "cuda", compile=True, compile_mode=mode)
    first, median = timed(lambda: pipe(PROMPT, generator=_gen(), **result["settings"]), repeats)
    result["compile_first_call_s"], result["compiled_median_s"] = first, median
    result["extra"]["compile_mode"] = mode or "default"


def bench_sweep(device: torch.device, preset: str = DEFAULT_PRESET, n_prompts: int = 8, n_seeds: int = 2, batch_size: int = 16) -> dict:
    """Images/s of a batched sweep against a naive loop (one call per prompt and seed), both through
    the full harness (judge scores, checker, PNGs, run log), same models, grid and settings."""
    import tempfile
    from pathlib import Path

    from comparisons.harness import Harness
    from comparisons.metrics import load_judge
    from comparisons.presets import get_preset, load_models
    from comparisons.records import Settings
    from comparisons.store import RunLog
    from comparisons.sweep import grid, read_prompts, run_sweep

    prompts = read_prompts(Path(__file__).resolve().parent.parent / "lab" / "prompts" / "heldout_two.txt")[:n_prompts]
    s = SETTINGS["tiny"]
    jobs = grid(prompts, list(range(n_seeds)), [s["latent_diffusion"]["num_inference_steps"]], [s["latent_diffusion"]["guidance_scale"]],
                ["unclip", "latent_diffusion"], Settings(super_res_steps=s["unclip"]["super_res_num_inference_steps"]))
    pipes, config = load_models(preset, device=str(device)), get_preset(preset)
    judge = load_judge(config.judge, device)
    with tempfile.TemporaryDirectory() as tmp:
        def harness(name: str) -> Harness:
            return Harness(*pipes, judge=judge, out_dir=Path(tmp) / name, use_checker=config.use_checker, log=RunLog(Path(tmp) / name))

        run_sweep(harness("warm-up"), jobs[:2] + jobs[-2:], batch_size=2, progress=False)
        naive = harness("naive")
        _sync()
        start = time.perf_counter()
        for job in jobs:
            naive.generate(job.architecture, [job.prompt], [job.seed], job.settings)
        _sync()
        naive_s = time.perf_counter() - start
        start = time.perf_counter()
        run_sweep(harness("batched"), jobs, batch_size=batch_size, progress=False)
        _sync()
        batched_s = time.perf_counter() - start
    return {"preset": preset, "images": len(jobs), "batch_size": batch_size, "naive_images_per_s": len(jobs) / naive_s,
            "batched_images_per_s": len(jobs) / batched_s, "speedup": naive_s / batched_s}


def machine() -> dict[str, str]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": str(torch.get_num_threads()), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [f"{report['size']} models on {m.get('gpu', m['cpu'])} ({report['device']}, {report['dtype']}), {m['date']}, torch {m['torch']}",
             f"{'architecture':<18}{'ours s':>9}{'diffusers s':>13}{'ratio':>7}{'max |Δ|':>10}{'peak MB':>10}{'TFLOP/s':>9}{'compiled s':>12}"]
    for r in report["results"]:
        compiled = f"{r['compiled_median_s']:.3f}" if r["compiled_median_s"] is not None else "-"
        lines.append(f"{r['architecture']:<18}{r['ours_median_s']:>9.3f}{r['diffusers_median_s']:>13.3f}{r['ratio']:>7.2f}"
                     f"{r['max_abs_diff']:>10.1e}{r['peak_memory_bytes'] / 2**20:>10.0f}{r['achieved_tflops']:>9.2f}{compiled:>12}")
    for r in report["results"]:
        lines.append(f"  {r['architecture']} stages (median s): " + ", ".join(f"{k} {v:.3f}" for k, v in r["stage_median_s"].items()))
    if "sweep" in report:
        sw = report["sweep"]
        lines.append(f"sweep of {sw['images']} images ({sw['preset']} preset): batched (batch {sw['batch_size']}) {sw['batched_images_per_s']:.2f} img/s, "
                     f"naive loop {sw['naive_images_per_s']:.2f} img/s: {sw['speedup']:.1f}x")
    if "co_resident_peak_vram_bytes" in report:
        lines.append(f"both co-resident, batch 1: peak VRAM {report['co_resident_peak_vram_bytes'] / 2**30:.2f} GiB")
    return "\n".join(lines)


def write(report: dict, json_file: str | None) -> None:
    print(format_report(report), flush=True)
    if json_file:
        with open(json_file, "w") as f:
            json.dump(report, f, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="Karlo and SD 1.5 at real size (random weights)")
    parser.add_argument("--compile", action="store_true", help="also time our pipelines with torch.compile'd denoisers")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="full size only (default: float16 on CUDA, float32 on CPU)")
    parser.add_argument("--sweep-preset", default=DEFAULT_PRESET, help="models of the sweep measurement (default: %(default)s)")
    parser.add_argument("--json", dest="json_file", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    transformers.logging.disable_progress_bar()
    if args.dtype and not args.full_size:
        parser.error("--dtype applies to --full-size (the tiny models run in float32)")
    report, pipes = run_bench(args.full_size, pick_device(args.device), args.repeats, DTYPES.get(args.dtype))
    if not args.full_size:
        report["sweep"] = bench_sweep(pick_device(args.device), args.sweep_preset)
    write(report, args.json_file)
    # Compiled timings come after the eager table is safe on disk: compiling can take minutes.
    for name in pipes if args.compile else ():
        add_compiled(report, pipes, name, args.repeats, args.compile_mode)
        write(report, args.json_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
