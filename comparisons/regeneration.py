"""Made again: what regenerating a row promises, and the check that it keeps the promise.

Bit-equal images need the same arithmetic (diffusers' "Reproducible pipelines", PyTorch's reproducibility notes):
the same weights, the same batch (a matrix product's blocking, and so its rounding, follows the batch's size), device,
dtype, intra-op threads, CPU kernel path and library versions. So the promise has two cases (docs/comparisons.md,
"Same image again"):

- exact: a row made again the way it was made gives identical pixels. Every row and its PNG record that way
  (comparisons.records.MADE_HOW); `regenerate_batch` makes a batch again from its PNGs in one call with the threads
  it had, and is exact when nothing else differs from when it was made.
- close: made again any other way (alone from a row made in a batch, with other threads, on another CPU's kernels,
  with the CPU speed-ups on or off) it stays within CLOSE_BOUND of its PNG, a bound measured across every kernel
  path one machine can force (comparisons.bench.regeneration).

Each result says which case applies and why, and how far the image is: its largest difference in uint8 levels, the
share of pixel values that differ, and the PSNR.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from PIL import Image

from comparisons.records import MADE_HOW, made_how_from_png, settings_from_png, weights_hash
from comparisons.sources import call_image_in, image_in_from_png, read_source
from pipelines.base import Pipeline
from pipelines.devices import cpu_kernels, device_name

EXACT, CLOSE = "exact", "close"


@dataclass(frozen=True)
class Difference:
    """How far one uint8 image is from another of its size."""

    max_levels: int  # the largest difference of a pixel value, in uint8 levels
    fraction: float  # the share of pixel values that differ at all
    psnr: float  # peak signal-to-noise ratio in dB over 255 levels; inf when identical

    def __str__(self) -> str:
        if self.max_levels == 0:
            return "identical pixels"
        return f"{self.max_levels} level(s) at most, in {self.fraction:.3%} of pixel values, PSNR {self.psnr:.1f} dB"


def difference(a: np.ndarray, b: np.ndarray) -> Difference:
    """The Difference between two uint8 images of one shape."""
    if a.shape != b.shape:
        raise ValueError(f"images of different sizes cannot be compared: {a.shape} and {b.shape}")
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float((diff.astype(np.float64) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
    return Difference(int(diff.max()), float((diff > 0).mean()), psnr)


@dataclass(frozen=True)
class Bound:
    """The most an image made again may differ from its PNG and still be the same image, close."""

    max_levels: int
    min_psnr: float  # dB

    def admits(self, d: Difference) -> bool:
        return d.max_levels <= self.max_levels and d.psnr >= self.min_psnr


# Measured: benchmarks/regeneration_2026-12-07.json (`python -m comparisons.bench --regeneration`, AMD EPYC with
# AVX-512): 9 kernel paths (ATen avx512/avx2/default, oneDNN capped at AVX2/SSE41, MKL at AVX2/SSE4_2, each alone,
# then all at AVX2 and all at SSE) x every way a row is made or made again (batch of 4 or alone, 1 or 2 threads,
# eager or the lab's speed-ups), any image against any other of its prompt and seed. Worst: the tests' tiny calls
# (2 steps) 5 levels, PSNR 73.7 dB; the lab at default steps 1 level, 83.0 dB. The bound doubles the amplitude
# (-6 dB) for the CPUs this one cannot stand in for: MKL's capped paths computed exactly as its own here, so an
# Intel CPU's MKL kernels are unmeasured. (The tiny preset's untrained unCLIP at default steps is chaotic, 134
# levels apart: its images are noise, and no promise is made for them; docs/comparisons.md.)
CLOSE_BOUND = Bound(max_levels=10, min_psnr=67.7)


@dataclass(frozen=True)
class Regenerated:
    """One row's image made again, beside its PNG."""

    path: Path  # the row's PNG
    image: Image.Image  # made again
    case: str  # EXACT: made again the way it was made; CLOSE: otherwise
    why: tuple[str, ...]  # what differed from when it was made (empty when exact)
    difference: Difference  # from the PNG's pixels

    @property
    def holds(self) -> bool:
        """Whether the promise of its case is kept: identical pixels, or within CLOSE_BOUND."""
        return self.difference.max_levels == 0 if self.case == EXACT else CLOSE_BOUND.admits(self.difference)

    def __str__(self) -> str:
        verdict = "as promised" if self.holds else "NOT as promised"
        because = f" ({'; '.join(self.why)})" if self.why else ""
        return f"{self.case}{because}: {self.difference}, {verdict}"


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` (None: as they are) for the calling thread, restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n or previous)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _now(pipe: Pipeline, image_in: bool) -> dict:
    """What MADE_HOW would record of a call of `pipe` here and now, besides the batch and threads."""
    return {
        "device": str(pipe.device),
        "device_name": device_name(pipe.device),
        "dtype": str(pipe.dtype).removeprefix("torch."),
        "cpu_kernels": cpu_kernels(),
        "cpu_speed": pipe.cpu_speed.label,
        "torch_version": torch.__version__,
        "diffusers_version": diffusers.__version__,
        "transformers_version": transformers.__version__,
        "model_hash": weights_hash(pipe, with_borrowed=image_in),
    }


def what_differs(made: dict, pipe: Pipeline, batch_size: int, image_in: bool = False) -> list[str]:
    """In words, each way a call of `batch_size` images by `pipe` here differs from how `made` (made_how_from_png's,
    with the PNG's model hash) was made; empty when it is made again the way it was made."""
    why = []
    if made.get("batch_size", 1) != batch_size:
        alone = "alone" if batch_size == 1 else f"in a batch of {batch_size}"
        why.append(f"made in a batch of {made['batch_size']}, made again {alone}")
    for column, now in _now(pipe, image_in).items():
        label = MADE_HOW.get(column, column.replace("_", " "))
        if column not in made:
            why.append(f"its PNG does not record its {label.lower()}")
        elif str(made[column]) != str(now):
            why.append(f"{label.lower()} {made[column]}, now {now}")
    if "threads" not in made:
        why.append("its PNG does not record its threads")
    return why


def _recipe(path: Path) -> dict:
    """Everything the PNG at `path` says of how to make it: its settings and how it was made."""
    architecture, prompt, seed, settings = settings_from_png(path)
    return {
        "architecture": architecture,
        "prompt": prompt,
        "seed": seed,
        "settings": settings,
        "image_in": image_in_from_png(path),
        "made": made_how_from_png(path),
    }


def remake(pipe: Pipeline, path: str | Path, seed: int | None = None) -> Image.Image:
    """The image of a PNG this tool wrote, made again alone from its infotext (and, image in, its kept source), with
    the threads it was made with; with `seed`, its settings from another seed."""
    r = _recipe(Path(path))
    seed = r["seed"] if seed is None else seed
    with _threads(r["made"].get("threads")):
        return _make(pipe, [r], [seed])[0]


def _make(pipe: Pipeline, recipes: list[dict], seeds: list[int]) -> list[Image.Image]:
    """One call of `pipe` for recipes of one architecture and settings (a batch), as they were made."""
    first = recipes[0]
    image_in = first["image_in"]
    if image_in is None:
        kwargs = first["settings"].pipeline_kwargs(first["architecture"])
        return pipe([r["prompt"] for r in recipes], seed=seeds, **kwargs).pil_images()
    source = read_source(image_in.source_image)
    if source.sha256 != image_in.source_hash:
        raise ValueError(f"{image_in.source_image} does not hold the source its name says (hash {source.sha256})")
    output = call_image_in(
        pipe, first["architecture"], source.image, first["prompt"], seeds, first["settings"], image_in.strength
    )
    return output.pil_images()


def regenerate_batch(pipe: Pipeline, paths: Sequence[str | Path]) -> list[Regenerated]:
    """The PNGs of one call (`paths`, in their batch order) made again in one call with the threads it had: exact when
    nothing else differs from when they were made, close otherwise. A single PNG of a larger batch is made alone."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no PNG to make again")
    recipes = [_recipe(p) for p in paths]
    first = recipes[0]
    same = ("architecture", "settings", "image_in")
    if any(r[k] != first[k] for r in recipes for k in same) or len({r["made"].get("batch_id") for r in recipes}) > 1:
        raise ValueError("these PNGs are not of one batch: their architecture, settings or batch id differ")
    positions = [r["made"].get("batch_pos", 0) for r in recipes]
    if len(paths) > 1 and positions != list(range(first["made"].get("batch_size", len(paths)))):
        raise ValueError(f"give a batch's PNGs in their batch order, each once; their positions are {positions}")
    if first["image_in"] is not None and len(paths) > 1:
        raise ValueError("an image taken in is made one at a time: give its PNG alone")
    with _threads(first["made"].get("threads")):
        images = _make(pipe, recipes, [r["seed"] for r in recipes])
    why = tuple(what_differs(first["made"], pipe, len(paths), first["image_in"] is not None))
    case = CLOSE if why else EXACT
    return [
        Regenerated(path, image, case, why, difference(np.asarray(image), _pixels(path)))
        for path, image in zip(paths, images)
    ]


def regenerate(pipe: Pipeline, path: str | Path) -> Regenerated:
    """The image of a PNG this tool wrote made again alone (exact if it was made alone, here, the same way)."""
    return regenerate_batch(pipe, [path])[0]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
