"""analysis.regression against numpy lstsq, scipy.stats.linregress and exact permutation enumeration written here."""

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from analysis import regression


def _fixture(n=40, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    level = np.arange(n) % 3  # a 3-level factor: two indicator columns
    X = np.column_stack([np.ones(n), x, level == 1, level == 2]).astype(float)
    y = 0.5 + 1.5 * x + 0.8 * (level == 2) + rng.normal(scale=0.7, size=n)
    return X, y


def _rss(X, y):
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    return float(np.sum((y - X @ coef) ** 2))


def test_ols_coefficients_and_rss_match_numpy_lstsq():
    X, y = _fixture()
    coef, rss = regression.ols(X, y)
    np.testing.assert_allclose(coef, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10, atol=1e-12)
    assert rss == pytest.approx(_rss(X, y), rel=1e-10)
    Y = np.column_stack([y, 2 * y + X[:, 1]])  # several outcomes at once
    np.testing.assert_allclose(regression.ols(X, Y)[0][:, 1], np.linalg.lstsq(X, Y[:, 1], rcond=None)[0], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="rank-deficient"):
        regression.ols(np.column_stack([X, X[:, 1]]), y)


def test_f_statistic_matches_scipy_and_rss_formula():
    X, y = _fixture()
    simple = sps.linregress(X[:, 1], y)  # one predictor: F = t^2
    assert float(regression.f_statistic(X[:, :2], [1], y)) == pytest.approx((simple.slope / simple.stderr) ** 2, rel=1e-9)
    n, p = X.shape
    expected = ((_rss(X[:, :2], y) - _rss(X, y)) / 2) / (_rss(X, y) / (n - p))
    assert float(regression.f_statistic(X, [2, 3], y)) == pytest.approx(expected, rel=1e-10)


def _exact_freedman_lane_p(X, columns, y):
    keep = [j for j in range(X.shape[1]) if j not in columns]
    beta = np.linalg.lstsq(X[:, keep], y, rcond=None)[0]
    fitted, resid = X[:, keep] @ beta, y - X[:, keep] @ beta
    n, p = X.shape

    def f(target):
        return ((_rss(X[:, keep], target) - _rss(X, target)) / len(columns)) / (_rss(X, target) / (n - p))

    observed = f(y)
    values = [f(fitted + resid[list(perm)]) for perm in itertools.permutations(range(n))]
    return sum(value >= observed - 1e-12 for value in values) / len(values)


@pytest.mark.parametrize("columns", [[1], [2]])
def test_permutation_p_equals_exact_enumeration(columns):
    rng = np.random.default_rng(7)
    n = 6
    X = np.column_stack([np.ones(n), rng.normal(size=n), [0, 1, 0, 1, 1, 0]]).astype(float)
    y = X[:, 1] * 0.9 + rng.normal(scale=0.5, size=n)
    result = regression.permutation_p(X, columns, y, max_exact=720)
    assert result["method"] == "exact" and result["n_permutations"] == 720
    assert result["p"] == pytest.approx(_exact_freedman_lane_p(X, columns, y), abs=1e-12)
    monte_carlo = regression.permutation_p(X, columns, y, n_resamples=4000, random_state=1, max_exact=1)
    assert monte_carlo["p"] == pytest.approx(result["p"], abs=0.03)  # sampled permutations approach the exact p
    assert regression.permutation_p(X, columns, y, n_resamples=50, random_state=1, max_exact=1) == \
        regression.permutation_p(X, columns, y, n_resamples=50, random_state=1, max_exact=1)


def test_permutation_p_detects_a_strong_effect_and_not_a_null_one():
    X, y = _fixture(n=60)
    assert regression.permutation_p(X, [1], y, n_resamples=999, random_state=0)["p"] == pytest.approx(1 / 1000)
    rng = np.random.default_rng(11)  # null outcomes: the test rejects at 5 % about 5 % of the time
    rejections = [regression.permutation_p(X, [1], rng.normal(size=60), n_resamples=199, random_state=s)["p"] <= 0.05 for s in range(100)]
    assert 0 < sum(rejections) <= 12


def test_bootstrap_over_units():
    X, y = _fixture(n=50)
    exact = X @ np.array([1.0, -2.0, 0.5, 0.25])  # no noise: every resample gives the same coefficients
    boot = regression.bootstrap_coefficients(X, exact, n_resamples=200, random_state=0)
    np.testing.assert_allclose(boot["low"], [1.0, -2.0, 0.5, 0.25], atol=1e-9)
    np.testing.assert_allclose(boot["high"], [1.0, -2.0, 0.5, 0.25], atol=1e-9)
    noisy = regression.bootstrap_coefficients(X, y, n_resamples=400, random_state=0)
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    assert np.all(noisy["low"] < coef) and np.all(coef < noisy["high"]) and noisy["n_used"] + noisy["n_skipped"] == 400
    few = np.column_stack([np.ones(6), [1, 0, 0, 0, 0, 0]]).astype(float)  # a level held by one unit: resamples without it skipped
    assert regression.bootstrap_coefficients(few, np.arange(6.0), n_resamples=100, random_state=0)["n_skipped"] > 0


def test_leave_one_out_matches_lstsq_loop():
    X, y = _fixture(n=12)
    loo = regression.leave_one_out(X, y)
    for i in range(12):
        keep = np.arange(12) != i
        np.testing.assert_allclose(loo[i], np.linalg.lstsq(X[keep], y[keep], rcond=None)[0], rtol=1e-9, atol=1e-12)
