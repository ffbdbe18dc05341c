"""The Sweep tab's backend: a grid of prompts × seeds × steps × guidance for the chosen architectures, planned
against the run log (only what it lacks is made), made in batches and logged as they land, with its grid picture.

Off ZeroGPU the batches run in a background thread (`start`); on ZeroGPU, where GPU work runs only in decorated
calls, the tab's handler runs `steps` itself with a decorated `make_sweep_batch`. Either way each batch is made
(GPU work, nothing written: it may run in a forked worker) and then recorded here in the serving process.

The grid picture is drawn by comparisons.grid as batches land, a PNG in the results folder (the one place the app
serves files from) carrying the sweep's parameters. The tab polls each second: a grid is drawn again only when a
batch has landed or the axes change, since its file is named by the sweep, the axes and the images done, and an
earlier one of the same sweep and axes is removed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from comparisons.app.access import OWNER
from comparisons.app.inputs import example_prompts, parse_prompt, parse_text
from comparisons.app.session import Session
from comparisons.app.views import TABLE_COLUMNS
from comparisons.grid import draw_grid
from comparisons.harness import Made, new_run_id
from comparisons.settings import Settings
from comparisons.sweep import (
    Job,
    batches,
    grid_spec,
    make_batch,
    parse_seeds,
    parse_values,
    pending,
    plan_jobs,
    rows_of,
    unlogged_images,
)
from pipelines import registry

MAX_SWEEP_IMAGES = 2_000  # per background sweep from the app; the CLI takes bigger grids
GRIDS = "grids"  # the results folder's grid pictures


@dataclass
class SweepStatus:
    """Where the background sweep stands; `run_id` tags its rows in the log."""

    run_id: str
    total: int  # images of the whole grid
    done: int = 0  # of them in the log: made before this run, and by it so far
    running: bool = True
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    jobs: tuple[Job, ...] = ()  # the whole grid, made or not: what its picture covers
    before: int = 0  # of them already in the log when it started (a rerun makes only the rest)
    cancelled: bool = False  # asked to stop: it stops before its next batch
    visitor: str = OWNER  # whose sweep it is (on a public app each visitor has their own)

    def message(self) -> str:
        elapsed, made = time.monotonic() - self.started, self.done - self.before
        head = f"sweep {self.run_id}: {self.done}/{self.total} images"
        earlier = f", {self.before} of them already in the log" if self.before else ""
        if self.before == self.total:
            return (
                f"{head}: all were in the log already, so nothing was made "
                "(other prompts, seeds, steps or guidance would be)"
            )
        if self.error:
            return f"{head} ({made} made by this run{earlier}), {elapsed:.0f} s, failed: {self.error}"
        if self.cancelled and not self.running:
            return (
                f"{head}: cancelled after {made} of its {self.total - self.before} new images{earlier}; "
                "run the same sweep again to make the rest"
            )
        state = "cancelling after this batch" if self.cancelled else "running" if self.running else "finished"
        return f"{head} ({made} made by this run{earlier}), {elapsed:.0f} s, {state}"


class Sweep:
    """The tab's backend: each visitor's sweep now (`status_of`; on loopback the one visitor's, `status`), its
    batches, its grid picture. On a public app the sweeps running at once are capped, all visitors together."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._sweeps: dict[str, SweepStatus] = {}  # visitor -> their latest sweep
        self._threads: dict[str, threading.Thread] = {}
        self._rows: dict[str, tuple[tuple, pd.DataFrame]] = {}  # visitor -> (sweep state it was read at, rows)
        self._lock = threading.Lock()  # counting the sweeps running and starting one are one step
        session.hold(self._running)  # no model switch under a running sweep

    @property
    def status(self) -> SweepStatus | None:
        """The owner's sweep (on loopback, every request's), None before the first."""
        return self._sweeps.get(OWNER)

    def status_of(self, visitor: str = OWNER) -> SweepStatus | None:
        return self._sweeps.get(visitor)

    def running(self) -> int:
        """Sweeps running now, every visitor's."""
        return sum(s.running for s in self._sweeps.values())

    def _running(self) -> str | None:
        if self.running():
            return "a sweep is running on these models: switch when it has finished"
        return None

    def examples(self, n: int = 4) -> list[str]:
        """Example prompts that fit the models loaded now: the tab's first grid."""
        return example_prompts(self.session.config.preset, n)

    def plan(
        self,
        prompts_text: str | None,
        seeds_text: str | None,
        steps_text: str | None,
        guidance_text: str | None,
        architectures: list[str] | None,
        base: Settings = Settings(),
        batch_size: int = 8,
        visitor: str = OWNER,
    ) -> tuple[SweepStatus, list[list[Job]]]:
        """Check the whole grid and split what the log lacks of it into batches (one GPU call each): the sweep's
        status, and its batches. Images a killed run of the grid left without rows are removed first."""
        mine = self._sweeps.get(visitor)
        if mine is not None and mine.running:
            raise ValueError(f"a sweep is already running ({mine.message()}); wait for it to finish")
        prompts = [parse_prompt(line) for line in (prompts_text or "").splitlines() if line.strip()]
        if not prompts:
            raise ValueError("the sweep has no prompts: write one per line")
        if not isinstance(architectures, (list, tuple)) or not architectures:
            raise ValueError("pick at least one architecture")
        jobs = plan_jobs(
            prompts,
            parse_seeds(parse_text(seeds_text, "seeds")),
            parse_values(parse_text(steps_text, "steps"), int, "Steps"),
            parse_values(parse_text(guidance_text, "guidance"), float, "Guidance"),
            list(architectures),
            base,
            max_jobs=MAX_SWEEP_IMAGES,
            bigger="`python -m comparisons.sweep` takes bigger grids",
        )
        harness = self.session.harness()
        self.session.check_room()
        with self._lock:
            access = self.session.config.access
            if access.public and self.running() >= access.limits.background_sweeps:
                raise ValueError(
                    f"Sweeps: {self.running()} running on this public app, its owner's limit at once; "
                    "try again when it has finished."
                )
            self.session.fair_use(visitor, "sweep", "Sweeps")
            todo = pending(harness, jobs, self.session.own(visitor))
            with self.session.device_lock:  # no other writer is between an image and its row
                for path in unlogged_images(harness, todo):
                    path.unlink(missing_ok=True)
            before = len(jobs) - len(todo)
            status = SweepStatus(new_run_id(), len(jobs), before, jobs=tuple(jobs), before=before, visitor=visitor)
            self._sweeps[visitor] = status
        return status, list(batches(todo, batch_size))

    def start(
        self,
        prompts_text: str | None,
        seeds_text: str | None,
        steps_text: str | None,
        guidance_text: str | None,
        architectures: list[str] | None,
        base: Settings = Settings(),
        batch_size: int = 8,
        visitor: str = OWNER,
    ) -> SweepStatus:
        """`plan`, then its batches in a background thread; rows land in the run log as batches finish.
        (Not on ZeroGPU, where GPU work runs only in decorated calls: the tab runs `steps` itself.)"""
        status, todo = self.plan(
            prompts_text, seeds_text, steps_text, guidance_text, architectures, base, batch_size, visitor
        )
        thread = threading.Thread(target=_drain, args=(self.steps(status, todo),), daemon=True)
        self._threads[visitor] = thread
        thread.start()
        return status

    def steps(
        self, status: SweepStatus, todo: list[list[Job]], make: Callable[[list[Job], str, str], Made] | None = None
    ) -> Iterator[SweepStatus]:
        """Each batch made by `make` (default `make_sweep_batch`; on ZeroGPU a decorated call of it), then recorded
        here in the serving process; yields the status after each batch. A full results folder (a public app's cap)
        stops it before the batch it has no room for."""
        make = make or self.make_sweep_batch
        try:
            for batch in todo:
                if status.cancelled:
                    break
                self.session.check_room()
                made = make(batch, status.run_id, status.visitor)
                status.done += len(self.record_batch(made))
                yield status
        except Exception as err:  # shown in the Sweep screen; the app keeps serving
            status.error = f"{type(err).__name__}: {err}"
        finally:
            status.running = False
        yield status  # finished, or failed

    def make_sweep_batch(self, batch: list[Job], run_id: str, visitor: str = OWNER) -> Made:
        """GPU work: one batch of a sweep (same architecture and settings), generated and scored, nothing written."""
        with self.session.gpu_turn(background=True):  # after any request a person waits on
            return make_batch(self.session.harness(), batch, run_id, visitor).portable()

    def record_batch(self, made: Made) -> list[dict]:
        with self.session.device_lock.background():  # no other writer between an image and its row, nor a request
            return self.session.harness().save(made)

    def cancel(self, visitor: str = OWNER) -> SweepStatus:
        """Stop the visitor's running sweep before its next batch (the batch under way is kept whole)."""
        status = self._sweeps.get(visitor)
        if status is None or not status.running:
            raise ValueError("no sweep of yours is running" if visitor != OWNER else "no sweep is running")
        status.cancelled = True
        return status

    def wait(self, timeout: float | None = None) -> None:
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def rows(self, visitor: str = OWNER) -> pd.DataFrame:
        """The sweep's rows; the log is read again only when a batch has landed (the tab polls each second)."""
        status = self._sweeps.get(visitor)
        if status is None:
            return pd.DataFrame(columns=list(TABLE_COLUMNS))
        key = (status.run_id, status.done, status.running)
        cached = self._rows.get(visitor)
        if cached is None or cached[0] != key:
            df = self.session.runs(visitor)
            cached = self._rows[visitor] = key, df[df["run_id"] == status.run_id] if not df.empty else df
        return cached[1]

    def picture(
        self, rows: str | None = "prompt", columns: str | None = "seed", visitor: str = OWNER
    ) -> tuple[Path | None, str]:
        """The sweep as a grid PNG (rows × columns; placeholders for images not made yet) and a line saying what it
        shows; (None, why) when there is no sweep or the axes cannot make a grid."""
        status = self._sweeps.get(visitor)
        if status is None or not status.jobs:
            return None, "No sweep yet: its grid fills in here as batches land."
        try:
            spec = grid_spec(list(status.jobs), rows or "prompt", columns or "seed", run_id=status.run_id)
        except ValueError as err:
            return None, f"No grid: {err}."
        folder = self.session.results_dir / GRIDS
        stem = f"{status.run_id}-{spec.rows}-by-{spec.columns}"
        path = folder / f"{stem}-{status.done}.png"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            draw_grid(rows_of(self.session.runs(visitor), list(status.jobs)), spec).save(path)
            for old in folder.glob(f"{stem}-*.png"):
                if old != path:
                    old.unlink(missing_ok=True)
        n_rows, n_columns = spec.shape
        names = " | ".join(registry.get(a).short for a in spec.architectures)
        to_come = "; grey cells are still to come" if status.done < status.total else ""
        return path, (
            f"Grid of sweep {status.run_id}: {n_rows} row{'s' * (n_rows != 1)} ({spec.rows}) × {n_columns} "
            f"column{'s' * (n_columns != 1)} "
            f"({', '.join(spec.column_axes)}), each cell {names}; {status.done}/{status.total} images made{to_come}."
        )


def _drain(steps: Iterator) -> None:
    for _ in steps:
        pass
