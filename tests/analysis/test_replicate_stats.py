"""The calibration-draw t interval against its formula written here with numpy and scipy.stats.t, and
against scipy's own one-sample, paired and Welch t intervals in the cases where it reduces to them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.replicate_stats import DRAW_NOISE_NOT_MEASURED, replicate_interval, replicate_spread


def reference(configs, base, coefficients, dependent_single=(), level=0.95):
    """D = sum_k c_k mean_r D_kr; SE**2 = sum_k c_k**2 var(D_k., ddof=1)/R_k + delta-method document variance of
    the combined draw means (effective df (n-1)/n (sum w**2)**2 / sum w**4, w = b / sum b); Welch–Satterthwaite df;
    estimate ± t quantile * SE."""
    base = np.asarray(base, dtype=float)
    n = base.size
    d = [np.asarray(q).sum(axis=1) / base.sum() - 1.0 for q in configs]
    estimate = sum(c * dk.mean() for c, dk in zip(coefficients, d))
    draw_terms = [(c**2 * np.var(dk, ddof=1) / dk.size, dk.size - 1) for c, dk in zip(coefficients, d) if dk.size > 1]
    residual = sum(c * (np.asarray(q).mean(axis=0) - (1.0 + dk.mean()) * base) for c, q, dk in zip(coefficients, configs, d))
    doc_variance = n / (n - 1) * np.sum(residual**2) / base.sum() ** 2
    weights = base / base.sum()
    terms = draw_terms + [(doc_variance, (n - 1) / n * np.sum(weights**2) ** 2 / np.sum(weights**4))]
    variance = sum(v for v, _ in terms)
    df = variance**2 / sum(v**2 / f for v, f in terms)
    half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(variance)
    return estimate, estimate - half, estimate + half, df


@pytest.fixture
def fixture_nll():
    rng = np.random.default_rng(7)
    base = rng.uniform(20, 60, 5)
    doc = rng.normal(0, 0.05, 5)
    a = base * (1 + 0.10 + doc + rng.normal(0, 0.03, (3, 1)) + rng.normal(0, 0.01, (3, 5)))  # 3 draws
    b = base * (1 + 0.06 + doc + rng.normal(0, 0.03, (2, 1)) + rng.normal(0, 0.01, (2, 5)))  # 2 draws
    return base, a, b


def test_single_config_interval_against_numpy_and_scipy_t(fixture_nll):
    base, a, _ = fixture_nll
    got = replicate_interval([a], base, [1.0], [True])
    estimate, low, high, df = reference([a], base, [1.0])
    assert (got.estimate, got.low, got.high, got.df) == pytest.approx((estimate, low, high, df), rel=1e-12)
    weights = base / base.sum()
    assert 2 < got.df < 2 + 0.8 * np.sum(weights**2) ** 2 / np.sum(weights**4) and got.note == ""  # within the sum of the terms' df


def test_difference_interval_against_numpy_and_scipy_t(fixture_nll):
    base, a, b = fixture_nll
    got = replicate_interval([a, b], base, [1.0, -1.0], [True, True], confidence=0.9)
    assert (got.estimate, got.low, got.high, got.df) == pytest.approx(reference([a, b], base, [1.0, -1.0], level=0.9), rel=1e-12)
    rtn = base * 1.04  # no calibration, one run: no draw term
    got = replicate_interval([a, rtn[None]], base, [1.0, -1.0], [True, False])
    assert (got.estimate, got.low, got.high, got.df) == pytest.approx(reference([a, rtn[None]], base, [1.0, -1.0]), rel=1e-12)


def test_reduces_to_scipy_t_intervals():
    rng = np.random.default_rng(3)
    base = np.full(6, 40.0)  # equal baselines: D is a plain mean of per-document ratios
    qa, qb = 40.0 * (1.1 + rng.normal(0, 0.05, 6)), 40.0 * (1.05 + rng.normal(0, 0.05, 6))
    got = replicate_interval([qa[None]], base, [1.0], [False])  # one run without calibration: one-sample t over documents
    assert (got.low, got.high) == pytest.approx(tuple(stats.ttest_1samp(qa / 40.0 - 1.0, 0.0).confidence_interval(0.95)), rel=1e-10)
    got = replicate_interval([qa[None], qb[None]], base, [1.0, -1.0], [False, False])  # paired t over documents
    assert (got.low, got.high) == pytest.approx(tuple(stats.ttest_rel(qa / 40.0, qb / 40.0).confidence_interval(0.95)), rel=1e-10)
    # draw effects only (every document moves with its draw): the document term is 0, the draw terms are
    # a one-sample t over the draws' D and, for two configs, Welch's t over their draws
    base = rng.uniform(20, 60, 4)
    da, db = 0.1 + rng.normal(0, 0.03, 4), 0.05 + rng.normal(0, 0.03, 3)
    a, b = base * (1 + da[:, None]), base * (1 + db[:, None])
    got = replicate_interval([a], base, [1.0], [True])
    assert got.df == pytest.approx(3, rel=1e-9)
    assert (got.low, got.high) == pytest.approx(tuple(stats.ttest_1samp(da, 0.0).confidence_interval(0.95)), rel=1e-9)
    got = replicate_interval([a, b], base, [1.0, -1.0], [True, True])
    welch = stats.ttest_ind(da, db, equal_var=False).confidence_interval(0.95)
    assert (got.low, got.high) == pytest.approx(tuple(welch), rel=1e-9)


def test_one_draw_of_a_calibrated_config_has_no_interval(fixture_nll):
    base, a, b = fixture_nll
    for quant, flags in (([a[:1]], [True]), ([a, b[:1]], [True, True])):
        got = replicate_interval(quant, base, [1.0] * len(quant) if len(quant) == 1 else [1.0, -1.0], flags)
        assert math.isnan(got.low) and math.isnan(got.high) and got.note == DRAW_NOISE_NOT_MEASURED
        assert math.isfinite(got.estimate)
    assert math.isfinite(replicate_interval([a[:1]], base, [1.0], [False]).low)


def test_spread_against_numpy_and_degenerate_inputs():
    values = [0.12, 0.18, 0.09, 0.2]
    spread = replicate_spread(values)
    assert spread == pytest.approx({"mean": np.mean(values), "sd": np.std(values, ddof=1), "min": 0.09, "max": 0.2})
    assert math.isnan(replicate_spread([0.3])["sd"])
    zero_base = replicate_interval([[[1.0, 2.0]]], [0.0, 0.0], [1.0], [False])  # reported as NaN, never raised
    assert math.isnan(zero_base.low) and zero_base.note == "non-finite D"
    assert math.isnan(replicate_interval([[[1.0], [2.0]]], [1.0], [1.0], [True]).low)  # one document: no document variance
    same = replicate_interval([np.full((3, 4), 2.0)], np.ones(4), [1.0], [True])  # every draw and document agree
    assert (same.low, same.high) == (1.0, 1.0)
    with pytest.raises(ValueError):
        replicate_interval([np.ones((2, 3))], np.ones(4), [1.0], [True])
