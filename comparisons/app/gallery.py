"""The Results tab's gallery: the filtered rows' images newest first, one row's details, and the values that send
it back to the Compare tab to be made again (or changed). Pure functions of the run log (no models, no gradio).

An item is named by its row's `image_path`, unique per row: a selection stays the row it was even when new rows
land between showing the gallery and clicking.
"""

from __future__ import annotations

import re

import pandas as pd

from comparisons.app.views import stats_line
from pipelines import registry
from pipelines.registry import TEXT

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
        raise ValueError(f"no row of the run log has the image {image_path[:200]!r}")
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
