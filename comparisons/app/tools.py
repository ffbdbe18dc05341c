"""What the app's agent tools answer (comparisons.app.ui.tools, served over MCP by `python app.py --mcp`): a
comparison, a sweep's progress and a configuration's summary as plain data, read from the tabs' own backends.

JSON-able dicts: figures carry their units in their keys (`seconds_total`, `peak_memory_mb`, `width_px`), a missing
figure is None (never NaN, which JSON lacks), an image is named inside the results folder (never by the server's
path) and given as the screen makes it (`Served`: a file gradio serves, whose URL the client fetches). Gradio-free,
like the backends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from comparisons.app.inputs import parse_settings, parse_text, shown
from comparisons.app.sweep import SweepStatus
from comparisons.app.views import checker_verdict, stats_line
from comparisons.configurations import Choice
from comparisons.settings import Settings
from pipelines import registry

Served = Callable[[Path], object]  # an image's path -> what stands for it in an answer (a file gradio serves)


def plain(value: object) -> object:
    """`value` as JSON has it: dicts and lists all the way down, numpy scalars as numbers, NaN and infinities as
    None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):  # a numpy or pandas scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def settings_help() -> str:
    """Every setting a tool takes, by name with its default, in the registry's order: "prior_steps=25 (unCLIP prior
    steps), ..."."""
    return ", ".join(f"{s.name}={s.default} ({s.label})" for s in registry.all_settings())


def settings_from(given: object) -> Settings:
    """The settings an agent sent ({"steps": 20, "guidance": 5.0}; None: every default), checked as the Compare tab's
    Advanced widgets are."""
    if given is None:
        return Settings()
    if not isinstance(given, dict):
        raise ValueError(f"settings must be an object of setting names and values, got {shown(given)}")
    return parse_settings(**given)


def image_report(row: dict, name: str, image: Served) -> dict:
    """One image's row as an agent reads it: the architecture, its settings, the image, its size, seconds (total and
    per stage), peak memory, CLIP score (0 to 100, higher is better) and, in the Shapes lab, the checker's verdict."""
    arch = registry.get(row["architecture"])
    report = {
        "architecture": arch.name,
        "label": arch.label,
        "image": image(Path(row["image_path"])),
        "image_name": name,
        "width_px": row.get("width"),
        "height_px": row.get("height"),
        "settings": {s.name: row[s.name] for s in arch.settings if s.name in row},
        **{k: v for k, v in row.items() if k.startswith("seconds_")},
        "peak_memory_mb": row.get("peak_memory_mb"),
        "memory_kind": row.get("memory_kind"),
        "clip_score": row.get("clip_score"),
        "stats": stats_line(row),  # the line the Compare tab shows under the image
    }
    if "check_all_correct" in row:  # the Shapes lab's checker judged it
        report |= {"checker_all_correct": row["check_all_correct"], "checker": checker_verdict(row)}
    return plain(report)


def comparison_report(rows: dict[str, dict], notices: list[str], name: Callable[[str], str], image: Served) -> dict:
    """A comparison ({architecture: row}, as Compare.record gives it) and its notices for the agent."""
    first = next(iter(rows.values()))
    return {
        "prompt": first["prompt"],
        "seed": plain(first["seed"]),  # the one drawn, when -1 asked for a random one
        "run_id": first["run_id"],
        "architectures": {a: image_report(r, name(r["image_path"]), image) for a, r in rows.items()},
        "notices": list(notices),
    }


def sweep_report(status: SweepStatus | None, grid: Path | None, note: str, image: Served) -> dict:
    """Where a visitor's sweep stands, and its grid picture so far (rows × columns of its images) and what it shows."""
    if status is None:
        return {"running": False, "message": "no sweep yet: start one with the sweep tool"}
    return plain(
        {
            "run_id": status.run_id,
            "running": status.running,
            "images_total": status.total,
            "images_done": status.done,  # in the run log, this run's and those it found there
            "images_in_log_before": status.before,
            "cancelled": status.cancelled,
            "error": status.error,
            "seconds_elapsed": round(time.monotonic() - status.started, 1),
            "message": status.message(),
            "grid": None if grid is None else image(grid),
            "grid_note": note,
        }
    )


def chosen(options: list[Choice], label: str | None) -> Choice | None:
    """The configuration labelled `label` (blank: the newest), or a ValueError listing the labels there are."""
    label = parse_text(label, "configuration")
    if not label:
        return options[0] if options else None
    for option in options:
        if option.label == label:
            return option
    known = "; ".join(o.label for o in options) or "none yet: compare or sweep first"
    raise ValueError(f"no configuration {shown(label, 80)} in the run log; choose one of: {known}")


def summary_report(options: list[Choice], choice: Choice | None, table: pd.DataFrame | None, note: str) -> dict:
    """The Results tab's summary as data: the configuration, every configuration there is, the note and the table's
    rows (each measure with its unit and direction, each architecture's mean, their difference with its 95%
    interval, and how often each was better)."""
    return plain(
        {
            "configuration": None if choice is None else choice.label,
            "paired": choice is not None and choice.paired,
            "pairs": 0 if choice is None else choice.n_pairs,  # distinct (prompt, seed) pairs compared
            "configurations": [c.label for c in options],  # newest first: what `configuration` may name
            "note": note,
            "table": [] if table is None else table.to_dict("records"),
        }
    )
