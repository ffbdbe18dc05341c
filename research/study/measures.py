"""The study's measures, as small pure functions over rows (one per image) and judge embeddings.

Intervals are the comparison engine's (comparisons.summary): Wilson for proportions, the bootstrap of
paired differences for same-prompt, same-seed pairs, and its resampled means for per-prompt averages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from comparisons.intervals import CONFIDENCE, bootstrap_means, proportion
from comparisons.summary import NoPairsError, paired_differences
from lab.captions import parse_caption

N_BOOT = 2000
TAILS = (100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2)
ATTRIBUTES = {  # measure -> checker column; NaN rows (the caption does not ask) are left out
    "colour": "check_object1_colour_correct",
    "shape": "check_object1_shape_correct",
    "size": "check_object1_size_correct",
    "position": "check_position_correct",
    "all correct": "check_all_correct",
}
TWO_ATTRIBUTES = {
    "colour 1": "check_object1_colour_correct",
    "colour 2": "check_object2_colour_correct",
    "shape 1": "check_object1_shape_correct",
    "shape 2": "check_object2_shape_correct",
    "relation": "check_relation_correct",
    "all correct": "check_all_correct",
}


def entropy_bits(values: Sequence[object]) -> float:
    """Shannon entropy (bits) of the values' empirical distribution; NaN for no values."""
    if not values:
        return float("nan")
    _, counts = np.unique(np.asarray([str(v) for v in values]), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mean_pairwise_distance(embeds: np.ndarray) -> float:
    """Mean cosine distance (1 - cos) over distinct pairs of unit-norm rows (K, D); NaN for fewer than two."""
    k = len(embeds)
    if k < 2:
        return float("nan")
    cos = embeds @ embeds.T
    return float((1 - cos[np.triu_indices(k, 1)]).mean())


def diversity_by_prompt(rows: Sequence[Mapping], embeds: np.ndarray) -> pd.DataFrame:
    """Per (architecture, prompt) over its seeds: the ground-truth entropy of (region, size) read for the object,
    over the images where the checker found it, and the judge's mean pairwise distance over all the images."""
    frame = pd.DataFrame(list(rows)).assign(_i=range(len(rows)))
    out = []
    for (arch, prompt), group in frame.groupby(["architecture", "prompt"], sort=False):
        found = group[group["read_region"].notna()]
        out.append(
            {
                "architecture": arch,
                "prompt": prompt,
                "seeds": len(group),
                "found": len(found),
                "entropy": entropy_bits(list(zip(found["read_region"], found["read_size"])))
                if len(found)
                else math.nan,
                "region_entropy": entropy_bits(list(found["read_region"])) if len(found) else math.nan,
                "size_entropy": entropy_bits(list(found["read_size"])) if len(found) else math.nan,
                "judge_distance": mean_pairwise_distance(embeds[group["_i"].to_numpy()]),
            }
        )
    return pd.DataFrame(out)


def mean_ci(values: Sequence[float], seed: int = 0) -> dict:
    """Mean with its 95% bootstrap interval (NaNs dropped)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    boot = bootstrap_means(x[:, None], N_BOOT, np.random.default_rng(seed))[:, 0]
    low, high = np.percentile(boot, TAILS)
    return {"mean": float(x.mean()), "low": float(low), "high": float(high), "n": int(len(x))}


def accuracy(rows: pd.DataFrame, column: str) -> dict | None:
    """The proportion of rows whose verdict is correct, over the rows that ask (Wilson interval); None if none ask."""
    verdicts = pd.to_numeric(rows[column], errors="coerce").dropna() if column in rows else pd.Series([], dtype=float)
    if verdicts.empty:
        return None
    p = proportion(int(verdicts.sum()), len(verdicts))
    return {"mean": p.value, "low": p.low, "high": p.high, "n": p.n, "k": p.k}


def accuracies(rows: pd.DataFrame, columns: Mapping[str, str]) -> dict[str, dict | None]:
    return {name: accuracy(rows, column) for name, column in columns.items()}


def paired(frame: pd.DataFrame, metric: str, a: str, b: str, pair_on: Sequence[str], higher: bool = True) -> dict:
    """a - b over pairs (the engine's paired bootstrap), trimmed to what the report shows."""
    keys = ("mean_a", "mean_b", "mean_diff", "ci_low", "ci_high")
    try:
        d = paired_differences(frame, metric, a, b, n_boot=N_BOOT, higher_is_better=higher, pair_on=list(pair_on))
    except NoPairsError:  # e.g. no prompt where both models drew both colours
        return {"a": a, "b": b, "n": 0, **dict.fromkeys(keys)}
    return {"a": a, "b": b, "n": d["n"], **{k: d[k] for k in keys}}


def sign_of(diff: Mapping) -> int:
    """+1 when a paired difference's interval lies above 0, -1 below, 0 when it holds 0."""
    if not diff["n"] or diff["ci_low"] is None or math.isnan(diff["ci_low"]):
        return 0
    return 1 if diff["ci_low"] > 0 else -1 if diff["ci_high"] < 0 else 0


def binding_error(row: Mapping) -> float:
    """For a two-object caption with two different colours: 1.0 when both colours were drawn but not each on its own
    object (swapped, or one colour on both), 0.0 when both were drawn on the right objects, NaN when a colour is
    missing from the image (no binding to judge) or the caption's colours are equal."""
    spec = parse_caption(str(row["prompt"]))
    if len(spec.objects) != 2 or spec.objects[0].colour == spec.objects[1].colour:
        return math.nan
    asked = {o.colour for o in spec.objects}
    if not asked <= set(row["read_colours"]):
        return math.nan
    right = row["check_object1_colour_correct"] == 1.0 and row["check_object2_colour_correct"] == 1.0
    return 0.0 if right else 1.0
