"""Summaries put the architectures side by side; paired differences pair like with like, their
bootstrap intervals cover the true effect and shrink with more pairs, and win rates respect each
metric's direction."""

import re

import numpy as np
import pandas as pd
import pytest

from comparisons.measures import prefers_higher
from comparisons.store import RunLog, load_runs
from comparisons.summary import (
    NORMAL_FROM,
    NoPairsError,
    format_summary,
    paired_differences,
    summarize,
    summary_table,
)

LD, UC = "latent_diffusion", "unclip"


def synthetic_runs(n_pairs: int, effect: float = -1.5, noise: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Paired runs where unCLIP's seconds_total is latent diffusion's plus `effect` plus noise, and its clip_score
    and memory are always higher (default pairs read unCLIP − LD); prompt-level variation is shared by both, as in
    real pairs."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(5.0, 10.0, n_pairs)
    common = {
        "prompt": [f"prompt {i % 7}" for i in range(n_pairs)],
        "seed": np.arange(n_pairs),
        "dtype": "float32",
        "device": "cpu",
    }
    unclip = pd.DataFrame(
        {
            **common,
            "architecture": UC,
            "prior_steps": 25,
            "seconds_total": base + effect + rng.normal(0, noise, n_pairs),
            "peak_memory_mb": 2000.0,
            "clip_score": 25.0,
        }
    )
    ld = pd.DataFrame(
        {
            **common,
            "architecture": LD,
            "steps": 50,
            "seconds_total": base,
            "peak_memory_mb": 1000.0,
            "clip_score": 20.0,
        }
    )
    return pd.concat([unclip, ld], ignore_index=True)


def with_verdicts(df: pd.DataFrame) -> pd.DataFrame:
    verdicts = [True, False, True, None] * (len(df) // 4) + [True] * (len(df) % 4)
    return df.assign(check_colour_correct=pd.array(verdicts, dtype="boolean"))


# ----------------------------------------------------------------------------- paired differences


def test_bootstrap_interval_covers_the_true_difference_and_narrows_with_more_pairs():
    small = paired_differences(synthetic_runs(25), "seconds_total")
    large = paired_differences(synthetic_runs(400), "seconds_total")
    for r in (small, large):
        assert r["ci_low"] < -1.5 < r["ci_high"]
        assert r["ci_low"] < r["mean_diff"] < r["ci_high"]
    assert large["n"] == 400 and small["n"] == 25
    assert (large["ci_high"] - large["ci_low"]) < 0.4 * (small["ci_high"] - small["ci_low"])  # ~ 1/sqrt(16)
    # the percentile bootstrap of a mean agrees with the normal interval, mean +- 1.96 sd / sqrt(n)
    d = synthetic_runs(400).pipe(
        lambda df: (
            df[df.architecture == UC].seconds_total.to_numpy() - df[df.architecture == LD].seconds_total.to_numpy()
        )
    )
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    assert large["mean_diff"] == pytest.approx(d.mean())
    assert large["ci_low"] == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert large["ci_high"] == pytest.approx(d.mean() + half, abs=0.15 * half)


def test_bootstrap_coverage_is_near_95_percent():
    covered = [paired_differences(synthetic_runs(30, seed=s), "seconds_total", n_boot=400, seed=s) for s in range(40)]
    rate = np.mean([r["ci_low"] <= -1.5 <= r["ci_high"] for r in covered])
    assert 0.85 <= rate <= 1.0  # 40 trials: a 95% interval misses 2 on average


def test_bootstrap_is_reproducible_by_seed():
    df = synthetic_runs(30)
    assert paired_differences(df, "seconds_total", seed=1) == paired_differences(df, "seconds_total", seed=1)
    assert (
        paired_differences(df, "seconds_total", seed=1)["ci_low"]
        != paired_differences(df, "seconds_total", seed=2)["ci_low"]
    )


def test_win_rate_follows_the_metric_direction():
    df = synthetic_runs(50, effect=-3.0, noise=0.1)  # unCLIP always faster, always higher clip_score
    faster = paired_differences(df, "seconds_total")
    assert faster["higher_is_better"] is False and faster["mean_diff"] < 0
    assert faster["win_rate"] == 1.0 and faster["win_ci_low"] == 1.0
    assert paired_differences(df, "seconds_total", a=LD, b=UC)["win_rate"] == 0.0
    assert paired_differences(df, "peak_memory_mb")["win_rate"] == 0.0  # 2000 MB loses to 1000 MB
    assert paired_differences(df, "clip_score")["win_rate"] == 1.0
    assert paired_differences(df, "clip_score", higher_is_better=False)["win_rate"] == 0.0
    assert prefers_higher("check_colour_correct") and not prefers_higher("seconds_prior")


def test_win_rate_interval_and_ties():
    df = synthetic_runs(200, effect=0.0, noise=1.0).assign(clip_score=20.0)  # clip_score ties everywhere
    r = paired_differences(df, "seconds_total")
    assert r["win_ci_low"] <= 0.5 <= r["win_ci_high"] and r["win_ci_low"] <= r["win_rate"] <= r["win_ci_high"]
    binomial_width = 2 * 1.96 * np.sqrt(r["win_rate"] * (1 - r["win_rate"]) / r["n"])  # no effect: a coin flip
    assert r["win_ci_high"] - r["win_ci_low"] == pytest.approx(binomial_width, rel=0.2)
    tied = paired_differences(df, "clip_score")
    assert tied["win_rate"] == 0.0 and tied["tie_rate"] == 1.0


def test_pairs_are_like_for_like_and_repeats_are_averaged():
    df = synthetic_runs(4, effect=-1.0, noise=0.0)
    repeat = df[df.architecture == UC].head(1).assign(seconds_total=lambda d: d.seconds_total + 2.0)
    other_device = df[df.architecture == UC].tail(1).assign(device="cuda", seconds_total=-100.0)
    r = paired_differences(pd.concat([df, repeat, other_device]), "seconds_total")
    # the repeat moves pair 0 by +1 (mean of -1 and +1 is 0); the cuda row has no cuda partner
    assert r["n"] == 4 and r["mean_diff"] == pytest.approx((0.0 - 1.0 - 1.0 - 1.0) / 4)


def test_errors():
    df = synthetic_runs(10)
    with pytest.raises(ValueError, match="'fid' is not a column"):
        paired_differences(df, "fid")
    shifted = df.assign(seed=np.where(df.architecture == LD, df.seed + 100, df.seed))
    with pytest.raises(NoPairsError, match="no pairs"):
        paired_differences(shifted, "seconds_total")
    with pytest.raises(ValueError, match="no pairs"):  # NoPairsError is a ValueError
        paired_differences(df.assign(clip_score=np.where(df.architecture == UC, np.nan, 1.0)), "clip_score")
    with pytest.raises(ValueError, match="no rows of architecture 'karlo'"):
        paired_differences(df, "seconds_total", b="karlo")
    with pytest.raises(ValueError, match="2 configurations"):
        paired_differences(df.assign(steps=np.where(df.seed % 2, 25, 50)), "seconds_total")
    with pytest.raises(ValueError, match="no known direction"):
        paired_differences(df.assign(fid=1.0), "fid")
    with pytest.raises(ValueError, match="not numeric"):
        paired_differences(df, "prompt", higher_is_better=True)


# ----------------------------------------------------------------------------- tables


def test_summarize_puts_architectures_side_by_side():
    df = with_verdicts(synthetic_runs(40))
    table = summarize(df)
    assert list(table.columns) == [LD, UC]
    assert table.loc[("rows", "n"), UC] == 40
    for arch in (LD, UC):
        rows = df[df.architecture == arch]
        assert table.loc[("seconds_total", "mean"), arch] == pytest.approx(rows.seconds_total.mean())
        assert table.loc[("seconds_total", "median"), arch] == pytest.approx(rows.seconds_total.median())
        assert table.loc[("seconds_total", "std"), arch] == pytest.approx(rows.seconds_total.std())
        verdicts = rows.check_colour_correct.dropna().astype(bool)
        assert table.loc[("check_colour_correct", "mean"), arch] == pytest.approx(verdicts.mean())  # accuracy
        assert table.loc[("check_colour_correct", "n"), arch] == len(verdicts)
    assert table.index.get_level_values("metric").unique().tolist() == [
        "rows",
        "seconds_total",
        "peak_memory_mb",
        "clip_score",
        "check_colour_correct",
    ]
    assert ("check_colour_correct", "median") not in table.index


def test_summary_table_and_its_text_show_n_and_intervals(tmp_path):
    rows = with_verdicts(synthetic_runs(24)).astype({"seed": "Int64"}).to_dict("records")
    log = RunLog(tmp_path)  # through the store: typed columns, and unused core columns all <NA>
    log.append([{k: (None if v is pd.NA else v) for k, v in r.items()} for r in rows])
    df = load_runs(tmp_path)

    table = summary_table(df)
    assert table.index.tolist() == ["seconds_total", "peak_memory_mb", "clip_score", "check_colour_correct"]
    assert (table["n"] == [24, 24, 24, 18]).all()
    assert table["better"].tolist() == ["lower", "lower", "higher", "higher"]
    assert np.allclose(table["mean_diff"], table[f"mean_{UC}"] - table[f"mean_{LD}"])  # unCLIP first, as every view
    assert (table["ci_low"] <= table["mean_diff"]).all() and (table["mean_diff"] <= table["ci_high"]).all()

    text = format_summary(df)
    lines = text.splitlines()
    assert "paired by prompt, seed, dtype, device, device_name" in lines[0]
    body = {line.split()[0]: line for line in lines[2:]}
    assert list(body) == table.index.tolist()
    for metric, line in body.items():
        r = table.loc[metric]
        assert f" {r['n']} " in line  # n beside every headline number
        intervals = re.findall(r"(-?[\d,.]+%?) \[(-?[\d,.]+%?), (-?[\d,.]+%?)\]", line)
        assert len(intervals) == 2  # the difference and the win rate, each with its CI
        shown = [float(v.replace(",", "")) for v in intervals[0]]
        assert shown == pytest.approx([r["mean_diff"], r["ci_low"], r["ci_high"]], rel=1e-3, abs=1e-3)
        assert intervals[1] == tuple(f"{r[k]:.0%}" for k in ("win_rate", "win_ci_low", "win_ci_high"))


def test_summary_table_skips_metrics_without_pairs_and_fails_without_any():
    df = synthetic_runs(10).assign(clip_score=np.nan)
    assert "clip_score" not in summary_table(df).index
    with pytest.raises(NoPairsError):
        summary_table(df.assign(seconds_total=np.nan, peak_memory_mb=np.nan))


def test_from_many_pairs_the_interval_is_the_normal_one_the_bootstrap_approaches():
    """From NORMAL_FROM pairs on the interval is mean ± 1.96 standard errors, as the bootstrap's is there (within its
    own resampling noise), at none of its cost."""
    df = synthetic_runs(NORMAL_FROM, effect=-1.5, noise=1.0, seed=3)
    normal = paired_differences(df, "seconds_total", UC, LD)
    assert normal["n"] == NORMAL_FROM and normal["n_boot"] == 0
    boot = paired_differences(df.iloc[: 2 * (NORMAL_FROM - 1)], "seconds_total", UC, LD)  # one pair fewer
    assert boot["n_boot"] == 2000
    width = normal["ci_high"] - normal["ci_low"]
    for key in ("ci_low", "ci_high", "win_ci_low", "win_ci_high"):
        assert abs(normal[key] - boot[key]) < 0.1 * width, key
