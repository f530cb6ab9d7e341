"""Small statistics for the method study: bootstrap intervals over problems and McNemar's paired test.

Pure functions over per-problem scores (a problem's score is 0/1 for one answer, or a fraction such
as a vote accuracy averaged over subsample draws). Problems, not samples, are the unit: the k samples
of one problem are not independent, so the bootstrap resamples whole problems.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    value: float
    low: float
    high: float
    n: int
    """Problems the estimate is over."""

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """``62.0 [52.0, 71.0]`` (percent by default)."""
        v, lo, hi = (round(scale * x, digits) for x in (self.value, self.low, self.high))
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list."""
    if not sorted_xs:
        raise ValueError("no values")
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def bootstrap_mean(
    values: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Mean of ``values`` with a percentile bootstrap interval (resampling the values with replacement)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("bootstrap over an empty list")
    rng = random.Random(seed)
    n = len(xs)
    means = sorted(sum(xs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    a = (1.0 - level) / 2
    return Interval(sum(xs) / n, _quantile(means, a), _quantile(means, 1 - a), n)


def bootstrap_diff(
    a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Mean of ``a - b`` over paired problems with a percentile bootstrap interval."""
    if len(a) != len(b):
        raise ValueError(f"paired lists differ in length ({len(a)} vs {len(b)})")
    return bootstrap_mean([x - y for x, y in zip(a, b, strict=True)], n_boot=n_boot, level=level, seed=seed)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired right/wrong outcomes."""

    only_a: int
    """Problems ``a`` got right and ``b`` wrong."""
    only_b: int
    """Problems ``b`` got right and ``a`` wrong."""
    p_value: float
    """Two-sided exact binomial p-value of ``only_a`` vs ``only_b`` (1.0 when both are 0)."""


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value for ``k`` successes in ``n`` fair coin flips (doubled smaller tail, capped at 1)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Exact McNemar test: is ``a`` right on more problems than ``b`` than chance would give?"""
    if len(a) != len(b):
        raise ValueError(f"paired lists differ in length ({len(a)} vs {len(b)})")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return McNemar(only_a, only_b, binom_two_sided(only_a, only_a + only_b))


def min_detectable_diff(n: int, p: float = 0.5, level: float = 0.95) -> float:
    """Half-width of a normal-approximation interval for an accuracy near ``p`` on ``n`` problems."""
    if n <= 0:
        return float("inf")
    z = {0.95: 1.959964, 0.9: 1.644854, 0.99: 2.575829}.get(level, 1.959964)
    return z * math.sqrt(p * (1 - p) / n)
