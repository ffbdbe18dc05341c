"""A public app under load, as strangers load it: `app.py --public` (the lab preset) in a process of its own, N
visitors (`gradio_client`, a session each) asking /compare at default settings at once, first alone and then while
one more visitor's background sweep runs; the latency of every compare request, its median and 95th percentile.

The device runs one model call at a time (the Compare tab's queue and a sweep's batches share its lock), so a
request's latency is mostly its wait behind the others: about N × one comparison at worst, plus the sweep's batch
under way. A benchmark, not a timed test: these hosts differ in speed about 2x, so read the ratios of one run.
"""

from __future__ import annotations

import datetime
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradio_client import Client

from pipelines import registry
from pipelines.devices import cores
from pipelines.registry import TEXT

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ("a red circle above a blue square", "a green triangle", "a yellow cross to the left of a white diamond")
SWEEP = ("a red circle\na blue square\na green cross\na white diamond", "0-49", "25", "7.5")  # 200 images each


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _serve(port: int, results: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "app.py", "--preset", "lab", "--public", "--results", results, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _client(url: str, server: subprocess.Popen, timeout: float) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - not listening yet
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the app did not start") from None
            time.sleep(0.5)


def _visitors(url: str, visitors: int, requests: int) -> list[float]:
    """Each visitor's `requests` compares one after the other, all visitors at once: every request's seconds."""
    texts = ["" for s in registry.all_settings() if s.role == TEXT]
    values = [s.default for s in registry.all_settings() if s.role != TEXT]
    clients = [Client(url, verbose=False) for _ in range(visitors)]
    start = threading.Barrier(visitors)

    def visit(i: int) -> list[float]:
        start.wait()
        seconds = []
        for k in range(requests):
            began = time.perf_counter()
            clients[i].predict(PROMPTS[i % len(PROMPTS)], *texts, str(1000 * i + k), *values, api_name="/compare")
            seconds.append(time.perf_counter() - began)
        return seconds

    with ThreadPoolExecutor(visitors) as pool:
        return [s for one in pool.map(visit, range(visitors)) for s in one]


def _summary(seconds: list[float]) -> dict:
    return {
        "requests": len(seconds),
        "median_s": statistics.median(seconds),
        "p95_s": _percentile(seconds, 0.95),
        "max_s": max(seconds),
    }


def run_public_load(visitors: int = 20, requests: int = 3, timeout: float = 300) -> dict:
    """The figures: compare latencies with `visitors` at once, alone and beside one visitor's sweep."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = _serve(port, tmp)
        try:
            warm = _client(url, server, timeout)
            _visitors(url, 1, 2)  # the first requests pay the app's own warm-up
            alone = _visitors(url, visitors, requests)
            sweeper = warm
            status, *_ = sweeper.predict(*SWEEP, list(registry.names()), "prompt", "seed", api_name="/sweep")
            if "running" not in status:
                raise RuntimeError(f"the sweep did not start: {status}")
            during = _visitors(url, visitors, requests)
            progress, *_ = sweeper.predict("prompt", "seed", api_name="/sweep_progress")
            sweeper.predict("prompt", "seed", api_name="/cancel_sweep")
        finally:
            server.terminate()
            server.wait(30)
    return {
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": cores()},
        "visitors": visitors,
        "requests_per_visitor": requests,
        "compare": "lab preset, default settings, one prompt and seed per request",
        "alone": _summary(alone),
        "beside_a_sweep": _summary(during) | {"sweep_then": progress},
    }


def format_public_load(report: dict) -> str:
    lines = [
        f"A public app: {report['visitors']} visitors x {report['requests_per_visitor']} compare requests at once "
        f"({report['machine']['cores']} cores, {report['date']})",
        "| | requests | median | p95 | max |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("alone", "visitors only"), ("beside_a_sweep", "while one visitor sweeps")):
        r = report[name]
        lines.append(
            f"| {label} | {r['requests']} | {r['median_s']:.2f} s | {r['p95_s']:.2f} s | {r['max_s']:.2f} s |"
        )
    lines.append(f"sweep by the end: {report['beside_a_sweep']['sweep_then']}")
    return "\n".join(lines)
