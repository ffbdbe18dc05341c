"""The Results tab's gallery: the filtered rows' images newest first, one row's details, and the values that send
it back to the Compare tab to be made again (or changed). Pure functions of the run log (no models, no gradio).

An item is named by its row's `image_path`, unique per row: a selection stays the row it was even when new rows
land between showing the gallery and clicking.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from comparisons.app.views import stats_line
from comparisons.records import MADE_HOW, digest_of, key_digest, made_how_from_png, row_key, settings_from_png
from comparisons.schema import MODE, SOURCE_HASH
from comparisons.sources import image_in_from_png
from pipelines import registry
from pipelines.registry import TEXT
from pipelines.tokenizer import excerpt

GALLERY_SIZE = 120  # thumbnails at once: the newest of the filtered rows
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
