"""What the app does, without the app: one `Session` per server process loads a preset lazily,
runs comparisons one at a time on the device, runs sweeps in the background, explains a
generation, and serves the run log as tables, summaries, plot data and exports.

Gradio-free, so that tests call every handler directly and `app.py` stays layout and wiring.
Every method checks its raw widget values and raises `ValueError` with a message for the user.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from comparisons.app.views import TABLE_COLUMNS
from comparisons.exports import export_csv, export_parquet
from comparisons.harness import Harness, new_run_id
from comparisons.presets import DEFAULT_PRESET, get_preset, load_harness
from comparisons.settings import Settings
from comparisons.store import LOG_NAME, load_runs
from comparisons.sweep import Job, grid, parse_seeds, parse_values, pending, run_sweep
from pipelines import registry
from pipelines.checks import MAX_PROMPT_CHARS, check_seed
from pipelines.outputs import StepState
from pipelines.registry import STEPS, TEXT
from pipelines.tokenizer import truncation_messages

MAX_SWEEP_IMAGES = 2_000  # per background sweep from the app; the CLI takes bigger grids
Progress = Callable[[float, str], None]  # (fraction done, what is running)


@dataclass(frozen=True)
class AppConfig:
    """How the app runs (the CLI flags and environment variables of app.py)."""

    preset: str = DEFAULT_PRESET  # comparisons.presets name
    device: str = "auto"  # cpu, cuda, ... (auto: cuda if present)
    results_dir: Path = Path("results")  # run log, images and exports: the only folder the app serves files from


# ----------------------------------------------------------------------------- parsing widget values


def _text(value: str | None, name: str) -> str:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"the {name} must be text, got {type(value).__name__}")
    text = (value or "").strip()
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"the {name} is {len(text):,} characters; at most {MAX_PROMPT_CHARS:,} (CLIP reads about 75 words)"
        )
    return text


def parse_prompt(text: str | None, name: str = "prompt") -> str:
    text = _text(text, name)
    if not text:
        raise ValueError(f"the {name} is empty: type what the image should show")
    return text


def parse_seed(value: str | float | int | None) -> int:
    """A seed as typed: a whole number in [0, 2**63). Text, not a float: 2**63 - 1 has no exact float."""
    text = str(value if value is not None else "").strip()
    try:
        seed = int(text)
    except ValueError:
        raise ValueError(f"seed {text!r:.40} is not a whole number (0 to 2**63 - 1)") from None
    return check_seed(seed)


def random_seed() -> int:
    return secrets.randbelow(2**32)


def _number(value: float | int | str | None, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, got {value!r:.40}") from None


def _whole(value: float | int | str | None, name: str) -> int:
    number = _number(value, name)
    if not number.is_integer():
        raise ValueError(f"`{name}` must be a whole number, got {value!r:.40}")
    return int(number)


def parse_settings(**values: float | int | str | None) -> Settings:
    """Settings from the Advanced widgets and the negative prompt (any registered settings, by name), checked like
    the pipelines check them."""
    known = {s.name: s for s in registry.all_settings()}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    parsed = {}
    for name, value in values.items():
        role = known[name].role
        parsed[name] = (
            _text(value, name.replace("_", " ")) or None
            if role == TEXT
            else _whole(value, name)
            if role == STEPS
            else _number(value, name)
        )
    return Settings(**parsed).checked()


def stage_steps(architecture: str, settings: Settings) -> dict[str, int]:
    """The steps asked of each denoising loop, in pipeline order."""
    return registry.get(architecture).steps_of_stages(settings.for_architecture(architecture))


def total_steps(architecture: str, settings: Settings) -> int:
    return sum(stage_steps(architecture, settings).values())


# ----------------------------------------------------------------------------- what the app shows


def vocabulary_notice(prompt: str, preset: str) -> str | None:
    """In the Shapes lab, a notice when the prompt leaves the world the models were trained on."""
    if not get_preset(preset).use_checker:
        return None
    from lab.captions import parse_caption

    try:
        parse_caption(prompt)
    except ValueError as err:
        return (
            f"The Shapes lab models only know captions like 'a red circle above a blue square'. {err}. "
            "They will still draw something, but the checker cannot judge it."
        )
    return None


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
    total: int
    done: int = 0
    running: bool = True
    error: str | None = None
    started: float = field(default_factory=time.monotonic)

    def message(self) -> str:
        elapsed = time.monotonic() - self.started
        state = "failed: " + self.error if self.error else ("running" if self.running else "finished")
        return f"sweep {self.run_id}: {self.done}/{self.total} images, {elapsed:.0f} s, {state}"


# ----------------------------------------------------------------------------- the session


class Session:
    """One per app process: the harness (loaded once, lazily), one device lock, the sweep thread."""

    def __init__(self, config: AppConfig = AppConfig()) -> None:
        get_preset(config.preset)  # unknown presets fail at start, not at the first click
        self.config = config
        self.results_dir = config.results_dir.resolve()
        self._harness: Harness | None = None
        self._load_error: str | None = None
        self._loading = threading.Lock()
        self._load_started: float | None = None
        self.device_lock = threading.Lock()  # GPU work one call at a time, app requests and sweep batches alike
        self.sweep: SweepStatus | None = None
        self._sweep_thread: threading.Thread | None = None
        self._sweep_rows: tuple[tuple, pd.DataFrame] | None = None  # (sweep state it was read at, rows)

    @property
    def architectures(self) -> tuple[str, ...]:
        """The preset's architectures, in the order the screens show them (known before any model loads)."""
        return tuple(get_preset(self.config.preset).models)

    # ---- loading
    def status(self) -> str:
        preset = self.config.preset
        if self._harness is not None:
            h = self._harness
            first = next(iter(h.pipelines.values()))
            return f"**{preset}** preset loaded on {first.device} ({first.dtype}); judge: {h.judge.name}"
        if self._load_error:
            return f"**{preset}** preset failed to load: {self._load_error}"
        if self._load_started is not None:
            return f"loading the **{preset}** preset… {time.monotonic() - self._load_started:.0f} s"
        return f"**{preset}** preset: loads on first use"

    @property
    def settled(self) -> bool:
        """Loaded, or failed to load: the status line stops changing."""
        return self._harness is not None or self._load_error is not None

    def start_loading(self) -> None:
        """Load in the background (the status line shows it); requests wait for it."""
        threading.Thread(target=self._try_load, daemon=True).start()

    def _try_load(self) -> None:
        try:
            self.harness()
        except ValueError:
            pass  # kept in _load_error for the status line and the next request

    def harness(self) -> Harness:
        with self._loading:
            if self._harness is None:
                self._load_started = time.monotonic()
                self._load_error = None
                try:
                    self._harness = load_harness(
                        self.config.preset, device=self.config.device, out_dir=self.results_dir
                    )
                except (ValueError, OSError) as err:
                    self._load_error = f"{type(err).__name__}: {err}"
                    raise ValueError(f"the {self.config.preset} preset could not be loaded: {err}") from err
            return self._harness

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

    # ---- compare
    def compare(
        self, prompt: str | None, seed: str | float | int | None, settings: Settings, progress: Progress | None = None
    ) -> tuple[dict[str, dict], list[str]]:
        """Every architecture of the preset on one prompt and seed: {architecture: logged row}, and notices."""
        prompt, seed = parse_prompt(prompt), parse_seed(seed)
        settings = settings.checked()
        notices = [n for n in (vocabulary_notice(prompt, self.config.preset), self._truncation_notice(prompt)) if n]
        harness = self.harness()
        budget = sum(total_steps(a, settings) for a in harness.architectures)
        made, done, run_id = [], 0, new_run_id()
        with self.device_lock:
            for arch in harness.architectures:

                def step(state: StepState, offset: int = done, arch: str = arch) -> None:
                    if progress is not None:
                        progress(
                            (offset + _steps_done(arch, state, settings)) / budget,
                            f"{registry.get(arch).label}: {state.stage} step {state.step + 1}/{state.num_steps}",
                        )

                made.append(harness.make(arch, [prompt], [seed], settings, run_id=run_id, callback=step))
                done += total_steps(arch, settings)
            harness.save(*made)  # all or none: a failure of any architecture logs nothing
        return {m.architecture: m.rows[0] for m in made}, notices

    def _truncation_notice(self, prompt: str) -> str | None:
        tokenizer = next(iter(self.harness().pipelines.values())).tokenizer  # every architecture's is CLIP's
        message = truncation_messages(tokenizer, [prompt])[0]
        return None if message is None else f"The architectures' CLIP text encoders cut the prompt: {message}."

    # ---- inside the models
    def explain(self, prompt: str | None, seed: str | float | int | None, settings: Settings):
        """An instrumented, unlogged run of both architectures (comparisons.inside.InsideReport)."""
        from comparisons.app.inside import explain

        prompt, seed = parse_prompt(prompt), parse_seed(seed)
        harness = self.harness()
        with self.device_lock:
            return explain(harness.pipeline("unclip"), harness.pipeline("latent_diffusion"), prompt, seed, settings)

    # ---- sweeps
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
        """Check the whole grid, then run it in a background thread; rows land in the run log as they finish."""
        if self.sweep is not None and self.sweep.running:
            raise ValueError(f"a sweep is already running ({self.sweep.message()}); wait for it to finish")
        prompts = [parse_prompt(line) for line in (prompts_text or "").splitlines() if line.strip()]
        if not prompts:
            raise ValueError("the sweep has no prompts: write one per line")
        if not isinstance(architectures, (list, tuple)) or not architectures:
            raise ValueError("pick at least one architecture")
        jobs = grid(
            prompts,
            parse_seeds(_text(seeds_text, "seeds")),
            parse_values(_text(steps_text, "steps"), int, "steps"),
            parse_values(_text(guidance_text, "guidance"), float, "guidance"),
            list(architectures),
            base,
            max_jobs=MAX_SWEEP_IMAGES,
            bigger="`python -m comparisons.sweep` takes bigger grids",
        )
        harness = self.harness()
        self.sweep = status = SweepStatus(new_run_id(), total=len(jobs))
        self._sweep_thread = threading.Thread(
            target=self._run_sweep, args=(harness, jobs, batch_size, status), daemon=True
        )
        self._sweep_thread.start()
        return status

    def _run_sweep(self, harness: Harness, jobs: list[Job], batch_size: int, status: SweepStatus) -> None:
        def landed(rows: list[dict]) -> None:
            status.done += len(rows)

        try:
            status.done = len(jobs) - len(pending(harness, jobs))  # rows an earlier run of this grid left
            run_sweep(
                harness, jobs, batch_size, progress=False, run_id=status.run_id, lock=self.device_lock, on_batch=landed
            )
        except Exception as err:  # shown in the Sweep screen; the app keeps serving
            status.error = f"{type(err).__name__}: {err}"
        finally:
            status.running = False

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
            raise ValueError(f"unknown export format {fmt!r}; choose csv or parquet")
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


def _steps_done(architecture: str, state: StepState, settings: Settings) -> float:
    """Denoising steps of this architecture done at `state`, for one progress bar over every stage.
    Scaled by the loop's own length, which can exceed the steps asked for (PNDM adds a warm-up step)."""
    sizes = stage_steps(architecture, settings)
    stages = list(sizes)
    before = sum(sizes[s] for s in stages[: stages.index(state.stage)])
    return before + sizes[state.stage] * (state.step + 1) / state.num_steps
