"""Benchmarks: `python -m comparisons.bench [--repeats 7] [--json FILE]` (tiny models on the CPU, then sweep
throughput), `--full-size --device cuda [--cuda-graphs] [--compile [--compile-mode M]]` (Karlo and SD 1.5 at real
size), `--soak N` (the served app over N requests), `--preset lab` (the lab's CPU speed-ups, technique by technique),
`--regeneration` (how far an image made again is from its PNG, across CPU kernel paths), `--public-load N` (N visitors
of a public app comparing at once, alone and beside a sweep), `--results` (the Results tab at up to 100,000 rows).
Methods and results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import transformers

from comparisons.bench.lab_speed import format_lab_speed, run_lab_speed
from comparisons.bench.pipelines import DTYPES, add_speedup, run_bench, speedups
from comparisons.bench.public_load import format_public_load, run_public_load
from comparisons.bench.regeneration import format_regeneration, run_regeneration
from comparisons.bench.results_load import format_results_load, run_results_load
from comparisons.bench.soak import soak
from comparisons.bench.sweep import bench_sweep
from comparisons.presets import DEFAULT_PRESET
from pipelines.devices import pick_device

ROOT = Path(__file__).resolve().parent.parent.parent


def _stages(medians: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in medians.items())


def _speedup_line(sp: dict) -> str:
    if "error" in sp:
        return f"FAILED {sp['error']}"
    return (
        f"ours {sp['ours_median_s']:.3f} s, diffusers {sp['diffusers_median_s']:.3f} s, ratio {sp['ratio']:.2f}, "
        f"{sp['achieved_tflops']:.1f} TFLOP/s, max |Δ| {sp['max_abs_diff']:.1e}, "
        f"peak {sp['peak_memory_bytes'] / 2**20:.0f} MB, first call {sp['first_call_s']:.1f} s; "
        f"stages {_stages(sp['stage_median_s'])}"
    )


def format_report(report: dict) -> str:
    m = report["machine"]
    where = f"{m.get('gpu', m['cpu'])} ({report['device']}, {report['dtype']})"
    header = ("architecture", "ours s", "diffusers s", "ratio", "max |Δ|", "run |Δ|", "peak MB", "TFLOP/s")
    widths = (18, 9, 13, 7, 10, 10, 10, 9)
    lines = [
        f"{report['size']} models on {where}, {m['date']}, torch {m['torch']}",
        f"{header[0]:<18}" + "".join(f"{h:>{w}}" for h, w in zip(header[1:], widths[1:])),
    ]
    for r in report["results"]:
        lines.append(
            f"{r['architecture']:<18}{r['ours_median_s']:>9.3f}{r['diffusers_median_s']:>13.3f}{r['ratio']:>7.2f}"
            f"{r['max_abs_diff']:>10.1e}{r['run_to_run_max_abs_diff']:>10.1e}{r['peak_memory_bytes'] / 2**20:>10.0f}"
            f"{r['achieved_tflops']:>9.2f}"
        )
    for r in report["results"]:
        lines.append(f"  {r['architecture']} stages (median s): {_stages(r['stage_median_s'])}")
        lines += [f"  {r['architecture']} with {sp['label']}: {_speedup_line(sp)}" for sp in r["speedups"]]
    if "sweep" in report:
        sw = report["sweep"]
        lines.append(
            f"sweep of {sw['images']} images ({sw['preset']} preset): batched (batch {sw['batch_size']}) "
            f"{sw['batched_images_per_s']:.2f} img/s, naive loop {sw['naive_images_per_s']:.2f} img/s: "
            f"{sw['speedup']:.1f}x"
        )
    if "co_resident_peak_vram_bytes" in report:
        lines.append(f"both co-resident, batch 1: peak VRAM {report['co_resident_peak_vram_bytes'] / 2**30:.2f} GiB")
    return "\n".join(lines)


def write(report: dict, json_file: str | None) -> None:
    print(format_report(report), flush=True)
    if json_file:
        # Whole or not at all: a time limit may kill the bench in the middle of a later pass.
        tmp = f"{json_file}.partial"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, json_file)


def lab_speed(repeats: int, json_file: str | None) -> int:

    transformers.logging.disable_progress_bar()
    report = run_lab_speed(repeats)
    print(format_lab_speed(report), flush=True)
    path = Path(json_file or ROOT / "benchmarks" / f"lab_cpu_speed_{report['machine']['date']}.json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def public_load(visitors: int, requests: int, json_file: str | None) -> int:
    report = run_public_load(visitors, requests)
    print(format_public_load(report), flush=True)
    path = Path(json_file or ROOT / "benchmarks" / f"public_load_{report['date']}.json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def results_load(repeats: int, json_file: str | None) -> int:
    report = run_results_load(repeats=repeats)
    print(format_results_load(report), flush=True)
    path = Path(json_file or ROOT / "benchmarks" / f"results_load_{report['date']}.json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def regeneration(json_file: str | None) -> int:

    transformers.logging.disable_progress_bar()
    report = run_regeneration()
    print(format_regeneration(report), flush=True)
    path = Path(json_file or ROOT / "benchmarks" / f"regeneration_{report['date']}.json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks of our pipelines, sweeps and the served app.")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (default: 7; 5 with --preset lab)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="Karlo and SD 1.5 at real size (random weights)")
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="also time both with the denoisers replayed from CUDA graphs"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time both with torch.compile'd denoisers (captured in "
        "CUDA graphs with --cuda-graphs, unless the mode captures its own)",
    )
    parser.add_argument(
        "--compile-mode", default=None, help="torch.compile mode, e.g. reduce-overhead or max-autotune-no-cudagraphs"
    )
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), help="full size only (default: float16 on CUDA, float32 on CPU)"
    )
    parser.add_argument(
        "--sweep-preset", default=DEFAULT_PRESET, help="models of the sweep measurement (default: %(default)s)"
    )
    parser.add_argument("--json", dest="json_file", help="also write the figures to this file")
    parser.add_argument(
        "--soak",
        type=int,
        metavar="N",
        help="instead: N compare requests to the served app (lab preset), "
        "its memory, open files and threads before and after (comparisons.bench.soak)",
    )
    parser.add_argument(
        "--soak-fast", action="store_true", help="soak requests of two steps a stage, not the defaults"
    )
    parser.add_argument(
        "--preset",
        choices=["lab"],
        help="instead: the lab preset's CPU speed-ups, each alone and together, and the whole compare request "
        "(comparisons.bench.lab_speed; --json defaults to benchmarks/lab_cpu_speed_DATE.json, --repeats to 5)",
    )
    parser.add_argument(
        "--public-load",
        type=int,
        metavar="N",
        help="instead: N visitors of a public app (app.py --public, the lab preset) comparing at once, alone and "
        "while one more sweeps; each request's latency (comparisons.bench.public_load; --repeats: requests per "
        "visitor, default 3; --json defaults to benchmarks/public_load_DATE.json)",
    )
    parser.add_argument(
        "--results",
        action="store_true",
        help="instead: the Results tab at 1,000, 10,000 and 100,000 rows, its refresh, summary and a page load "
        "through gradio_client (comparisons.bench.results_load; --repeats default 3; --json defaults to "
        "benchmarks/results_load_DATE.json)",
    )
    parser.add_argument(
        "--regeneration",
        action="store_true",
        help="instead: how far an image made again is from its PNG, across every CPU kernel path this machine can "
        "force (comparisons.bench.regeneration; --json defaults to benchmarks/regeneration_DATE.json)",
    )
    args = parser.parse_args(argv)
    if args.regeneration:
        return regeneration(args.json_file)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.preset == "lab":
        return lab_speed(args.repeats or 5, args.json_file)
    if args.results:
        return results_load(args.repeats or 3, args.json_file)
    if args.public_load is not None:
        if args.public_load < 1:
            parser.error("--public-load must be >= 1")
        return public_load(args.public_load, args.repeats or 3, args.json_file)
    args.repeats = args.repeats or 7
    if args.soak is not None:
        if args.soak < 1:
            parser.error("--soak must be >= 1")
        report = soak(args.soak, args.sweep_preset, fast=args.soak_fast)
        print(report.format())
        if args.json_file:
            Path(args.json_file).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        return 0
    transformers.logging.disable_progress_bar()
    if args.dtype and not args.full_size:
        parser.error("--dtype applies to --full-size (the tiny models run in float32)")
    try:
        device = pick_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    passes = speedups(args.compile, args.compile_mode, args.cuda_graphs)
    if args.cuda_graphs and device.type != "cuda":
        parser.error("--cuda-graphs needs --device cuda")
    report, pipes, refs = run_bench(args.full_size, device, args.repeats, DTYPES.get(args.dtype))
    if not args.full_size:
        report["sweep"] = bench_sweep(device, args.sweep_preset)
    write(report, args.json_file)
    # The sped-up timings come after the eager table is safe on disk: compiling can take minutes.
    for speedup in passes:
        # Fewest denoisers to compile or capture first, so a time limit cuts the longest pass.
        for name in sorted(pipes, key=lambda n: len(pipes[n].denoiser_names)):
            add_speedup(report, pipes, refs, name, speedup, args.repeats)
            write(report, args.json_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
