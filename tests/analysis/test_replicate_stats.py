"""The combined (calibration draws x documents) bootstrap against a brute-force enumeration written
here with plain Python, and its Monte Carlo path against the exact distribution."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from analysis.replicate_stats import quantile_interval, replicate_bootstrap, replicate_spread


def brute_force(configs, base, coefficients) -> list[float]:
    """Every equally likely resample: n documents with replacement (shared by all), then each config's
    R_k draws with replacement; the statistic sum_k c_k * mean over picked draws of sum(q)/sum(b) - 1."""
    n = len(base)
    outcomes = []
    for docs in itertools.product(range(n), repeat=n):
        total_base = sum(base[i] for i in docs)
        means = []
        for rows in configs:
            d = [sum(row[i] for i in docs) / total_base - 1.0 for row in rows]
            means.append([sum(d[r] for r in picks) / len(rows) for picks in itertools.product(range(len(rows)), repeat=len(rows))])
        outcomes += [sum(c * v for c, v in zip(coefficients, combo)) for combo in itertools.product(*means)]
    return sorted(outcomes)


def inverted_cdf(sorted_values: list[float], level: Fraction) -> float:
    """The smallest value whose empirical CDF reaches ``level``."""
    return sorted_values[math.ceil(level * len(sorted_values)) - 1]


def brute_interval(configs, base, coefficients, alpha=Fraction(1, 40)) -> tuple[float, float]:
    values = brute_force(configs, base, coefficients)
    return inverted_cdf(values, alpha), inverted_cdf(values, 1 - alpha)


@pytest.fixture
def fixture_nll():
    rng = np.random.default_rng(7)
    base = rng.uniform(20, 60, 3)
    a = base * (1 + rng.normal(0.10, 0.04, (3, 3)))  # 3 draws
    b = base * (1 + rng.normal(0.06, 0.04, (2, 3)))  # 2 draws
    return base, a, b


def test_exact_single_config_interval_equals_brute_force(fixture_nll):
    base, a, _ = fixture_nll
    values, method = replicate_bootstrap([a], base, [1.0], n_resamples=10, random_state=0)
    assert method == "exact" and values.size == 3**3 * 3**3
    assert sorted(values) == pytest.approx(brute_force([a.tolist()], base.tolist(), [1.0]), rel=1e-12, abs=1e-15)
    assert quantile_interval(values) == pytest.approx(brute_interval([a.tolist()], base.tolist(), [1.0]), rel=1e-12)


def test_exact_paired_difference_equals_brute_force(fixture_nll):
    base, a, b = fixture_nll
    values, method = replicate_bootstrap([a, b], base, [1.0, -1.0], n_resamples=10, random_state=0)
    assert method == "exact" and values.size == 3**3 * 3**3 * 2**2
    expected = brute_interval([a.tolist(), b.tolist()], base.tolist(), [1.0, -1.0])
    assert quantile_interval(values) == pytest.approx(expected, rel=1e-12)
    # one draw per config: the paired document bootstrap of D_a - D_b
    single, _ = replicate_bootstrap([a[:1], b[:1]], base, [1.0, -1.0], n_resamples=10)
    assert quantile_interval(single) == pytest.approx(brute_interval([a[:1].tolist(), b[:1].tolist()], base.tolist(), [1.0, -1.0]), rel=1e-12)


def test_monte_carlo_matches_the_exact_distribution_and_is_seeded(fixture_nll):
    base, a, b = fixture_nll
    exact = np.array(brute_force([a.tolist(), b.tolist()], base.tolist(), [1.0, -1.0]))
    drawn, method = replicate_bootstrap([a, b], base, [1.0, -1.0], n_resamples=40000, random_state=3, max_exact=0)
    assert method == "Monte Carlo, 40000 resamples"
    for point in np.quantile(exact, [0.05, 0.25, 0.5, 0.75, 0.95]):  # empirical CDFs agree (40000 draws: SE < 0.0025)
        assert np.mean(drawn <= point) == pytest.approx(np.mean(exact <= point), abs=0.01)
    again, _ = replicate_bootstrap([a, b], base, [1.0, -1.0], n_resamples=40000, random_state=3, max_exact=0)
    assert np.array_equal(drawn, again)


def test_spread_against_numpy_and_degenerate_inputs():
    values = [0.12, 0.18, 0.09, 0.2]
    spread = replicate_spread(values)
    assert spread == pytest.approx({"mean": np.mean(values), "sd": np.std(values, ddof=1), "min": 0.09, "max": 0.2})
    assert math.isnan(replicate_spread([0.3])["sd"])
    assert all(math.isnan(v) for v in quantile_interval([0.1, math.inf]))
    zero_base, _ = replicate_bootstrap([[[1.0, 2.0]]], [0.0, 0.0], [1.0], n_resamples=5)
    assert all(math.isnan(v) for v in quantile_interval(zero_base))  # reported as NaN, never raised
    with pytest.raises(ValueError):
        replicate_bootstrap([np.ones((2, 3))], np.ones(4), [1.0], n_resamples=5)
