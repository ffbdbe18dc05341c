"""How far an image made again can be from the one first made, measured across the CPU kernel paths this machine
can force: `python -m comparisons.bench --regeneration [--json FILE]` (benchmarks/regeneration_DATE.json).

One child process per kernel path (ATen's vectorised kernels by `ATEN_CPU_CAPABILITY`, oneDNN's by
`ONEDNN_MAX_CPU_ISA`, MKL's by `MKL_ENABLE_INSTRUCTIONS`: the three libraries a CPU call runs through, each capped
alone and all together as an AVX2-only or an SSE-only machine would run them). Each child makes the same images in
every way a row is made or made again: in one batch of four (as a sweep makes them), the batch once more, each image
alone (as `regenerate` makes one from its PNG), with two intra-op threads and with one (a comparison's architectures
side by side), eager and with the lab's CPU speed-ups. The parent then compares every image with every other image
of the same (prompt, seed): made the same way on the same path (exact?), and any two ways on any two paths (how
close?), in uint8 levels, the fraction of pixel values that differ, and PSNR. The close bound of
comparisons.regeneration is the largest difference found here.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from comparisons.bench.pipelines import machine
from comparisons.presets import FAST_CPU, load_models
from comparisons.regeneration import Difference, difference
from comparisons.settings import Settings
from pipelines.cpu_speed import CPUSpeed
from pipelines.outputs import to_uint8

KERNEL_PATHS: dict[str, dict[str, str]] = {
    "native": {},
    "ATen avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATen default": {"ATEN_CPU_CAPABILITY": "default"},
    "oneDNN AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN SSE41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "MKL AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "MKL SSE4_2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "an AVX2 machine": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    },
    "an SSE machine": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    },
}
PROMPTS = ["a red circle", "a blue square above a green cross", "a small yellow triangle", "a large green circle"]
SEEDS = [0, 1, 2, 3]
# (preset, settings): the tests' tiny calls (two steps a loop, guided) and each preset at the pipelines' defaults
CASES: dict[str, tuple[str, Settings]] = {
    "tiny, the tests' 2 steps": (
        "tiny",
        Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2, decoder_guidance=4.0, guidance=4.0),
    ),
    "tiny, default steps": ("tiny", Settings()),
    "lab, default steps": ("lab", Settings()),
}
SPEEDS = {"eager": CPUSpeed(), "lab speed-ups": FAST_CPU}


def _way(batch: bool, threads: int, speed: str) -> str:
    return f"{'batch' if batch else 'alone'}, {threads} thread{'s' * (threads > 1)}, {speed}"


def _ways(preset: str) -> list[tuple[str, CPUSpeed, bool, int]]:
    """(name, CPU speed-ups, in one batch, intra-op threads) of every way an image is made here."""
    speeds = SPEEDS if preset == "lab" else {"eager": CPUSpeed()}
    threads = sorted({1, torch.get_num_threads()})
    return [
        (_way(batch, t, speed), SPEEDS[speed], batch, t)
        for speed, batch, t in itertools.product(speeds, (True, False), threads)
    ]


AGAIN = "batch again"  # the eager batch at the process's threads, made a second time


def make_all(out: Path) -> None:
    """The child: every case's images made every way, saved as uint8 arrays in `out` (.npz) with what ran them."""
    arrays, meta = {}, {"capability": torch.backends.cpu.get_cpu_capability(), "ways": {}}
    default_threads = torch.get_num_threads()
    for case, (preset, settings) in CASES.items():
        pipes = load_models(preset, device="cpu", fast_cpu=False)
        ways = _ways(preset)
        meta["ways"][case] = [w[0] for w in ways]
        for architecture, pipe in pipes.items():
            kwargs = settings.pipeline_kwargs(architecture)
            for name, speed, batch, threads in ways:
                pipe.optimize_cpu(speed)
                torch.set_num_threads(threads)
                if batch:
                    images = pipe(PROMPTS, seed=SEEDS, **kwargs).images
                else:
                    images = np.concatenate([pipe([p], seed=[s], **kwargs).images for p, s in zip(PROMPTS, SEEDS)])
                arrays[f"{case}|{architecture}|{name}"] = to_uint8(images)
            pipe.optimize_cpu(CPUSpeed())
            torch.set_num_threads(default_threads)
            arrays[f"{case}|{architecture}|{AGAIN}"] = to_uint8(pipe(PROMPTS, seed=SEEDS, **kwargs).images)
    meta["again"] = _way(True, default_threads, "eager")
    np.savez_compressed(out, **arrays)
    out.with_suffix(".json").write_text(json.dumps(meta))


def _child(path: str, env: dict[str, str], out: Path) -> dict:
    """Run `make_all` in a fresh process on one kernel path (the variables are read when torch loads)."""
    code = "import sys; from pathlib import Path; from comparisons.bench.regeneration import make_all; "
    code += "make_all(Path(sys.argv[1]))"
    environ = {k: v for k, v in os.environ.items() if k not in {k for e in KERNEL_PATHS.values() for k in e}}
    subprocess.run([sys.executable, "-c", code, str(out)], env={**environ, **env}, check=True)
    meta = json.loads(out.with_suffix(".json").read_text())
    with np.load(out) as data:
        return meta | {"images": {k: data[k] for k in data.files}}


def _worst(diffs: list[Difference]) -> dict:
    return {
        "max_levels": max(d.max_levels for d in diffs),
        "max_fraction": max(d.fraction for d in diffs),
        "min_psnr_db": min(d.psnr for d in diffs),
        "pairs": len(diffs),
    }


def _diffs(a: np.ndarray, b: np.ndarray) -> list[Difference]:
    return [difference(x, y) for x, y in zip(a, b)]


def _images(child: dict, way: str, *, case: str, architecture: str) -> np.ndarray:
    return child["images"][f"{case}|{architecture}|{way}"]


def compare(children: dict[str, dict]) -> dict:
    """Per case and architecture: is the batch exact run to run on each path, how far apart are the ways on the
    native path (batch vs alone, threads, speed-ups), how far is each path from the native one, and any from any."""
    native = children["native"]
    results = {}
    for case, ways in native["ways"].items():
        for architecture in dict.fromkeys(k.split("|")[1] for k in native["images"] if k.startswith(f"{case}|")):
            images = functools.partial(_images, case=case, architecture=architecture)
            per_path = {
                name: _worst([d for w1 in ways for w2 in ways for d in _diffs(images(c, w1), images(native, w2))])
                for name, c in children.items()
                if name != "native"
            }
            every = [images(c, w) for c in children.values() for w in ways]
            results[f"{case}|{architecture}"] = {
                "case": case,
                "architecture": architecture,
                "exact_run_to_run": all(
                    np.array_equal(images(c, c["again"]), images(c, AGAIN)) for c in children.values()
                ),
                "one path, any two ways": _worst(
                    [
                        d
                        for w1, w2 in itertools.combinations(ways, 2)
                        for d in _diffs(images(native, w1), images(native, w2))
                    ]
                ),
                "per path, against native": per_path,
                "any two paths, any two ways": _worst(
                    [d for a, b in itertools.combinations(every, 2) for d in _diffs(a, b)]
                ),
            }
    return results


def run_regeneration() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        children = {}
        for name, env in KERNEL_PATHS.items():
            print(f"making images on kernel path {name} ...", flush=True)
            children[name] = _child(name, env, Path(tmp) / f"{len(children)}.npz")
    return {
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "kernel_paths": {n: {"env": e, "aten_capability": children[n]["capability"]} for n, e in KERNEL_PATHS.items()},
        "prompts": PROMPTS,
        "seeds": SEEDS,
        "cases": {c: {"preset": p, "settings": dict(s.items())} for c, (p, s) in CASES.items()},
        "results": list(compare(children).values()),
    }


def _cell(w: dict) -> str:
    return f"{w['max_levels']} levels, {w['max_fraction']:.2%}, PSNR {w['min_psnr_db']:.1f} dB"


def format_regeneration(report: dict) -> str:
    lines = [f"regeneration across kernel paths, {report['machine']['cpu']}, {report['date']}"]
    for r in report["results"]:
        lines.append(f"{r['case']}, {r['architecture']}: run to run exact: {r['exact_run_to_run']}")
        lines.append(f"  one path, any two ways: {_cell(r['one path, any two ways'])}")
        for name, w in r["per path, against native"].items():
            lines.append(f"  {name:<16} vs native: {_cell(w)}")
        lines.append(f"  any two paths, any two ways: {_cell(r['any two paths, any two ways'])}")
    return "\n".join(lines)
