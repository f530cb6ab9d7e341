"""evals/stats.py: bootstrap intervals and McNemar's exact test, checked against hand-computed tables."""

from __future__ import annotations

import math

import pytest
from mathagent.evals.stats import (
    binom_two_sided,
    bootstrap_diff,
    bootstrap_mean,
    mcnemar,
    min_detectable_diff,
)


@pytest.mark.parametrize(
    "k,n,p",
    [
        (0, 0, 1.0),
        (0, 5, 2 / 32),  # 2 * 0.5^5
        (5, 5, 2 / 32),
        (1, 10, 2 * 11 / 1024),  # 2 * (C(10,0)+C(10,1)) / 2^10
        (3, 6, 1.0),  # the middle: capped at 1
        (2, 12, 2 * (1 + 12 + 66) / 4096),
    ],
)
def test_binomial_two_sided_table(k, n, p):
    assert binom_two_sided(k, n) == pytest.approx(p)


def test_mcnemar_counts_only_discordant_pairs():
    a = [True, True, True, False, True, False, True, True]
    b = [True, False, False, False, False, False, True, False]
    m = mcnemar(a, b)
    assert (m.only_a, m.only_b) == (4, 0) and m.p_value == pytest.approx(2 / 16)
    assert mcnemar(b, a).p_value == m.p_value and mcnemar(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar(a, b[:-1])


def test_bootstrap_constant_and_reproducible():
    iv = bootstrap_mean([1.0] * 10)
    assert (iv.value, iv.low, iv.high, iv.n) == (1.0, 1.0, 1.0, 10)
    xs = [1.0] * 50 + [0.0] * 50
    a, b = bootstrap_mean(xs, seed=3), bootstrap_mean(xs, seed=3)
    assert a == b and a.value == 0.5
    # 100 coin-flip problems: the 95% interval is about +-10 points (normal approximation +-9.8).
    assert a.high - a.low == pytest.approx(2 * min_detectable_diff(100), abs=0.03)
    assert a.fmt() == f"50.0 [{100 * a.low:.1f}, {100 * a.high:.1f}]"
    with pytest.raises(ValueError):
        bootstrap_mean([])


def test_bootstrap_diff_is_paired():
    a = [1.0, 0.0, 1.0, 1.0, 0.0] * 20
    iv = bootstrap_diff(a, a)
    assert (iv.value, iv.low, iv.high) == (0.0, 0.0, 0.0)  # identical systems: no spread at all
    b = [0.0] * 100
    d = bootstrap_diff(a, b)
    assert d.value == pytest.approx(0.6) and d.low > 0.45 and d.high < 0.75
    assert math.isinf(min_detectable_diff(0))
