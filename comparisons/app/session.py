"""What every tab shares, without the app: one `Session` per server process loads a preset (or any models) in the
background, switches models without a restart, and hands the tabs' backends (comparisons.app.backends) what they
share: the config, the loaded harness, the results folder and its run log, the device lock and the status line.

Gradio-free, so that tests call it directly and `app.py` stays layout and wiring. `switch` checks its raw widget
values and raises `ValueError` with a message for the user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from comparisons.app.access import OWNER, Access, RateLimiter, Visitors, folder_bytes, without_paths
from comparisons.app.inputs import shown
from comparisons.app.views import TABLE_COLUMNS
from comparisons.harness import Harness
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
from comparisons.schema import VISITOR
from comparisons.store import LOG_NAME, load_runs
from pipelines import registry

log = logging.getLogger(__name__)
ROOM_SECONDS = 2.0  # how old the results folder's measured size may be when a request checks the cap


@dataclass(frozen=True)
class AppConfig:
    """How the app runs (the CLI flags and environment variables of app.py)."""

    preset: str = DEFAULT_PRESET  # comparisons.presets name
    device: str = "auto"  # cpu, cuda, ... (auto: cuda if present)
    results_dir: Path = Path("results")  # run log, images and exports: the only folder the app serves files from
    models: dict[str, str] = field(default_factory=dict)  # architecture -> hub id or directory, over the preset's
    judge: str | None = None  # a comparisons.metrics.load_judge name, over the preset's
    zero_gpu: bool = False  # on a ZeroGPU Space: models fixed at start, sweeps as a sequence of GPU calls
    access: Access = field(default_factory=Access)  # who may do what: all on loopback; the owner's rules when public

    @property
    def sources(self) -> dict[str, str]:
        """Architecture -> the hub id or directory its model comes from."""
        return model_sources(self.preset, self.models)


# ----------------------------------------------------------------------------- the device, one call at a time


class DeviceLock:
    """One model call at a time, and a person's request before a background sweep's next batch.

    A sweep's batches (`background()`) wait while a request is waiting, and for GRACE seconds after one: the queue
    hands the device its next waiting request within milliseconds, so a batch never slips in between two of them.
    A plain lock lets the sweep's thread take the device back at once, and 20 visitors comparing beside a sweep
    then waited 2.5 times as long (comparisons.bench --public-load; benchmarks/README.md)."""

    GRACE = 0.25  # seconds a sweep's batch waits after a request's turn ends

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._held = False
        self._waiting = 0  # requests waiting for the device
        self._last = 0.0  # when the last request's turn ended

    def _acquire(self, background: bool) -> None:
        with self._turn:
            if not background:
                self._waiting += 1
            try:
                while self._held or (background and (self._waiting or self._since_request() < self.GRACE)):
                    self._turn.wait(timeout=None if not background else self.GRACE)
            finally:
                if not background:
                    self._waiting -= 1
            self._held = True

    def _since_request(self) -> float:
        return time.monotonic() - self._last

    def _release(self, background: bool) -> None:
        with self._turn:
            self._held = False
            if not background:
                self._last = time.monotonic()
            self._turn.notify_all()

    def __enter__(self) -> DeviceLock:
        self._acquire(background=False)
        return self

    def __exit__(self, *_) -> None:
        self._release(background=False)

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        """The device for a background sweep's batch: after every request waiting, and a moment more."""
        self._acquire(background=True)
        try:
            yield
        finally:
            self._release(background=True)


# ----------------------------------------------------------------------------- the session


class Session:
    """One per app process: the harness (loaded in the background, switched on request) and one device lock."""

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
        self.device_lock = DeviceLock()  # GPU work one call at a time, app requests and sweep batches alike
        self._holds: list[Callable[[], str | None]] = []  # why the models must stay (a running sweep), see `hold`
        self._visitors = Visitors()
        self._limiter = RateLimiter(config.access.limits.per_minute)
        self._results_size: tuple[float, int] | None = None  # (when, bytes) the results folder was last measured
        self._room = threading.Lock()

    @property
    def architectures(self) -> tuple[str, ...]:
        """The architectures of the models chosen, in the order the screens show them (known before any loads)."""
        return tuple(self.config.sources)

    # ---- loading and switching models
    def describe_models(self) -> str:
        """What each architecture runs, and the judge: `unCLIP lab/weights/unclip · ... · judge lab`."""
        public = self.config.access.public
        models = " · ".join(
            f"{registry.get(a).short} `{_shown(src, public)}`" for a, src in self.config.sources.items()
        )
        return f"{models} · judge `{self.config.judge or get_preset(self.config.preset).judge}`"

    def status(self) -> str:
        name = f"**{self.config.preset}**" + (" + custom models" if self.config.models else "")
        if self._harness is not None:
            first = next(iter(self._harness.pipelines.values()))
            caveat = get_preset(self.config.preset).caveat
            caveat = f"  \n*The {self.config.preset} preset: {caveat}.*" if caveat and not self.config.models else ""
            return f"{name} loaded on {first.device} ({first.dtype}): {self.describe_models()}{caveat}"
        if self._load_error:
            problem = without_paths(self._load_error) if self.config.access.public else self._load_error
            return f"{name} could not load: {problem}. The lab preset needs no download and no GPU."
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
        directory, and any judge); returns the status line. The old models stay until the new are chosen. On a public
        app, only what its owner allows (comparisons.app.access)."""
        self.config.access.check_switch(preset, models or {}, judge)
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
        for hold in self._holds:
            if (reason := hold()) is not None:
                raise ValueError(reason)
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

    def hold(self, reason: Callable[[], str | None]) -> None:
        """Keep the models while `reason()` gives one (a backend's work on them, a running sweep): `switch` refuses
        with it."""
        self._holds.append(reason)

    # ---- what the backends share
    def gpu_turn(self, background: bool = False) -> contextlib.AbstractContextManager:
        """Held around every backend's GPU work: the device lock, one call at a time. On ZeroGPU each call
        has a worker (and GPU) of its own, forked from this process, and a lock copied while another thread held it
        would never open there."""
        if self.config.zero_gpu:
            return contextlib.nullcontext()
        return self.device_lock.background() if background else self.device_lock

    def runs(self, visitor: str | None = None) -> pd.DataFrame:
        """The run log (persisted across restarts), oldest first: every row every tab has logged, or, for a
        `visitor` of a public app that does not share its results, that visitor's rows alone."""
        if not (self.results_dir / LOG_NAME).is_file():
            return pd.DataFrame(columns=list(TABLE_COLUMNS))
        df = load_runs(self.results_dir)
        own = self.own(visitor)
        if own is None:
            return df
        return df[df[VISITOR] == own] if VISITOR in df.columns else df.iloc[:0]

    # ---- visitors (comparisons.app.access)
    def visitor(self, session_hash: str | None) -> str:
        """Who a request is from: on loopback the owner; on a public app the anonymous id of its browser session."""
        return self._visitors.id_of(session_hash) if self.config.access.public else OWNER

    def voter(self, session_hash: str | None) -> str:
        """Who casts a vote: the anonymous id of a browser session, on loopback too (one vote per pair each)."""
        return self._visitors.id_of(session_hash)

    def own(self, visitor: str | None) -> str | None:
        """The visitor whose rows alone a reader sees, or None for every row (loopback, or shared results)."""
        return visitor if visitor is not None and self.config.access.per_visitor else None

    def fair_use(self, visitor: str, kind: str, what: str) -> None:
        """Count a heavy request of `visitor`'s on a public app, or refuse it (a per-visitor rate)."""
        if self.config.access.public:
            self._limiter.take(visitor, kind, what)

    def check_room(self, adding: int = 0) -> None:
        """Refuse new images once the results folder has reached the owner's cap, before anything is written."""
        cap = self.config.access.limits.results_cap_gb
        if not self.config.access.public or cap is None:
            return
        with self._room:  # measured at most every few seconds: a walk of the folder costs ~10 ms per 1,000 files
            if self._results_size is None or time.monotonic() - self._results_size[0] > ROOM_SECONDS:
                self._results_size = time.monotonic(), folder_bytes(self.results_dir)
            if self._results_size[1] + adding >= cap * 1e9:
                raise ValueError(
                    f"This app's results folder is full ({cap:g} GB, its owner's cap): no new images can be kept."
                )


def _shown(source: str, public: bool = False) -> str:
    """A model's directory relative to the project (lab/weights/unclip), a hub id as it is; on a public app a
    directory outside the project by its name alone (no page shows a server path)."""
    path = Path(source)
    if path.is_absolute() and path.is_relative_to(ROOT):
        return str(path.relative_to(ROOT))
    return path.name if public and path.is_absolute() else source
