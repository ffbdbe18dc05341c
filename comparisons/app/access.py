"""Who may do what when the app is public (a Space, or any host but loopback): every visitor is a stranger.

- **The models are the owner's.** Flags and environment variables choose them; a visitor's switch is refused in
  one sentence unless the owner allows switching, and then only to the presets and to hub ids on the owner's
  allow-list: never a server directory, so no answer tells a stranger what the server's disk holds.
- **Each visitor's results are their own.** Rows carry an anonymous visitor id, an HMAC of the browser session's
  id under a secret of this server process (never an IP, and not the session id itself: a row's id, read in an
  export, does not let anyone act as its visitor); a visitor reads only the rows of their id unless the owner
  shares the gallery.
- **Fair use.** Heavy requests (sweeps, latent walks, images in) are rate-limited per visitor, background sweeps
  capped at once, and the results folder capped in size.

On loopback, as on a laptop, none of this applies: the one visitor is the owner.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from comparisons.presets import PRESETS
from pipelines.hub import is_repo_id

LOOPBACK = ("127.0.0.1", "localhost", "::1")
OWNER = ""  # the visitor id of a loopback deployment's one visitor, and of rows from before visitors
HEAVY = ("sweep", "walk", "image_in", "pairs")  # what `Limits.per_minute` counts per visitor
_TRUE = ("1", "true", "yes", "on")


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Limits:
    """Fair use on a public deployment (the owner's flags; see docs/app.md)."""

    per_minute: int = 6  # heavy requests (a sweep, a walk, an image in) per visitor per minute, each kind alone
    background_sweeps: int = 1  # sweeps running at once, all visitors together
    results_cap_gb: float | None = 5.0  # the results folder's size past which new images are refused; None: no cap
    votes_per_minute: int = 30  # votes per browser session per minute (the Vote tab), on loopback too


@dataclass(frozen=True)
class Access:
    """What visitors may do: everything on loopback; on a public deployment, what the owner allows."""

    public: bool = False  # a Space, a non-loopback host, or forced (--public, T2I_PUBLIC)
    allow_switching: bool = False  # --allow-switching, T2I_ALLOW_SWITCHING: visitors may switch models (public only)
    allowed_models: frozenset[str] = frozenset()  # --allowed-models, T2I_ALLOWED_MODELS: hub ids a switch may name
    shared_results: bool = False  # --shared-results, T2I_SHARED_RESULTS: every visitor sees every row (public only)
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def of(
        cls,
        host: str | None,
        environ: Mapping[str, str],
        *,
        public: bool = False,
        allow_switching: bool = False,
        allowed_models: str = "",
        shared_results: bool = False,
        limits: Limits = Limits(),
    ) -> Access:
        """From the flags, each or'ed with its environment variable; public on a Space (SPACE_ID) or a host that
        is not loopback."""
        remote = (host or LOOPBACK[0]) not in LOOPBACK
        public = public or _flag(environ, "T2I_PUBLIC") or "SPACE_ID" in environ or remote
        listed = f"{allowed_models},{environ.get('T2I_ALLOWED_MODELS', '')}"
        models = frozenset(m.strip() for m in listed.split(",") if m.strip())
        for model in models:
            if not is_repo_id(model):
                raise ValueError(f"allowed models: {model!r} is not a hub id like 'org/name' (never a server folder)")
        return cls(
            public=public,
            allow_switching=allow_switching or _flag(environ, "T2I_ALLOW_SWITCHING"),
            allowed_models=models,
            shared_results=shared_results or _flag(environ, "T2I_SHARED_RESULTS"),
            limits=limits,
        )

    @property
    def switching(self) -> bool:
        """Whether the page offers the Models picker."""
        return not self.public or self.allow_switching

    @property
    def per_visitor(self) -> bool:
        """Whether each visitor reads only their own rows."""
        return self.public and not self.shared_results

    def check_switch(self, preset: str, models: Mapping[str, str | None], judge: str | None) -> None:
        """Refuse, in one sentence that names no server path, a switch this deployment does not allow a visitor."""
        if not self.public:
            return
        if not self.allow_switching:
            raise ValueError("The models are fixed on this public app: its owner chooses them.")
        if preset not in PRESETS:
            raise ValueError(f"Preset: pick one of {', '.join(sorted(PRESETS))}.")
        for arch, source in models.items():
            if source in (None, ""):
                continue
            if source not in self.allowed_models:
                offered = ", ".join(sorted(self.allowed_models)) or "none: only the presets"
                raise ValueError(f"Models: {arch} can only be a model this app's owner allows ({offered}).")

    def describe(self) -> str:
        """What the page says of this deployment's mode."""
        if not self.public:
            return ""
        results = (
            "every visitor's results are shown to every visitor"
            if self.shared_results
            else "you see only your own results"
        )
        models = "visitors may switch models" if self.allow_switching else "the models are the owner's choice"
        limits = self.limits
        fair = (
            f"sweeps, latent walks and images in: {limits.per_minute} a minute each per visitor, "
            f"{limits.background_sweeps} sweep{'s' * (limits.background_sweeps != 1)} at a time for everyone"
        )
        cap = f", new images refused once results hold {limits.results_cap_gb:g} GB" if limits.results_cap_gb else ""
        return f"Public app: {results}; {models}; {fair}{cap}."


# ----------------------------------------------------------------------------- visitors


class Visitors:
    """Anonymous visitor ids: HMAC-SHA256 of a browser session's id under this process's secret."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def id_of(self, session_hash: str | None) -> str:
        """The visitor id rows carry: 16 hex digits; no session (a call outside a browser session) has none."""
        if not session_hash:
            raise ValueError("this request has no session: open the app's page, or connect with gradio_client")
        return hmac.new(self._secret, session_hash.encode(), hashlib.sha256).hexdigest()[:16]


# ----------------------------------------------------------------------------- fair use


class RateLimiter:
    """At most `per_minute` calls of one kind per visitor in any 60 seconds (a sliding window)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self._clock = per_minute, clock
        self._calls: dict[tuple[str, str], collections.deque[float]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def take(self, visitor: str, kind: str, what: str, per: str = "per visitor on this public app") -> None:
        """Count one call, or refuse it with when the next one is allowed (`what`: the request, in words; `per`: whose
        calls are counted, in words)."""
        now = self._clock()
        with self._lock:
            calls = self._calls[(visitor, kind)]
            while calls and calls[0] <= now - 60:
                calls.popleft()
            if len(calls) >= self.per_minute:
                wait = math.ceil(calls[0] + 60 - now)
                raise ValueError(f"{what}: {self.per_minute} a minute {per}; try again in {wait} s.")
            calls.append(now)


def folder_bytes(directory: Path) -> int:
    """What the files under `directory` take, in bytes (0 for a folder not made yet)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else 0


# ----------------------------------------------------------------------------- what an error may say

_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.+@-]+/)*[\w.+@-]+")


def without_paths(message: str) -> str:
    """`message` with every absolute path replaced by "a file": what a public page may show."""
    return _ABSOLUTE_PATH.sub("a file", message)
