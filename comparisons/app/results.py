"""The Results tab's backend: the run log filtered, its exports, the gallery (the filtered rows' images newest
first, one row's details, and the values that send it back to the Compare tab to be made again or changed) and PNG
info (what a PNG this app wrote says of itself). The functions are pure functions of the run log (no models, no
gradio); `Results` reads the session's log and results folder.

An item is named by its row's `image_path`, unique per row: a selection stays the row it was even when new rows
land between showing the gallery and clicking. Pages name an image inside the results folder, never by the
server's own path.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd
from PIL import Image

from comparisons.app.access import OWNER
from comparisons.app.inputs import shown
from comparisons.app.session import Session
from comparisons.app.views import chosen_summary, memory_bars, score_vs_seconds, stage_seconds_long, stats_line
from comparisons.configurations import Choice, choices
from comparisons.exports import export_csv, export_parquet
from comparisons.records import (
    MADE_HOW,
    digest_of,
    key_digest,
    made_how_from_png,
    model_shown,
    row_key,
    settings_from_png,
)
from comparisons.schema import MODE, SOURCE_HASH, SOURCE_IMAGE
from comparisons.sources import image_in_from_png
from pipelines import registry
from pipelines.registry import TEXT
from pipelines.tokenizer import excerpt

log = logging.getLogger(__name__)
GALLERY_SIZE = 120  # thumbnails at once: the newest of the filtered rows
TABLE_ROWS = 1_000  # rows the table shows, newest first: the exports carry every row
SCATTER_POINTS = 2_000  # points of the score-against-seconds plot: the newest of the configuration's images
KEPT = 64  # computed views kept (Results.kept)
THUMB_PX = 256  # a gallery thumbnail's longer side
THUMBS = "thumbs"  # the results folder's thumbnails, named as the images they show
T = TypeVar("T")
CAPTION_CHARS = 40  # of the prompt under a thumbnail


def plain_row(row: pd.Series) -> dict:
    """A logged row as a dict without its missing cells, as the harness makes rows (what stats_line reads)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if not _missing(v)}


def _missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array cell is there
        return False


def caption(row: dict) -> str:
    """architecture · seed · the prompt's start: "unCLIP · seed 3 · a red circle above a blue…"."""
    prompt = " ".join(str(row["prompt"]).split())
    short = prompt if len(prompt) <= CAPTION_CHARS else prompt[: CAPTION_CHARS - 1].rstrip() + "…"
    return f"{registry.get(row['architecture']).short} · seed {row['seed']} · {short}"


def gallery_items(df: pd.DataFrame, limit: int = GALLERY_SIZE) -> tuple[list[tuple[str, str]], list[str]]:
    """The newest `limit` rows' (image, caption), newest first, and their image paths (what each item is)."""
    newest = df.iloc[::-1].head(limit)
    rows = [plain_row(r) for _, r in newest.iterrows()]
    return [(r["image_path"], caption(r)) for r in rows], [r["image_path"] for r in rows]


def find_row(df: pd.DataFrame, image_path: str | None) -> dict:
    """The row whose image is `image_path`; a ValueError when no row of the log has it."""
    if not isinstance(image_path, str) or not image_path.strip():
        raise ValueError("no image is selected: click one in the gallery")
    found = df[df["image_path"] == image_path] if "image_path" in df.columns else df.iloc[:0]
    if found.empty:
        raise ValueError("no row of this run log has that image: pick one in the gallery")
    return plain_row(found.iloc[-1])


def _escaped(text: str) -> str:
    """Text shown as itself in Markdown (a prompt with * or _ stays a prompt)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!<>|~])", r"\\\1", " ".join(text.split()))


def settings_line(row: dict) -> str:
    """The row's own settings in the registry's words: "unCLIP prior steps 25 · ... · unCLIP decoder guidance 8"."""
    arch = registry.get(row["architecture"])
    shown = [f"{s.label} {row[s.name]}" for s in arch.settings if s.role != TEXT and s.name in row]
    texts = [f"{s.label}: {_escaped(str(row[s.name]))}" for s in arch.settings if s.role == TEXT and row.get(s.name)]
    return " · ".join([*shown, *texts]) or "no settings logged"


def row_details(row: dict) -> str:
    """The selected row as Markdown: architecture, prompt, settings, the stats line (checker verdict included)."""
    arch = registry.get(row["architecture"])
    created = pd.Timestamp(row["created_at"]).strftime("%Y-%m-%d %H:%M UTC") if "created_at" in row else "?"
    size = f"{row.get('width', '?')}×{row.get('height', '?')} px"
    return "\n\n".join(
        [
            f"**{arch.label}** · run `{row.get('run_id', '?')}` · {created} · {size}",
            f"> {_escaped(str(row['prompt']))}",
            settings_line(row),
            stats_line(row),
        ]
    )


def compare_values(row: dict, settings: dict[str, object]) -> tuple[str, str, dict[str, object]]:
    """What Compare shows to make this row again: (prompt, seed, settings), its architecture's settings from the row
    and every other setting as `settings` has it (the other architecture keeps what the Compare tab shows)."""
    arch = registry.get(row["architecture"])
    own = {s.name: row.get(s.name, "" if s.role == TEXT else s.default) for s in arch.settings}
    own = {name: "" if value is None else value for name, value in own.items()}
    return str(row["prompt"]), str(row["seed"]), {**settings, **own}


# ----------------------------------------------------------------------------- a PNG's own settings (PNG info)


def png_row(path: str | Path, df: pd.DataFrame) -> tuple[dict, int]:
    """What a PNG this tool wrote says of itself, as a row (architecture, prompt, seed, its settings, how it was made;
    made from an image: its mode, source hash and strength), and how many rows of the log `df` were made with exactly
    those (their images named by the same digest); the newest such row when there is one. A ValueError for a PNG
    without our infotext."""
    try:
        architecture, prompt, seed, settings = settings_from_png(path)
        image_in = image_in_from_png(path)
        made = made_how_from_png(path)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{excerpt(Path(path).name)} carries no settings this app wrote ({err})") from None
    columns = {}
    if image_in is not None:
        columns = {MODE: image_in.mode, SOURCE_HASH: image_in.source_hash}
        strength = registry.get(architecture).image_in.strength
        if strength is not None:
            columns[strength.name] = image_in.strength
    digest = key_digest(row_key(architecture, prompt, seed, settings, columns or None))
    mode = columns.get(MODE, registry.TEXT_TO_IMAGE)
    row = {
        "architecture": architecture,
        "prompt": prompt,
        "seed": seed,
        **settings.for_architecture(architecture, mode),
    }
    row |= columns | made
    if df.empty or "image_path" not in df.columns:
        return row, 0
    same = df[df["image_path"].map(lambda p: digest_of(Path(p).name) == digest)]
    return (plain_row(same.iloc[-1]) if len(same) else row), len(same)


def png_details(row: dict, in_log: int) -> str:
    """What png_row found, as Markdown: the row's details, or the PNG's own settings when this log lacks it."""
    arch = registry.get(row["architecture"])
    where = (
        f"This log has {in_log} row{'s' * (in_log > 1)} made with exactly these settings; the newest:"
        if in_log
        else "No row of this log was made with these settings (another results folder's image?): its own settings:"
    )
    lines = [where, f"**{arch.label}** · seed {row['seed']}", f"> {_escaped(str(row['prompt'])) or '(no prompt)'}"]
    lines.append(settings_line(row))
    if row.get(MODE, registry.TEXT_TO_IMAGE) != registry.TEXT_TO_IMAGE:
        lines.append(f"made from an image ({row[MODE]}); Compare draws from the prompt alone")
    made = [f"{label.lower()} {row[name]}" for name, label in MADE_HOW.items() if row.get(name) is not None]
    if made:
        lines.append("made with " + ", ".join(made))
    if in_log:
        lines.append(stats_line(row))
    return "\n\n".join(lines)


# ----------------------------------------------------------------------------- the tab's requests


def _state(df: pd.DataFrame) -> tuple:
    """What identifies a frame of log rows for a cache: how many, and the newest's run and image (the log only grows,
    and every row names its own image)."""
    if df.empty:
        return (0,)
    last = df.iloc[-1]
    return len(df), str(last.get("run_id")), str(last.get("image_path"))


def filter_runs(df: pd.DataFrame, architecture: str | None = None, prompt_contains: str | None = None) -> pd.DataFrame:
    if architecture and architecture != "all":
        df = df[df["architecture"] == architecture]
    if prompt_contains:
        df = df[df["prompt"].str.contains(prompt_contains, case=False, regex=False)]
    return df


class Results:
    """The tab's requests on a session's run log and results folder: on a public app that does not share its
    results, each visitor's own rows alone (Session.runs). What a refresh computes from many rows (the
    configurations, a configuration's summary and plots) is kept until the rows it was computed from change."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._kept: collections.OrderedDict[tuple, object] = collections.OrderedDict()
        self._kept_lock = threading.Lock()
        self._small: set[str] = set()  # images no bigger than a thumbnail: shown as they are

    def kept(self, key: tuple, compute: Callable[[], T]) -> T:
        """`compute()`, or what it gave for the same `key` before (the newest KEPT keys are kept)."""
        with self._kept_lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
        value = compute()
        with self._kept_lock:
            self._kept[key] = value
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        return value

    def warm(self) -> None:
        """Read the run log, its configurations and the newest one's summary once, at start, in the background: the
        first visitor to open the tab does not pay a whole log's reading (5.6 s at 100,000 rows)."""
        try:
            df = self.runs("all", "", None)
            options = self.configurations(df, ("all", ""))
            self.summary(df, options[0] if options else None)
        except (ValueError, OSError) as err:  # the tab says it when opened; the server carries on
            log.warning("the run log could not be read ahead: %s", err)

    def configurations(self, df: pd.DataFrame, filters: tuple) -> list[Choice]:
        """The configurations a summary can compare (comparisons.configurations.choices), kept per log state."""
        return self.kept(("choices", filters, _state(df)), lambda: choices(df))

    def summary(self, df: pd.DataFrame, choice: Choice | None) -> tuple:
        """A configuration's summary, note and plot frames (views.chosen_summary and the plots' frames), kept until
        that configuration's rows change: new rows of another do not make it again."""
        rows = df if choice is None else choice.rows(df)
        label = None if choice is None else choice.label

        def compute() -> tuple:
            table, note = chosen_summary(df, choice)
            scatter = score_vs_seconds(rows.tail(SCATTER_POINTS))
            if len(rows) > SCATTER_POINTS:
                note += f" The scatter plot shows the newest {SCATTER_POINTS:,} of its {len(rows):,} images."
            return table, note, stage_seconds_long(rows), scatter, memory_bars(rows)

        return self.kept(("summary", label, _state(rows)), compute)

    def runs(
        self, architecture: str | None = None, prompt_contains: str | None = None, visitor: str | None = OWNER
    ) -> pd.DataFrame:
        """The run log (persisted across restarts), the visitor's part of it, filtered."""
        return filter_runs(self.session.runs(visitor), architecture, prompt_contains)

    def row(self, image: str, visitor: str | None = OWNER) -> dict:
        """The row of the image a page names (`image_name`'s, or a path given whole), among the visitor's rows."""
        return find_row(self.session.runs(visitor), self.image_path(image))

    def png(self, path: str | Path, visitor: str | None = OWNER) -> tuple[dict, int]:
        """What a dropped PNG says of itself, against the visitor's part of this run log (`png_row`)."""
        return png_row(path, self.session.runs(visitor))

    def image_name(self, path: str) -> str:
        """An image's path as pages show it: inside the results folder (images/unclip/...), never the server's."""
        try:
            return str(Path(path).resolve().relative_to(self.session.results_dir))
        except ValueError:
            return Path(path).name

    def gallery(self, df: pd.DataFrame) -> tuple[list[tuple[str, str]], list[str]]:
        """`gallery_items` with each image as its thumbnail (`thumbnail`): what the page shows of the newest rows."""
        items, paths = gallery_items(df)
        return [(self.thumbnail(image), words) for image, words in items], paths

    def thumbnail(self, image: str) -> str:
        """An image at most THUMB_PX a side, made once into thumbs/ (the image itself when it is that small, as the
        lab's are): a refresh sends the gallery its thumbnails, not 768 px pictures."""
        if image in self._small:
            return image
        thumb = self.session.results_dir / THUMBS / Path(self.image_name(image)).with_suffix(".png")
        if thumb.is_file():
            return str(thumb)
        try:
            with Image.open(image) as picture:
                if max(picture.size) <= THUMB_PX:
                    self._small.add(image)
                    return image
                picture.thumbnail((THUMB_PX, THUMB_PX))
                thumb.parent.mkdir(parents=True, exist_ok=True)
                partial = thumb.with_suffix(".partial.png")
                picture.save(partial)
                os.replace(partial, thumb)  # whole or absent: a reader never sees half a thumbnail
        except OSError:
            return image  # the gallery says what is wrong with the image itself
        return str(thumb)

    def image_names(self, paths: pd.Series) -> pd.Series:
        """`image_name` of every path at once (rows hold absolute paths the harness wrote, inside the folder)."""
        prefix = f"{self.session.results_dir}{os.sep}"
        inside = paths.str.startswith(prefix, na=False)
        names = paths.where(~inside, paths.str.slice(len(prefix)))
        outside = ~inside & paths.str.startswith("/", na=False)  # a relative name is already one
        return names.where(~outside, paths[outside].map(self.image_name)) if outside.any() else names

    def image_path(self, name: str) -> str:
        """The path rows hold for an image a page names (image_name's), or a path given whole (an API caller's)."""
        path = Path(name)
        return str(path if path.is_absolute() else self.session.results_dir / path)

    def export(self, df: pd.DataFrame, fmt: str) -> Path:
        """The given (filtered) table as a file in the results folder's exports/, the only place downloads
        come from, its images named inside the results folder (never by the server's path). Named by content, so
        the same table is written once however often it is asked for, and no one finds another's by its name."""
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"unknown export format {shown(fmt)}; choose csv or parquet")
        if df.empty:
            raise ValueError("the table is empty: nothing to export")
        named = {c: self.image_names(df[c]) for c in ("image_path", SOURCE_IMAGE) if c in df.columns}
        if "model" in df.columns:
            named["model"] = df["model"].map(model_shown)
        df = df.assign(**named)
        digest = hashlib.sha256(pd.util.hash_pandas_object(df.astype(str), index=False).values.tobytes()).hexdigest()[
            :16
        ]
        path = self.session.results_dir / "exports" / f"runs-{len(df)}-{digest}.{fmt}"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "csv":  # a browser hands it to a spreadsheet: text cells must not run as formulas
                export_csv(df, path, neutralise_formulas=True)
            else:
                export_parquet(df, path)
        return path
