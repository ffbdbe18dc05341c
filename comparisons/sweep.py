"""Sweeps: prompts × seeds × settings through both architectures, batched, resumable, multi-process.

    python -m comparisons.sweep --prompts FILE --seeds 0-9 --steps 10,25 --guidance 4,8 --out DIR [--grid FILE.png]
    accelerate launch --multi_gpu --num_processes 2 -m comparisons.sweep ...   # split over processes / GPUs / nodes

`--steps` sets each architecture's main denoising steps (latent diffusion's U-Net; unCLIP's prior
and decoder), `--guidance` its main guidance (latent diffusion's; unCLIP's decoder); the other
stages keep their Karlo/SD defaults unless given (`--super-res-steps`, `--prior-guidance`).
Grid points with the same architecture and settings are batched into one pipeline call. Every
finished batch is appended to the run log at once, so a killed sweep, run again with the same
command, skips what is done and never writes a row twice. `--grid` draws the whole grid's images, those an earlier
run made included, as one PNG at the end (comparisons.grid).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from comparisons.grid import AXES, Grid, GridSpec, draw_grid
from comparisons.harness import new_run_id
from comparisons.presets import DEFAULT_PRESET, load_harness
from comparisons.records import digest_of, key_digest, row_key
from comparisons.schema import VISITOR
from comparisons.settings import Settings, add_setting_flags, from_flags
from comparisons.store import load_runs
from pipelines import registry
from pipelines.hub import download_bars
from pipelines.tokenizer import excerpt

MAX_PROMPTS = 10_000  # a bigger grid is a mistake more often than a plan: split the file
MAX_PROMPT_FILE_BYTES = 10 * 2**20
MAX_SEEDS = 100_000
MAX_JOBS = 1_000_000  # images in one sweep: a grid is built in memory before it runs


def _swept() -> tuple[str, ...]:
    return tuple(n for a in registry.ARCHITECTURES.values() for n in (*a.sweep_steps, *a.sweep_guidance))


@dataclass(frozen=True)
class Job:
    """One image to make."""

    architecture: str
    settings: Settings
    prompt: str
    seed: int

    @property
    def key(self) -> str:
        """What identifies this image in the log, for resuming (records.row_key)."""
        return row_key(self.architecture, self.prompt, self.seed, self.settings)


# ----------------------------------------------------------------------------- parsing (all checks before any work)


def read_prompts(path: str | Path) -> list[str]:
    """Non-blank, non-comment lines of a UTF-8 text file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {path} does not exist or is not a file")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise ValueError(f"prompt file {path} is over {MAX_PROMPT_FILE_BYTES // 2**20} MiB: split it")
    data = path.read_bytes()
    if b"\0" in data:
        raise ValueError(f"prompt file {path} is binary (it holds NUL bytes), not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"prompt file {path} is not UTF-8 (byte {err.start}): save it as UTF-8") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"prompt file {path} has no prompts (blank lines and # comments are skipped)")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"prompt file {path} has {len(prompts)} prompts; at most {MAX_PROMPTS} per sweep")
    return prompts


def parse_seeds(text: str) -> list[int]:
    """ "0-9" (inclusive), "1,5,7", or a mix: "0-3,10"."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            start, end = int(lo), int(hi if sep else lo)
        except ValueError:
            raise ValueError(f"seeds {excerpt(text)}: {excerpt(part)} is not a number or a range like 0-9") from None
        if start < 0 or end >= 2**63:
            raise ValueError(f"seeds {excerpt(text)}: seeds are whole numbers from 0 to {2**63 - 1:,}")
        if end < start:
            raise ValueError(f"seeds {excerpt(text)}: range {excerpt(part)} runs backwards; write {end}-{start}")
        if end - start + 1 + len(seeds) > MAX_SEEDS:
            raise ValueError(f"seeds {excerpt(text)}: more than {MAX_SEEDS} seeds")
        seeds.extend(range(start, end + 1))
    return list(dict.fromkeys(seeds))


def parse_values(text: str, kind: type, field: str) -> list:
    """Comma-separated whole numbers (`kind` int) or numbers (float), each once; `field` names where they were typed
    for the errors: a flag ("--steps") or a widget ("Steps")."""
    what = "whole numbers" if kind is int else "numbers"
    try:
        values = [_whole(v) if kind is int else float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{field} {excerpt(text)}: expected {what} separated by commas") from None
    if not values:
        raise ValueError(f"{field} is empty: give one or more {what} separated by commas")
    return list(dict.fromkeys(values))


def _whole(text: str) -> int:
    """A whole number as typed: "25", or "25.0"; never "1.5"."""
    number = float(text)
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


def parse_architectures(text: str) -> list[str]:
    return [registry.get(a.strip()).name for a in text.split(",") if a.strip()]


def check_out_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {path}: cannot create it ({err.strerror})") from None
    probe = path / f".write-test-{os.getpid()}"
    try:  # a real write: permission bits say nothing to root, a read-only mount says no to everyone
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out {path} is not writable ({err.strerror})") from None
    return path


# ----------------------------------------------------------------------------- the jobs: the product of the axes


def plan_jobs(
    prompts: list[str],
    seeds: list[int],
    steps: list[int],
    guidance: list[float],
    architectures: list[str],
    base: Settings,
    max_jobs: int = MAX_JOBS,
    bigger: str = "split the grid",
) -> list[Job]:
    """Every (architecture, steps, guidance, prompt, seed) once: a prompt or seed given twice is one job. Counted,
    and refused past `max_jobs`, before any job is built."""
    prompts, seeds = list(dict.fromkeys(prompts)), list(dict.fromkeys(seeds))
    architectures = [registry.get(a).name for a in dict.fromkeys(architectures)]
    if not architectures:
        raise ValueError("pick at least one architecture")
    count = len(architectures) * len(steps) * len(guidance) * len(prompts) * len(seeds)
    if count > max_jobs:
        raise ValueError(f"the sweep asks for {count:,} images; at most {max_jobs:,} at once ({bigger})")
    jobs = []
    for arch in architectures:
        for n_steps in steps:
            for scale in guidance:
                settings = base.with_sweep_values(arch, n_steps, scale)
                jobs += [Job(arch, settings, p, s) for p in prompts for s in seeds]
    for settings in dict.fromkeys(job.settings for job in jobs):  # the pipelines would check too, but mid-sweep
        settings.checked()
    return jobs


def batches(jobs: list[Job], batch_size: int) -> Iterator[list[Job]]:
    """Jobs of the same architecture and settings, `batch_size` at a time, in grid order."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.architecture, job.settings), []).append(job)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


def pending(harness, jobs: list[Job], visitor: str | None = None) -> list[Job]:
    """The jobs whose rows are not in the harness's log yet (all of them without a log); with a `visitor`, whose
    rows of that visitor's are not (on a public app each visitor's sweep makes its own)."""
    if harness.log is None:
        return list(jobs)
    if visitor is None:
        done = harness.log.done_keys(("sweep_key",))
        return [j for j in jobs if (j.key,) not in done]
    done = harness.log.done_keys(("sweep_key", VISITOR))
    return [j for j in jobs if (j.key, visitor) not in done]


def unlogged_images(harness, jobs: list[Job]) -> list[Path]:
    """PNGs and temp files of these jobs that no row of the log points to: what a sweep killed between
    writing a batch's images and logging its rows left behind. The rerun makes those images again."""
    if harness.log is None:
        return []
    digests = {(j.architecture, key_digest(j.key)) for j in jobs}
    logged = {str(Path(p).resolve()) for p in harness.log.load().get("image_path", pd.Series(dtype=str)).dropna()}
    found = []
    for architecture in {j.architecture for j in jobs}:
        folder = harness.image_dir(architecture)
        for path in folder.iterdir() if folder.is_dir() else ():
            if (architecture, digest_of(path.name)) in digests and str(path.resolve()) not in logged:
                found.append(path)
    return found


def grid_spec(jobs: list[Job], rows: str = "prompt", columns: str = "seed", run_id: str | None = None) -> GridSpec:
    """What a sweep's grid picture covers: its jobs' values on every axis, in the order the sweep was given them."""
    if not jobs:
        raise ValueError("the sweep has no jobs: nothing to draw a grid of")
    main = [(registry.get(j.architecture), j.settings) for j in jobs]
    swept = set(_swept())
    return GridSpec(
        prompts=tuple(dict.fromkeys(j.prompt for j in jobs)),
        seeds=tuple(dict.fromkeys(j.seed for j in jobs)),
        steps=tuple(dict.fromkeys(s.value(a.sweep_steps[0]) for a, s in main)),
        guidance=tuple(dict.fromkeys(s.value(a.sweep_guidance[0]) for a, s in main)),
        architectures=tuple(dict.fromkeys(j.architecture for j in jobs)),
        rows=rows,
        columns=columns,
        run_id=run_id,
        settings={name: value for name, value in jobs[0].settings.items() if name not in swept},
    )


def rows_of(df: pd.DataFrame, jobs: list[Job]) -> pd.DataFrame:
    """The log's rows of these jobs, whichever run made them (a resumed sweep's earlier rows too)."""
    if df.empty or "sweep_key" not in df.columns:
        return df.iloc[:0]
    return df[df["sweep_key"].isin({j.key for j in jobs})]


def check_grid_path(path: Path) -> Path:
    """A PNG path whose folder exists or can be made: checked before the sweep, not after it."""
    if path.suffix.lower() != ".png":
        raise ValueError(f"--grid {path}: the grid is a PNG, name it FILE.png")
    if path.is_dir():
        raise ValueError(f"--grid {path} is a directory, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--grid {path}: cannot create its folder ({err.strerror})") from None
    return path


def make_batch(harness, batch: list[Job], run_id: str, visitor: str = ""):
    """One pipeline call for a batch of jobs of one architecture and settings (`batches`'), scored, not yet written:
    a comparisons.harness.Made whose rows carry each job's resume key (and who asked, on a public app)."""
    first = batch[0]
    return harness.make(
        first.architecture,
        [j.prompt for j in batch],
        [j.seed for j in batch],
        first.settings,
        run_id=run_id,
        extra_columns=[{"sweep_key": j.key} for j in batch],
        visitor=visitor,
    )


def run_sweep(
    harness,
    jobs: list[Job],
    batch_size: int,
    progress: bool = True,
    *,
    run_id: str | None = None,
    lock: AbstractContextManager | None = None,
    on_batch: Callable[[list[dict]], None] | None = None,
) -> int:
    """Make every job not yet in the log; returns how many images were made. All rows share `run_id`
    (a new one by default); `lock` is held around each batch (the app's device lock), and `on_batch`
    receives each batch's rows once they are logged. Images a killed run of these jobs left without
    rows are removed first, under the lock, so no writer of the same folder is between image and row."""
    from tqdm.auto import tqdm

    todo = pending(harness, jobs)
    with lock or contextlib.nullcontext():
        for path in unlogged_images(harness, todo):
            path.unlink(missing_ok=True)
    run_id = run_id or new_run_id()
    made = 0
    with tqdm(total=len(todo), desc="sweep", unit="img", disable=not progress) as bar:
        for batch in batches(todo, batch_size):
            with lock or contextlib.nullcontext():
                rows = harness.save(make_batch(harness, batch, run_id))
            made += len(batch)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(rows)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", required=True, help="UTF-8 text file, one prompt per line (# comments)")
    parser.add_argument("--seeds", default="0", help="e.g. 0-9 or 1,5,7")
    parser.add_argument("--steps", default="25", help="comma-separated, e.g. 10,25")
    parser.add_argument("--guidance", default="7.5", help="comma-separated, e.g. 4,8")
    parser.add_argument("--architectures", default=",".join(registry.names()))
    add_setting_flags(parser, skip=_swept())  # the settings --steps and --guidance do not set
    parser.add_argument("--batch-size", type=int, default=8, help="images per pipeline call")
    parser.add_argument("--preset", default=None, help="lab (default), tiny or pretrained")
    parser.add_argument("--device", default=None, help="default: the process's accelerate device")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grid", type=Path, help="at the end, draw the sweep's grid picture here (a .png)")
    parser.add_argument("--grid-rows", default="prompt", choices=AXES, help="the grid's rows (default prompt)")
    parser.add_argument("--grid-columns", default="seed", choices=AXES, help="the grid's columns (default seed)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay the denoisers from CUDA graphs (GPU only)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ValueError("--batch-size must be >= 1")
        prompts = read_prompts(args.prompts)
        seeds = parse_seeds(args.seeds)
        base = from_flags(args, skip=_swept())
        jobs = plan_jobs(
            prompts,
            seeds,
            parse_values(args.steps, int, "--steps"),
            parse_values(args.guidance, float, "--guidance"),
            parse_architectures(args.architectures),
            base,
        )
        out = check_out_dir(args.out)
        if args.grid is not None:
            grid_spec(jobs, args.grid_rows, args.grid_columns)  # bad axes, or a picture too big, stop it now
            check_grid_path(args.grid)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import torch
    from accelerate import PartialState

    # On CPUs (`accelerate launch --multi_gpu --num_processes N ... --device cpu`), accelerate's
    # multi-process state needs cpu=True to join the processes with gloo instead of NCCL.
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    device = args.device or str(state.device)
    show = not args.no_progress and state.is_local_main_process  # one process draws the bars
    try:
        harness = load_harness(
            args.preset or DEFAULT_PRESET,
            device=device,
            out_dir=out,
            cuda_graphs=args.cuda_graphs,
            progress=download_bars() if show else None,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Every process takes its share of the grid and appends to the one log, which admits one
    # writer at a time: the parts merge as they land, with nothing lost or duplicated.
    with state.split_between_processes(jobs) as mine:
        made = run_sweep(harness, mine, args.batch_size, progress=show)
    state.wait_for_everyone()
    print(f"process {state.process_index}: made {made} of its {len(mine)} images; log: {out / 'runs.jsonl'}")
    if args.grid is not None and state.is_main_process:
        picture = write_grid(out, jobs, args.grid, args.grid_rows, args.grid_columns)
        print(f"grid: {picture.made} of {picture.spec.tiles} images, {args.grid}")
    return 0


def write_grid(out: Path, jobs: list[Job], path: Path, rows: str = "prompt", columns: str = "seed") -> Grid:
    """The sweep's grid picture, drawn from the rows its log holds for these jobs and saved at `path`; its run id is
    the newest run's that made them."""

    df = rows_of(load_runs(out), jobs)
    run_ids = list(dict.fromkeys(df["run_id"].dropna())) if "run_id" in df.columns else []
    grid = draw_grid(df, grid_spec(jobs, rows, columns, run_id=run_ids[-1] if run_ids else None))
    grid.save(path)
    return grid


if __name__ == "__main__":
    sys.exit(main())
