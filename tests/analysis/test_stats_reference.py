"""analysis.stats against scipy, numpy, exact enumeration and loops written here: the degenerate
paths the module promises ("NaN, never raises"), None as a missing value, argument semantics
(confidence, max_exact vs Monte Carlo, random_state) and the keys of every result."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats

NAN = math.nan


# relative_increase


def test_relative_increase_of_zero_totals_is_silent_inf_or_nan():
    with np.errstate(all="raise"):  # the function must silence its own division warnings
        assert stats.relative_increase(1.0, 0.0) == math.inf
        assert math.isnan(stats.relative_increase(0.0, 0.0))
        assert stats.relative_increase(np.array([3.0, -1.0]), np.array([2.0, 0.0])).tolist() == [0.5, -math.inf]


def test_relative_increase_reads_none_as_missing():
    assert math.isnan(stats.relative_increase(None, 2.0)) and math.isnan(stats.relative_increase(2.0, None))
    assert stats.relative_increase([3, None], [2, 4]).tolist()[0] == 0.5


# bootstrap_degradation_draws / ratio_standard_error


@pytest.mark.parametrize("quant, base", [(np.ones((2, 2)), np.ones((2, 2))), ([], []), ([1.0, 2.0], [1.0, 2.0, 3.0])])
def test_bootstrap_rejects_anything_but_equal_length_non_empty_vectors(quant, base):
    with pytest.raises(ValueError, match="equal-length non-empty 1-D"):
        stats.bootstrap_degradation_draws(quant, base, 5, np.random.default_rng(0))


def test_bootstrap_of_one_document_repeats_its_ratio_with_nan_se():
    draws, se = stats.bootstrap_degradation_draws([3.0], [2.0], 4, np.random.default_rng(0), with_se=True)
    assert draws.tolist() == [0.5] * 4
    assert se.shape == (4,) and np.isnan(se).all()


def test_bootstrap_reads_none_as_missing():
    draws, se = stats.bootstrap_degradation_draws([3.0, None], [2.0, 1.0], 50, np.random.default_rng(0), with_se=True)
    # every resample that picks document 1 is NaN, the others are 3/2 - 1
    assert set(np.round(draws[np.isfinite(draws)], 12)) == {0.5} and np.isnan(draws).any()
    draws = stats.bootstrap_degradation_draws([3.0, 1.0], [2.0, None], 50, np.random.default_rng(0))
    assert np.isnan(draws).any() and set(np.round(draws[np.isfinite(draws)], 12)) == {0.5}


def test_ratio_standard_error_of_two_documents_by_hand():
    q, b = [3.0, 5.0], [2.0, 4.0]
    ratio = 8.0 / 6.0
    residuals = [3.0 - ratio * 2.0, 5.0 - ratio * 4.0]
    expected = math.sqrt(2 / 1 * (residuals[0] ** 2 + residuals[1] ** 2)) / 6.0
    assert stats.ratio_standard_error(q, b) == pytest.approx(expected, rel=1e-12)


def test_ratio_standard_error_keeps_the_leading_shape():
    se = stats.ratio_standard_error(np.ones((3, 1)), np.ones((3, 1)))  # one document per row: undefined
    assert se.shape == (3,) and np.isnan(se).all()
    rows = np.array([[3.0, 5.0, 4.0], [1.0, 2.0, 2.0]])
    base = np.array([[2.0, 4.0, 4.0], [1.0, 1.0, 3.0]])
    assert stats.ratio_standard_error(rows, base).tolist() == pytest.approx([stats.ratio_standard_error(r, s) for r, s in zip(rows, base)])


def test_ratio_standard_error_of_a_zero_base_total_is_silent_nan():
    with np.errstate(all="raise"):
        assert math.isnan(stats.ratio_standard_error([1.0, 2.0], [0.0, 0.0]))
        assert math.isnan(stats.ratio_standard_error([0.0, 0.0], [1.0, -1.0]))


def test_ratio_standard_error_reads_none_as_missing():
    assert math.isnan(stats.ratio_standard_error([1.0, None, 2.0], [1.0, 1.0, 1.0]))
    assert math.isnan(stats.ratio_standard_error([1.0, 1.0, 2.0], [1.0, None, 1.0]))


# studentized_interval


def _fields(interval):
    return interval.estimate, interval.low, interval.high


def test_studentized_interval_nan_for_non_finite_estimate_or_se():
    for estimate, se in ((math.inf, 0.01), (0.1, math.inf), (NAN, 0.01), (0.1, NAN)):
        est, low, high = _fields(stats.studentized_interval(estimate, se, [0.0, 0.1, 0.2], [0.01, 0.01, 0.01]))
        assert (est == estimate or math.isnan(estimate)) and math.isnan(low) and math.isnan(high), (estimate, se)


def test_studentized_interval_nan_without_draws_or_with_non_finite_ones():
    for draws in ([], [0.1, math.nan], [0.1, None]):
        est, low, high = _fields(stats.studentized_interval(0.1, 0.01, draws, [0.01] * len(draws)))
        assert est == 0.1 and math.isnan(low) and math.isnan(high)


def test_studentized_interval_nan_for_an_undefined_draw_se():
    for draw_se in ([NAN, 0.01, 0.01], [None, 0.01, 0.01]):  # at the draw 0.05 != estimate
        interval = stats.studentized_interval(0.1, 0.01, [0.05, 0.1, 0.2], draw_se)
        assert interval.estimate == 0.1 and math.isnan(interval.low) and math.isnan(interval.high)


def test_studentized_interval_of_one_draw():
    # t = (0.3 - 0.1) / 0.1 = 2 is both quantiles: [0.1 - 2 * 0.01, 0.1 - 2 * 0.01]
    interval = stats.studentized_interval(0.1, 0.01, [0.3], [0.1])
    assert interval.estimate == 0.1 and interval.low == pytest.approx(0.08) and interval.high == pytest.approx(0.08)


def test_studentized_interval_collapses_for_se_within_rounding():
    # estimate 1: the rounding tolerance is 1e-12 * (1 + 1) = 2e-12; t = ±1000 would move a bound by 2e-9
    draws, draw_se = [0.0, 2.0], [1e-3, 1e-3]
    assert _fields(stats.studentized_interval(1.0, 2e-12, draws, draw_se)) == (1.0, 1.0, 1.0)
    assert _fields(stats.studentized_interval(0.0, 1e-12, draws, draw_se)) == (0.0, 0.0, 0.0)
    wider = stats.studentized_interval(1.0, 2.5e-12, draws, draw_se)
    assert wider.estimate == 1.0 and wider.low < 1.0 < wider.high
    assert wider.low == pytest.approx(1.0 - 1000 * 2.5e-12, abs=1e-15)


def test_studentized_interval_draws_at_the_estimate_have_t_zero():
    # t = [0, 0, 0, (0.3 - 0.1) / 0.1 = 2]; 90 %: inverted-CDF quantiles at 0.05 and 0.95 are t(1) = 0 and t(4) = 2
    interval = stats.studentized_interval(0.1, 0.01, [0.1, 0.1, 0.1, 0.3], [0.0, 0.0, 0.0, 0.1], 0.9)
    assert _fields(interval) == pytest.approx((0.1, 0.1 - 2 * 0.01, 0.1))
    # a draw within 1e-12 * (1 + 0) of the estimate 0 counts as the estimate: t = [0, 1, -1]; 50 %: t(1) = -1, t(3) = 1
    interval = stats.studentized_interval(0.0, 0.01, [1e-12, 0.01, -0.01], [0.0, 0.01, 0.01], 0.5)
    assert _fields(interval) == pytest.approx((0.0, -0.01, 0.01))


def test_studentized_interval_zero_draw_se_gives_an_infinite_bound_silently():
    # t = [0/0 -> 0, 0.1/0 = inf, 0.2/0.1 = 2]; 50 %: t(1) = 0, t(3) = inf
    with np.errstate(all="raise"):
        interval = stats.studentized_interval(0.1, 0.01, [0.1, 0.2, 0.3], [0.0, 0.0, 0.1], 0.5)
    assert interval.low == -math.inf and interval.high == pytest.approx(0.1) and interval.estimate == 0.1


def test_studentized_interval_default_is_95_percent():
    # t = k for k = 1..39: inverted-CDF quantiles at 0.025 and 0.975 are t(ceil(0.975)) = 1 and t(ceil(38.025)) = 39
    k = np.arange(1, 40, dtype=float)
    interval = stats.studentized_interval(0.0, 1.0, k, np.ones(39))
    assert _fields(interval) == (0.0, -39.0, -1.0)
    assert _fields(stats.studentized_interval(0.0, 1.0, k, np.ones(39), 0.8)) == (0.0, -36.0, -4.0)  # t(ceil(3.9)), t(ceil(35.1))


# percentile_interval


def test_percentile_interval_of_one_draw_and_of_none():
    assert _fields(stats.percentile_interval(0.2, [0.3])) == (0.2, 0.3, 0.3)
    est, low, high = _fields(stats.percentile_interval(0.2, []))
    assert est == 0.2 and math.isnan(low) and math.isnan(high)
    est, low, high = _fields(stats.percentile_interval(0.2, [0.3, None]))
    assert est == 0.2 and math.isnan(low) and math.isnan(high)


def test_percentile_interval_default_is_95_percent_linear_quantiles():
    draws = np.arange(101, dtype=float)  # the q-quantile (linear interpolation) of 0..100 is 100 q
    assert _fields(stats.percentile_interval(50.0, draws)) == pytest.approx((50.0, 2.5, 97.5))
    assert _fields(stats.percentile_interval(50.0, draws, 0.5)) == pytest.approx((50.0, 25.0, 75.0))


# permutation_test


def _brute_force_p(values, is_low):
    values, is_low = np.asarray(values, float), np.asarray(is_low, bool)
    observed = abs(values[is_low].mean() - values[~is_low].mean())
    n, k = len(values), int(is_low.sum())
    hits = 0
    for chosen in itertools.combinations(range(n), k):
        low = [values[i] for i in chosen]
        high = [values[i] for i in range(n) if i not in chosen]
        hits += abs(sum(low) / k - sum(high) / (n - k)) >= observed - 1e-12
    return hits / math.comb(n, k)


def _assert_undefined(result, n_low, n_high):
    assert set(result) == {"statistic", "p", "n_low", "n_high", "n_splits", "method"}
    assert math.isnan(result["statistic"]) and math.isnan(result["p"])
    assert (result["n_low"], result["n_high"], result["n_splits"]) == (n_low, n_high, 0)
    assert result["method"] == "none: needs >= 1 language per group"


def test_permutation_test_needs_a_language_in_each_group():
    _assert_undefined(stats.permutation_test([0.1, 0.2, NAN], [True, True, False], max_exact=100), 2, 0)
    _assert_undefined(stats.permutation_test([0.1, 0.2, 0.3], [False, False, False], max_exact=100), 0, 3)


def test_permutation_test_one_low_language_enumerates_every_choice():
    values, is_low = [0.5, 0.1, 0.2, 0.3], [True, False, False, False]
    result = stats.permutation_test(values, is_low, max_exact=100)
    assert result["statistic"] == pytest.approx(0.5 - 0.2)
    assert (result["n_low"], result["n_high"], result["n_splits"], result["method"]) == (1, 3, 4, "exact")
    assert result["p"] == _brute_force_p(values, is_low) == 0.25


def test_permutation_test_is_exact_up_to_max_exact_splits():
    values, is_low = [0.4, 0.1, 0.3, 0.2], [True, False, True, False]  # C(4, 2) = 6 splits
    exact = stats.permutation_test(values, is_low, max_exact=6)
    assert exact["method"] == "exact" and exact["n_splits"] == 6 and exact["p"] == pytest.approx(_brute_force_p(values, is_low))
    sampled = stats.permutation_test(values, is_low, max_exact=5, n_resamples=50)
    assert sampled["method"] == "Monte Carlo, 50 relabellings, random_state=0" and sampled["n_splits"] == 50


def test_permutation_test_counts_ties_within_1e_12_as_extreme():
    # observed |difference| 1e-12; the four mixed splits give exactly 0, within 1e-12 of it: p = 6/6
    values, is_low = [0.0, 0.0, 1e-12, 1e-12], [False, False, True, True]
    assert stats.permutation_test(values, is_low, max_exact=100)["p"] == 1.0 == _brute_force_p(values, is_low)


def test_permutation_test_reads_group_labels_as_booleans_and_none_as_missing():
    values = [0.5, 0.1, 0.2, 0.3, 0.45]
    reference = stats.permutation_test(values, [True, False, False, False, True], max_exact=100)
    assert stats.permutation_test(values, [1, 0, 0, 0, 1], max_exact=100) == reference
    with_missing = stats.permutation_test([0.5, 0.1, None, 0.2, 0.3, 0.45], [1, 0, 1, 0, 0, 1], max_exact=100)
    assert with_missing == reference and with_missing["n_low"] == 2


def test_permutation_test_monte_carlo_defaults_and_p_formula():
    values = np.array([0.3, 0.1, 0.25, 0.05, 0.2, 0.15, 0.12, 0.02])
    is_low = np.array([True, False, True, False, True, False, False, False])  # C(8, 3) = 56
    default = stats.permutation_test(values, is_low, max_exact=10)
    assert default["method"] == "Monte Carlo, 20000 relabellings, random_state=0" and default["n_splits"] == 20000
    assert default == stats.permutation_test(values, is_low, max_exact=10, n_resamples=20000, random_state=0)
    assert default != stats.permutation_test(values, is_low, max_exact=10, random_state=1)
    # p = (1 + hits) / (1 + n_resamples) with an integer hits in [0, n_resamples]
    hits = default["p"] * 20001 - 1
    assert hits == pytest.approx(round(hits), abs=1e-6) and 0 <= round(hits) <= 20000
    exact_p = _brute_force_p(values, is_low)
    assert default["p"] == pytest.approx(exact_p, abs=4 * math.sqrt(exact_p * (1 - exact_p) / 20000) + 1e-4)
    # no difference at all: every relabelling is as extreme, p = (1 + n) / (1 + n) = 1 exactly
    assert stats.permutation_test(np.full(8, 0.2), is_low, max_exact=10, n_resamples=99)["p"] == 1.0


def test_permutation_test_monte_carlo_relabellings_keep_the_group_sizes():
    """A shift of every value changes no difference of group means, so neither the p value; a
    relabelling that changed the group sizes would turn the shift into huge differences."""
    values = np.array([0.3, 0.1, 0.25, 0.05, 0.2, 0.15, 0.12, 0.02])
    is_low = np.array([True, False, True, False, True, False, False, False])
    sampled = stats.permutation_test(values, is_low, max_exact=10, n_resamples=2000, random_state=3)
    shifted = stats.permutation_test(values + 10.0, is_low, max_exact=10, n_resamples=2000, random_state=3)
    assert shifted["p"] == sampled["p"]
    exact_p = _brute_force_p(values, is_low)
    assert shifted["p"] == pytest.approx(exact_p, abs=4 * math.sqrt(exact_p * (1 - exact_p) / 2000) + 1e-3)


# hierarchical_draws


def test_hierarchical_draws_pick_every_document_draw():
    # one language with document draws 0 and 1: each resample is one of them with probability 1/2
    draws = stats.hierarchical_draws([[0.0, 1.0]], 4000, np.random.default_rng(0))
    assert set(draws.tolist()) == {0.0, 1.0} and draws.mean() == pytest.approx(0.5, abs=4 * 0.5 / math.sqrt(4000))


def test_hierarchical_draws_read_none_as_missing():
    draws = stats.hierarchical_draws([[0.1, None], [0.2, 0.3]], 200, np.random.default_rng(0))
    assert np.isnan(draws).any() and np.isfinite(draws).any()


# ols_slopes


def test_ols_slopes_centre_each_row_on_its_own_mean():
    """Far from zero (x near 1000, one row near 1e6) the slopes still match linregress to 1e-10."""
    x = np.array([2.0, 3.0, 4.1, 5.3, 8.2]) + 1000.0
    rows = np.random.default_rng(3).normal(size=(2, 5)) + np.array([[0.0], [1e6]])
    expected = [sps.linregress(x, row).slope for row in rows]
    assert stats.ols_slopes(x, rows) == pytest.approx(expected, rel=1e-10)


def test_ols_slopes_read_none_as_missing():
    assert np.isnan(stats.ols_slopes([1.0, None, 3.0], [[1.0, 2.0, 3.0]])).all()
    slopes = stats.ols_slopes([1.0, 2.0, 3.0], [[1.0, None, 3.0], [1.0, 2.0, 4.0]])
    assert math.isnan(slopes[0]) and slopes[1] == pytest.approx(1.5)


# correlation


CORRELATION_KEYS = {"n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"}


def _assert_no_correlation(result, n):
    assert set(result) == CORRELATION_KEYS and result["n"] == n
    assert all(math.isnan(result[key]) for key in CORRELATION_KEYS - {"n"})


def test_correlation_undefined_cases_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning and the like fail the test
        _assert_no_correlation(stats.correlation([1.0, 2.0], [1.0, 3.0]), 2)
        _assert_no_correlation(stats.correlation([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]), 3)
        _assert_no_correlation(stats.correlation([4.0, 4.0, 4.0, 4.0], [1.0, 2.0, 3.0, 5.0]), 4)
        _assert_no_correlation(stats.correlation([1.0, 2.0, NAN, 3.0], [2.0, 1.0, 3.0, None]), 2)


def _t_test_p(r, n):
    t = r * math.sqrt((n - 2) / (1 - r * r))
    return 2 * sps.t.sf(abs(t), n - 2)


def test_correlation_of_three_points_matches_numpy_and_the_t_distribution():
    x, y = [0.0, 0.25, 1.0], [1.0, 0.0, 0.75]  # both ranges exactly 1
    result = stats.correlation(x, y)
    r = np.corrcoef(x, y)[0, 1]
    rho = np.corrcoef(sps.rankdata(x), sps.rankdata(y))[0, 1]  # ranks [1, 2, 3] and [3, 1, 2]: rho = -0.5
    assert result["n"] == 3
    assert result["pearson_r"] == pytest.approx(r) and result["pearson_p"] == pytest.approx(_t_test_p(r, 3))
    assert result["spearman_rho"] == pytest.approx(rho) == -0.5 and result["spearman_p"] == pytest.approx(_t_test_p(rho, 3))


def test_correlation_p_values_over_finite_pairs():
    rng = np.random.default_rng(7)
    x = rng.normal(size=12)
    y = 0.6 * x + rng.normal(size=12)
    x_in, y_in = list(x) + [NAN, None, 1.0], list(y) + [2.0, 3.0, None]
    result = stats.correlation(x_in, y_in)
    r, rho = np.corrcoef(x, y)[0, 1], np.corrcoef(sps.rankdata(x), sps.rankdata(y))[0, 1]
    assert result["n"] == 12
    assert result["pearson_r"] == pytest.approx(r) and result["pearson_p"] == pytest.approx(_t_test_p(r, 12))
    assert result["spearman_rho"] == pytest.approx(rho) and result["spearman_p"] == pytest.approx(_t_test_p(rho, 12))


# fit_slope


FIT_KEYS = {"n", "slope", "intercept", "stderr", "low", "high"}


def test_fit_slope_undefined_with_one_distinct_x():
    for x, y, n in (([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], 3), ([1.0, 2.0, 3.0], [1.0, NAN, None], 1), ([], [], 0)):
        result = stats.fit_slope(x, y)
        assert set(result) == FIT_KEYS and result["n"] == n
        assert all(math.isnan(result[key]) for key in FIT_KEYS - {"n"})


def _hand_fit(x, y):
    """slope, intercept, stderr of the slope by the textbook sums."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx
    intercept = my - slope * mx
    rss = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y))
    return slope, intercept, math.sqrt(rss / (n - 2) / sxx) if n > 2 else NAN


def test_fit_slope_of_three_points_by_hand():
    x, y = [1.0, 2.0, 4.0], [0.5, 0.1, -1.2]
    slope, intercept, se = _hand_fit(x, y)
    result = stats.fit_slope(x, y)
    half = sps.t.ppf(0.975, 1) * se  # 12.706 * se
    assert result["n"] == 3
    assert (result["slope"], result["intercept"], result["stderr"]) == pytest.approx((slope, intercept, se))
    assert (result["low"], result["high"]) == pytest.approx((slope - half, slope + half))
    ninety = stats.fit_slope(x, y, 0.9)
    assert (ninety["low"], ninety["high"]) == pytest.approx((slope - sps.t.ppf(0.95, 1) * se, slope + sps.t.ppf(0.95, 1) * se))


def test_fit_slope_two_points_have_no_interval():
    result = stats.fit_slope([3.0, 4.0], [1.0, 0.0])
    assert (result["n"], result["slope"], result["intercept"]) == (2, pytest.approx(-1.0), pytest.approx(4.0))
    assert math.isnan(result["stderr"]) and math.isnan(result["low"]) and math.isnan(result["high"])


def test_fit_slope_uses_only_the_finite_pairs():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, NAN, 6.0, None]
    y = [0.2, 0.9, 1.1, 2.2, 2.4, 3.0, math.inf, 1.0]
    slope, intercept, se = _hand_fit(x[:5], y[:5])
    result = stats.fit_slope(x, y)
    assert result["n"] == 5
    assert (result["slope"], result["intercept"], result["stderr"]) == pytest.approx((slope, intercept, se))
