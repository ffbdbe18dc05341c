"""What the app shows, formatted: the stats line under an image, the checker's verdicts, the prior's summary, the
run log's table, plot frames and the summary of a chosen configuration. Pure functions of rows and frames (no
models, no gradio).
"""

from __future__ import annotations

import pandas as pd

from comparisons.configurations import Choice
from comparisons.summary import NoPairsError, default_pair, summarize, summary_table
from pipelines import registry

TABLE_COLUMNS = (
    "created_at",
    "run_id",
    "architecture",
    "mode",
    "prompt",
    "seed",
    "seconds_total",
    "peak_memory_mb",
    "memory_kind",
    "clip_score",
    "prior_image_cosine",
    "check_all_correct",
    "image_path",
)


def stats_line(row: dict) -> str:
    """The compact stats under an image: seed, seconds (total and per stage), peak memory, CLIP, checker."""
    stages = [c.removeprefix("seconds_") for c in row if c.startswith("seconds_") and c != "seconds_total"]
    per_stage = ", ".join(f"{s} {row[f'seconds_{s}']:.2f}" for s in stages if row.get(f"seconds_{s}") is not None)
    parts = [
        f"seed {row['seed']}",
        f"{row['seconds_total']:.2f} s ({per_stage})",
        f"{row['memory_kind']} {row['peak_memory_mb']:,.0f} MB",
        f"CLIP {row['clip_score']:.1f}" if row.get("clip_score") is not None else "CLIP n/a (no prompt)",
    ]
    verdict = checker_verdict(row)
    if verdict:
        parts.append(verdict)
    return " · ".join(parts)


def checker_verdict(row: dict) -> str:
    """The Shapes checker's verdicts as ✓/✗ per attribute the caption states ('' outside the lab); a
    wrong colour or shape says what was drawn instead, e.g. "shape ✗ (square)"."""
    names = {
        "object1_colour": "colour",
        "object1_shape": "shape",
        "object2_colour": "colour 2",
        "object2_shape": "shape 2",
        "relation": "relation",
        "position": "position",
    }
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


def prior_summary(inside) -> str:
    """What unCLIP's prior did, from comparisons.inside.UnCLIPInside: where its image embedding sits."""
    image = (
        "n/a (this model has no image encoder)"
        if inside.prior_image_cosine is None
        else f"{inside.prior_image_cosine:.3f}"
    )
    return (
        "**unCLIP's prior** turns the CLIP text embedding into a CLIP *image* embedding, which the decoder draws.\n\n"
        f"| cosine of the prior's image embedding with | value |\n|---|---|\n"
        f"| the text embedding it was conditioned on | {inside.prior_text_cosine:.3f} |\n"
        f"| the final image's embedding (same CLIP) | {image} |"
    )


def stage_seconds_long(df: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per stage and architecture, long form for a stacked bar chart."""
    stages = [c for c in df.columns if c.startswith("seconds_") and c != "seconds_total"]
    if df.empty or not stages:
        return pd.DataFrame(
            {
                "architecture": pd.Series(dtype="string"),
                "stage": pd.Series(dtype="string"),
                "seconds": pd.Series(dtype=float),
            }
        )
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
        return pd.DataFrame(
            {c: pd.Series(dtype=float if c in ("seconds_total", "clip_score") else "string") for c in columns}
        )
    return df[columns].astype({"seconds_total": float, "clip_score": float, "seed": "string"})


def summary_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The paired side-by-side summary, every estimate beside n and its 95% interval, and a note."""
    try:
        a, b = default_pair(df)
        table = summary_table(df, a, b)
    except (NoPairsError, ValueError, KeyError) as err:
        return pd.DataFrame(), f"No summary yet: {err}. Generate both architectures for the same prompts and seeds."
    name_a, name_b = registry.get(a).short, registry.get(b).short
    shown = pd.DataFrame(
        {
            "metric": table.index,
            "better": table["better"],
            "n pairs": table["n"].astype(int),
            name_a: table[f"mean_{a}"].round(4),
            name_b: table[f"mean_{b}"].round(4),
            f"difference {name_a} − {name_b} [95% CI]": [
                f"{r.mean_diff:.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}]" for r in table.itertuples()
            ],
            f"{name_a} win rate [95% CI]": [
                f"{r.win_rate:.0%} [{r.win_ci_low:.0%}, {r.win_ci_high:.0%}]" for r in table.itertuples()
            ],
        }
    )
    return shown, "Paired by prompt and seed; percentile-bootstrap intervals over pairs (2000 resamples)."


def chosen_summary(df: pd.DataFrame, choice: Choice | None) -> tuple[pd.DataFrame | None, str]:
    """The chosen configuration's summary and a note: paired with 95% intervals, or each architecture's statistics
    when nothing pairs. Never an empty table: None, and a note saying what is missing, when no row matches."""
    if choice is None:
        return None, "No runs match yet: generate in Compare or run a sweep, then the summary shows here."
    rows = choice.rows(df)
    if choice.paired:
        table, note = summary_frame(rows)
        if not table.empty:
            pairs = f"{choice.n_pairs} pair" + ("s" if choice.n_pairs != 1 else "")
            return table, f"{choice.label}: {pairs}. {note}"
        return unpaired_frame(rows), f"{choice.label}: {note} Meanwhile each architecture's statistics, unpaired."
    others = [registry.get(n).short for n in registry.names() if n != choice.configurations[0].architecture]
    return unpaired_frame(rows), (
        f"{choice.label}: no pairs (no {' or '.join(others)} rows for the same prompts and seeds), so its "
        "statistics, unpaired. Generate both architectures for the same prompts and seeds to pair them."
    )


def unpaired_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Each architecture's n, mean, median and std of every metric, side by side (comparisons.summary.summarize)."""
    wide = summarize(df).round(4).reset_index()
    return wide.rename(columns={n: registry.get(n).short for n in registry.names() if n in wide.columns})


def table_view(df: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading on screen, newest first, rounded (exports carry every column, unrounded)."""
    shown = df[[c for c in TABLE_COLUMNS if c in df.columns]].iloc[::-1]
    return shown.round({"seconds_total": 3, "peak_memory_mb": 1, "clip_score": 2, "prior_image_cosine": 3})
