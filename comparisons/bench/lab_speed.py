"""The lab preset's speed on the CPU, technique by technique (`python -m comparisons.bench --preset lab`).

One comparison is what the Compare tab runs: every architecture of the preset, one prompt, seed 0, their default
steps (unCLIP 25/25/7, latent diffusion 50, Stable unCLIP 25/20); the two-architecture rows time unCLIP and latent
diffusion alone, as the app compared before Stable unCLIP joined. Every mode below is timed in the same process,
after a warm-up call of each (which traces, when a mode traces), in interleaved rounds (the order of the modes
reverses every round), so drift in the machine's speed falls on all alike; medians. Each mode's images are compared
with eager's.

Then the whole compare request through the app's backend (`Compare.run`: every pipeline, the judge, the checker,
the PNGs, the run log), the default against eager, and a fresh process's start to its first image (importing the
app, loading the models, the first compare with its traces and memory pass).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from comparisons.app.compare import Compare
from comparisons.app.session import AppConfig, Session
from comparisons.bench.pipelines import PROMPT, machine
from comparisons.harness import workers
from comparisons.presets import FAST_CPU, load_models
from comparisons.schema import CONCURRENT, ISOLATED
from comparisons.settings import Settings
from pipelines import registry
from pipelines.cpu_speed import CPUSpeed
from pipelines.devices import cores
from pipelines.registry import TEXT

ROOT = Path(__file__).resolve().parent.parent.parent
EAGER = CPUSpeed()
TWO = ("unclip", "latent_diffusion")  # the comparison as it was before Stable unCLIP joined


@dataclass(frozen=True)
class Mode:
    """A way of running one comparison: the CPU speed-ups of each architecture, whether side by side, and of which
    architectures (None: all of the preset's)."""

    label: str
    speed: dict[str, CPUSpeed] | CPUSpeed  # architecture -> its speed-ups, or one for all
    concurrent: bool = False
    architectures: tuple[str, ...] | None = None

    def speed_of(self, architecture: str) -> CPUSpeed:
        return self.speed if isinstance(self.speed, CPUSpeed) else self.speed.get(architecture, EAGER)

    def of(self, pipes: dict) -> dict:
        return {a: p for a, p in pipes.items() if self.architectures is None or a in self.architectures}

    @property
    def measured(self) -> str:
        threads = torch.get_num_threads()
        return f"{CONCURRENT}, 1 thread each" if self.concurrent else f"{ISOLATED}, {threads} threads"


def modes() -> list[Mode]:
    """Eager, each technique alone, the default (what the lab preset runs with), and everything; then eager and the
    default on the two architectures alone."""
    return [
        Mode("eager", EAGER),
        Mode("traced denoisers", CPUSpeed(trace=True)),
        Mode("attention without inspect", CPUSpeed(fast_attention=True)),
        Mode("oneDNN off in LD's U-Net", {"latent_diffusion": CPUSpeed(onednn_off=("unet",))}),
        Mode("side by side, a core each", EAGER, concurrent=True),
        Mode("default (kept: traced + attention + side by side)", FAST_CPU, concurrent=True),
        Mode(
            "all, oneDNN off too",
            {
                "unclip": FAST_CPU,
                "latent_diffusion": replace(FAST_CPU, onednn_off=("unet",)),
                "stable_unclip": FAST_CPU,
            },
            concurrent=True,
        ),
        Mode("eager, two architectures", EAGER, architectures=TWO),
        Mode("default, two architectures", FAST_CPU, concurrent=True, architectures=TWO),
    ]


def baseline(mode: Mode) -> str:
    """The eager mode a mode's ratios are taken against: eager on the same architectures."""
    return "eager, two architectures" if mode.architectures == TWO else "eager"


# Why each technique is or is not in the default (FAST_CPU and Harness.make_each); the figures are this run's.
NOTES = {
    "traced denoisers": "kept: removes diffusers' Python and fuses each denoiser step; the images are eager's to "
    "the bit; ~1.5 s of tracing per denoiser and batch shape, paid once: traces are saved in T2I_CACHE/traces and "
    "the default comparison's are made or loaded while the models load, at its fewest steps; they run with "
    "TorchScript's re-optimising executor off, which cost ~3 s over the first four calls for no gain (inductor "
    "with freezing gained "
    "as much per step, 12.7 against 13.4 ms for the LD U-Net, but compiled for 40 s with a warm cache, 133 s cold: "
    "past the 15 s start budget, so not used)",
    "attention without inspect": "kept: the same processor call diffusers makes, without inspect.signature per call; "
    "it matters in eager models (the VAE, first calls), little once the denoisers are traced",
    "oneDNN off in LD's U-Net": "not kept: it helped the eager U-Net, not the traced one, and the switch is "
    "process-wide, so side by side it would change unCLIP's kernels while LD runs",
    "side by side, a core each": "kept where there are two cores or more: one intra-op thread runs these models about "
    "as fast as two, so the second core was idle; a third architecture on two cores takes the first core free "
    "(comparisons.harness.workers); rows say timing=concurrent",
}


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _one_thread_call(pipe, kwargs: dict):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pipe(PROMPT, generator=_gen(), **kwargs)
    finally:
        torch.set_num_threads(previous)


def comparison(pipes: dict, mode: Mode, pool: ThreadPoolExecutor, settings: Settings) -> tuple[float, dict]:
    """One comparison in `mode`: its wall seconds and each of its architectures' output."""
    pipes = mode.of(pipes)
    kwargs = {a: settings.pipeline_kwargs(a) for a in pipes}
    for a, pipe in pipes.items():
        pipe.optimize_cpu(mode.speed_of(a))
    start = time.perf_counter()
    if mode.concurrent:
        futures = {a: pool.submit(_one_thread_call, pipe, kwargs[a]) for a, pipe in pipes.items()}
        outputs = {a: f.result() for a, f in futures.items()}
    else:
        outputs = {a: pipe(PROMPT, generator=_gen(), **kwargs[a]) for a, pipe in pipes.items()}
    return time.perf_counter() - start, outputs


def bench_modes(pipes: dict, repeats: int, settings: Settings = Settings()) -> list[dict]:
    """Each mode's medians (seconds per comparison, `all_s`, and per architecture), ratios to eager on the same
    architectures, first call, images' largest difference to eager's."""
    all_modes = modes()
    pool = ThreadPoolExecutor(workers(len(pipes)))  # as Harness.make_each runs them
    first, reference = {}, {}
    for mode in all_modes:  # warm-up, and the first call's cost (tracing)
        first[mode.label], outputs = comparison(pipes, mode, pool, settings)
        reference = {a: o.images for a, o in outputs.items()} | reference
    times = {m.label: {"all": [], **{a: [] for a in m.of(pipes)}} for m in all_modes}
    diffs = dict.fromkeys(first, 0.0)
    for r in range(repeats):
        for mode in all_modes if r % 2 == 0 else all_modes[::-1]:
            seconds, outputs = comparison(pipes, mode, pool, settings)
            times[mode.label]["all"].append(seconds)
            for a, o in outputs.items():
                times[mode.label][a].append(o.total_seconds)
                diffs[mode.label] = max(diffs[mode.label], float(np.abs(o.images - reference[a]).max()))
    pool.shutdown()
    for pipe in pipes.values():
        pipe.optimize_cpu(EAGER)
    medians = {label: {k: statistics.median(v) for k, v in t.items()} for label, t in times.items()}
    rows = []
    for mode in all_modes:
        eager = medians[baseline(mode)]
        rows.append(
            {
                "technique": mode.label,
                "measured": mode.measured,
                "architectures": list(mode.of(pipes)),
                **{f"{k}_s": v for k, v in medians[mode.label].items()},
                **{f"{k}_ratio": v / eager[k] for k, v in medians[mode.label].items()},
                "first_comparison_s": first[mode.label],
                "max_abs_diff": diffs[mode.label],
                "note": NOTES.get(mode.label, ""),
            }
        )
    return rows


def bench_request(repeats: int) -> dict:
    """Compare.run (the Compare tab's backend, everything a request does) with the lab preset's default, and eager."""
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(AppConfig(results_dir=Path(tmp)))
        compare = Compare(session)
        harness = session.harness()
        default_concurrent = harness.concurrent
        settings = Settings()

        def set_mode(fast: bool) -> None:
            for pipe in harness.pipelines.values():
                pipe.optimize_cpu(FAST_CPU if fast else EAGER)
            harness.concurrent = fast and default_concurrent

        times: dict[str, list[float]] = {"default": [], "eager": []}
        for name in times:  # warm-up: traces, the memory pass of this configuration
            set_mode(name == "default")
            compare.run(PROMPT, 0, settings)
        for r in range(repeats):
            for name in list(times) if r % 2 == 0 else list(times)[::-1]:
                set_mode(name == "default")
                start = time.perf_counter()
                compare.run(PROMPT, 0, settings)
                times[name].append(time.perf_counter() - start)
        set_mode(True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "default_s": medians["default"],
        "eager_s": medians["eager"],
        "ratio": medians["default"] / medians["eager"],
        "default_concurrent": default_concurrent,
    }


def bench_api(repeats: int, timeout: float = 300) -> dict:
    """The compare request as a client sees it, as the issue measured it: `app.py` (the lab preset, its default) in a
    process of its own, `gradio_client` calling /compare at default settings; medians of `repeats` after two."""
    from gradio_client import Client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [sys.executable, "app.py", "--preset", "lab", "--results", tmp, "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    client = Client(f"http://127.0.0.1:{port}", verbose=False)
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the app did not start") from None
                    time.sleep(0.5)
            # the negative prompts (empty), the seed, then the Advanced widgets, each in the registry's order
            texts = ["" for s in registry.all_settings() if s.role == TEXT]
            values = [s.default for s in registry.all_settings() if s.role != TEXT]
            times = []
            for seed in range(repeats + 2):
                start = time.perf_counter()
                client.predict(PROMPT, *texts, str(seed), *values, api_name="/compare")
                times.append(time.perf_counter() - start)
        finally:
            server.terminate()
            server.wait(30)
    return {"default_s": statistics.median(times[2:]), "first_s": times[0]}


START_SCRIPT = """
import json, sys, tempfile, time
from pathlib import Path
import app
from comparisons.app import session as backend
from comparisons.app.backends import Backends
from comparisons.settings import Settings
marks = {"imports": time.time()}
if sys.argv[2] == "eager":  # the session loads its harness eager, one architecture at a time
    from functools import partial
    backend.load_harness = partial(backend.load_harness, fast_cpu=False)
session = backend.Session(backend.AppConfig(results_dir=Path(tempfile.mkdtemp())))
backends = Backends.of(session)
session.start_loading()
app.build_app(backends)
session.harness()  # waits for the loading thread: the models and their warm-up
marks["loaded"] = time.time()
backends.compare.run(sys.argv[1], 0, Settings())
marks["first_image"] = time.time()
print(json.dumps(marks))
"""
PHASES = ("imports", "loaded", "first_image")  # seconds from the process's start to: the app imported, the models
# loaded and warm (the UI built meanwhile), the first compared image
START_MODES = ("cold", "default", "eager")


def bench_start(mode: str, timeout: float = 300) -> dict[str, float] | None:
    """Seconds from starting a fresh Python to each of PHASES (imports, the UI built, models loaded with their
    warm-up, the first compare), with the lab preset's default or eager (`mode`); "cold": the default with an empty
    trace cache (a first start), else the cache as the runs before left it; None past `timeout`."""
    with tempfile.TemporaryDirectory() as empty:
        env = dict(os.environ)
        if mode == "cold":
            env["T2I_CACHE"] = empty  # the lab preset keeps only its traces there
        start = time.time()
        try:
            done = subprocess.run(
                [sys.executable, "-c", START_SCRIPT, PROMPT, "default" if mode == "cold" else mode],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return None
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    return {phase: marks[phase] - start for phase in PHASES}


def bench_starts(rounds: int = 3) -> dict[str, dict[str, float] | None]:
    """Each start mode's phases, medians of `rounds` interleaved fresh processes (a start varies with the host's
    state by a second or more, imports most)."""
    runs: dict[str, list] = {mode: [] for mode in START_MODES}
    for _ in range(rounds):
        for mode in START_MODES:
            runs[mode].append(bench_start(mode))
    out = {}
    for mode, done in runs.items():
        done = [d for d in done if d is not None]
        out[mode] = {p: statistics.median(d[p] for d in done) for p in PHASES} if done else None
    return out


def run_lab_speed(repeats: int) -> dict:
    pipes = load_models("lab", device="cpu", fast_cpu=False)
    return {
        "preset": "lab",
        "machine": machine() | {"cores": str(cores())},
        "settings": {a: Settings().pipeline_kwargs(a) for a in pipes},
        "repeats": repeats,
        "modes": bench_modes(pipes, repeats),
        "request": bench_request(repeats),
        "api_request": bench_api(repeats),
    } | start_report(bench_starts())


def start_report(starts: dict[str, dict[str, float] | None]) -> dict:
    """The JSON's start figures: each mode's seconds to its first image, and its phases."""
    return {
        "start_to_first_image_s": {m: None if p is None else p["first_image"] for m, p in starts.items()},
        "start_phases_s": starts,
    }


def _seconds(value: float | None) -> str:
    return "over 300 s" if value is None else f"{value:.1f} s"


def format_lab_speed(report: dict) -> str:
    """The report as the markdown table benchmarks/README.md shows, and the notes."""
    m = report["machine"]
    archs = [a for a in registry.names() if any(f"{a}_s" in r for r in report["modes"])]
    lines = [
        f"Lab preset, one prompt, default steps; {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}; "
        f"medians of {report['repeats']} interleaved rounds; `python -m comparisons.bench --preset lab`",
        "",
        "| technique | measured | "
        + " | ".join(f"{registry.get(a).short} s" for a in archs)
        + " | one comparison s | / eager | first comparison s | max abs diff |",
        "|---|---|" + "---|" * len(archs) + "---|---|---|---|",
    ]
    for r in report["modes"]:
        each = " | ".join(f"{r[f'{a}_s']:.3f} ({r[f'{a}_ratio']:.2f})" if f"{a}_s" in r else "-" for a in archs)
        lines.append(
            f"| {r['technique']} | {r['measured']} | {each} | {r['all_s']:.3f} | {r['all_ratio']:.2f} "
            f"| {r['first_comparison_s']:.1f} | {r['max_abs_diff']:.1e} |"
        )
    q, start = report["request"], {k: _seconds(v) for k, v in report["start_to_first_image_s"].items()}
    a = report.get("api_request")
    api = f"; through the app's API (gradio_client, app.py in its own process): {a['default_s']:.3f} s" if a else ""
    phases = report.get("start_phases_s", {}).get("default")
    within = (
        f" (imported at {phases['imports']:.1f} s, models loaded and warm at {phases['loaded']:.1f} s)"
        if phases
        else ""
    )
    lines += [
        "",
        f"Whole compare request (Compare.run: every pipeline, judge, checker, PNGs, run log): default "
        f"{q['default_s']:.3f} s, eager {q['eager_s']:.3f} s ({q['ratio']:.2f}){api}. A fresh process to its first "
        f"image (imports, UI, models and their warm-up, first compare; medians of 3): default {start['default']}"
        f"{within}; "
        f"a first start, empty trace cache: {start.get('cold', '-')}; eager {start['eager']}.",
        "",
    ]
    lines += [f"- {r['technique']}: {r['note']}" for r in report["modes"] if r["note"]]
    return "\n".join(lines)
