"""The Shapes checker: reads an image of the Shapes world back into objects and judges a caption.

It measures what a generated image shows, so that a model's output can be scored attribute by
attribute (colour, shape, size, count, relation, position) without a learned judge.

How it reads an image (`read_scene`):
  1. Background: the per-channel median of all pixels (objects cover well under half the image).
  2. Segmentation: each pixel's distance from the background in a lightly smoothed copy (sigma
     0.8 px averages noise away); 4-connected components of the pixels beyond a weak threshold,
     kept only if they hold a few pixels beyond a strong threshold and a minimum area. Palette
     colours lie >= 1.0 from black and the thresholds are 0.2 and 0.45, so blurred edges stay
     attached while noise makes no objects (none from Gaussian noise of std 0.25, nor from
     uniform noise, in the tests).
  3. Colour: the per-channel median of the component's core (its brightest pixels), background
     subtracted and scaled to a maximum channel of 1 (every palette colour has a channel at 1,
     so this undoes darkening and blur), then the nearest palette colour.
  4. Shape, by analysis by synthesis: the soft mask is each pixel's projection onto the object's
     colour (linear, so noise averages out): about 1 inside, 0 outside. Its sum is the area, the
     weighted mean of its positive part the centroid. For each shape, the world's own renderer draws that shape with
     the same centroid and the area the mask implies, blurred by each of a few sigmas (the
     image's blur is unknown), its amplitude fitted by least squares; the shape whose best
     drawing differs least from the mask wins. The fitted diameter gives the size word, the
     fitted box centre the position and the relation.
`check(image, caption)` parses the caption, matches its objects to the detected ones (the
assignment that gets the most attributes right; among equals, the one under which the relation
holds) and returns a verdict per attribute.

How well it reads clean, blurred, colour-cast, noised and darkened renders: lab/README.md, "The checker".

What it cannot see:
  - overlapping or touching objects: they merge into one component, read as one object;
  - shapes outside the vocabulary: they are read as the nearest of the five shapes, with a
    low confidence; colours between palette entries likewise snap to the nearest one;
  - black, grey or dark-brown objects (no palette colour is dark) and textured backgrounds;
  - objects smaller than 0.8% of the image, or covering half of it (the background estimate);
  - rotation: shapes are axis aligned, so a square turned 45 degrees reads as a diamond.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass

import numpy as np

from lab.captions import parse_caption
from lab.world import (
    BACKGROUND,
    COLOURS,
    SHAPES,
    SIZE_THRESHOLD,
    ObjectSpec,
    region_of,
    relation_holds,
    shape_coverage,
)


@dataclass(frozen=True)
class CheckerConfig:
    """Thresholds of the checker, in RGB units of [0, 1] unless said otherwise."""

    smooth_sigma: float = 0.8  # px; Gaussian smoothing before thresholding, to average noise away
    weak_threshold: float = 0.2  # distance from the background at which a pixel may belong to an object
    strong_threshold: float = 0.45  # distance that only a real object reaches; noise stays far below
    min_strong_pixels: int = 4  # an object holds at least this many strong pixels
    min_area_fraction: float = 0.008  # ... and covers at least this fraction of the image (8 px at 32 px)
    core_fraction: float = 0.7  # core = pixels beyond this fraction of the component's 90th-percentile distance
    blur_levels: tuple[float, ...] = (
        0.5,
        1.0,
    )  # px; blurs the image may carry: drawings get each, the best fit counts
    fit_margin: int = 5  # px around an object's pixels that its fit looks at


@dataclass(frozen=True)
class DetectedObject:
    """One object read from an image."""

    colour: str  # nearest palette colour
    shape: str  # best-fitting shape
    size: str  # "small" or "large", from the fitted diameter
    centre: tuple[float, float]  # (x, y) centre of the shape's box, fractions of the image side
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1) pixels, half-maximum mask, end exclusive
    area: float  # pixels, the soft mask's sum
    confidence: float  # in [0, 1]: the smaller of the colour and shape margins (0: a tie, 1: no rival)


@dataclass(frozen=True)
class ObjectVerdict:
    """How one object of the caption was rendered."""

    colour_correct: bool
    shape_correct: bool
    size_correct: bool | None  # None when the caption does not name a size


@dataclass(frozen=True)
class CheckResult:
    """Per-attribute verdicts of one image against one caption."""

    caption: str
    n_expected: int  # objects the caption names
    n_detected: int  # objects read from the image
    count_correct: bool
    objects: tuple[ObjectVerdict, ...]  # one per caption object, in caption order
    matched: tuple[DetectedObject | None, ...]  # the detection judged as each caption object (None: none left)
    relation_correct: bool | None  # None for one-object captions
    position_correct: bool | None  # None unless a one-object caption names a position
    all_correct: bool  # every verdict above that applies is True
    detected: tuple[DetectedObject, ...]

    def as_dict(self) -> dict[str, str | int | float | bool | None]:
        """A flat pandas row with the same columns for every caption. Verdicts that may not apply
        are floats, 1.0 / 0.0 / NaN, so that a column's mean is the accuracy over the captions
        that ask for it. object<k>_colour_read and object<k>_shape_read say what was drawn in the
        caption object's place (None where nothing was), so a table shows what a miss drew instead."""
        row = {
            "caption": self.caption,
            "n_expected": self.n_expected,
            "n_detected": self.n_detected,
            "count_correct": self.count_correct,
            "all_correct": self.all_correct,
        }
        for k in range(2):
            verdict = asdict(self.objects[k]) if k < len(self.objects) else {}
            for name in ("colour_correct", "shape_correct", "size_correct"):
                row[f"object{k + 1}_{name}"] = _as_float(verdict.get(name))
            found = self.matched[k] if k < len(self.matched) else None
            row[f"object{k + 1}_colour_read"] = None if found is None else found.colour
            row[f"object{k + 1}_shape_read"] = None if found is None else found.shape
        row["relation_correct"] = _as_float(self.relation_correct)
        row["position_correct"] = _as_float(self.position_correct)
        row["min_confidence"] = min((d.confidence for d in self.detected), default=float("nan"))
        return row


def _as_float(verdict: bool | None) -> float:
    return float("nan") if verdict is None else float(verdict)


# ----------------------------------------------------------------------------- image helpers


@functools.cache
def _taps(sigma: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


@functools.cache
def _reflected(n: int, radius: int) -> np.ndarray:
    """Indices of a length-n axis padded by `radius` on each side, reflected about the edge pixels."""
    return np.pad(np.arange(n), radius, mode="reflect")


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the first two axes, (H, W) or (H, W, C) float32, edges reflected.
    Sums of shifted copies rather than matmuls: OpenBLAS's threads make small matmuls 100x
    slower on a busy 2-core machine."""
    image = image.astype(np.float32)
    if sigma <= 0:
        return image
    taps = _taps(float(sigma))
    height, width = image.shape[:2]
    padded = image[_reflected(height, len(taps) // 2)]
    image = sum(w * padded[k : k + height] for k, w in enumerate(taps))
    padded = image[:, _reflected(width, len(taps) // 2)]
    return sum(w * padded[:, k : k + width] for k, w in enumerate(taps))


def _neighbour_min(labels: np.ndarray) -> np.ndarray:
    """Each pixel's label or that of a 4-neighbour, whichever is smallest."""
    out = labels.copy()
    np.minimum(out[1:], labels[:-1], out=out[1:])
    np.minimum(out[:-1], labels[1:], out=out[:-1])
    np.minimum(out[:, 1:], labels[:, :-1], out=out[:, 1:])
    np.minimum(out[:, :-1], labels[:, 1:], out=out[:, :-1])
    return out


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected components of a boolean mask, as boolean masks: each pixel takes the
    smallest index among its neighbours until nothing changes (numpy only, no scipy)."""
    none = mask.size
    labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), none)
    while True:
        smallest = np.where(mask, _neighbour_min(labels), none)
        if np.array_equal(smallest, labels):
            return [labels == k for k in np.unique(labels[mask])]
        labels = smallest


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask grown by `steps` 4-neighbour steps."""
    for _ in range(steps):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def _to_float_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a numpy array (H, W, 3), got {getattr(image, 'shape', type(image).__name__)}")
    if min(image.shape[:2]) < 16:
        raise ValueError(f"image must be at least 16 x 16 pixels, got {image.shape[:2]}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if np.issubdtype(image.dtype, np.floating) and np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1:
        return image.astype(np.float32)
    raise ValueError(
        f"image must be uint8 or floats in [0, 1], got {image.dtype} with range [{image.min()}, {image.max()}]"
    )


# ----------------------------------------------------------------------------- reading objects

MIN_AMPLITUDE = 0.25  # floor of a shape drawing's fitted amplitude in fit_shape (area / amplitude sizes the shape)
_PALETTE_NAMES = tuple(COLOURS)
_PALETTE = np.asarray([COLOURS[c] for c in _PALETTE_NAMES]) - np.asarray(BACKGROUND)


def classify_colour(colour: np.ndarray) -> tuple[str, float]:
    """Nearest palette colour to an object's colour (background subtracted) after scaling both to a
    maximum channel of 1, and a margin in [0, 1]: 1 - nearest distance / second nearest."""
    scaled = np.clip(colour, 0, None) / max(float(colour.max()), 1e-6)
    palette = _PALETTE / _PALETTE.max(axis=1, keepdims=True)
    distance = np.linalg.norm(palette - scaled, axis=1)
    first, second = np.argsort(distance)[:2]
    return _PALETTE_NAMES[first], float(1 - distance[first] / max(distance[second], 1e-6))


@functools.cache
def _shape_stats(shape: str) -> tuple[float, float, float]:
    """(area / diameter^2, centroid offset x / diameter, y / diameter) of a shape, measured on a
    large drawing: what turns a measured area and centroid into a diameter and box centre."""
    cover = shape_coverage(shape, (100.0, 100.0), 160.0, 200, 200).astype(np.float64)
    ys, xs = np.mgrid[:200, :200] + 0.5
    area = cover.sum()
    return area / 160.0**2, ((cover * xs).sum() / area - 100) / 160, ((cover * ys).sum() / area - 100) / 160


def _draw_shapes(
    area: float, centroid: np.ndarray, amplitudes: np.ndarray, shape_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every shape drawn with the given centroid and the area a mask of that amplitude implies:
    coverage (h, w, n_shapes), box centres (n_shapes, 2) px, diameters (n_shapes,) px."""
    stats = np.asarray([_shape_stats(shape) for shape in SHAPES])  # (n_shapes, 3)
    diameters = np.sqrt(area / (amplitudes * stats[:, 0]))
    centres = centroid - stats[:, 1:] * diameters[:, None]
    coverage = [shape_coverage(shape, tuple(c), d, *shape_hw) for shape, c, d in zip(SHAPES, centres, diameters)]
    return np.stack(coverage, axis=-1), centres, diameters


def _least_squares_amplitudes(drawings: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per drawing (h, w, n), the factor that best scales it onto the mask (h, w)."""
    return (drawings * mask[..., None]).sum(axis=(0, 1)) / np.maximum((drawings * drawings).sum(axis=(0, 1)), 1e-6)


def fit_shape(mask: np.ndarray, blur_levels: tuple[float, ...]) -> tuple[str, tuple[float, float], float, float]:
    """Best shape for a soft mask (H, W): (shape, box centre px, diameter px, margin in [0, 1]).

    Each shape is drawn at the mask's centroid with the area the mask implies, blurred by every
    level (the image's blur is unknown) and keeps its best fit. The area depends on the mask's
    amplitude (an object darker or brighter than its colour estimate), so the amplitude is fitted
    by least squares and the shape redrawn with the area that amplitude implies."""
    ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]] + 0.5
    area = float(mask.sum())
    # The centroid of the positive part: a wide halo of slightly negative noise around a small object
    # would pull the signed mask's centroid off the object, even out of the window.
    positive = np.clip(mask, 0.0, None)
    centroid = np.asarray([(positive * xs).sum(), (positive * ys).sum()]) / positive.sum()
    first, _, _ = _draw_shapes(area, centroid, np.ones(len(SHAPES)), mask.shape)
    fits = []  # (errors (n_shapes,), centres, diameters) per blur level
    for blur in blur_levels:
        # floored: a drawing that barely meets the mask would otherwise get an amplitude near 0 and an endless diameter
        amplitudes = np.maximum(_least_squares_amplitudes(gaussian_blur(first, blur), mask), MIN_AMPLITUDE)
        coverage, centres, diameters = _draw_shapes(area, centroid, amplitudes, mask.shape)
        drawings = gaussian_blur(coverage, blur)
        residual = _least_squares_amplitudes(drawings, mask) * drawings - mask[..., None]
        fits.append(((residual**2).sum(axis=(0, 1)) / area, centres, diameters))
    errors = np.stack([f[0] for f in fits])  # (n_levels, n_shapes)
    level = errors.argmin(axis=0)  # each shape's best blur level
    best_errors = errors.min(axis=0)
    first_choice, runner_up = np.argsort(best_errors)[:2]
    _, centres, diameters = fits[level[first_choice]]
    margin = 1 - best_errors[first_choice] / max(best_errors[runner_up], 1e-12)
    return (
        SHAPES[first_choice],
        tuple(map(float, centres[first_choice])),
        float(diameters[first_choice]),
        float(margin),
    )


def _read_object(
    image: np.ndarray, background: np.ndarray, distance: np.ndarray, component: np.ndarray, config: CheckerConfig
) -> DetectedObject | None:
    """The object a component shows; None when it has no colour to measure a mask by."""
    height, width = distance.shape
    core = component & (distance >= config.core_fraction * np.percentile(distance[component], 90))
    colour = np.median(image[core], axis=0) - background  # (3,)
    if float(colour @ colour) < config.weak_threshold**2:
        return None
    colour_name, colour_margin = classify_colour(colour)
    # soft mask: projection onto the object's colour, 1 inside, 0 on the background, noise mean 0
    region = _dilate(component, 3)
    rows, cols = np.nonzero(region)
    y0, x0 = max(rows.min() - config.fit_margin, 0), max(cols.min() - config.fit_margin, 0)
    y1, x1 = min(rows.max() + config.fit_margin + 1, height), min(cols.max() + config.fit_margin + 1, width)
    window = (slice(y0, y1), slice(x0, x1))
    along_colour = ((image[window] - background) * colour).sum(axis=-1) / float(colour @ colour)  # (h, w)
    mask = np.where(region[window], along_colour, 0.0)
    if mask.sum() < 1.0:  # less than a pixel's worth of the colour: nothing to fit
        return None
    shape, centre, diameter, shape_margin = fit_shape(mask, config.blur_levels)
    centre = (centre[0] + x0, centre[1] + y0)
    half = np.argwhere(mask >= 0.5) + (y0, x0)
    (y0, x0), (y1, x1) = half.min(axis=0), half.max(axis=0) + 1
    return DetectedObject(
        colour=colour_name,
        shape=shape,
        size="large" if diameter / width > SIZE_THRESHOLD else "small",
        centre=(float(centre[0]) / width, float(centre[1]) / height),
        bbox=(int(x0), int(y0), int(x1), int(y1)),
        area=float(mask.sum()),
        confidence=min(colour_margin, shape_margin),
    )


def read_scene(image: np.ndarray, config: CheckerConfig = CheckerConfig()) -> list[DetectedObject]:
    """The objects in an image of the Shapes world, (H, W, 3) uint8 (or floats in [0, 1]), left to right."""
    image = _to_float_image(image)
    background = np.median(image.reshape(-1, 3), axis=0)
    distance = np.linalg.norm(gaussian_blur(image, config.smooth_sigma) - background, axis=-1)  # (H, W)
    min_area = config.min_area_fraction * distance.size
    objects = []
    for component in connected_components(distance > config.weak_threshold):
        strong = int((distance[component] > config.strong_threshold).sum())
        if component.sum() >= min_area and strong >= config.min_strong_pixels:
            found = _read_object(image, background, distance, component, config)
            objects += [found] if found is not None else []
    return sorted(objects, key=lambda o: o.centre)


# ----------------------------------------------------------------------------- judging a caption


def _verdict(spec: ObjectSpec, found: DetectedObject | None) -> ObjectVerdict:
    if found is None:
        return ObjectVerdict(False, False, None if spec.size is None else False)
    return ObjectVerdict(
        found.colour == spec.colour, found.shape == spec.shape, None if spec.size is None else found.size == spec.size
    )


def _score(verdicts: list[ObjectVerdict]) -> int:
    return sum(v.colour_correct + v.shape_correct + bool(v.size_correct) for v in verdicts)


def check(image: np.ndarray, caption: str, config: CheckerConfig = CheckerConfig()) -> CheckResult:
    """Judge whether `image` shows `caption`, attribute by attribute. Raises ValueError for a
    caption outside the Shapes grammar or vocabulary, and for an image that is not (H, W, 3)."""
    spec = parse_caption(caption)
    detected = read_scene(image, config)
    n = len(spec.objects)
    # every way of giving the caption's objects distinct detections (None: nothing left to give)
    padded = list(detected) + [None] * n
    best = None
    for chosen in itertools.permutations(range(len(padded)), n):
        found = [padded[i] for i in chosen]
        verdicts = [_verdict(s, f) for s, f in zip(spec.objects, found)]
        relation = None
        if spec.relation is not None:
            relation = None not in found and relation_holds(spec.relation, found[0].centre, found[1].centre)
        key = (_score(verdicts), bool(relation), tuple(-i for i in chosen))  # ties: the relation, then the first
        if best is None or key > best[0]:
            best = (key, verdicts, relation, found)
    _, verdicts, relation, found = best
    position = None
    if spec.position is not None:
        position = found[0] is not None and region_of(found[0].centre) == spec.position
    count_correct = len(detected) == n
    applicable = [count_correct, relation, position] + [x for v in verdicts for x in asdict(v).values()]
    return CheckResult(
        caption,
        n,
        len(detected),
        count_correct,
        tuple(verdicts),
        tuple(found),
        relation,
        position,
        all(x for x in applicable if x is not None),
        tuple(detected),
    )
