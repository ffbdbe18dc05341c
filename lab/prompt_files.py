"""The Shapes lab's prompt files, written from the world (`python -m lab.prompt_files --write-prompts`).

Deterministic, in `lab/prompts/`:
  train.txt            2000 distinct training captions (no held-out combination)
  validation.txt       200 distinct training-distribution captions that are not in train.txt
                       (a trainer that samples scenes instead of reading train.txt meets them)
  heldout_single.txt   200 one-object captions of held-out pairs; the grammar allows only
                       6 pairs x 3 size wordings x 10 position wordings = 180 distinct ones,
                       so lines 181-200 repeat lines 1-20
  seen_single.txt      heldout_single.txt line by line with each colour swapped for one its
                       shape trains with (`seen_twin`): the control that tells a model's cost of
                       an unseen pairing from its cost of drawing the shape at all
  heldout_two.txt      200 distinct two-object captions, alternating a held-out pair (with a
                       training relation triple) and a held-out triple (with training pairs)
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np

from lab.captions import parse_caption
from lab.world import COLOURS, HELDOUT_PAIRS, POSITIONS, SIZES, ObjectSpec, SceneSpec, check_choice, sample_scene

PROMPTS_DIR = Path(__file__).parent / "prompts"
PROMPT_COUNTS = {"train": 2000, "validation": 200, "heldout_single": 200, "seen_single": 200, "heldout_two": 200}


def _distinct_captions(
    rng: np.random.Generator, count: int, split: str, n_objects: int | None, exclude: frozenset[str] = frozenset()
) -> list[str]:
    found: dict[str, None] = {}  # a dict keeps first-seen order, so the files are deterministic
    while len(found) < count:
        caption = sample_scene(rng, split, n_objects).caption()
        if caption not in exclude:
            found[caption] = None
    return list(found)


def seen_twin(spec: SceneSpec, index: int) -> SceneSpec:
    """A one-object caption of a held-out pair with its colour swapped for one its shape trains with
    (the index-th such colour, cycling): same shape, size and position words, a pair seen in training."""
    if len(spec.objects) != 1:
        raise ValueError(f"a seen twin needs a one-object caption, got {len(spec.objects)} objects")
    obj = spec.objects[0]
    colours = [c for c in COLOURS if c != obj.colour and (c, obj.shape) not in HELDOUT_PAIRS]
    return replace(spec, objects=(replace(obj, colour=colours[index % len(colours)]),))


def prompt_lists() -> dict[str, list[str]]:
    """The contents of the prompt files, file stem -> lines (see the module docstring)."""
    rng = np.random.default_rng(2024)
    train = _distinct_captions(rng, PROMPT_COUNTS["train"], "train", None)
    validation = _distinct_captions(rng, PROMPT_COUNTS["validation"], "train", None, frozenset(train))
    single = [
        SceneSpec((ObjectSpec(colour, shape, size),), None, position).caption()
        for (colour, shape), size, position in itertools.product(
            sorted(HELDOUT_PAIRS), (None, *SIZES), (None, *POSITIONS)
        )
    ]
    single = [single[i] for i in rng.permutation(len(single))]
    single = list(itertools.islice(itertools.cycle(single), PROMPT_COUNTS["heldout_single"]))
    half = PROMPT_COUNTS["heldout_two"] // 2
    pairs = _distinct_captions(rng, half, "heldout_pair", 2)
    triples = _distinct_captions(rng, half, "heldout_relation", 2)
    two = [caption for both in zip(pairs, triples) for caption in both]
    seen = [seen_twin(parse_caption(caption), i).caption() for i, caption in enumerate(single)]
    return {
        "train": train,
        "validation": validation,
        "heldout_single": single,
        "seen_single": seen,
        "heldout_two": two,
    }


def write_prompts(directory: Path = PROMPTS_DIR) -> dict[str, Path]:
    """Write every prompt list to `directory/<stem>.txt`, one caption a line."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, lines in prompt_lists().items():
        paths[stem] = directory / f"{stem}.txt"
        paths[stem].write_text("\n".join(lines) + "\n")
    return paths


def read_prompts(stem: str, directory: Path = PROMPTS_DIR) -> list[str]:
    """The captions of a prompt file, e.g. read_prompts("heldout_two")."""
    check_choice("prompt file", stem, PROMPT_COUNTS)
    return (directory / f"{stem}.txt").read_text().splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description="The Shapes world.")
    parser.add_argument("--write-prompts", action="store_true", help="(re)write lab/prompts/*.txt")
    parser.add_argument("--prompts-dir", type=Path, default=PROMPTS_DIR)
    args = parser.parse_args()
    if not args.write_prompts:
        parser.error("nothing to do: pass --write-prompts")
    for stem, path in write_prompts(args.prompts_dir).items():
        print(f"{path}: {len(read_prompts(stem, args.prompts_dir))} prompts")


if __name__ == "__main__":
    main()
