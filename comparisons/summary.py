"""Side-by-side summaries of the run log: what each architecture costs and how good it is, and
paired differences with bootstrap intervals so no headline number stands without n and a CI.

- `summarize(df)`: descriptive statistics, index (metric, statistic), one column per
  architecture, so the two read side by side. `describe_long(df)` is the same as a tidy table.
- `paired_differences(df, metric)`: rows paired by (prompt, seed) under the same dtype and
  device; the mean of a - b over pairs with a 95% percentile-bootstrap interval (Efron, 1979)
  resampling pairs, and the win rate of a over b with its own interval from the same resamples.
- `summary_table(df)` / `format_summary(df)`: both for every headline metric.

A metric's direction ("better") comes from comparisons.measures or the `higher_is_better` argument; the intervals
from comparisons.intervals.
Summaries are of text-to-image rows (`mode`; a log from before modes is all text to image): an image made from
another (variations, img2img) is never paired with, or averaged beside, one drawn from a prompt alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from comparisons.exports import export_csv, export_parquet
from comparisons.intervals import CONFIDENCE, Z_95, bootstrap_means
from comparisons.measures import HEADLINE_METRICS, metric_columns, prefers_higher
from comparisons.schema import MODE
from comparisons.store import load_runs
from pipelines import registry
from pipelines.registry import TEXT_TO_IMAGE

# Columns whose values must match for two rows to be a like-for-like pair, besides prompt and seed.
# Like with like: peak RSS is not VRAM, and seconds measured side by side are not seconds measured alone.
SHARED_SETTINGS = ("dtype", "device", "device_name", "memory_kind", "timing")
# What besides its registered settings makes an architecture's configuration: each architecture must have a
# single configuration in the compared rows, or a difference would mix several.
MODEL_COLUMNS = ("model", "model_hash", "height", "width")


def own_settings() -> tuple[str, ...]:
    """The columns of one architecture's configuration: its model and size, and every registered setting."""
    return (*MODEL_COLUMNS, *(s.name for s in registry.all_settings()))


class NoPairsError(ValueError):
    """No (prompt, seed) pair has a value of the metric for both architectures."""


def _as_float(values: pd.Series) -> pd.Series:
    """Numbers and verdicts as float64, <NA> as NaN, so a verdict column's mean is its accuracy."""
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        raise ValueError(f"column {values.name!r} ({values.dtype}) is not numeric")
    return values.astype("Float64").astype(np.float64)


def text_to_image(df: pd.DataFrame) -> pd.DataFrame:
    """The rows drawn from a prompt alone (no `mode` column: all of them): what summaries compare."""
    if MODE not in df.columns:
        return df
    return df[df[MODE].isna() | (df[MODE] == TEXT_TO_IMAGE)]


def _check_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The frame's text-to-image rows, or a ValueError when it has none or is no run log."""
    if "architecture" not in df.columns:
        raise ValueError("the frame has no 'architecture' column; is it a run log (comparisons.store.load_runs)?")
    if df.empty:
        raise ValueError("the frame has no runs to summarize")
    df = text_to_image(df)
    if df.empty:
        raise ValueError("the frame has no text-to-image runs to summarize (images made from images are apart)")
    return df


# ----------------------------------------------------------------------------- descriptive


def describe_long(df: pd.DataFrame) -> pd.DataFrame:
    """Tidy statistics: one row per (architecture, metric, statistic). n counts the rows with a
    value; boolean verdicts (check_*_correct) get n and mean, their accuracy; other metrics also
    median and std."""
    df = _check_runs(df)
    metrics, records = metric_columns(df), []
    for arch, rows in df.groupby("architecture", sort=True):
        records.append((arch, "rows", "n", float(len(rows))))
        for metric in metrics:
            values = _as_float(rows[metric]).dropna()
            stats = {"n": float(len(values)), "mean": values.mean()}
            if not pd.api.types.is_bool_dtype(df[metric]):
                stats |= {"median": values.median(), "std": values.std()}
            records += [(arch, metric, stat, value) for stat, value in stats.items()]
    return pd.DataFrame(records, columns=["architecture", "metric", "statistic", "value"])


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """`describe_long` pivoted: index (metric, statistic) in the log's column order, one column
    per architecture, so the architectures read side by side."""
    long = describe_long(df)
    order = pd.MultiIndex.from_frame(long[["metric", "statistic"]].drop_duplicates())
    wide = long.pivot(index=["metric", "statistic"], columns="architecture", values="value")
    return wide.reindex(order).rename_axis(columns=None)


# ----------------------------------------------------------------------------- paired


def default_pair(df: pd.DataFrame, a: str | None = None, b: str | None = None) -> tuple[str, str]:
    """(a, b) of a paired difference a - b: as given, else the first two registered architectures that have rows, in
    the order every view shows them (unCLIP - latent diffusion: the gap between the two ends)."""
    if a is not None and b is not None:
        return a, b
    df = text_to_image(df)
    present = [n for n in registry.names() if "architecture" in df.columns and (df["architecture"] == n).any()]
    if len(present) < 2:
        raise NoPairsError(f"a paired summary needs two architectures' rows; the frame has {present or 'none'}")
    return a or present[0], b or present[1]


# Claim 6 of the lab's study, for a summary of the three: unCLIP and latent diffusion differ in the prior and in the
# space; Stable unCLIP has unCLIP's prior in latent diffusion's space, so on the same (prompt, seed) pairs the gap
# unCLIP − LD is exactly the prior's part (Stable unCLIP − LD) plus the space's part (unCLIP − Stable unCLIP).
SPLIT = {
    ("unclip", "latent_diffusion"): "the gap",
    ("stable_unclip", "latent_diffusion"): "the prior's part",
    ("unclip", "stable_unclip"): "the space's part",
}


def comparisons_of(architectures: Sequence[str]) -> list[tuple[str, str, str]]:
    """(a, b, what a − b is) for every pair of `architectures`: claim 6's split first where all three are there,
    then every other pair in the registry's order."""
    present = set(architectures)
    split = [(a, b, what) for (a, b), what in SPLIT.items()] if {a for pair in SPLIT for a in pair} <= present else []
    done = {frozenset((a, b)) for a, b, _ in split}
    ordered = [n for n in registry.names() if n in present]
    rest = [(a, b, "") for i, a in enumerate(ordered) for b in ordered[i + 1 :] if frozenset((a, b)) not in done]
    return split + rest


def joint_rows(df: pd.DataFrame, architectures: Sequence[str]) -> pd.DataFrame:
    """The text-to-image rows of `architectures` whose pair keys (prompt, seed, ...) every one of them has: where
    pairwise differences add up (the split above)."""
    df = text_to_image(df)
    keys = _pair_keys(df, None)
    # each row's pair key as one 64-bit hash, vectorised (a row-wise tuple took a second at 10,000 rows)
    hashed = pd.util.hash_pandas_object(df[keys].astype(str), index=False).to_numpy()
    shared = None
    for arch in architectures:
        own = np.unique(hashed[(df["architecture"] == arch).to_numpy()])
        shared = own if shared is None else np.intersect1d(shared, own)
    mask = np.isin(hashed, shared if shared is not None else [])
    return df[mask & df["architecture"].isin(architectures).to_numpy()]


def _pair_keys(df: pd.DataFrame, pair_on: Sequence[str] | None) -> list[str]:
    keys = ["prompt", "seed", *(c for c in SHARED_SETTINGS if c in df.columns)] if pair_on is None else list(pair_on)
    missing = [k for k in keys if k not in df.columns]
    if not keys or missing:
        raise ValueError(f"cannot pair rows on {keys}: missing columns {missing}")
    return keys


def _check_one_configuration(rows: pd.DataFrame, arch: str, keys: list[str]) -> None:
    settings = [c for c in rows.columns if c in own_settings() and c not in keys]
    configs = rows[settings].dropna(axis=1, how="all").drop_duplicates()
    if len(configs) > 1 and len(configs.columns):  # no setting columns at all: nothing to tell apart
        raise ValueError(
            f"{arch} rows come in {len(configs)} configurations of {list(configs.columns)}; "
            f"a paired difference needs one: filter the frame first, e.g.\n{configs.head(4).to_string()}"
        )


def paired_values(df: pd.DataFrame, metric: str, a: str, b: str, pair_on: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per pair, columns `a` and `b`: the metric's mean over each architecture's rows of
    the pair (repeats of one configuration are averaged). Raises NoPairsError when none pairs."""
    df = _check_runs(df)
    if metric not in df.columns:
        raise ValueError(f"metric {metric!r} is not a column; metrics here: {metric_columns(df)}")
    if a == b:
        raise ValueError(f"compare two different architectures, got a = b = {a!r}")
    keys = _pair_keys(df, pair_on)
    for arch in (a, b):
        rows = df[df["architecture"] == arch]
        if rows.empty:
            raise ValueError(f"no rows of architecture {arch!r}; have {sorted(df['architecture'].dropna().unique())}")
        _check_one_configuration(rows, arch, keys)
    rows = df[df["architecture"].isin([a, b])]
    frame = (
        rows[keys].assign(architecture=rows["architecture"], value=_as_float(rows[metric])).dropna(subset=["value"])
    )
    means = frame.groupby([*keys, "architecture"], dropna=False)["value"].mean().unstack("architecture")
    pairs = means.reindex(columns=[a, b]).dropna()
    if pairs.empty:
        raise NoPairsError(f"no pairs: no ({', '.join(keys)}) has a {metric} value for both {a} and {b}")
    return pairs


def paired_differences(
    df: pd.DataFrame,
    metric: str,
    a: str | None = None,
    b: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    higher_is_better: bool | None = None,
    pair_on: Sequence[str] | None = None,
) -> dict:
    """Mean of a - b over (prompt, seed) pairs with a 95% bootstrap CI, and a's win rate with its CI.

    A pair is won by a when its value is strictly better (lower for seconds and memory, higher
    for scores and accuracies); ties (common for verdicts) are reported apart as `tie_rate`.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    a, b = default_pair(df, a, b)
    pairs = paired_values(df, metric, a, b, pair_on)
    higher = prefers_higher(metric) if higher_is_better is None else higher_is_better
    diff = (pairs[a] - pairs[b]).to_numpy()
    wins = (diff > 0) if higher else (diff < 0)
    values = np.column_stack([diff, wins]).astype(float)
    if len(diff) >= NORMAL_FROM:  # the bootstrap's interval is the normal one by then, at 2,000 × n draws
        half = Z_95 * values.std(axis=0, ddof=1) / np.sqrt(len(diff))
        (diff_low, win_low), (diff_high, win_high) = values.mean(axis=0) - half, values.mean(axis=0) + half
        n_boot = 0
    else:
        boot = bootstrap_means(values, n_boot, np.random.default_rng(seed))
        tails = [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2]
        (diff_low, win_low), (diff_high, win_high) = np.percentile(boot, tails, axis=0)
    return {
        "metric": metric,
        "a": a,
        "b": b,
        "higher_is_better": higher,
        "pair_on": _pair_keys(df, pair_on),
        "n": len(diff),
        "n_boot": n_boot,
        "confidence": CONFIDENCE,
        "mean_a": float(pairs[a].mean()),
        "mean_b": float(pairs[b].mean()),
        "mean_diff": float(diff.mean()),
        "ci_low": float(diff_low),
        "ci_high": float(diff_high),
        "win_rate": float(wins.mean()),
        "win_ci_low": float(win_low),
        "win_ci_high": float(win_high),
        "tie_rate": float((diff == 0).mean()),
    }


# ----------------------------------------------------------------------------- headline table


# From this many pairs on, an interval is the normal one (mean ± 1.96 standard errors): the percentile bootstrap's
# bounds differ from it by less than their own resampling noise there, and cost 2,000 draws per pair per measure
# (a 100,000-row configuration's summary took about 39 s; 3.4 s so).
NORMAL_FROM = 5_000
TABLE_KEYS = ("mean_diff", "ci_low", "ci_high", "win_rate", "win_ci_low", "win_ci_high", "tie_rate")


def headline_metrics(df: pd.DataFrame) -> list[str]:
    """HEADLINE_METRICS present in the frame, then the checker's verdicts."""
    verdicts = [c for c in df.columns if c.startswith("check_") and c.endswith("_correct")]
    return [m for m in HEADLINE_METRICS if m in df.columns] + verdicts


def summary_table(
    df: pd.DataFrame, a: str | None = None, b: str | None = None, n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """One row per headline metric that has pairs: direction, n pairs, each architecture's mean over
    the pairs (so mean_diff = mean_a - mean_b), the mean difference a - b, the win rate of a, each
    with its 95% interval. Metrics without pairs (e.g. verdicts outside the lab) are left out."""
    a, b = default_pair(df, a, b)
    rows = {}
    for metric in headline_metrics(df):
        try:
            r = paired_differences(df, metric, a, b, n_boot, seed)
        except NoPairsError:
            continue
        rows[metric] = {
            "better": "higher" if r["higher_is_better"] else "lower",
            "n": r["n"],
            f"mean_{a}": r["mean_a"],
            f"mean_{b}": r["mean_b"],
            **{k: r[k] for k in TABLE_KEYS},
        }
    if not rows:
        present = ", ".join(headline_metrics(df)) or "none present"
        raise NoPairsError(f"no headline metric ({present}) has {a}/{b} pairs")
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("metric")


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _with_interval(value: float, low: float, high: float, fmt=_number) -> str:
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def format_summary(
    df: pd.DataFrame, a: str | None = None, b: str | None = None, n_boot: int = 2000, seed: int = 0
) -> str:
    """`summary_table` as text: every difference and win rate is printed beside n and its interval."""
    a, b = default_pair(df, a, b)
    table = summary_table(df, a, b, n_boot, seed)
    ci = f"[{CONFIDENCE:.0%} CI]"
    lines = [
        f"{a} - {b}, paired by {', '.join(_pair_keys(df, None))}; "
        f"{CONFIDENCE:.0%} percentile-bootstrap intervals over pairs ({n_boot} resamples)",
        f"{'metric':<24}{'better':>7}{'n':>6}{a:>18}{b:>18}   {'difference ' + ci:<32}{a + ' wins ' + ci:<36}ties",
    ]
    for metric, r in table.iterrows():
        if r["n"] > 1:
            difference = _with_interval(r["mean_diff"], r["ci_low"], r["ci_high"])
            wins = _with_interval(r["win_rate"], r["win_ci_low"], r["win_ci_high"], _percent)
        else:  # an interval from one pair would be [x, x]
            difference, wins = f"{_number(r['mean_diff'])} (one pair)", f"{_percent(r['win_rate'])} (one pair)"
        lines.append(
            f"{metric:<24}{r['better']:>7}{int(r['n']):>6}{_number(r[f'mean_{a}']):>18}"
            f"{_number(r[f'mean_{b}']):>18}   {difference:<32}{wins:<36}{_percent(r['tie_rate'])}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m comparisons.summary DIR [--csv FILE] [--parquet FILE]`: the side-by-side summary of a run log."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Summarise a run log side by side, with paired 95% intervals.")
    parser.add_argument("directory", help="the directory holding runs.jsonl (a sweep's or the app's --out)")
    parser.add_argument("--csv", help="also export the whole log as CSV")
    parser.add_argument("--parquet", help="also export the whole log as Parquet")
    args = parser.parse_args(argv)
    try:
        df = load_runs(args.directory)
        if df.empty:
            raise ValueError(f"{args.directory} holds no runs yet")
        print(summarize(df).to_string(float_format=lambda v: f"{v:.4g}"))
        print()
        print(format_summary(df))
        if args.csv:
            export_csv(df, args.csv)
        if args.parquet:
            export_parquet(df, args.parquet)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
