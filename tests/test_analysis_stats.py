"""Statistics functions against hand computations, exact enumeration and scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats


def test_bootstrap_draws_reproduce_an_independent_loop():
    nll_quant, nll_base = np.array([3.0, 5.0, 4.0]), np.array([2.0, 4.0, 4.0])
    draws = stats.bootstrap_degradation_draws(nll_quant, nll_base, 50, np.random.default_rng(123))
    rng = np.random.default_rng(123)
    idx = rng.integers(0, 3, size=(50, 3))
    expected = [sum(nll_quant[i] for i in row) / sum(nll_base[i] for i in row) - 1 for row in idx]
    assert draws == pytest.approx(expected)
    # a fixed random_state gives the same draws again
    assert stats.bootstrap_degradation_draws(nll_quant, nll_base, 50, np.random.default_rng(123)) == pytest.approx(draws)


def test_bootstrap_distribution_matches_exact_enumeration():
    """n=3 docs: the 27 equally likely resamples give the exact bootstrap distribution."""
    nll_quant, nll_base = np.array([3.0, 5.0, 4.0]), np.array([2.0, 4.0, 4.0])
    exact = np.array([nll_quant[list(c)].sum() / nll_base[list(c)].sum() - 1 for c in itertools.product(range(3), repeat=3)])
    draws = stats.bootstrap_degradation_draws(nll_quant, nll_base, 200_000, np.random.default_rng(0))
    assert draws.mean() == pytest.approx(exact.mean(), abs=2e-3)
    assert draws.min() == pytest.approx(exact.min()) and draws.max() == pytest.approx(exact.max())
    # P(draw <= median of exact) agrees with the exact CDF to Monte-Carlo precision
    threshold = np.median(exact)
    assert np.mean(draws <= threshold) == pytest.approx(np.mean(exact <= threshold), abs=5e-3)


def test_percentile_interval_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(5)
    nll_base = rng.uniform(50, 100, 12)
    nll_quant = nll_base * rng.uniform(1.0, 1.2, 12)
    draws = stats.bootstrap_degradation_draws(nll_quant, nll_base, 20_000, np.random.default_rng(1))
    ours = stats.percentile_interval(nll_quant.sum() / nll_base.sum() - 1, draws)
    ref = sps.bootstrap((nll_quant, nll_base), lambda q, b: q.sum() / b.sum() - 1, paired=True, vectorized=False,
                        n_resamples=20_000, method="percentile", random_state=2).confidence_interval
    assert ours.low == pytest.approx(ref.low, abs=2e-3) and ours.high == pytest.approx(ref.high, abs=2e-3)
    assert ours.low < ours.estimate < ours.high


def test_percentile_interval_is_nan_for_non_finite_draws():
    interval = stats.percentile_interval(0.1, np.array([0.1, np.inf, 0.2]))
    assert interval.estimate == 0.1 and math.isnan(interval.low) and math.isnan(interval.high)


def test_bootstrap_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="equal-length"):
        stats.bootstrap_degradation_draws([1.0, 2.0], [1.0], 10, np.random.default_rng(0))


def test_relative_increase_edge_cases():
    with np.errstate(all="ignore"):
        assert stats.relative_increase(2.0, 1.0) == pytest.approx(1.0)
        assert math.isinf(stats.relative_increase(1.0, 0.0))
        assert math.isnan(stats.relative_increase(np.nan, 1.0))


def test_cohens_d_by_hand():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    # both variances 1 -> pooled sd 1 -> d = (5 - 2) / 1
    assert stats.cohens_d(a, b) == pytest.approx(3.0)
    assert math.isnan(stats.cohens_d([1.0], b)) and math.isnan(stats.cohens_d([1.0, 1.0], [2.0, 2.0]))


def test_welch_by_hand():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    se = math.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 5)
    t, p = stats.welch_t_test(a, b)
    assert t == pytest.approx((b.mean() - a.mean()) / se)
    assert p == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue)
    assert all(math.isnan(v) for v in stats.welch_t_test([1.0], b))


def test_mann_whitney_u_by_hand():
    # every b exceeds every a: U_b = n_a * n_b = 6
    u, p = stats.mann_whitney([1.0, 2.0], [3.0, 4.0, 5.0])
    assert u == 6.0 and 0 < p < 1


def test_correlation_reports_n_and_handles_degenerate_input():
    x, y = [1.0, 2.0, 3.0, 4.0, np.nan], [2.0, 4.0, 6.0, 9.0, 1.0]
    result = stats.correlation(x, y)
    assert result["n"] == 4 and result["spearman_rho"] == pytest.approx(1.0)
    assert result["pearson_r"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [2, 4, 6, 9])[0, 1])
    constant = stats.correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    assert constant["n"] == 3 and math.isnan(constant["pearson_r"])


def test_fit_slope_interval_by_hand():
    x, y = np.array([3.0, 4.0, 5.0, 6.0]), np.array([1.0, 0.2, -0.9, -1.5])
    fit = stats.fit_slope(x, y)
    slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    residuals = y - (y.mean() + slope * (x - x.mean()))
    se = math.sqrt(residuals @ residuals / 2 / np.sum((x - x.mean()) ** 2))
    assert fit["slope"] == pytest.approx(slope)
    assert fit["high"] - fit["slope"] == pytest.approx(sps.t.ppf(0.975, 2) * se)
    two_points = stats.fit_slope([3.0, 4.0], [1.0, 0.0])
    assert two_points["slope"] == pytest.approx(-1.0) and math.isnan(two_points["low"])
