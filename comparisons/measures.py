"""What each measure of a row is, for a reader and for a comparison: its words and unit, and whether more is
better (the direction every summary, plot and table reads it in)."""

from __future__ import annotations

import pandas as pd

HEADLINE_METRICS = ("seconds_total", "peak_memory_mb", "clip_score")  # plus every verdict (check_*_correct)
# Direction of a metric, by (prefix, suffix) of its name: True when a larger value is better.
HIGHER_IS_BETTER: dict[tuple[str, str], bool] = {
    ("seconds_", ""): False,
    ("peak_memory_mb", ""): False,
    ("clip_score", ""): True,
    ("clip_cosine", ""): True,
    ("prior_image_cosine", ""): True,
    ("check_", "_correct"): True,  # the checker's verdicts: their mean is an accuracy
}

# How a reader knows each stage and measure: what tables show in place of column names.
STAGE_WORDS = {
    "text_encoder": "the text encoder",
    "prior": "the prior",
    "decoder": "the decoder",
    "super_res": "super-resolution",
    "image_encoder": "the image encoder",
    "unet": "the U-Net",
    "vae_encode": "the VAE encoder",
    "vae_decode": "the VAE decoder",
}
CHECKED = {
    "all": "the whole caption",
    "count": "the number of objects",
    "object1_colour": "the first object's colour",
    "object1_shape": "the first object's shape",
    "object1_size": "the first object's size",
    "object2_colour": "the second object's colour",
    "object2_shape": "the second object's shape",
    "object2_size": "the second object's size",
    "relation": "where the objects are relative to each other",
    "position": "where the object is",
}
MEASURES = {
    "seconds_total": "seconds per image, all stages",
    "peak_memory_mb": "peak memory of the busiest stage, MB",
    "peak_rss_mb": "the process's peak memory (RSS), MB",
    "clip_score": "CLIP score: the judge's text–image similarity, 0–100",
    "clip_cosine": "CLIP cosine: the judge's text–image similarity, −1 to 1",
    "prior_image_cosine": "cosine of the prior's image embedding with the image's",
    "source_cosine": "cosine of the image with the image taken in (judge's)",
}


def metric_label(metric: str) -> str:
    """A measure's column in words, with its unit ("seconds_prior" -> "seconds per image in the prior"); the column
    name itself when it has none."""
    if metric in MEASURES:
        return MEASURES[metric]
    for prefix, words in (("seconds_", "seconds per image in {}"), ("peak_memory_mb_", "peak memory in {}, MB")):
        if metric.startswith(prefix) and metric.removeprefix(prefix) in STAGE_WORDS:
            return words.format(STAGE_WORDS[metric.removeprefix(prefix)])
    checked = metric.removeprefix("check_").removesuffix("_correct")
    if metric.startswith("check_") and metric.endswith("_correct") and checked in CHECKED:
        return f"checker: {CHECKED[checked]} right (share of images)"
    return metric


def _direction(metric: str) -> bool | None:
    for (prefix, suffix), higher in HIGHER_IS_BETTER.items():
        if metric.startswith(prefix) and metric.endswith(suffix):
            return higher
    return None


def prefers_higher(metric: str) -> bool:
    """Whether a larger value of `metric` is better, from HIGHER_IS_BETTER."""
    higher = _direction(metric)
    if higher is None:
        raise ValueError(f"no known direction for {metric!r}: pass higher_is_better=True or False")
    return higher


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Columns with a known direction and at least one value, in the frame's order."""
    return [name for name in df.columns if _direction(name) is not None and df[name].notna().any()]
