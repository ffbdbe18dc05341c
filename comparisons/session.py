"""What the app does, without the app: one `Session` per server process loads a preset lazily,
runs comparisons one at a time on the device, runs sweeps in the background, explains a
generation, and serves the run log as tables, summaries, plot data and exports.

Gradio-free, so that tests call every handler directly and `app.py` stays layout and wiring.
Every method checks its raw widget values and raises `ValueError` with a message for the user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from comparisons.harness import Harness, new_run_id
from comparisons.presets import DEFAULT_PRESET, get_preset, load_harness
from comparisons.records import ARCHITECTURES, GUIDANCE_FIELDS, STEP_FIELDS, Settings
from comparisons.store import LOG_NAME, export_csv, export_parquet, load_runs
from comparisons.summary import NoPairsError, summary_table
from comparisons.sweep import Job, grid, parse_seeds, parse_values, pending, run_sweep
from pipelines.checks import MAX_PROMPT_CHARS, check_seed
from pipelines.outputs import StepState
from pipelines.tokenizer import truncation_messages

MAX_SWEEP_IMAGES = 2_000  # per background sweep from the app; the CLI takes bigger grids
LABELS = {"unclip": "unCLIP (Karlo / DALL·E 2)", "latent_diffusion": "Latent diffusion (Stable Diffusion)"}
TABLE_COLUMNS = ("created_at", "run_id", "architecture", "prompt", "seed", "seconds_total", "peak_memory_mb", "memory_kind",
                 "clip_score", "prior_image_cosine", "check_all_correct", "image_path")
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
        raise ValueError(f"the {name} is {len(text):,} characters; at most {MAX_PROMPT_CHARS:,} (CLIP reads about 75 words)")
    return text


def parse_prompt(text: str | None, name: str = "prompt") -> str:
    text = _text(text, name)
    if not text:
        raise ValueError(f"the {name} is empty: type what the image should show")
    return text


def parse_negative_prompt(text: str | None) -> str | None:
    """The negative prompt, with the prompt's limits; None when empty (guidance uses the empty prompt)."""
    return _text(text, "negative prompt") or None


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


def parse_settings(negative_prompt: str | None = None, **values: float | int | str | None) -> Settings:
    """Settings from the Advanced widgets (any subset of Settings' fields), checked like the pipelines do."""
    unknown = set(values) - set(STEP_FIELDS) - set(GUIDANCE_FIELDS)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    numbers = {name: _whole(value, name) if name in STEP_FIELDS else _number(value, name) for name, value in values.items()}
    return Settings(negative_prompt=parse_negative_prompt(negative_prompt), **numbers).checked()


def stage_steps(architecture: str, settings: Settings) -> dict[str, int]:
    """The steps asked of each denoising loop, in pipeline order."""
    if architecture == "unclip":
        return {"prior": settings.prior_steps, "decoder": settings.decoder_steps, "super_res": settings.super_res_steps}
    return {"unet": settings.steps}


def total_steps(architecture: str, settings: Settings) -> int:
    return sum(stage_steps(architecture, settings).values())


# ----------------------------------------------------------------------------- what the app shows


def stats_line(row: dict) -> str:
    """The compact stats under an image: seed, seconds (total and per stage), peak memory, CLIP, checker."""
    stages = [c.removeprefix("seconds_") for c in row if c.startswith("seconds_") and c != "seconds_total"]
    per_stage = ", ".join(f"{s} {row[f'seconds_{s}']:.2f}" for s in stages if row.get(f"seconds_{s}") is not None)
    parts = [f"seed {row['seed']}", f"{row['seconds_total']:.2f} s ({per_stage})",
             f"{row['memory_kind']} {row['peak_memory_mb']:,.0f} MB", f"CLIP {row['clip_score']:.1f}"]
    verdict = checker_verdict(row)
    if verdict:
        parts.append(verdict)
    return " · ".join(parts)


def checker_verdict(row: dict) -> str:
    """The Shapes checker's verdicts as ✓/✗ per attribute the caption states ('' outside the lab); a
    wrong colour or shape says what was drawn instead, e.g. "shape ✗ (square)"."""
    names = {"object1_colour": "colour", "object1_shape": "shape", "object2_colour": "colour 2",
             "object2_shape": "shape 2", "relation": "relation", "position": "position"}
    marks = []
    for name, label in names.items():
        verdict = row.get(f"check_{name}_correct")
        if verdict is None or pd.isna(verdict):  # NaN: the caption does not state it
            continue
        mark = f"{label} {'✓' if verdict else '✗'}"
        if not verdict and f"check_{name}_read" in row:
            read = row[f"check_{name}_read"]
            mark += f" ({'nothing' if read is None or pd.isna(read) else read})"
        marks.append(mark)
    return "checker: " + " ".join(marks) if marks else ""


def vocabulary_notice(prompt: str, preset: str) -> str | None:
    """In the Shapes lab, a notice when the prompt leaves the world the models were trained on."""
    if not get_preset(preset).use_checker:
        return None
    from lab.world import parse_caption

    try:
        parse_caption(prompt)
    except ValueError as err:
        return (f"The Shapes lab models only know captions like 'a red circle above a blue square'. {err}. "
                "They will still draw something, but the checker cannot judge it.")
    return None


def prior_summary(inside) -> str:
    """What unCLIP's prior did, from comparisons.inside.UnCLIPInside: where its image embedding sits."""
    image = "n/a (this model has no image encoder)" if inside.prior_image_cosine is None else f"{inside.prior_image_cosine:.3f}"
    return ("**unCLIP's prior** turns the CLIP text embedding into a CLIP *image* embedding, which the decoder draws.\n\n"
            f"| cosine of the prior's image embedding with | value |\n|---|---|\n"
            f"| the text embedding it was conditioned on | {inside.prior_text_cosine:.3f} |\n"
            f"| the final image's embedding (same CLIP) | {image} |")


# ----------------------------------------------------------------------------- results


def filter_runs(df: pd.DataFrame, architecture: str | None = None, prompt_contains: str | None = None) -> pd.DataFrame:
    if architecture and architecture != "all":
        df = df[df["architecture"] == architecture]
    if prompt_contains:
        df = df[df["prompt"].str.contains(prompt_contains, case=False, regex=False)]
    return df


def stage_seconds_long(df: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per stage and architecture, long form for a stacked bar chart."""
    stages = [c for c in df.columns if c.startswith("seconds_") and c != "seconds_total"]
    if df.empty or not stages:
        return pd.DataFrame({"architecture": pd.Series(dtype="string"), "stage": pd.Series(dtype="string"), "seconds": pd.Series(dtype=float)})
    long = df.melt(id_vars=["architecture"], value_vars=stages, var_name="stage", value_name="seconds").dropna()
    long["stage"] = long["stage"].str.removeprefix("seconds_")
    long["seconds"] = long["seconds"].astype(float)
    return long.groupby(["architecture", "stage"], as_index=False, observed=True)["seconds"].mean()


def memory_bars(df: pd.DataFrame) -> pd.DataFrame:
    """Mean peak memory (MB) per architecture and memory kind."""
    if df.empty:
        return pd.DataFrame({"architecture": pd.Series(dtype="string"), "peak_memory_mb": pd.Series(dtype=float)})
    out = df.groupby(["architecture", "memory_kind"], as_index=False, observed=True)["peak_memory_mb"].mean()
    out["architecture"] = out["architecture"] + " (" + out["memory_kind"] + ")"
    return out[["architecture", "peak_memory_mb"]].astype({"peak_memory_mb": float})


def score_vs_seconds(df: pd.DataFrame) -> pd.DataFrame:
    columns = ["architecture", "seconds_total", "clip_score", "prompt", "seed"]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("seconds_total", "clip_score") else "string") for c in columns})
    return df[columns].astype({"seconds_total": float, "clip_score": float, "seed": "string"})


def summary_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The paired side-by-side summary, every estimate beside n and its 95% interval, and a note."""
    try:
        table = summary_table(df)
    except (NoPairsError, ValueError, KeyError) as err:
        return pd.DataFrame(), f"No summary yet: {err}. Generate both architectures for the same prompts and seeds."
    shown = pd.DataFrame({
        "metric": table.index, "better": table["better"], "n pairs": table["n"].astype(int),
        "latent diffusion": table["mean_latent_diffusion"].round(4), "unCLIP": table["mean_unclip"].round(4),
        "difference LD − unCLIP [95% CI]": [f"{r.mean_diff:.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}]" for r in table.itertuples()],
        "LD win rate [95% CI]": [f"{r.win_rate:.0%} [{r.win_ci_low:.0%}, {r.win_ci_high:.0%}]" for r in table.itertuples()],
    })
    return shown, "Paired by prompt and seed; percentile-bootstrap intervals over pairs (2000 resamples)."


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

    # ---- loading
    def status(self) -> str:
        preset = self.config.preset
        if self._harness is not None:
            h = self._harness
            return f"**{preset}** preset loaded on {h.unclip.device} ({h.unclip.dtype}); judge: {h.judge.name}"
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
                    self._harness = load_harness(self.config.preset, device=self.config.device, out_dir=self.results_dir)
                except (ValueError, OSError) as err:
                    self._load_error = f"{type(err).__name__}: {err}"
                    raise ValueError(f"the {self.config.preset} preset could not be loaded: {err}") from err
            return self._harness

    def examples(self, n: int = 8) -> list[str]:
        """Example prompts that fit the preset: the Shapes vocabulary in the lab, real prompts otherwise."""
        if get_preset(self.config.preset).use_checker:
            from lab.world import read_prompts

            single, two = read_prompts("heldout_single"), read_prompts("heldout_two")
            return [p for pair in zip(two, single) for p in pair][:n]  # two-object first: the lab's headline
        path = Path(__file__).parent / "prompts" / "real_models.txt"
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")][:n]

    # ---- compare
    def compare(self, prompt: str | None, negative_prompt: str | None, seed: str | float | int | None,
                settings: Settings, progress: Progress | None = None) -> tuple[dict[str, dict], list[str]]:
        """Both architectures on one prompt and seed: {architecture: logged row} and notices for the user."""
        prompt, seed = parse_prompt(prompt), parse_seed(seed)
        settings = dataclasses.replace(settings, negative_prompt=parse_negative_prompt(negative_prompt)).checked()
        notices = [n for n in (vocabulary_notice(prompt, self.config.preset), self._truncation_notice(prompt)) if n]
        harness = self.harness()
        budget = sum(total_steps(a, settings) for a in ARCHITECTURES)
        made, done, run_id = [], 0, new_run_id()
        with self.device_lock:
            for arch in ARCHITECTURES:
                def step(state: StepState, offset: int = done, arch: str = arch) -> None:
                    if progress is not None:
                        progress((offset + _steps_done(arch, state, settings)) / budget,
                                 f"{LABELS[arch]}: {state.stage} step {state.step + 1}/{state.num_steps}")
                made.append(harness.make(arch, [prompt], [seed], settings, run_id=run_id, callback=step))
                done += total_steps(arch, settings)
            harness.save(*made)  # both or neither: a failure of the second architecture logs nothing
        return {m.architecture: m.rows[0] for m in made}, notices

    def _truncation_notice(self, prompt: str) -> str | None:
        message = truncation_messages(self.harness().latent_diffusion.tokenizer, [prompt])[0]
        return None if message is None else f"Both architectures' CLIP text encoder cut the prompt: {message}."

    # ---- inside the models
    def explain(self, prompt: str | None, seed: str | float | int | None, settings: Settings):
        """An instrumented, unlogged run of both architectures (comparisons.inside.InsideReport)."""
        from comparisons.inside import explain

        prompt, seed = parse_prompt(prompt), parse_seed(seed)
        harness = self.harness()
        with self.device_lock:
            return explain(harness.unclip, harness.latent_diffusion, prompt, seed, settings)

    # ---- sweeps
    def start_sweep(self, prompts_text: str | None, seeds_text: str | None, steps_text: str | None,
                    guidance_text: str | None, architectures: list[str] | None, base: Settings = Settings(),
                    batch_size: int = 8) -> SweepStatus:
        """Check the whole grid, then run it in a background thread; rows land in the run log as they finish."""
        if self.sweep is not None and self.sweep.running:
            raise ValueError(f"a sweep is already running ({self.sweep.message()}); wait for it to finish")
        prompts = [parse_prompt(line) for line in (prompts_text or "").splitlines() if line.strip()]
        if not prompts:
            raise ValueError("the sweep has no prompts: write one per line")
        if not isinstance(architectures, (list, tuple)) or not architectures:
            raise ValueError("pick at least one architecture")
        jobs = grid(prompts, parse_seeds(_text(seeds_text, "seeds")), parse_values(_text(steps_text, "steps"), int, "steps"),
                    parse_values(_text(guidance_text, "guidance"), float, "guidance"), list(architectures), base,
                    max_jobs=MAX_SWEEP_IMAGES, bigger="`python -m comparisons.sweep` takes bigger grids")
        harness = self.harness()
        self.sweep = status = SweepStatus(new_run_id(), total=len(jobs))
        self._sweep_thread = threading.Thread(target=self._run_sweep, args=(harness, jobs, batch_size, status), daemon=True)
        self._sweep_thread.start()
        return status

    def _run_sweep(self, harness: Harness, jobs: list[Job], batch_size: int, status: SweepStatus) -> None:
        def landed(rows: list[dict]) -> None:
            status.done += len(rows)

        try:
            status.done = len(jobs) - len(pending(harness, jobs))  # rows an earlier run of this grid left
            run_sweep(harness, jobs, batch_size, progress=False, run_id=status.run_id, lock=self.device_lock, on_batch=landed)
        except Exception as err:  # shown in the Sweep screen; the app keeps serving
            status.error = f"{type(err).__name__}: {err}"
        finally:
            status.running = False

    def wait_for_sweep(self, timeout: float | None = None) -> None:
        if self._sweep_thread is not None:
            self._sweep_thread.join(timeout)

    def sweep_rows(self) -> pd.DataFrame:
        """The running sweep's rows; the log is read again only when a batch has landed (the app polls every second)."""
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
        digest = hashlib.sha256(pd.util.hash_pandas_object(df.astype(str), index=False).values.tobytes()).hexdigest()[:16]
        path = self.results_dir / "exports" / f"runs-{len(df)}-{digest}.{fmt}"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "csv":  # a browser hands it to a spreadsheet: text cells must not run as formulas
                export_csv(df, path, neutralise_formulas=True)
            else:
                export_parquet(df, path)
        return path


def table_view(df: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading on screen, newest first, rounded (exports carry every column, unrounded, in log order)."""
    shown = df[[c for c in TABLE_COLUMNS if c in df.columns]].iloc[::-1]
    return shown.round({"seconds_total": 3, "peak_memory_mb": 1, "clip_score": 2, "prior_image_cosine": 3})


def _steps_done(architecture: str, state: StepState, settings: Settings) -> float:
    """Denoising steps of this architecture done at `state`, for one progress bar over every stage.
    Scaled by the loop's own length, which can exceed the steps asked for (PNDM adds a warm-up step)."""
    sizes = stage_steps(architecture, settings)
    stages = list(sizes)
    before = sum(sizes[s] for s in stages[: stages.index(state.stage)])
    return before + sizes[state.stage] * (state.step + 1) / state.num_steps
