"""People's votes between two architectures' images, kept as data, and what they say with their uncertainty.

The Vote tab shows a visitor two architectures' images of one prompt and seed, blind, and asks one of the three
questions of DALL·E 2's human evaluations (Ramesh et al., 2022, "Hierarchical Text-Conditional Image Generation
with CLIP Latents"): photorealism, caption similarity and diversity, with "Can't tell" as a third answer. Each
answer is one row of `votes.jsonl`, beside the run log in the results folder, appended with the run log's own
machinery (comparisons.store.append_block): validated first, one locked O_APPEND write, fsync'd, rolled back on
failure; an unterminated last line was never committed, is ignored by readers and cut by the next append.

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
import datetime as dt
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import choix
import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import cohens_kappa

from comparisons.exports import export_csv, export_parquet, read_csv, read_parquet
from comparisons.intervals import CONFIDENCE, wilson_interval
from comparisons.schema import DATETIME, FLOAT, STRING, typed_column
from comparisons.store import append_block, read_committed
from pipelines import registry

VOTES_NAME = "votes.jsonl"  # beside the run log (comparisons.store.LOG_NAME) in the results folder
VOTES_LOCK_NAME = "votes.lock"  # its own lock: a vote never waits for a sweep's rows

QUESTIONS = {  # DALL·E 2's three questions, as people read them
    "photorealism": "Which image looks more like a real picture of its world?",
    "caption": "Which image matches the caption better?",
    "diversity": "Which set of four images (same prompt, four seeds) varies more?",
}
ANSWERS = ("left", "right", "tie")  # "tie" is the "Can't tell" button

VOTE_COLUMNS = {
    "vote_id": STRING,  # uuid4 hex
    "created_at": DATETIME,
    "voter": STRING,  # an anonymous session id; "" for the app's owner on loopback
    "question": STRING,  # a key of QUESTIONS
    "prompt": STRING,
    "seeds": STRING,  # "7" for a pair of single images, "0,1,2,3" for diversity's grids
    "left_architecture": STRING,
    "right_architecture": STRING,
    "left_run_ids": STRING,  # comma-separated run ids of the rows shown
    "right_run_ids": STRING,
    "left_images": STRING,  # comma-separated image paths, relative to the results folder
    "right_images": STRING,
    "answer": STRING,  # one of ANSWERS
    "winner": STRING,  # the architecture chosen; "" for a tie
    "pair_key": STRING,  # the pair shown, as the Vote tab names it
    "shown_at": DATETIME,
    "seconds_to_vote": FLOAT,
    "judge": STRING,  # the CLIP judge model's name, may be ""
    "judge_left": FLOAT,  # the judge's measure of each side, higher = preferred (CLIP score; diversity: spread)
    "judge_right": FLOAT,
    "checker_left": FLOAT,  # Shapes lab, caption question: the fraction of the side's images found all correct
    "checker_right": FLOAT,
}
NULLABLE = frozenset({"judge_left", "judge_right", "checker_left", "checker_right"})  # no judge, or no checker
JUDGES = {"clip": ("judge_left", "judge_right"), "checker": ("checker_left", "checker_right")}
SEEDS = re.compile(r"\d+(,\d+)*")
# choix's regularisation: keeps a strength finite when one side won every vote, negligible beside a few votes
ALPHA = 0.01


# ----------------------------------------------------------------------------- encoding votes


def _json_value(column: str, value: object) -> object:
    """`value` as JSON holds it, checked against the column's kind (ValueError saying what it takes)."""
    kind = VOTE_COLUMNS[column]
    if (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, (float, np.floating)) and math.isnan(value))
    ):
        if column in NULLABLE:
            return None
        raise ValueError(f"is missing; it takes {'a number' if kind == FLOAT else kind}")
    if kind == STRING and isinstance(value, str):
        return value
    if kind == FLOAT and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return float(value)
    if kind == DATETIME and isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value} has no time zone; use e.g. datetime.now(timezone.utc)")
        return pd.Timestamp(value).tz_convert("UTC").isoformat()
    wanted = {STRING: "text", FLOAT: "a number", DATETIME: "a datetime with a time zone"}[kind]
    raise ValueError(f"takes {wanted}, got the {type(value).__name__} {value!r:.60}")


def _rule_broken(vote: dict) -> tuple[str, str] | None:
    """The first column whose value breaks a rule of votes, and why; None when the vote keeps them all."""
    left, right, answer = vote["left_architecture"], vote["right_architecture"], vote["answer"]
    if not vote["vote_id"]:
        return "vote_id", "is empty"
    if vote["question"] not in QUESTIONS:
        return "question", f"{vote['question']!r} is not one of {', '.join(QUESTIONS)}"
    if not SEEDS.fullmatch(vote["seeds"]):
        return "seeds", f"{vote['seeds']!r} is not comma-separated whole numbers such as '7' or '0,1,2,3'"
    for column in ("left_architecture", "right_architecture"):
        if not vote[column]:
            return column, "is empty; a vote names both architectures"
    if left == right:
        return "right_architecture", f"is {right!r} on both sides; a vote compares two architectures"
    if answer not in ANSWERS:
        return "answer", f"{answer!r} is not one of {', '.join(ANSWERS)}"
    expected = {"left": left, "right": right, "tie": ""}[answer]
    if vote["winner"] != expected:
        return "winner", f"is {vote['winner']!r}, but the answer {answer!r} makes it {expected!r}"
    if vote["seconds_to_vote"] < 0:
        return "seconds_to_vote", f"{vote['seconds_to_vote']} is negative"
    return None


def _encoded_vote(i: int, vote: object) -> str:
    """One vote as a JSON line, or a ValueError naming the vote and the column."""
    if not isinstance(vote, dict):
        raise ValueError(f"vote {i} must be a dict, got {type(vote).__name__}")
    vote_id = vote.get("vote_id")
    name = f"vote {i} ({vote_id!r})" if isinstance(vote_id, str) else f"vote {i}"
    missing = [c for c in VOTE_COLUMNS if c not in vote]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {', '.join(missing)}")
    unknown = [str(c) for c in vote if c not in VOTE_COLUMNS]
    if unknown:
        raise ValueError(f"{name} has unknown column(s) {', '.join(unknown)}; a vote has {', '.join(VOTE_COLUMNS)}")
    record = {}
    for column in VOTE_COLUMNS:
        try:
            record[column] = _json_value(column, vote[column])
        except ValueError as err:
            raise ValueError(f"{name}, column {column!r}: {err}") from None
    broken = _rule_broken(record)
    if broken:
        raise ValueError(f"{name}, column {broken[0]!r}: {broken[1]}")
    # ensure_ascii=False keeps prompts readable; "\n" inside strings is still escaped, so a vote is one line
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def encode_votes(votes: Sequence[dict]) -> bytes:
    """The votes as one JSON Lines block, each line ending in "\\n"; ValueError on the first bad vote."""
    if isinstance(votes, dict) or not isinstance(votes, Sequence):
        raise ValueError(f"votes must be a list of dicts, got {type(votes).__name__}")
    return "".join(_encoded_vote(i, vote) for i, vote in enumerate(votes)).encode("utf-8")


def frame_from_votes(records: list[dict]) -> pd.DataFrame:
    """Decoded votes as a typed frame, VOTE_COLUMNS in order (an empty frame with them when there are none)."""
    columns = {c: typed_column(c, [r.get(c) for r in records], kind) for c, kind in VOTE_COLUMNS.items()}
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


# ----------------------------------------------------------------------------- the log and its files


class VoteLog:
    """Append-only votes in `directory` (the results folder, created if missing): `votes.jsonl` and its lock."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"{self.directory} is a file; votes are kept in a results folder")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / VOTES_NAME
        self.lock_path = self.directory / VOTES_LOCK_NAME

    def append(self, votes: Sequence[dict]) -> None:
        """Append votes atomically: every vote is checked first (ValueError, nothing written), then all are written
        at once or, when the disk refuses (OSError), none."""
        block = encode_votes(votes)
        if block:
            append_block(self.path, self.lock_path, block, len(votes))

    def load(self) -> pd.DataFrame:
        """Every committed vote, typed, VOTE_COLUMNS in order."""
        return frame_from_votes(read_committed(self.path, self.lock_path)[0])


def load_votes(directory: str | os.PathLike) -> pd.DataFrame:
    """The votes kept in the results folder `directory` (none yet: an empty frame); ValueError if it is missing."""
    if not Path(directory).is_dir():
        raise ValueError(f"no results folder at {directory}")
    return VoteLog(directory).load()


def _checked(votes: pd.DataFrame) -> pd.DataFrame:
    if list(votes.columns) != list(VOTE_COLUMNS):
        raise ValueError(
            f"a votes frame has the columns {', '.join(VOTE_COLUMNS)}, in order; got {list(votes.columns)}"
        )
    return votes


def export_votes_csv(votes: pd.DataFrame, path: str | os.PathLike) -> None:
    """The votes as CSV, atomically, formulas neutralised (comparisons.exports): a spreadsheet shows them as text."""
    export_csv(_checked(votes), path, neutralise_formulas=True, kinds=VOTE_COLUMNS)


def read_votes_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A frame written by `export_votes_csv`, exactly as it was."""
    return _checked(read_csv(path, neutralised=True, kinds=VOTE_COLUMNS))


def export_votes_parquet(votes: pd.DataFrame, path: str | os.PathLike) -> None:
    """The votes as Parquet, atomically."""
    export_parquet(_checked(votes), path, kinds=VOTE_COLUMNS)


def read_votes_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """A frame written by `export_votes_parquet`, exactly as it was."""
    return _checked(read_parquet(path, kinds=VOTE_COLUMNS))


# ----------------------------------------------------------------------------- what the votes say


def _of_question(votes: pd.DataFrame, question: str) -> pd.DataFrame:
    return _checked(votes)[votes["question"] == question]


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
    votes = _checked(votes)
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
