"""What the app shows, formatted: the stats line under an image, the checker's verdicts, the prior's summary, the
run log's table, plot frames and the summary of a chosen configuration. Pure functions of rows and frames (no
models, no gradio).
"""

from __future__ import annotations

import pandas as pd

from comparisons.configurations import Choice
from comparisons.intervals import proportion
from comparisons.measures import metric_label
from comparisons.summary import (
    NoPairsError,
    comparisons_of,
    default_pair,
    joint_rows,
    summarize,
    summary_table,
)
from comparisons.vote_log import QUESTIONS
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


# What each figure under an image means (FIGURES_NOTE sits under them, once).
FIGURES_NOTE = (
    "**Reading the figures.** *s*: wall-clock seconds for the image, each stage's in brackets (the lab preset runs "
    "the architectures side by side, one per CPU core, a third waiting for the first core free: each one's seconds "
    "are those of sharing the machine). *memory*: the most one stage needed, in MB: on a CPU what its "
    "tensors and its models' weights take (tensors + weights), on a GPU its peak VRAM. *CLIP … of 100*: how well the "
    "image matches the prompt according to the judge, a CLIP model that draws nothing: their cosine × 100, higher "
    "is better; only scores of one judge compare. *checker* (Shapes lab): each thing the caption states, read off the "
    "image, ✓ right or ✗ wrong (with what was drawn instead); *2nd* is the caption's second object."
)


def stats_line(row: dict) -> str:
    """The compact stats under an image: seed, seconds (total and per stage), peak memory, CLIP, checker."""
    stages = [c.removeprefix("seconds_") for c in row if c.startswith("seconds_") and c != "seconds_total"]
    per_stage = ", ".join(f"{s} {row[f'seconds_{s}']:.2f}" for s in stages if row.get(f"seconds_{s}") is not None)
    parts = [
        f"seed {row['seed']}",
        f"{row['seconds_total']:.2f} s ({per_stage})",
        f"memory {row['peak_memory_mb']:,.0f} MB ({row['memory_kind']})",
        f"CLIP {row['clip_score']:.1f} of 100" if row.get("clip_score") is not None else "CLIP n/a (no prompt)",
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
        "object2_colour": "2nd colour",
        "object2_shape": "2nd shape",
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


def prior_summary(unclip, stable_unclip=None) -> str:
    """What the prior did (comparisons.app.inside's reports): where its image embedding sits, for unCLIP and, where
    there is one, Stable unCLIP (the same prior: the same seed gives it the same embedding)."""

    def cell(value: float | None) -> str:
        return "n/a (this model has no image encoder)" if value is None else f"{value:.3f}"

    rows = [("unCLIP", unclip)] + ([("Stable unCLIP", stable_unclip)] if stable_unclip is not None else [])
    header = " | ".join(["cosine of the prior's image embedding with", *(name for name, _ in rows)])
    text = " | ".join(["the text embedding it was conditioned on", *(cell(r.prior_text_cosine) for _, r in rows)])
    image = " | ".join(["the final image's embedding (same CLIP)", *(cell(r.prior_image_cosine) for _, r in rows)])
    return (
        "**The prior** turns the CLIP text embedding into a CLIP *image* embedding, which unCLIP's decoder draws "
        "(and Stable unCLIP's latent U-Net reads).\n\n"
        f"| {header} |\n|{'---|' * (len(rows) + 1)}\n| {text} |\n| {image} |"
    )


def shown_architectures(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with each architecture by its short name (unCLIP, LD), as plots label them."""
    short = {n: registry.get(n).short for n in registry.names()}
    return df.assign(architecture=df["architecture"].map(lambda a: short.get(a, a)).astype("string"))


def plot_order() -> list[str]:
    """The architectures' short names in the registry's order: every plot's x axis, as every view orders them."""
    return [registry.get(n).short for n in registry.names()]


def stage_seconds_long(df: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per stage and architecture (short names), long form for a stacked bar chart."""
    stages = [c for c in df.columns if c.startswith("seconds_") and c != "seconds_total"]
    if df.empty or not stages:
        return pd.DataFrame(
            {
                "architecture": pd.Series(dtype="string"),
                "stage": pd.Series(dtype="string"),
                "seconds": pd.Series(dtype=float),
            }
        )
    long = (
        shown_architectures(df)
        .melt(id_vars=["architecture"], value_vars=stages, var_name="stage", value_name="seconds")
        .dropna()
    )
    long["stage"] = long["stage"].str.removeprefix("seconds_")
    long["seconds"] = long["seconds"].astype(float)
    return long.groupby(["architecture", "stage"], as_index=False, observed=True)["seconds"].mean()


def memory_bars(df: pd.DataFrame) -> pd.DataFrame:
    """Mean peak memory (MB) per architecture (short names) and memory kind."""
    if df.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype="string") for c in ("architecture", "memory_kind")}
            | {"peak_memory_mb": pd.Series(dtype=float)}
        )
    out = shown_architectures(df).groupby(["architecture", "memory_kind"], as_index=False, observed=True)
    return out["peak_memory_mb"].mean().astype({"peak_memory_mb": float})


def score_vs_seconds(df: pd.DataFrame) -> pd.DataFrame:
    columns = ["architecture", "seconds_total", "clip_score", "prompt", "seed"]
    if df.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype=float if c in ("seconds_total", "clip_score") else "string") for c in columns}
        )
    return shown_architectures(df)[columns].astype({"seconds_total": float, "clip_score": float, "seed": "string"})


def figure(value: float) -> str:
    """A measure as a reader wants it: three significant figures, thousands grouped (0.0412, 4.12, 41.2, 4,120)."""
    if pd.isna(value):
        return "–"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _signed(value: float) -> str:
    return ("+" if value > 0 else "") + figure(value).replace("-", "−")


def _share(k: int, n: int) -> str:
    """k of n as a percentage with its 95% Wilson interval; no interval from a single pair."""
    if n < 2:
        return f"{k} of {n}"
    p = proportion(k, n)
    return f"{p.value:.0%} [{p.low:.0%}, {p.high:.0%}]"


INTERVALS = (
    "Intervals: 95% percentile bootstrap over pairs (2000 resamples) for differences (normal, mean ± 1.96 standard "
    "errors, from 5,000 pairs on), Wilson for shares."
)
PAIR_COLUMNS = ("first", "second", "difference [95% interval]", "first better", "tie", "second better")


def _pair_rows(table: pd.DataFrame, a: str, b: str) -> list[dict]:
    """A summary_table of a − b as rows in words, its columns named after the two architectures."""
    name_a, name_b = registry.get(a).short, registry.get(b).short
    rows = []
    for metric, r in table.iterrows():
        n = int(r["n"])
        wins, ties = round(r["win_rate"] * n), round(r["tie_rate"] * n)
        difference = _signed(r["mean_diff"])
        rows.append(
            {
                "measure": metric_label(metric),
                "better": r["better"],
                "pairs": n,
                name_a: figure(r[f"mean_{a}"]),
                name_b: figure(r[f"mean_{b}"]),
                f"{name_a} − {name_b} [95% interval]": (
                    f"{difference} [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]"
                    if n > 1
                    else f"{difference} (one pair: no interval)"
                ),
                f"{name_a} better": _share(wins, n),
                "tie": _share(ties, n),
                f"{name_b} better": _share(n - wins - ties, n),
            }
        )
    return rows


def _generic(row: dict, a: str, b: str, what: str) -> dict:
    """A pair's row with its architectures' columns as first and second, and which comparison it is."""
    name_a, name_b = registry.get(a).short, registry.get(b).short
    values = [row[name_a], row[name_b], row[f"{name_a} − {name_b} [95% interval]"], row[f"{name_a} better"]]
    values += [row["tie"], row[f"{name_b} better"]]
    comparison = f"{name_a} − {name_b}" + (f" ({what})" if what else "")
    return {
        "comparison": comparison,
        **{k: row[k] for k in ("measure", "better", "pairs")},
        **dict(zip(PAIR_COLUMNS, values)),
    }


def summary_frame(df: pd.DataFrame, architectures: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, str]:
    """The paired side-by-side summary in a reader's words: each measure with its unit and direction, n pairs, each
    architecture's mean, their difference with its 95% interval (none from one pair), and how often each was better
    or they tied; and a note. Three or more architectures: a row per measure and pair of them, on the (prompt, seed)
    pairs they all have, claim 6's split (the gap, the prior's part, the space's part) first where it applies."""
    if architectures is None:  # every architecture the rows hold
        architectures = tuple(n for n in registry.names() if "architecture" in df and (df["architecture"] == n).any())
    try:
        if len(architectures) <= 2:
            a, b = default_pair(df, *architectures)
            name_a = registry.get(a).short
            note = f"{name_a} − {registry.get(b).short}, paired by prompt and seed: a difference below zero means "
            note += f"{name_a} measured less. {INTERVALS}"
            return pd.DataFrame(_pair_rows(summary_table(df, a, b), a, b)), note
        joint, comparisons = joint_rows(df, architectures), comparisons_of(architectures)
        rows = [
            _generic(r, a, b, what) for a, b, what in comparisons for r in _pair_rows(summary_table(joint, a, b), a, b)
        ]
    except (NoPairsError, ValueError, KeyError) as err:
        return pd.DataFrame(), f"No summary yet: {err}. Generate the architectures for the same prompts and seeds."
    split = " The gap unCLIP − LD is the prior's part plus the space's part." if comparisons[0][2] else ""
    note = f"Each comparison is first − second, on the (prompt, seed) pairs all of them have.{split} {INTERVALS}"
    return pd.DataFrame(rows), note


def chosen_summary(df: pd.DataFrame, choice: Choice | None) -> tuple[pd.DataFrame | None, str]:
    """The chosen configuration's summary and a note: paired with 95% intervals, or each architecture's statistics
    when nothing pairs. Never an empty table: None, and a note saying what is missing, when no row matches."""
    if choice is None:
        return None, (
            "No text-to-image runs match yet: generate in Compare or run a sweep, then the summary shows here "
            "(images made from an image, in Image in, are never summarised beside them)."
        )
    rows = choice.rows(df)
    if choice.paired:
        table, note = summary_frame(rows, choice.architectures)
        if not table.empty:
            pairs = f"{choice.n_pairs} pair" + ("s" if choice.n_pairs != 1 else "")
            return table, f"{choice.label}: {pairs}. {note}"
        return unpaired_frame(rows), f"{choice.label}: {note} Meanwhile each architecture's statistics, unpaired."
    others = [registry.get(n).short for n in registry.names() if n != choice.configurations[0].architecture]
    return unpaired_frame(rows), (
        f"{choice.label}: no pairs (no {' or '.join(others)} rows for the same prompts and seeds), so its "
        "statistics, unpaired. Generate the others for the same prompts and seeds to pair them."
    )


STATISTICS = {"n": "images", "mean": "mean", "median": "median", "std": "spread (standard deviation)"}


def unpaired_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Each architecture's n, mean, median and spread of every measure, in words, side by side
    (comparisons.summary.summarize)."""
    wide = summarize(df).reset_index()
    shown = pd.DataFrame(
        {
            "measure": ["images" if m == "rows" else metric_label(m) for m in wide["metric"]],
            "statistic": [STATISTICS.get(s, s) for s in wide["statistic"]],
        }
    )
    for name in registry.names():
        if name in wide.columns:
            shown[registry.get(name).short] = [figure(v) for v in wide[name]]
    return shown


def table_view(df: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading on screen, newest first, rounded (exports carry every column, unrounded)."""
    shown = df[[c for c in TABLE_COLUMNS if c in df.columns]].iloc[::-1]
    return shown.round({"seconds_total": 3, "peak_memory_mb": 1, "clip_score": 2, "prior_image_cosine": 3})


# ----------------------------------------------------------------------------- the votes' scores (the Vote tab)

FEW_VOTES = 10  # under this many votes an interval from a bootstrap or kappa's asymptotics says little: not shown


def _vote_interval(value: float, low: float, high: float, n: int | None = None, percent: bool = True) -> str:
    """A figure with its 95% interval; without it from fewer than FEW_VOTES votes (`n`, where that matters)."""
    if pd.isna(value):
        return "–"
    figure = f"{value:.0%}" if percent else f"{value:+.2f}"
    if n is not None and n < FEW_VOTES:
        return f"{figure} (under {FEW_VOTES} votes: no interval)"
    return f"{figure} ({low:.0%}–{high:.0%})" if percent else f"{figure} ({low:+.2f} to {high:+.2f})"


def _short(architecture: str) -> str:
    return registry.get(architecture).short if architecture in registry.names() else architecture


def score_views(
    wins: pd.DataFrame, strength: pd.DataFrame, agree: pd.DataFrame, votes: int
) -> tuple[str, pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None]:
    """The scores as tables in words (names, not column codes; every figure with its n and 95% interval), and a
    note saying what they mean; a table with nothing to show is None."""
    if votes == 0:
        return "No votes yet: the Vote tab shows pairs to judge.", None, None, None
    questions = {q: q.capitalize() for q in QUESTIONS}
    win_table = pd.DataFrame(
        {
            "question": wins["question"].map(questions),
            "first vs second": [f"{_short(a)} vs {_short(b)}" for a, b in zip(wins["a"], wins["b"])],
            "votes": wins["n"],
            "first chosen": wins["a_wins"],
            "second chosen": wins["b_wins"],
            "can't tell": wins["ties"],
            "first's win rate among votes that chose (95% interval)": [
                _vote_interval(v, lo, hi) for v, lo, hi in zip(wins["win_rate"], wins["low"], wins["high"])
            ],
        }
    )
    strength_table = pd.DataFrame(
        {
            "question": strength["question"].map(questions),
            "architecture": strength["architecture"].map(_short),
            "votes that chose a side": strength["n"],
            "log-strength, mean 0 (95% bootstrap interval)": [
                _vote_interval(v, lo, hi, n, percent=False)
                for v, lo, hi, n in zip(strength["strength"], strength["low"], strength["high"], strength["n"])
            ],
        }
    )
    agree_table = None
    if not agree.empty:
        judges = {"clip": "the judge CLIP", "checker": "the Shapes checker"}
        agree_table = pd.DataFrame(
            {
                "question": agree["question"].map(questions),
                "judge": agree["judge"].map(judges),
                "votes where both chose a side": agree["n"],
                "agree (95% interval)": [
                    _vote_interval(v, lo, hi) for v, lo, hi in zip(agree["agree"], agree["low"], agree["high"])
                ],
                "Cohen's kappa (95% interval): 0 = agreeing by chance, 1 = always agreeing": [
                    _vote_interval(v, lo, hi, n, percent=False)
                    for v, lo, hi, n in zip(agree["kappa"], agree["kappa_low"], agree["kappa_high"], agree["n"])
                ],
            }
        )
    note = (
        f"{votes:,} vote{'s' * (votes != 1)}. A win rate is how often people chose the first architecture when they "
        "chose a side; Bradley–Terry strengths put the architectures on one scale per question (a lead of 1 means "
        "winning at odds of e to 1, about 73%); agreement is how often a judge picks the side people picked: the "
        "judge CLIP by its score of image and caption (caption) or by the spread of a set's image embeddings "
        "(diversity), and in the Shapes lab the checker by which side it finds all correct (caption), counted only "
        "where it tells the sides apart. CLIP does not judge photorealism."
    )
    return note, win_table, strength_table if not strength.empty else None, agree_table
