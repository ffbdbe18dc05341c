"""The "Latent space" tab's backend: interpolations between two prompts (every architecture a walk knows) and
unCLIP's text diffs (comparisons.app.walks), their inputs checked, and in the Shapes lab what the checker reads in
every frame against the start and end captions.

These runs are explorations, not logged rows: a row is an image its settings regenerate, and a frame needs the
whole walk. GPU work only (it may run in a forked ZeroGPU worker): results are numpy arrays and tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from comparisons.app.access import OWNER
from comparisons.app.inputs import parse_prompt, parse_seed, shown
from comparisons.app.progress import Progress
from comparisons.app.session import Session
from comparisons.app.walks import (
    Walk,
    interpolate_latent_diffusion,
    interpolate_stable_unclip,
    interpolate_unclip,
    text_diff_unclip,
)
from comparisons.presets import get_preset
from comparisons.settings import Settings
from lab.captions import parse_caption
from lab.checker import CheckResult, check
from lab.world import region_of
from pipelines.outputs import to_uint8

WALKED = ("unclip", "latent_diffusion", "stable_unclip")  # the architectures a walk knows how to move through
MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES = 2, 12, 8
DECODER_TEXT = ("prompts", "empty")  # what unCLIP's decoder reads besides the embedding (comparisons.app.walks)
DEFAULT_MAX_THETA = 0.5  # §3.3: θ grows linearly to a maximum "typically in [0.25, 0.50]"


# ----------------------------------------------------------------------------- inputs


def parse_frames(value: float | int | str | None) -> int:
    """The number of frames of a walk, as the slider sends it: a whole number in [MIN_FRAMES, MAX_FRAMES]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not MIN_FRAMES <= number <= MAX_FRAMES:
        raise ValueError(f"Frames must be a whole number from {MIN_FRAMES} to {MAX_FRAMES}, got {shown(value)}")
    return int(number)


def parse_theta(value: float | int | str | None) -> float:
    """How far a text diff goes: θ in (0, 1], where θ = 1 reaches the text diff direction itself."""
    try:
        theta = float(value)
    except (TypeError, ValueError):
        theta = float("nan")
    if not 0 < theta <= 1:
        raise ValueError(f"Largest θ must be a number above 0, at most 1, got {shown(value)}")
    return theta


def parse_decoder_text(value: str | None) -> str:
    if value not in DECODER_TEXT:
        raise ValueError(f"unCLIP's decoder text must be one of {', '.join(DECODER_TEXT)}, got {shown(value)}")
    return value


# ----------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class WalkReport:
    """The walks of one request, and what the Shapes checker read in their frames."""

    start: str  # the caption the walk starts from
    end: str  # the caption it heads to (a text diff's target)
    walks: dict[str, Walk]  # architecture -> its walk
    readings: dict[str, pd.DataFrame] | None  # architecture -> a column per frame; None where the checker cannot read
    note: str  # what the checker read, or why it cannot


def checker_problem(preset: str, captions: list[str]) -> str | None:
    """Why the Shapes checker cannot read frames of these captions (None: it can)."""
    if not get_preset(preset).use_checker:
        return f"it reads the Shapes lab's images only, and these come from the {preset} preset"
    for caption in captions:
        try:
            parse_caption(caption)
        except ValueError as err:
            return str(err)
    return None


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def verdict(result: CheckResult) -> str:
    """✓/✗ for each attribute the caption names ("colour ✓ shape ✗"; two objects: "colour 1 ✓ ... relation ✗"), or
    "all ✓" when every one holds; a wrong count says how many objects were read."""
    marks = []
    for k, v in enumerate(result.objects):
        n = "" if len(result.objects) == 1 else f" {k + 1}"
        marks += [f"colour{n} {_mark(v.colour_correct)}", f"shape{n} {_mark(v.shape_correct)}"]
        marks += [] if v.size_correct is None else [f"size{n} {_mark(v.size_correct)}"]
    for name, value in (("relation", result.relation_correct), ("position", result.position_correct)):
        marks += [] if value is None else [f"{name} {_mark(value)}"]
    marks += [] if result.count_correct else [f"count ✗ ({result.n_detected})"]
    return "all ✓" if result.all_correct else " ".join(marks)


def readings(walk: Walk, start: str, end: str) -> pd.DataFrame:
    """What the checker reads in each frame, one column per frame under the strip: each object's colour, shape,
    size and position (left to right), and its verdicts against the start and end captions."""
    attributes = {
        "colour": lambda o: o.colour,
        "shape": lambda o: o.shape,
        "size": lambda o: o.size,
        "position": lambda o: region_of(o.centre),
    }
    columns = {"read": [*attributes, f"start: {start}", f"end: {end}"]}
    for label, image in zip(walk.labels(), to_uint8(walk.frames)):
        first, last = check(image, start), check(image, end)
        found = first.detected or (None,)
        read = [" / ".join("nothing" if o is None else name(o) for o in found) for name in attributes.values()]
        columns[label] = [*read, verdict(first), verdict(last)]
    return pd.DataFrame(columns)


def _report(preset: str, start: str, end: str, walks: dict[str, Walk]) -> WalkReport:
    problem = checker_problem(preset, [start, end])
    if problem is not None:
        return WalkReport(start, end, walks, None, f"The Shapes checker cannot read these frames: {problem}.")
    tables = {a: readings(w, start, end) for a, w in walks.items()}
    note = (
        "The Shapes checker read every frame (a column per frame, as in the strip): colour, shape, size and "
        "position of each object it found, left to right, and ✓/✗ for each attribute the start and end captions name."
    )
    return WalkReport(start, end, walks, tables, note)


# ----------------------------------------------------------------------------- the tab's requests


def _share(progress: Progress | None, k: int, parts: int) -> Progress | None:
    """Part k of `parts` of one progress bar."""
    return None if progress is None else lambda done, what: progress((k + done) / parts, what)


class LatentSpace:
    """The tab's two requests on a session's models; each is GPU work that changes nothing and returns a report."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def architectures(self) -> tuple[str, ...]:
        """The session's architectures a walk knows (WALKED), in the page's order."""
        return tuple(a for a in self.session.architectures if a in WALKED)

    def examples(self) -> tuple[tuple[str, str], tuple[str, str, str]]:
        """The tab's first prompts: (start, end) and a text diff's (caption, source, target); Fig. 5's outside the
        lab."""
        if get_preset(self.session.config.preset).use_checker:
            return ("a red circle", "a blue square"), ("a red circle", "a red circle", "a red square")
        cat = "a photo of a cat"
        return (cat, "a photo of a dog"), (cat, cat, "an anime drawing of a super saiyan cat")

    def interpolate(
        self,
        start: str | None,
        end: str | None,
        seed: str | float | int | None,
        num_frames: float | int | str | None,
        decoder_text: str | None,
        settings: Settings,
        progress: Progress | None = None,
        visitor: str = OWNER,
    ) -> WalkReport:
        """Every architecture a walk knows (WALKED) between two prompts, `num_frames` frames each."""
        self.session.fair_use(visitor, "walk", "Latent walks")
        start, end = parse_prompt(start, "start prompt"), parse_prompt(end, "end prompt")
        seed, n, decoder_text = parse_seed(seed), parse_frames(num_frames), parse_decoder_text(decoder_text)
        settings = settings.checked()
        harness = self.session.harness()
        archs = [a for a in harness.architectures if a in WALKED]  # the models loaded now
        walks = {}
        with self.session.gpu_turn():
            for k, arch in enumerate(archs):
                pipe, part = harness.pipeline(arch), _share(progress, k, len(archs))
                if arch == "unclip":
                    walks[arch] = interpolate_unclip(pipe, start, end, seed, settings, n, decoder_text, part)
                elif arch == "stable_unclip":
                    walks[arch] = interpolate_stable_unclip(pipe, start, end, seed, settings, n, decoder_text, part)
                else:
                    walks[arch] = interpolate_latent_diffusion(pipe, start, end, seed, settings, n, part)
        return _report(self.session.config.preset, start, end, walks)

    def text_diff(
        self,
        caption: str | None,
        source: str | None,
        target: str | None,
        seed: str | float | int | None,
        num_frames: float | int | str | None,
        max_theta: float | int | str | None,
        decoder_text: str | None,
        settings: Settings,
        progress: Progress | None = None,
        visitor: str = OWNER,
    ) -> WalkReport:
        """unCLIP's text diff of a caption from `source` towards `target`, `num_frames` frames up to `max_theta`."""
        self.session.fair_use(visitor, "walk", "Latent walks")
        caption = parse_prompt(caption, "caption")
        source, target = parse_prompt(source, "source caption"), parse_prompt(target, "target caption")
        seed, n, theta = parse_seed(seed), parse_frames(num_frames), parse_theta(max_theta)
        decoder_text, settings = parse_decoder_text(decoder_text), settings.checked()
        pipe = self.session.harness().pipeline("unclip")
        with self.session.gpu_turn():
            walk = text_diff_unclip(pipe, caption, source, target, seed, settings, n, theta, decoder_text, progress)
        return _report(self.session.config.preset, caption, target, {"unclip": walk})
