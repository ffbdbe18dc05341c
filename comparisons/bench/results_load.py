"""The Results tab at scale: `python -m comparisons.bench --results` builds run logs of 1,000, 10,000 and 100,000 rows
(synthetic rows whose images exist) and times what a visitor waits for, through `gradio_client` on `app.py` in a
process of its own: the tab's refresh (/results), a configuration's summary (/summary) and a page load (the page
and its load events); and, in this process, the backend's phases (reading the log, configurations, the summary,
the table, the gallery). A benchmark, not a timed test: read ratios of one run.

The rows: a few real comparisons of the lab preset (each architecture's rows, PNGs, stats), then copies of them with
new run ids, prompts and seeds, each copy's PNG a hard link to its original's (a file that exists, named as the
harness names it, at no disk cost).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gradio_client import Client

from comparisons.app.compare import Compare
from comparisons.app.session import AppConfig, Session
from comparisons.configurations import choices
from comparisons.settings import Settings
from comparisons.store import LOG_NAME, forget_reads, load_runs
from pipelines.devices import cores

ROOT = Path(__file__).resolve().parents[2]
SIZES = (1_000, 10_000, 100_000)
SEED_PROMPTS = ("a red circle above a blue square", "a green triangle", "a yellow cross", "a white diamond")
FAST = Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2, stable_unclip_prior_steps=2,
                stable_unclip_steps=2)  # fmt: skip


def seed_rows(directory: Path) -> list[dict]:
    """Real rows to copy: a lab comparison per seed prompt, logged in `directory`."""
    session = Session(AppConfig("lab", "cpu", directory))
    compare = Compare(session)
    for i, prompt in enumerate(SEED_PROMPTS):
        compare.run(prompt, str(i), FAST)
    return [json.loads(line) for line in (directory / LOG_NAME).read_text().splitlines()]


def build_log(directory: Path, n: int, rows: list[dict]) -> None:
    """`n` rows in `directory`'s run log: copies of `rows` with their own run ids, prompts, seeds and PNGs."""
    images = directory / "images"
    lines = []
    for i in range(n):
        row = dict(rows[i % len(rows)])
        source = Path(row["image_path"])
        run_id = f"{i // 3:012x}"
        row |= {"run_id": run_id, "seed": 1000 + i // len(rows), "prompt": f"{row['prompt']} #{i // len(rows)}"}
        target = images / row["architecture"] / f"{run_id}-{source.stem.split('-')[-1]}-{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(source, target)
        row["image_path"] = str(target)
        lines.append(json.dumps(row))
    (directory / LOG_NAME).write_text("\n".join(lines) + "\n")


def backend_phases(directory: Path) -> dict[str, float]:
    """Seconds of each phase of a refresh, in this process, on a fresh session (the log read cold, then warm)."""
    session = Session(AppConfig("lab", "cpu", directory))
    seconds = {}
    forget_reads()  # cold: as a fresh server reads it
    t = time.perf_counter()
    df = session.runs()
    seconds["read_log_cold_s"] = time.perf_counter() - t
    t = time.perf_counter()
    session.runs()
    seconds["read_log_again_s"] = time.perf_counter() - t
    t = time.perf_counter()
    choices(df)
    seconds["configurations_s"] = time.perf_counter() - t
    seconds["rows"] = len(df)
    return seconds


def _serve(port: int, results: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "app.py", "--preset", "lab", "--results", str(results), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _timed(fn, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "first_s": times[0]}


def served_phases(directory: Path, repeats: int, timeout: float = 300) -> dict[str, dict[str, float]]:
    """A visitor's waits on `app.py` serving `directory`: a page load, /results, /summary (medians of `repeats`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = _serve(port, directory)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                # files left on the server: a browser fetches the gallery's images itself, in parallel, after the
                # answer; gradio_client would fetch all 120 one by one and add ~3 s of its own to every refresh
                client = Client(url, verbose=False, download_files=False)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the app did not start") from None
                time.sleep(0.5)
        page = _timed(lambda: urllib.request.urlopen(url, timeout=60).read(), repeats)  # the page: no event runs
        loads = _timed(lambda: Client(url, verbose=False), repeats)  # the config and its load events, as a page
        results = _timed(lambda: client.predict("all", "", api_name="/results"), repeats)
        summary = _timed(lambda: client.predict("all", "", "", api_name="/summary"), repeats)
    finally:
        server.terminate()
        server.wait(30)
    return {"page": page, "client_connect": loads, "results": results, "summary": summary}


def run_results_load(sizes: tuple[int, ...] = SIZES, repeats: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        rows = seed_rows(Path(tmp) / "seed")
        report = {
            "date": datetime.date.today().isoformat(),
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": cores()},
            "sizes": {},
        }
        for n in sizes:
            directory = Path(tmp) / f"log{n}"
            directory.mkdir()
            for arch in {r["architecture"] for r in rows}:  # the seed rows' PNGs, where the copies link to
                (directory / "images" / arch).mkdir(parents=True, exist_ok=True)
            build_log(directory, n, rows)
            assert len(load_runs(directory)) == n
            report["sizes"][str(n)] = {"backend": backend_phases(directory)} | served_phases(directory, repeats)
    return report


def format_results_load(report: dict) -> str:
    lines = [
        f"The Results tab at scale ({report['machine']['cores']} cores, {report['date']}); medians, seconds",
        "| rows | page | /results | /summary | log read cold / again | configurations |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in report["sizes"].items():
        b = r["backend"]
        lines.append(
            f"| {int(n):,} | {r['page']['median_s']:.3f} | {r['results']['median_s']:.3f} | "
            f"{r['summary']['median_s']:.3f} | {b['read_log_cold_s']:.3f} / {b['read_log_again_s']:.3f} | "
            f"{b['configurations_s']:.3f} |"
        )
    return "\n".join(lines)
