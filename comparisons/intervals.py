"""95% intervals, as every table and report of ours gives them: Wilson's score interval for a proportion (an
accuracy, a win rate of votes), where a bootstrap over few items would be too narrow at 0 or 1, and the percentile
bootstrap of means (Efron, 1979) for paired differences (comparisons.summary)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOT_CHUNK = 4_000_000  # resampled values held in memory at once
Z_95 = 1.959963984540054  # standard normal quantile at 0.975


@dataclass(frozen=True)
class Proportion:
    """k successes out of n, with a 95% Wilson score interval."""

    k: int
    n: int
    value: float
    low: float
    high: float


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (Wilson 1927); 95% for the default z."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at k = 0 (k = n) the bound is 0 (1) exactly, which rounding leaves a hair off
    return min(max(0.0, centre - half), p), max(min(1.0, centre + half), p)


def proportion(k: int, n: int) -> Proportion:
    """k/n with its Wilson interval: accuracies, where a bootstrap over few pairs would be too narrow at 0 or 1."""
    return Proportion(k, n, k / n, *wilson_interval(k, n))


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_boot` resamples of the rows of `values` (n, k) with replacement: (n_boot, k)."""
    n = len(values)
    chunk = max(1, BOOT_CHUNK // (n * values.shape[1]))
    means = [
        values[rng.integers(0, n, size=(min(chunk, n_boot - i), n))].mean(axis=1) for i in range(0, n_boot, chunk)
    ]
    return np.concatenate(means)
