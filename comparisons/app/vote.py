"""The Vote tab's backend: people judge the architectures blind, by DALL·E 2's protocol (Ramesh et al. 2022, Table 1:
photorealism, caption similarity, and diversity judged on sets of four samples).

Pairs come from the run log (comparisons.app.pairs); `make_pairs` makes them on the spot from a list of prompts, four
seeds each, so every question has some.

Ballots can't be stuffed:
- `show` hands a voter a pair, sides drawn at random, names hidden, with a single-use token bound to that voter;
- `cast` takes only such a token, from the voter it was shown to, once; one vote per voter per pair; at most
  `Limits.votes_per_minute` votes a minute per voter; anything else is refused in words and writes nothing;
- each vote is a row of the votes log beside the run log (comparisons.vote_log), appended atomically.
A voter is the anonymous id of a browser session (comparisons.app.access.Visitors), on loopback too. Tokens live in
this process: a restart voids the ballots shown before it, never a vote cast.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from comparisons.app.access import OWNER, RateLimiter
from comparisons.app.inputs import example_prompts, parse_prompt
from comparisons.app.inside import mosaic
from comparisons.app.pairs import DIVERSITY, GRID_SEEDS, Pair, Side, judged, pairs_in, spread_of
from comparisons.app.session import Session
from comparisons.harness import Made, new_run_id
from comparisons.presets import get_preset
from comparisons.schema import VISITOR
from comparisons.settings import Settings
from comparisons.vote_log import ANSWERS, QUESTIONS, VoteLog, export_votes_csv, export_votes_parquet
from comparisons.votes import agreement, strengths, win_rates
from pipelines import registry

log = logging.getLogger(__name__)
PENDING_PER_VOTER = 16  # ballots a voter may hold unused: showing more voids the oldest
BALLOT_SECONDS = 3600  # a ballot not cast within this is void
MAX_PROMPTS = 16  # prompts per "make pairs" request (four seeds each, every architecture)
EXPORTS = {"csv": export_votes_csv, "parquet": export_votes_parquet}
REFUSED = "Vote: this ballot is not valid (used already, expired, or not shown to you): press Next pair."


# ----------------------------------------------------------------------------- ballots


class NoPairError(ValueError):
    """No pair is left for this voter and question: a state to say, not a fault."""


@dataclass(frozen=True)
class Ballot:
    """A pair shown to one voter, and the single-use token its vote must carry."""

    token: str
    voter: str
    pair: Pair
    shown_at: datetime
    issued: float  # time.monotonic() when shown
    judge: tuple[float | None, float | None]
    checker: tuple[float | None, float | None]


class Vote:
    """The tab's requests: pairs shown blind with a ballot each, votes cast once, pairs made, scores."""

    def __init__(self, session: Session, clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.log = VoteLog(session.results_dir)
        self._clock = clock
        self._rate = RateLimiter(session.config.access.limits.votes_per_minute, clock)
        self._random = random.SystemRandom()  # sides and pairs a voter cannot predict
        self._ballots: dict[str, Ballot] = {}
        self._pending: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self._voted: dict[str, set[str]] = collections.defaultdict(set)
        self._lock = threading.Lock()
        self._pairs: dict[tuple, list[Pair]] = {}  # per (run log length, question, rows seen): pairs_in's answer
        self._scores: tuple | None = None  # (votes log length, scores)

    @property
    def judge_name(self) -> str:
        return self.session.config.judge or get_preset(self.session.config.preset).judge

    # ---- pairs
    def pairs(self, question: str, visitor: str = OWNER) -> list[Pair]:
        """The pairs a visitor may be shown: of every row, or on a public app that keeps results apart, of the
        owner's rows and the visitor's own."""
        df = self.session.runs()
        seen = None
        if self.session.config.access.per_visitor and VISITOR in df.columns:
            df, seen = df[df[VISITOR].isin([OWNER, visitor])], visitor
        key = (len(df), question, seen)
        with self._lock:
            if key in self._pairs:
                return self._pairs[key]
        found = pairs_in(df, question)
        with self._lock:
            if len(self._pairs) > 64:
                self._pairs.clear()
            self._pairs[key] = found
        return found

    def spread(self, images: list[str]) -> float:
        """The judge's spread of a set of images (GPU work: the UI may run it in a ZeroGPU worker)."""
        pils = [Image.open(p).convert("RGB") for p in images]
        with self.session.gpu_turn():
            embeddings = self.session.harness().judge.embed_images(pils).numpy()
        return spread_of(embeddings)

    def show(
        self,
        voter: str,
        question: str,
        visitor: str = OWNER,
        spread: Callable[[list[str]], float] | None = None,
    ) -> Ballot:
        """A pair this voter has not judged for `question`, sides at random, with a new ballot; `visitor`: whose
        rows the voter may see (Session.visitor), `spread`: the judge's spread of a set (default `self.spread`)."""
        if question not in QUESTIONS:
            raise ValueError(f"Question: choose among {', '.join(QUESTIONS)}")
        with self._lock:
            held = {self._ballots[t].pair.key for t in self._pending[voter] if t in self._ballots}
            done = self._voted[voter] | held
        fresh = [p for p in self.pairs(question, visitor) if p.key not in done]
        if not fresh:
            what = "sets of four seeds of one prompt" if question == DIVERSITY else "images of one prompt and seed"
            raise NoPairError(
                f"No pair left for you to judge on this question ({what} by two architectures of one run): make "
                "pairs on the spot below, or compare and sweep, then press Next pair."
            )
        pair = self._random.choice(fresh)
        if self._random.random() < 0.5:
            pair = pair.flipped()
        judge, checker = judged(pair, spread or self.spread)
        ballot = Ballot(secrets.token_urlsafe(24), voter, pair, datetime.now(UTC), self._clock(), judge, checker)
        with self._lock:
            pending = self._pending[voter]
            pending.append(ballot.token)
            self._ballots[ballot.token] = ballot
            while len(pending) > PENDING_PER_VOTER:
                self._ballots.pop(pending.popleft(), None)
        return ballot

    def pictures(self, ballot: Ballot) -> tuple[Image.Image, Image.Image]:
        """Each side as one picture (a set as a 2 × 2 mosaic), decoded afresh: no file name tells the side."""
        return tuple(_picture(side.images) for side in ballot.pair.sides)

    # ---- votes
    def cast(self, voter: str, token: str | None, answer: str | None) -> tuple[dict, Ballot]:
        """Log one vote: `answer` ("left", "right" or "tie") on the ballot `token` shown to `voter`; the row and
        its ballot. A ballot that is not this voter's, used, void or unknown, a pair voted on already, or a voter
        over the rate is refused and writes nothing."""
        if answer not in ANSWERS:
            raise ValueError("Vote: the answer must be left, right, or tie (Can't tell)")
        with self._lock:
            ballot = self._ballots.get(token) if isinstance(token, str) else None
            if ballot is None or ballot.voter != voter:  # another's token is not taken from them
                raise ValueError(REFUSED)
            if self._clock() - ballot.issued > BALLOT_SECONDS:
                self._drop(ballot)
                raise ValueError(REFUSED)
            if ballot.pair.key in self._voted[voter]:
                self._drop(ballot)
                raise ValueError("Vote: you have judged this pair already; one vote per pair. Press Next pair.")
            self._rate.take(voter, "vote", "Votes", per="per browser session")
            seconds = self._clock() - ballot.issued
            row = vote_row(ballot, answer, self.judge_name, datetime.now(UTC), seconds, self.session.results_dir)
            self.log.append([row])  # under the lock: a ballot is never cast twice by two requests at once
            self._drop(ballot)
            self._voted[voter].add(ballot.pair.key)
        return row, ballot

    def _drop(self, ballot: Ballot) -> None:
        self._ballots.pop(ballot.token, None)
        pending = self._pending[ballot.voter]
        if ballot.token in pending:
            pending.remove(ballot.token)

    # ---- pairs made on the spot
    def prompts(self, text: str | None) -> list[str]:
        """The prompt list, one a line (the preset's examples when empty), each checked as the Compare tab does."""
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        lines = lines or example_prompts(self.session.config.preset)
        if len(lines) > MAX_PROMPTS:
            raise ValueError(f"Prompts for pairs: at most {MAX_PROMPTS} at a time, one a line; got {len(lines)}")
        return list(dict.fromkeys(parse_prompt(p, "prompt for pairs") for p in lines))

    def make_pairs(self, text: str | None, settings: Settings = Settings(), visitor: str = OWNER) -> list[Made]:
        """GPU work: every architecture on each prompt with four random seeds and `settings` (the Compare tab's), one
        run, nothing written (`record`). Counted as a heavy request on a public app."""
        prompts, settings = self.prompts(text), settings.checked()
        self.session.fair_use(visitor, "pairs", "Making pairs")
        self.session.check_room()
        harness, run_id = self.session.harness(), new_run_id()
        first = self._random.randrange(0, 2**31)
        seeds = list(range(first, first + GRID_SEEDS))
        made = []
        with self.session.gpu_turn():
            for prompt in prompts:
                for arch in harness.architectures:
                    made.append(
                        harness.make(arch, [prompt] * GRID_SEEDS, seeds, settings, run_id=run_id, visitor=visitor)
                    )
        return [m.portable() for m in made]

    def record(self, made: list[Made]) -> str:
        """Write what `make_pairs` made (the PNGs, then the rows in one append); says what there now is to judge."""
        self.session.harness().save(*made)
        prompts = len({m.rows[0]["prompt"] for m in made})
        archs = len({m.architecture for m in made})
        pairs = prompts * math.comb(archs, 2)  # per seed, and per set of four seeds
        return (
            f"Made {sum(len(m.rows) for m in made)} images: {prompts} prompt{'s' * (prompts != 1)} × {GRID_SEEDS} "
            f"seeds × {archs} architectures, {pairs * GRID_SEEDS} new pairs of single images and {pairs} of sets of "
            "four to judge."
        )

    # ---- the votes as data
    def votes(self, voter: str | None = None) -> pd.DataFrame:
        """The votes log; on a public app that keeps results apart, the votes of `voter` alone (a vote names the
        prompt and images of rows only their visitor may see)."""
        votes = self.log.load()
        return votes[votes["voter"] == voter] if self.session.config.access.per_visitor else votes

    def export(self, votes: pd.DataFrame, fmt: str) -> Path:
        """The votes as a file in the results folder's exports/ (CSV with formulas neutralised, or Parquet), named
        by content."""
        if fmt not in EXPORTS:
            raise ValueError(f"Votes export: choose {' or '.join(EXPORTS)}")
        if votes.empty:
            raise ValueError("Votes export: there are no votes to export yet")
        digest = hashlib.sha256(pd.util.hash_pandas_object(votes.astype(str), index=False).values.tobytes())
        path = self.session.results_dir / "exports" / f"votes-{len(votes)}-{digest.hexdigest()[:16]}.{fmt}"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            EXPORTS[fmt](votes, path)
        return path

    # ---- scores
    def scores(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
        """(win rates, Bradley–Terry strengths, agreement with the judges, votes): comparisons.votes's, kept until a
        vote lands."""
        votes = self.log.load()
        with self._lock:
            if self._scores is not None and self._scores[0] == len(votes):
                return self._scores[1]
        found = (win_rates(votes), strengths(votes), agreement(votes), len(votes))
        with self._lock:
            self._scores = (len(votes), found)
        return found


def vote_row(ballot: Ballot, answer: str, judge: str, now: datetime, seconds: float, folder: Path) -> dict:
    """The votes log's row of one vote (comparisons.vote_log.VOTE_COLUMNS), its images named inside `folder`."""
    left, right = ballot.pair.sides
    pair = ballot.pair

    def names(side: Side) -> str:
        return ",".join(
            str(Path(p).relative_to(folder)) if Path(p).is_relative_to(folder) else Path(p).name for p in side.images
        )

    return {
        "vote_id": secrets.token_hex(16),
        "created_at": now,
        "voter": ballot.voter,
        "question": pair.question,
        "prompt": pair.prompt,
        "seeds": ",".join(str(s) for s in pair.seeds),
        "left_architecture": left.architecture,
        "right_architecture": right.architecture,
        "left_run_ids": ",".join(left.run_ids),
        "right_run_ids": ",".join(right.run_ids),
        "left_images": names(left),
        "right_images": names(right),
        "answer": answer,
        "winner": {"left": left.architecture, "right": right.architecture, "tie": ""}[answer],
        "pair_key": pair.key,
        "shown_at": ballot.shown_at,
        "seconds_to_vote": round(seconds, 3),
        "judge": judge,
        "judge_left": ballot.judge[0],
        "judge_right": ballot.judge[1],
        "checker_left": ballot.checker[0],
        "checker_right": ballot.checker[1],
    }


def _picture(images: list[str]) -> Image.Image:
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    return Image.fromarray(tiles[0]) if len(tiles) == 1 else mosaic(tiles, cols=2)


def reveal(ballot: Ballot, answer: str) -> str:
    """What the page says once a vote is cast: which architecture was on each side, and what the judges measured."""
    left, right = (registry.get(s.architecture).label for s in ballot.pair.sides)
    chose = {"left": f"the left one ({left})", "right": f"the right one ({right})", "tie": "can't tell"}[answer]
    lines = [f"**Left: {left} · Right: {right}.** You chose {chose}."]
    j, c = ballot.judge, ballot.checker
    if None not in j and ballot.pair.question == DIVERSITY:
        lines.append(
            f"The judge CLIP finds the sets' spread (1 − the mean cosine of their image embeddings; more varied is "
            f"higher): left {j[0]:.3f}, right {j[1]:.3f}."
        )
    elif None not in j:
        lines.append(
            f"The judge CLIP's score of image and caption (0–100, higher matches better): left {j[0]:.1f}, "
            f"right {j[1]:.1f}."
        )
    if None not in c:
        verdict = ("not all correct", "all correct")
        sides = (
            f"left {verdict[c[0] == 1]}, right {verdict[c[1] == 1]}"
            if len(ballot.pair.seeds) == 1
            else f"left {c[0]:.0%}, right {c[1]:.0%} of its images all correct"
        )
        lines.append(f"The Shapes checker reads every object, colour and relation: {sides}.")
    return "  \n".join(lines)
