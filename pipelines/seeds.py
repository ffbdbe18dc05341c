"""The per-image generators a call's seeds become: image i of a call is made from its own seed, so it can be made
again alone (diffusers takes one generator for the batch, or a list of one per image; so do our pipelines)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch

from pipelines.checks import MAX_SEED, check_seed

# What the stages take for their random draws: one generator for the batch, or one per image.
Generators = torch.Generator | list[torch.Generator]


def make_generators(
    n: int, seed: int | Sequence[int] | None, generator: Generators | None
) -> tuple[list[torch.Generator], list[int]]:
    """One CPU generator per image, so image i can be regenerated alone from seeds[i].

    `seed` is the first image's seed (image i gets seed + i) or one seed per image. With neither
    a seed nor a generator, a fresh seed is drawn and reported in the output.
    """
    if generator is not None:
        if seed is not None:
            raise ValueError("give either `seed` or `generator`, not both")
        gens = list(generator) if isinstance(generator, (list, tuple)) else None
        if gens is None:
            # A single generator serves the whole batch, as in diffusers; its seed is each image's seed
            # only in the sense that the batch is reproduced from it.
            return [generator], [generator.initial_seed()] * n
        if len(gens) != n:
            raise ValueError(f"got {len(gens)} generators for {n} images: give one per image")
        return gens, [g.initial_seed() for g in gens]
    if seed is None:
        seed = secrets.randbelow(MAX_SEED - n)
    if isinstance(seed, (list, tuple)):
        seeds = [check_seed(s) for s in seed]
    else:
        first = check_seed(seed)
        seeds = [check_seed(first + i, f"seed of image {i} (seed + {i})") for i in range(n)]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} images: give one seed, or one per image")
    return [torch.Generator("cpu").manual_seed(s) for s in seeds], seeds


def generator_arg(gens: list[torch.Generator]) -> Generators:
    """diffusers' randn_tensor takes a generator or a list of one per batch item."""
    return gens[0] if len(gens) == 1 else gens
