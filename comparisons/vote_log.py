"""People's votes between two architectures' images, kept as data: the votes log and its files.

The Vote tab (comparisons.app.vote) shows a visitor two architectures' images of one prompt and seed, blind, and asks
one of the three questions of DALL·E 2's human evaluations (Ramesh et al., 2022): photorealism, caption similarity
and diversity, with "Can't tell" as a third answer. Each answer is one row of `votes.jsonl`, beside the run log in the
results folder, appended with the run log's own machinery (comparisons.store.append_block): validated first, one
locked O_APPEND write, fsync'd, rolled back on failure; an unterminated last line was never committed, is ignored by
readers and cut by the next append. Exports: CSV with formulas neutralised, and Parquet. What the votes say:
comparisons.votes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from comparisons.exports import export_csv, export_parquet, read_csv, read_parquet
from comparisons.schema import DATETIME, FLOAT, STRING, typed_column
from comparisons.store import append_block, read_committed

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


def checked_votes(votes: pd.DataFrame) -> pd.DataFrame:
    if list(votes.columns) != list(VOTE_COLUMNS):
        raise ValueError(
            f"a votes frame has the columns {', '.join(VOTE_COLUMNS)}, in order; got {list(votes.columns)}"
        )
    return votes


def export_votes_csv(votes: pd.DataFrame, path: str | os.PathLike) -> None:
    """The votes as CSV, atomically, formulas neutralised (comparisons.exports): a spreadsheet shows them as text."""
    export_csv(checked_votes(votes), path, neutralise_formulas=True, kinds=VOTE_COLUMNS)


def read_votes_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A frame written by `export_votes_csv`, exactly as it was."""
    return checked_votes(read_csv(path, neutralised=True, kinds=VOTE_COLUMNS))


def export_votes_parquet(votes: pd.DataFrame, path: str | os.PathLike) -> None:
    """The votes as Parquet, atomically."""
    export_parquet(checked_votes(votes), path, kinds=VOTE_COLUMNS)


def read_votes_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """A frame written by `export_votes_parquet`, exactly as it was."""
    return checked_votes(read_parquet(path, kinds=VOTE_COLUMNS))
