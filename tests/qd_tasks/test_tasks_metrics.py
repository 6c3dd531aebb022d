"""The inf-safe perplexity aggregation against lm-eval's stock one and closed forms."""

import math

import pytest
from lm_eval.api.metrics import weighted_perplexity as stock_weighted_perplexity

from qd_tasks.metrics import relative_increase, weighted_perplexity


def test_matches_stock_aggregation_on_finite_values():
    items = [(-12.5, 4), (-30.25, 9), (-0.75, 1)]
    expected = math.exp((12.5 + 30.25 + 0.75) / (4 + 9 + 1))
    assert weighted_perplexity(items) == pytest.approx(expected, rel=1e-15)
    assert weighted_perplexity(items) == pytest.approx(stock_weighted_perplexity(items), rel=1e-15)


def test_uniform_byte_model_has_byte_perplexity_256():
    # A model uniform over 256 byte values gives log-likelihood -n*ln(256) to n bytes.
    items = [(-n * math.log(256), n) for n in (3, 17, 250)]
    assert weighted_perplexity(items) == pytest.approx(256.0, rel=1e-12)


def test_overflow_gives_inf_where_stock_raises():
    # 800 nats per word: exp(800) overflows a float (max exponent ~709.78).
    items = [(-800.0 * 5, 5), (-800.0 * 2, 2)]
    with pytest.raises(OverflowError):
        stock_weighted_perplexity(items)
    assert weighted_perplexity(items) == math.inf


def test_just_below_overflow_stays_finite():
    assert weighted_perplexity([(-709.0, 1)]) == pytest.approx(math.exp(709.0), rel=1e-12)


def test_degenerate_inputs():
    assert weighted_perplexity([(-math.inf, 3), (-2.0, 1)]) == math.inf
    assert math.isnan(weighted_perplexity([(math.nan, 3)]))
    assert math.isnan(weighted_perplexity([]))


def test_relative_increase_of_numbers_and_arrays_equals_numpy_division():
    """Numbers (a zero denominator gives inf/-inf/nan, never raises) and arrays alike, against numpy's IEEE division."""
    import numpy as np

    new = np.array([3.0, 0.0, 2.0, -2.0, 2.0, 0.0, math.inf, math.nan, 1e-300])
    old = np.array([2.0, 5.0, 0.0, 0.0, -0.0, 0.0, 1.0, 1.0, 1e300])
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = new / old - 1.0
        np.testing.assert_array_equal(relative_increase(new, old), expected)
    assert list(expected[:6]) == pytest.approx([0.5, -1.0, math.inf, -math.inf, -math.inf, math.nan], nan_ok=True)
    for n, o, e in zip(new.tolist(), old.tolist(), expected.tolist()):
        got = relative_increase(n, o)
        assert (math.isnan(got) and math.isnan(e)) or got == e, (n, o, got, e)
