"""The uncertainty of `plphp eval`'s figures: bootstrap confidence intervals over items and the paired
comparison of a policy with `full` (exact McNemar test). Standard library and numpy only.

Items are what varies: every interval resamples items (with replacement), and a paired figure
resamples the same items for both policies. Resampling is seeded, so a rerun gives the same
intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

#: Resamples, level and seed of every bootstrap interval `plphp eval` reports.
RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """`[resamples, n]` item indices drawn with replacement: resample `r` is row `r` (drawn in order,
    one row after another, from `numpy.random.default_rng(seed)`)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(means: np.ndarray, level: float) -> list[float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return [float(low), float(high)]


def bootstrap_ci(
    values: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
) -> list[float] | None:
    """Percentile bootstrap interval `[low, high]` of the mean of `values` (None when there are none).

    Each resample draws `len(values)` items with replacement (`resample_indices`) and takes their
    mean; the interval holds the central `level` of those means (numpy's default, linear,
    quantiles).
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    return _interval(data[resample_indices(data.size, resamples, seed)].mean(axis=1), level)


def paired_bootstrap_ci(
    values: Sequence[float],
    reference: Sequence[float],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> list[float] | None:
    """Percentile bootstrap interval of `mean(values) - mean(reference)` over paired items (the same
    resampled items for both; position `i` of both sequences is one item)."""
    if len(values) != len(reference):
        raise ValueError(f"paired values of different lengths: {len(values)} and {len(reference)}")
    difference = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    return bootstrap_ci(difference, resamples, level, seed)


def mcnemar_exact(only_reference: int, only_other: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    Args:
        only_reference: items the reference got right and the other policy wrong (`b`).
        only_other: items the other policy got right and the reference wrong (`c`).

    Under the null hypothesis (neither policy is more often right) each of the `n = b + c`
    discordant items falls either way with probability 1/2, so `p = min(1, 2 · P(X ≤ min(b, c)))`
    with `X ~ Binomial(n, 1/2)`; 1.0 when there is no discordant pair. Computed exactly
    (fractions), then rounded to a float.
    """
    if only_reference < 0 or only_other < 0:
        raise ValueError("counts of discordant pairs cannot be negative")
    n = only_reference + only_other
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_reference, only_other) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))
