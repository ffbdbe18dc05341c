"""A soak of the served app: does it leak memory, files or threads over many requests?

`python -m comparisons.bench --soak N` starts `app.py` in a process of its own on loopback, sends one
compare request to load the models, reads the server's resident memory, open files and threads, sends N
sequential compare requests through gradio_client, and reads them again.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from comparisons.presets import get_preset
from pipelines import registry
from pipelines.registry import STEPS, TEXT

ROOT = Path(__file__).resolve().parent.parent.parent
PROMPT = "a red circle above a blue square"


def compare_inputs(preset: str, seed: int, fast: bool) -> list:
    """The /compare endpoint's inputs after the prompt, as the Compare tab sends them: the text settings (empty),
    the seed, then every number at its default (with `fast`, two steps a denoising loop)."""
    settings = [s for a in get_preset(preset).models for s in registry.get(a).settings]
    numbers = [2 if fast and s.role == STEPS else s.default for s in settings if s.role != TEXT]
    return [*("" for s in settings if s.role == TEXT), str(seed), *numbers]


@dataclass(frozen=True)
class Resources:
    rss_mb: float
    open_files: int  # file descriptors: files, sockets and pipes
    threads: int

    @classmethod
    def of(cls, process: psutil.Process) -> Resources:
        return cls(process.memory_info().rss / 2**20, process.num_fds(), process.num_threads())


@dataclass(frozen=True)
class SoakReport:
    requests: int
    preset: str
    before: Resources  # after the first request, which loads the models
    after: Resources
    median_request_s: float
    total_s: float

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        b, a = self.before, self.after
        return (
            f"soak: {self.requests} compare requests ({self.preset} preset), median {self.median_request_s:.2f} s, "
            f"{self.total_s:.0f} s in all\n"
            f"  server RSS {b.rss_mb:,.0f} -> {a.rss_mb:,.0f} MB ({a.rss_mb - b.rss_mb:+.0f}), open files "
            f"{b.open_files} -> {a.open_files}, threads {b.threads} -> {a.threads}"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_served(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode} before it served a page")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the app did not serve {url} within {timeout:.0f} s")


def soak(requests: int, preset: str = "lab", fast: bool = False, timeout: float = 120.0) -> SoakReport:
    """N sequential compare requests to a fresh server; its resources after the first request and after the last."""
    from gradio_client import Client

    if requests < 1:
        raise ValueError(f"a soak needs at least one request, got {requests}")
    port = _free_port()
    with tempfile.TemporaryDirectory() as results:
        server = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "app.py"),
                "--preset",
                preset,
                "--device",
                "cpu",
                "--port",
                str(port),
                "--results",
                results,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_until_served(url, server, timeout)
            client = Client(url, verbose=False)
            client.predict(PROMPT, *compare_inputs(preset, 0, fast), api_name="/compare")
            process = psutil.Process(server.pid)
            before, times = Resources.of(process), []
            start = time.perf_counter()
            for i in range(requests):
                t = time.perf_counter()
                client.predict(PROMPT, *compare_inputs(preset, i + 1, fast), api_name="/compare")
                times.append(time.perf_counter() - t)
            total = time.perf_counter() - start
            time.sleep(1.0)  # let the last request's sockets and worker finish closing
            after = Resources.of(process)
            client.close()
        finally:
            server.terminate()
            server.wait(30)
    return SoakReport(requests, preset, before, after, statistics.median(times), total)
