"""Pairs to judge in the run log: two architectures' images of one comparison, for one of DALL·E 2's questions, and
what the judge CLIP and the Shapes checker measure of each side (the Vote tab's, comparisons.app.vote).

A pair is two architectures' images from rows of one run (a Compare, a sweep, the pairs the Vote tab makes) with the
same prompt and seed, one row per architecture; for diversity, two sets of four seeds of one prompt from one run.
Rows of a run that holds several of an architecture's rows for one prompt and seed (a sweep over steps or guidance)
are left out: which of them to pair would be a guess. A pair made again (the same images) is one pair.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comparisons.records import digest_of
from comparisons.summary import text_to_image
from comparisons.vote_log import QUESTIONS
from pipelines import registry

DIVERSITY = "diversity"  # the question shown as two sets of GRID_SEEDS images
GRID_SEEDS = 4  # DALL·E 2's diversity sets: four samples of one caption


@dataclass(frozen=True)
class Side:
    """One side of a pair: an architecture and its rows (one image, or a set of four)."""

    architecture: str
    rows: tuple[dict, ...]

    @property
    def images(self) -> list[str]:
        return [r["image_path"] for r in self.rows]

    @property
    def model(self) -> str:
        return str(self.rows[0].get("model") or "")

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.rows]


@dataclass(frozen=True)
class Pair:
    """Two architectures' images of one comparison, for one question, sides in the order they are shown."""

    question: str
    run_id: str
    prompt: str
    seeds: tuple[int, ...]
    sides: tuple[Side, Side]

    @property
    def key(self) -> str:
        """Names the pair by what its images are, whatever their sides' order or run: an image made again (the same
        architecture, model, prompt, seed and settings, so the same pixels) is the same pair. One vote per voter."""
        sides = sorted([s.architecture, s.model, [_made(p) for p in s.images]] for s in self.sides)
        identity = [self.question, self.prompt, list(self.seeds), sides]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]

    def flipped(self) -> Pair:
        return Pair(self.question, self.run_id, self.prompt, self.seeds, self.sides[::-1])


_ROW_COLUMNS = ("run_id", "prompt", "seed", "architecture", "model", "image_path", "clip_score", "check_all_correct")


def _made(path: str) -> str:
    """What made an image, as its file name says it (records.image_name: a digest of its row key), else its path."""
    return digest_of(Path(path).name) or path


def pairs_in(df: pd.DataFrame, question: str) -> list[Pair]:
    """Every pair of the run log's text-to-image rows for `question`, left and right in the registry's order; a pair
    made again by another run (the same images) once."""
    if question not in QUESTIONS:
        raise ValueError(f"Question: choose among {', '.join(QUESTIONS)}")
    df = text_to_image(df)
    if df.empty or "image_path" not in df.columns:
        return []
    df = df[df["image_path"].notna() & df["run_id"].notna() & df["seed"].notna()]
    df = df[[c for c in _ROW_COLUMNS if c in df.columns]]
    keys = ["run_id", "prompt", "seed", "architecture"]
    df = df[~df.duplicated(keys, keep=False)]  # one row per architecture in a comparison, or none of them
    order = {a: i for i, a in enumerate(registry.names())}
    rows = {tuple(k): r for k, r in zip(df[keys].itertuples(index=False, name=None), _records(df))}
    pairs = []
    for (run_id, prompt), group in df.groupby(["run_id", "prompt"], sort=True):
        by_arch = group.groupby("architecture")["seed"].apply(lambda s: set(int(x) for x in s)).to_dict()
        for a, b in itertools.combinations(sorted(by_arch, key=lambda a: order.get(a, len(order))), 2):
            seeds = sorted(by_arch[a] & by_arch[b])
            sets = (
                [tuple(seeds[i : i + GRID_SEEDS]) for i in range(0, len(seeds) - GRID_SEEDS + 1, GRID_SEEDS)]
                if question == DIVERSITY
                else [(s,) for s in seeds]
            )
            for chosen in sets:
                sides = tuple(Side(arch, tuple(rows[(run_id, prompt, s, arch)] for s in chosen)) for arch in (a, b))
                pairs.append(Pair(question, run_id, prompt, chosen, sides))
    return list({p.key: p for p in pairs}.values())


def _records(df: pd.DataFrame) -> list[dict]:
    """Rows as plain dicts with None for missing cells."""
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in df.astype(object).to_dict("records")]


def _mean(values: Sequence[object]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


def judged(pair: Pair, spread: Callable[[list[str]], float] | None) -> tuple[tuple, tuple]:
    """What the judge CLIP and the lab's checker measure of each side for the pair's question, higher = preferred:
    ((judge left, judge right), (checker left, checker right)). For the caption, CLIP score and the fraction of the
    side's images the checker finds all correct; for diversity, the spread of a set's CLIP image embeddings. CLIP
    score measures how an image matches its caption, not how real it looks: photorealism has no judge."""
    none = (None, None)
    if pair.question == DIVERSITY:
        return tuple(spread(s.images) if spread is not None else None for s in pair.sides), none
    if pair.question != "caption":
        return none, none
    judge = tuple(_mean([r.get("clip_score") for r in s.rows]) for s in pair.sides)
    return judge, tuple(_mean([r.get("check_all_correct") for r in s.rows]) for s in pair.sides)


def spread_of(embeddings: np.ndarray) -> float:
    """How much a set of unit image embeddings (N, D) varies: 1 - the mean cosine between two different ones."""
    n = len(embeddings)
    if n < 2:
        raise ValueError("a set's spread needs two images or more")
    cosines = embeddings @ embeddings.T
    return float(1 - (cosines.sum() - np.trace(cosines)) / (n * (n - 1)))
