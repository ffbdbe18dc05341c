"""What the app does, without the app: one `Session` per server process loads a preset (or any models) in the
background, switches models without a restart, runs comparisons one at a time on the device, runs sweeps,
explains a generation, and serves the run log as tables, summaries, plot data and exports.

Gradio-free, so that tests call every handler directly and `app.py` stays layout and wiring.
Every method checks its raw widget values and raises `ValueError` with a message for the user.

GPU work and bookkeeping are apart, as ZeroGPU needs: `make_compare`, `explain` and `make_sweep_batch` (and the
latent-space walks, `latent_tools.LatentSpace`) may run in a forked worker (`spaces.GPU`), so they change nothing in
the session and return all they made (CPU tensors, images, rows); `record` and `record_sweep_batch` then write the
PNGs and the run log in the serving process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from comparisons.app.image_in import ImageIn
from comparisons.app.inputs import parse_prompt, parse_seed, parse_text, shown, vocabulary_notice
from comparisons.app.views import TABLE_COLUMNS
from comparisons.app.work import steps_done, throttled, total_steps
from comparisons.concurrent import make_each
from comparisons.exports import export_csv, export_parquet
from comparisons.harness import Harness, Made, new_run_id
from comparisons.presets import (
    DEFAULT_PRESET,
    PRESETS,
    ROOT,
    check_judge,
    get_preset,
    load_harness,
    load_problem,
    model_sources,
)
from comparisons.settings import Settings
from comparisons.store import LOG_NAME, load_runs
from comparisons.sweep import Job, batches, grid, make_batch, parse_seeds, parse_values, pending, unlogged_images
from pipelines import registry
from pipelines.outputs import StepCallback, StepState
from pipelines.tokenizer import truncation_messages

MAX_SWEEP_IMAGES = 2_000  # per background sweep from the app; the CLI takes bigger grids
Progress = Callable[[float, str], None]  # (fraction done, what is running)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppConfig:
    """How the app runs (the CLI flags and environment variables of app.py)."""

    preset: str = DEFAULT_PRESET  # comparisons.presets name
    device: str = "auto"  # cpu, cuda, ... (auto: cuda if present)
    results_dir: Path = Path("results")  # run log, images and exports: the only folder the app serves files from
    models: dict[str, str] = field(default_factory=dict)  # architecture -> hub id or directory, over the preset's
    judge: str | None = None  # a comparisons.metrics.load_judge name, over the preset's
    zero_gpu: bool = False  # on a ZeroGPU Space: models fixed at start, sweeps as a sequence of GPU calls

    @property
    def sources(self) -> dict[str, str]:
        """Architecture -> the hub id or directory its model comes from."""
        return model_sources(self.preset, self.models)


# ----------------------------------------------------------------------------- results


def filter_runs(df: pd.DataFrame, architecture: str | None = None, prompt_contains: str | None = None) -> pd.DataFrame:
    if architecture and architecture != "all":
        df = df[df["architecture"] == architecture]
    if prompt_contains:
        df = df[df["prompt"].str.contains(prompt_contains, case=False, regex=False)]
    return df


# ----------------------------------------------------------------------------- background sweeps


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


# ----------------------------------------------------------------------------- the session


class Session:
    """One per app process: the harness (loaded in the background, switched on request), one device lock, sweeps."""

    def __init__(self, config: AppConfig = AppConfig()) -> None:
        get_preset(config.preset)  # unknown presets and models fail at start, not at the first click
        config.sources
        check_judge(config.judge)
        self.config = config
        self.results_dir = config.results_dir.resolve()
        self._harness: Harness | None = None
        self._load_error: str | None = None
        self._loading = threading.Lock()
        self._load_started: float | None = None
        self._downloads: dict[str, tuple[int, int]] = {}  # repo id -> (bytes done, bytes to fetch)
        self.device_lock = threading.Lock()  # GPU work one call at a time, app requests and sweep batches alike
        self.sweep: SweepStatus | None = None
        self._sweep_thread: threading.Thread | None = None
        self._sweep_rows: tuple[tuple, pd.DataFrame] | None = None  # (sweep state it was read at, rows)
        self.image_in = ImageIn(self)  # the "Image in" tab's backend (comparisons.app.image_in)

    @property
    def architectures(self) -> tuple[str, ...]:
        """The architectures of the models chosen, in the order the screens show them (known before any loads)."""
        return tuple(self.config.sources)

    # ---- loading and switching models
    def describe_models(self) -> str:
        """What each architecture runs, and the judge: `unCLIP lab/weights/unclip · ... · judge lab`."""
        models = " · ".join(f"{registry.get(a).short} `{_shown(src)}`" for a, src in self.config.sources.items())
        return f"{models} · judge `{self.config.judge or get_preset(self.config.preset).judge}`"

    def status(self) -> str:
        name = f"**{self.config.preset}**" + (" + custom models" if self.config.models else "")
        if self._harness is not None:
            first = next(iter(self._harness.pipelines.values()))
            caveat = get_preset(self.config.preset).caveat
            caveat = f"  \n*The {self.config.preset} preset: {caveat}.*" if caveat and not self.config.models else ""
            return f"{name} loaded on {first.device} ({first.dtype}): {self.describe_models()}{caveat}"
        if self._load_error:
            return f"{name} could not load: {self._load_error}. The lab preset needs no download and no GPU."
        if self._load_started is not None:
            elapsed = time.monotonic() - self._load_started
            bars = "".join(
                f" · {repo} {done / 1e9:.2f} / {total / 1e9:.2f} GB" for repo, (done, total) in self._downloads.items()
            )
            return f"loading {name}… {elapsed:.0f} s{bars}"
        return f"{name}: loads on first use ({self.describe_models()})"

    @property
    def settled(self) -> bool:
        """Loaded, or failed to load: the status line stops changing."""
        return self._harness is not None or self._load_error is not None

    @property
    def load_failed(self) -> bool:
        return self._load_error is not None

    def start_loading(self) -> None:
        """Load in the background (the status line shows it and its downloads); requests wait for it."""
        self._load_started = time.monotonic()  # the status line says "loading" from now, not "loads on first use"
        threading.Thread(target=self._try_load, daemon=True).start()

    def _try_load(self) -> None:
        try:
            self.harness()
        except ValueError:
            pass  # kept in _load_error for the status line and the next request

    def _downloaded(self, repo_id: str, done: int, total: int) -> None:
        self._downloads[repo_id] = (done, total)

    def harness(self) -> Harness:
        """The loaded models, loading them first if need be; a failure is one sentence, and stays until a switch."""
        if self._harness is not None:  # no lock: a forked GPU worker must never inherit one held mid-call
            return self._harness
        with self._loading:
            if self._harness is None:
                if self._load_error is not None:
                    raise ValueError(f"the models could not load: {self._load_error}; pick the lab preset to carry on")
                self._load_started = time.monotonic()
                self._downloads = {}
                c = self.config
                try:
                    self._harness = load_harness(
                        c.preset,
                        models=c.models,
                        judge=c.judge,
                        device=c.device,
                        out_dir=self.results_dir,
                        progress=self._downloaded,
                    )
                except (ValueError, OSError) as err:
                    log.error("the %s preset could not be loaded: %s", c.preset, err)  # the whole story, for the log
                    self._load_error = load_problem(err)
                    raise ValueError(f"the models could not load: {self._load_error}") from err
            return self._harness

    def switch(self, preset: str, models: dict[str, str | None] | None = None, judge: str | None = None) -> str:
        """Load other models without a restart (a preset, with any architecture's model replaced by a hub id or
        directory, and any judge); returns the status line. The old models stay until the new are chosen."""
        if self.config.zero_gpu:
            raise ValueError(
                "on ZeroGPU the models are fixed when the Space starts: set T2I_PRESET, T2I_UNCLIP, "
                "T2I_LATENT_DIFFUSION, T2I_STABLE_UNCLIP or T2I_JUDGE in its settings instead"
            )
        if preset not in PRESETS:
            raise ValueError(f"Preset: {shown(preset)} is not one; choose {', '.join(sorted(PRESETS))}")
        models = {a: m.strip() for a, m in (models or {}).items() if isinstance(m, str) and m.strip()}
        config = dataclasses.replace(self.config, preset=preset, models=models, judge=check_judge(judge))
        if tuple(config.sources) != self.architectures:
            shown_now = ", ".join(registry.get(a).short for a in self.architectures)
            gone = [a for a in self.architectures if a not in config.sources]
            how = (
                f"; leaving one out takes a restart (--{gone[0].replace('_', '-')} none, or "
                f"T2I_{gone[0].upper()}=none)"
                if gone
                else ""
            )
            raise ValueError(f"the page shows {shown_now}: pick models for those{how}")
        if self.sweep is not None and self.sweep.running:
            raise ValueError("a sweep is running on these models: switch when it has finished")
        if not self._loading.acquire(blocking=False):
            raise ValueError("models are loading: switch when they have loaded (or failed to)")
        try:
            with self.device_lock:  # no comparison is halfway through the old models
                self.config, self._harness, self._load_error = config, None, None
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        finally:
            self._loading.release()
        self.start_loading()
        return self.status()

    def image_name(self, path: str) -> str:
        """An image's path as pages show it: inside the results folder (images/unclip/...), never the server's."""
        try:
            return str(Path(path).resolve().relative_to(self.results_dir))
        except ValueError:
            return Path(path).name

    def image_path(self, name: str) -> str:
        """The path rows hold for an image a page names (image_name's), or a path given whole (an API caller's)."""
        path = Path(name)
        return str(path if path.is_absolute() else self.results_dir / path)

    def examples(self, n: int = 8) -> list[str]:
        """Example prompts that fit the preset: the Shapes vocabulary in the lab, real prompts otherwise."""
        if get_preset(self.config.preset).use_checker:
            from lab.prompt_files import read_prompts

            single, two = read_prompts("heldout_single"), read_prompts("heldout_two")
            return [p for pair in zip(two, single) for p in pair][:n]  # two-object first: the lab's headline
        path = Path(__file__).parent.parent / "prompts" / "real_models.txt"
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")][
            :n
        ]

    def gpu_turn(self) -> contextlib.AbstractContextManager:
        """Held around GPU work (here and in latent_tools): the device lock, one call at a time. On ZeroGPU each call
        has a worker (and GPU) of its own, forked from this process, and a lock copied while another thread held it
        would never open there."""
        return contextlib.nullcontext() if self.config.zero_gpu else self.device_lock

    # ---- compare
    def compare(
        self, prompt: str | None, seed: str | float | int | None, settings: Settings, progress: Progress | None = None
    ) -> tuple[dict[str, dict], list[str]]:
        """Every architecture on one prompt and seed, logged: {architecture: row}, and notices for the user."""
        made, notices = self.make_compare(prompt, seed, settings, progress)
        return self.record(made), notices

    def make_compare(
        self, prompt: str | None, seed: str | float | int | None, settings: Settings, progress: Progress | None = None
    ) -> tuple[list[Made], list[str]]:
        """GPU work: each architecture on one prompt and seed, generated and scored, nothing written (see `record`)."""
        prompt, seed = parse_prompt(prompt), parse_seed(seed)
        settings = settings.checked()
        notices = [n for n in (vocabulary_notice(prompt, self.config.preset), self._truncation_notice(prompt)) if n]
        harness = self.harness()
        budget = sum(total_steps(a, settings) for a in harness.architectures)
        done = dict.fromkeys(harness.architectures, 0)  # steps so far, per architecture: they may run side by side
        progress = None if progress is None else throttled(progress)

        def step(arch: str) -> StepCallback | None:
            def report(state: StepState) -> None:
                done[arch] = steps_done(arch, state, settings)
                progress(
                    sum(done.values()) / budget,
                    f"{registry.get(arch).label}: {state.stage} step {state.step + 1}/{state.num_steps}",
                )

            return report if progress is not None else None

        callbacks = {arch: step(arch) for arch in harness.architectures}
        with self.gpu_turn():
            made = make_each(harness, prompt, seed, settings, new_run_id(), callbacks, harness.concurrent)
        made = [m.portable() for m in made]
        return made, notices

    def record(self, made: list[Made]) -> dict[str, dict]:
        """Write what `make_compare` made: the PNGs, then all rows in one append (all or none); {architecture: row}."""
        self.harness().save(*made)
        return {m.architecture: m.rows[0] for m in made}

    def _truncation_notice(self, prompt: str) -> str | None:
        tokenizer = next(iter(self.harness().pipelines.values())).tokenizer  # every architecture's is CLIP's
        message = truncation_messages(tokenizer, [prompt])[0]
        return None if message is None else f"The architectures' CLIP text encoders cut the prompt: {message}."

    # ---- inside the models
    def explain(self, prompt: str | None, seed: str | float | int | None, settings: Settings):
        """GPU work: an instrumented, unlogged run of every architecture (comparisons.app.inside.InsideReport)."""
        from comparisons.app.inside import explain

        prompt, seed = parse_prompt(prompt), parse_seed(seed)
        harness = self.harness()
        with self.gpu_turn():
            return explain(harness.pipelines, prompt, seed, settings)

    # ---- sweeps
    def plan_sweep(
        self,
        prompts_text: str | None,
        seeds_text: str | None,
        steps_text: str | None,
        guidance_text: str | None,
        architectures: list[str] | None,
        base: Settings = Settings(),
        batch_size: int = 8,
    ) -> tuple[SweepStatus, list[list[Job]]]:
        """Check the whole grid and split what the log lacks of it into batches (one GPU call each): the sweep's
        status, and its batches. Images a killed run of the grid left without rows are removed first."""
        if self.sweep is not None and self.sweep.running:
            raise ValueError(f"a sweep is already running ({self.sweep.message()}); wait for it to finish")
        prompts = [parse_prompt(line) for line in (prompts_text or "").splitlines() if line.strip()]
        if not prompts:
            raise ValueError("the sweep has no prompts: write one per line")
        if not isinstance(architectures, (list, tuple)) or not architectures:
            raise ValueError("pick at least one architecture")
        jobs = grid(
            prompts,
            parse_seeds(parse_text(seeds_text, "seeds")),
            parse_values(parse_text(steps_text, "steps"), int, "Steps"),
            parse_values(parse_text(guidance_text, "guidance"), float, "Guidance"),
            list(architectures),
            base,
            max_jobs=MAX_SWEEP_IMAGES,
            bigger="`python -m comparisons.sweep` takes bigger grids",
        )
        harness = self.harness()
        todo = pending(harness, jobs)
        with self.device_lock:  # no other writer is between an image and its row
            for path in unlogged_images(harness, todo):
                path.unlink(missing_ok=True)
        before = len(jobs) - len(todo)
        self.sweep = status = SweepStatus(new_run_id(), len(jobs), before, jobs=tuple(jobs), before=before)
        return status, list(batches(todo, batch_size))

    def start_sweep(
        self,
        prompts_text: str | None,
        seeds_text: str | None,
        steps_text: str | None,
        guidance_text: str | None,
        architectures: list[str] | None,
        base: Settings = Settings(),
        batch_size: int = 8,
    ) -> SweepStatus:
        """`plan_sweep`, then its batches in a background thread; rows land in the run log as batches finish.
        (Not on ZeroGPU, where GPU work runs only in decorated calls: app.py runs `sweep_steps` itself.)"""
        status, todo = self.plan_sweep(
            prompts_text, seeds_text, steps_text, guidance_text, architectures, base, batch_size
        )
        self._sweep_thread = threading.Thread(target=_drain, args=(self.sweep_steps(status, todo),), daemon=True)
        self._sweep_thread.start()
        return status

    def sweep_steps(
        self, status: SweepStatus, todo: list[list[Job]], make: Callable[[list[Job], str], Made] | None = None
    ) -> Iterator[SweepStatus]:
        """Each batch made by `make` (default `make_sweep_batch`; on ZeroGPU a decorated call of it), then recorded
        here in the serving process; yields the status after each batch."""
        make = make or self.make_sweep_batch
        try:
            for batch in todo:
                if status.cancelled:
                    break
                made = make(batch, status.run_id)
                status.done += len(self.record_sweep_batch(made))
                yield status
        except Exception as err:  # shown in the Sweep screen; the app keeps serving
            status.error = f"{type(err).__name__}: {err}"
        finally:
            status.running = False
        yield status  # finished, or failed

    def make_sweep_batch(self, batch: list[Job], run_id: str) -> Made:
        """GPU work: one batch of a sweep (same architecture and settings), generated and scored, nothing written."""
        with self.gpu_turn():
            return make_batch(self.harness(), batch, run_id).portable()

    def record_sweep_batch(self, made: Made) -> list[dict]:
        with self.device_lock:
            return self.harness().save(made)

    def cancel_sweep(self) -> SweepStatus:
        """Stop the running sweep before its next batch (the batch under way is kept whole, rows and images)."""
        if self.sweep is None or not self.sweep.running:
            raise ValueError("no sweep is running")
        self.sweep.cancelled = True
        return self.sweep

    def wait_for_sweep(self, timeout: float | None = None) -> None:
        if self._sweep_thread is not None:
            self._sweep_thread.join(timeout)

    def sweep_rows(self) -> pd.DataFrame:
        """The running sweep's rows; the log is read again only when a batch has landed (the app polls each second)."""
        if self.sweep is None:
            return pd.DataFrame(columns=list(TABLE_COLUMNS))
        key = (self.sweep.run_id, self.sweep.done, self.sweep.running)
        if self._sweep_rows is None or self._sweep_rows[0] != key:
            df = self.runs()
            self._sweep_rows = key, df[df["run_id"] == self.sweep.run_id] if not df.empty else df
        return self._sweep_rows[1]

    # ---- results
    def runs(self, architecture: str | None = None, prompt_contains: str | None = None) -> pd.DataFrame:
        """The run log (persisted across restarts), filtered."""
        if not (self.results_dir / LOG_NAME).is_file():
            return pd.DataFrame(columns=list(TABLE_COLUMNS))
        return filter_runs(load_runs(self.results_dir), architecture, prompt_contains)

    def export(self, df: pd.DataFrame, fmt: str) -> Path:
        """The given (filtered) table as a file in the results folder's exports/, the only place downloads
        come from. Named by content, so the same table is written once however often it is asked for."""
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"unknown export format {shown(fmt)}; choose csv or parquet")
        if df.empty:
            raise ValueError("the table is empty: nothing to export")
        digest = hashlib.sha256(pd.util.hash_pandas_object(df.astype(str), index=False).values.tobytes()).hexdigest()[
            :16
        ]
        path = self.results_dir / "exports" / f"runs-{len(df)}-{digest}.{fmt}"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "csv":  # a browser hands it to a spreadsheet: text cells must not run as formulas
                export_csv(df, path, neutralise_formulas=True)
            else:
                export_parquet(df, path)
        return path


def _shown(source: str) -> str:
    """A model's directory relative to the project (lab/weights/unclip), a hub id as it is."""
    path = Path(source)
    return str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else source


def _drain(steps: Iterator) -> None:
    for _ in steps:
        pass
