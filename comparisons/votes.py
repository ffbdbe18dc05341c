"""What people's votes between two architectures' images say, with their uncertainty.

The Vote tab shows a visitor two architectures' images of one prompt and seed, blind, and asks one of the three
questions of DALL·E 2's human evaluations (Ramesh et al., 2022, "Hierarchical Text-Conditional Image Generation
with CLIP Latents"): photorealism, caption similarity and diversity, with "Can't tell" as a third answer. Each
answer is one row of the votes log (comparisons.vote_log).

What the votes say, each figure with its n and a 95% interval:
- `win_rates`: per question and pair, how often one side wins among decisive votes (Wilson's interval, as every
  proportion of ours: comparisons.intervals), and how often people could not tell;
- `strengths`: per question, a Bradley–Terry log-strength per architecture (Bradley & Terry, 1952) fitted on the
  decisive votes with choix's I-LSR (Maystre & Grossglauser, 2015), centred to mean 0, with a percentile
  bootstrap over the votes (Efron, 1979);
- `agreement`: how often an automatic judge (CLIP's score or spread, the Shapes checker) picks the side people
  picked, and Cohen's kappa (1960), agreement beyond chance, with statsmodels' asymptotic interval.

`python -m comparisons.votes DIR [--csv OUT] [--parquet OUT]` prints them in words.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import choix
import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import cohens_kappa

from comparisons.intervals import CONFIDENCE, wilson_interval
from comparisons.vote_log import (
    JUDGES,
    QUESTIONS,
    checked_votes,
    export_votes_csv,
    export_votes_parquet,
    load_votes,
)
from pipelines import registry

# choix's regularisation: keeps a strength finite when one side won every vote, negligible beside a few votes
ALPHA = 0.01


# ----------------------------------------------------------------------------- what the votes say


def _of_question(votes: pd.DataFrame, question: str) -> pd.DataFrame:
    return checked_votes(votes)[votes["question"] == question]


def _interval(k: int, n: int) -> tuple[float, float]:
    return wilson_interval(k, n) if n else (math.nan, math.nan)


def win_rates(votes: pd.DataFrame) -> pd.DataFrame:
    """Per question and pair of architectures (a before b alphabetically): n votes, a's wins, b's, ties, a's win
    rate among decisive votes with its 95% Wilson interval (NaN without decisive votes), and the tie rate."""
    rows = []
    for question in QUESTIONS:
        of = _of_question(votes, question)
        left, right = of["left_architecture"], of["right_architecture"]
        pairs = pd.DataFrame({"a": left.where(left < right, right), "b": right.where(left < right, left)})
        for (a, b), pair in of.groupby([pairs["a"], pairs["b"]], sort=True):
            a_wins, b_wins = int((pair["winner"] == a).sum()), int((pair["winner"] == b).sum())
            ties, decisive = len(pair) - a_wins - b_wins, a_wins + b_wins
            rate = a_wins / decisive if decisive else math.nan
            rows.append((question, a, b, len(pair), a_wins, b_wins, ties, rate, *_interval(a_wins, decisive)))
    columns = ["question", "a", "b", "n", "a_wins", "b_wins", "ties", "win_rate", "low", "high"]
    table = pd.DataFrame(rows, columns=columns)
    return table.assign(tie_rate=table["ties"] / table["n"])


def _log_strengths(wins: np.ndarray) -> np.ndarray:
    """Bradley–Terry log-strengths from wins[i, j] = times i beat j, centred to mean 0."""
    params = choix.ilsr_pairwise_dense(wins.astype(np.float64), alpha=ALPHA)
    return params - params.mean()


def _beats_average(strength: np.ndarray | float) -> np.ndarray | float:
    """P(beats an architecture of log-strength 0, the average) under Bradley–Terry."""
    return 1 / (1 + np.exp(-strength))


def strengths(votes: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per question and architecture: its Bradley–Terry log-strength from the decisive votes, centred to mean 0, with
    a 95% percentile bootstrap interval over `resamples` resamplings of those votes, the decisive votes it took part
    in (n), and its probability to beat an average architecture (beats_average, beats_low, beats_high).
    Strengths compare within a question only, and only across architectures linked by votes."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    tail = (1 - CONFIDENCE) / 2
    rows = []
    for q, question in enumerate(QUESTIONS):
        decisive = _of_question(votes, question).query("answer != 'tie'")
        if decisive.empty:
            continue
        winners = decisive["winner"].to_numpy(dtype=object)
        left, right = decisive["left_architecture"].to_numpy(dtype=object), decisive["right_architecture"]
        losers = np.where(winners == left, right.to_numpy(dtype=object), left)
        names = sorted({*winners, *losers})
        index = {name: i for i, name in enumerate(names)}
        wins = np.zeros((len(names), len(names)))
        np.add.at(wins, ([index[w] for w in winners], [index[x] for x in losers]), 1)
        fit = _log_strengths(wins)
        # resampling votes with replacement is a multinomial draw over the (winner, loser) cells
        rng = np.random.default_rng([seed, q])
        draws = rng.multinomial(len(decisive), wins.ravel() / len(decisive), size=resamples)
        boot = np.array([_log_strengths(d.reshape(wins.shape)) for d in draws])
        low, high = np.quantile(boot, [tail, 1 - tail], axis=0)
        for i, name in enumerate(names):
            n = int(wins[i].sum() + wins[:, i].sum())
            rows.append((question, name, n, fit[i], low[i], high[i]))
    table = pd.DataFrame(rows, columns=["question", "architecture", "n", "strength", "low", "high"])
    return table.assign(
        beats_average=_beats_average(table["strength"]),
        beats_low=_beats_average(table["low"]),
        beats_high=_beats_average(table["high"]),
    )


def _kappa(table: np.ndarray) -> tuple[float, float, float]:
    """Cohen's kappa of a 2×2 table (people in rows, judge in columns) and its 95% interval; NaN when both always
    picked the same side, where agreement by chance is certain and kappa is undefined."""
    people, judge = table.sum(axis=1), table.sum(axis=0)
    if (people * judge).sum() == table.sum() ** 2:
        return math.nan, math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):  # its z test divides by 0 when one side never varies
        result = cohens_kappa(table, return_results=True)
    # the asymptotic interval is symmetric and can pass kappa's bounds: it says nothing beyond them
    return float(result.kappa), max(-1.0, float(result.kappa_low)), min(1.0, float(result.kappa_upp))


def agreement(votes: pd.DataFrame) -> pd.DataFrame:
    """Per question and judge ("clip", "checker"): over the votes where people and the judge both picked a side (the
    judge picks the side it measures higher; votes without its measures are skipped), n, the fraction where they
    agree with its 95% Wilson interval, and Cohen's kappa with its 95% interval. No such votes: no row."""
    rows = []
    for question in QUESTIONS:
        of = _of_question(votes, question)
        for judge, (left, right) in JUDGES.items():
            both = of[(of["answer"] != "tie") & of[left].notna() & of[right].notna() & (of[left] != of[right])]
            if both.empty:
                continue
            people_left = (both["answer"] == "left").to_numpy()
            judge_left = (both[left] > both[right]).to_numpy()
            table = np.array(
                [
                    [(people_left & judge_left).sum(), (people_left & ~judge_left).sum()],
                    [(~people_left & judge_left).sum(), (~people_left & ~judge_left).sum()],
                ]
            )
            agree = int(np.trace(table))
            rows.append((question, judge, len(both), agree / len(both), *_interval(agree, len(both)), *_kappa(table)))
    columns = ["question", "judge", "n", "agree", "low", "high", "kappa", "kappa_low", "kappa_high"]
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------- in words

JUDGE_WORDS = {"clip": "CLIP judge", "checker": "Shapes checker"}
MEASURES = {"clip": "its CLIP score", "checker": "the fraction of images it finds all correct"}
DIVERSITY_MEASURE = "the spread of the four images' CLIP embeddings"


def _name(architecture: str) -> str:
    """An architecture as tables name it: the registry's short name, or the votes' own for one not registered."""
    return registry.get(architecture).short if architecture in registry.names() else architecture


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _win_lines(rates: pd.DataFrame, question: str) -> list[str]:
    lines = []
    for r in rates[rates["question"] == question].itertuples():
        a, b, decisive = _name(r.a), _name(r.b), r.a_wins + r.b_wins
        tied = f"could not tell in {r.ties} of {r.n} votes ({_percent(r.tie_rate)})"
        if not decisive:
            lines.append(f"    {a} against {b}: {tied}.")
            continue
        lines.append(
            f"    {a} against {b}: {a} won {_percent(r.win_rate)} of {decisive} decisive vote{'s' * (decisive != 1)} "
            f"(95% CI {_percent(r.low)} to {_percent(r.high)}); {tied}."
        )
    return lines


def _strength_lines(table: pd.DataFrame, question: str) -> list[str]:
    return [
        f"    {_name(r.architecture)}: {r.strength:+.2f} (95% CI {r.low:+.2f} to {r.high:+.2f}); beats an average "
        f"architecture {_percent(r.beats_average)} of the time ({_percent(r.beats_low)} to {_percent(r.beats_high)}); "
        f"{r.n} decisive vote{'s' * (r.n != 1)}."
        for r in table[table["question"] == question].itertuples()
    ]


def _agreement_lines(table: pd.DataFrame, question: str) -> list[str]:
    lines = []
    for r in table[table["question"] == question].itertuples():
        measure = DIVERSITY_MEASURE if (question, r.judge) == ("diversity", "clip") else MEASURES[r.judge]
        kappa = (
            "kappa undefined (people and the judge always picked the same side)"
            if math.isnan(r.kappa)
            else f"Cohen's kappa {r.kappa:.2f} (95% CI {r.kappa_low:.2f} to {r.kappa_high:.2f})"
        )
        lines.append(
            f"    {JUDGE_WORDS[r.judge]}, by {measure}: picks the people's side in {_percent(r.agree)} of {r.n} votes "
            f"(95% CI {_percent(r.low)} to {_percent(r.high)}); {kappa}."
        )
    return lines


def report(votes: pd.DataFrame) -> str:
    """The votes' win rates, strengths and agreement with the judges, in words for a terminal."""
    votes = checked_votes(votes)
    if votes.empty:
        return "No votes yet."
    rates, fitted, agreed = win_rates(votes), strengths(votes), agreement(votes)
    asked = [q for q in QUESTIONS if (votes["question"] == q).any()]
    counts = votes["question"].value_counts()
    sections = [
        (
            "Win rates: among the votes that picked a side, how often the first architecture of each pair won, with "
            "a 95% Wilson interval; answers of Can't tell are counted apart.",
            lambda q: _win_lines(rates, q),
        ),
        (
            "Strengths (Bradley–Terry, from the votes that picked a side): log-strengths centred so that the average "
            "architecture has 0; a lead of d means winning at odds of e^d to 1. 95% intervals from 1,000 bootstrap "
            "resamplings of the votes.",
            lambda q: _strength_lines(fitted, q) or ["    No vote picked a side."],
        ),
        (
            "Agreement with the automatic judges, counted over the votes where both the person and the judge picked "
            "a side (a judge picks the side it measures higher; votes without its measures are left out). Kappa is "
            "agreement beyond chance: 0 = no better than chance, 1 = always the same side.",
            lambda q: _agreement_lines(agreed, q) or ["    No vote where both people and a judge picked a side."],
        ),
    ]
    lines = [f"{len(votes)} votes: " + ", ".join(f"{counts[q]} on {q}" for q in asked) + "."]
    for heading, lines_of in sections:
        lines += ["", heading]
        for question in asked:
            lines += [f"  {question.capitalize()}: {QUESTIONS[question]}", *lines_of(question)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m comparisons.votes", description="What people's votes between architectures say."
    )
    parser.add_argument("directory", help="the results folder, where votes.jsonl is kept")
    parser.add_argument("--csv", metavar="OUT", help="also write the votes to this CSV file (formulas neutralised)")
    parser.add_argument("--parquet", metavar="OUT", help="also write the votes to this Parquet file")
    args = parser.parse_args(argv)
    try:
        found = bool(args.directory.strip()) and Path(args.directory).is_dir()
    except OSError as err:  # a name the system cannot hold (too long)
        print(f"error: {args.directory[:80]!r} cannot be a results folder: {err.strerror}", file=sys.stderr)
        return 2
    if not found:
        print(f"error: there is no results folder at {args.directory!r}", file=sys.stderr)
        return 2
    try:
        votes = load_votes(args.directory)
    except ValueError as err:  # a corrupt line: named by its number
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path, export in ((args.csv, export_votes_csv), (args.parquet, export_votes_parquet)):
        if path:
            export(votes, path)
            print(f"Wrote {len(votes)} votes to {path}.")
    print(report(votes) if len(votes) else f"No votes in {args.directory} yet.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
