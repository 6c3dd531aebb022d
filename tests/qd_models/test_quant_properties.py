"""Properties of the grid that hold for every input (hypothesis), with the step Δ written out here.

INT-b symmetric (``grid=int``): levels k·Δ, k in [-2^(b-1), 2^(b-1) - 1], Δ = α / (2^(b-1) - 1).
midrise: levels k·Δ - α, k in [0, 2^b - 1] (no zero level), Δ = 2α / (2^b - 1). Asymmetric: Δ = (high - low) /
(2^b - 1), levels (k - z)·Δ with the integer zero point z = round(-low / Δ), k in [0, 2^b - 1].
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qd_models.methods import clip_range
from qd_models.quant import fake_quantize

SETTINGS = settings(max_examples=int(os.environ.get("QD_HYPOTHESIS_EXAMPLES", "60")), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])  # the 2 shared cores are often busy
"""``QD_HYPOTHESIS_EXAMPLES``: fewer examples for mutation runs (scripts/run_mutation.sh)."""
GRIDS = [(True, "int"), (True, "midrise"), (False, "int")]

weights = arrays(np.float32, st.integers(1, 48), elements=st.floats(-8, 8, width=32, allow_subnormal=False))
ranges = st.tuples(st.floats(0.01, 10), st.floats(0.01, 10))


def _step(low: float, high: float, bits: int, symmetric: bool, grid: str) -> float:
    if not symmetric:
        return (high - low) / (2**bits - 1)
    return high / (2 ** (bits - 1) - 1) if grid == "int" else 2 * high / (2**bits - 1)


def _quantize(values: np.ndarray, low: float, high: float, bits: int, symmetric: bool, grid: str) -> torch.Tensor:
    blocks = torch.from_numpy(values.astype(np.float64)).reshape(1, -1)
    lo, hi = torch.tensor([[low]], dtype=torch.float64), torch.tensor([[high]], dtype=torch.float64)
    return fake_quantize(blocks, lo, hi, bits, symmetric, grid)[0]


@SETTINGS
@given(weights, ranges, st.integers(2, 8), st.sampled_from(GRIDS))
def test_levels_lie_on_the_grid_and_number_at_most_2_to_the_b(values, span, bits, grid_kind):
    symmetric, grid = grid_kind
    low, high = (-span[0], span[0]) if symmetric else (-span[0], span[1])
    out = _quantize(values, low, high, bits, symmetric, grid).numpy()
    step = _step(low, high, bits, symmetric, grid)
    assert np.unique(out).size <= 2**bits
    if symmetric and grid == "int":
        k = out / step
        assert np.allclose(k, np.round(k), atol=1e-9) and np.round(k).min() >= -(2 ** (bits - 1)) and np.round(k).max() <= 2 ** (bits - 1) - 1
    elif symmetric:
        k = (out + high) / step
        assert np.allclose(k, np.round(k), atol=1e-9) and k.min() > -1e-9 and k.max() < 2**bits - 1 + 1e-9
    else:
        zero = np.round(-low / step)
        k = out / step + zero
        assert np.allclose(k, np.round(k), atol=1e-9) and k.min() > -1e-9 and k.max() < 2**bits - 1 + 1e-9


@SETTINGS
@given(weights, ranges, st.integers(2, 8), st.sampled_from(GRIDS))
def test_error_inside_the_range_is_at_most_half_a_step(values, span, bits, grid_kind):
    symmetric, grid = grid_kind
    low, high = (-span[0], span[0]) if symmetric else (-span[0], span[1])
    out = _quantize(values, low, high, bits, symmetric, grid).numpy()
    step = _step(low, high, bits, symmetric, grid)
    inside = (values >= low) & (values <= high)
    assert np.all(np.abs(out - values)[inside] <= step / 2 * (1 + 1e-9))
    # outside the range the value goes to the nearest end level, never beyond it
    assert np.all(np.abs(out) <= max(abs(low), high) + step * (1 + 1e-9))


@SETTINGS
@given(weights, ranges, st.integers(2, 8), st.booleans())
def test_zeros_stay_exactly_zero_on_the_int_grid(values, span, bits, symmetric):
    values = values.copy()
    values[::3] = 0.0
    low, high = (-span[0], span[0]) if symmetric else (-span[0], span[1])
    out = _quantize(values, low, high, bits, symmetric, "int").numpy()
    assert np.all(out[::3] == 0.0)


@SETTINGS
@given(weights, ranges, st.integers(2, 8), st.sampled_from(GRIDS))
def test_quantize_dequantize_is_idempotent(values, span, bits, grid_kind):
    symmetric, grid = grid_kind
    low, high = (-span[0], span[0]) if symmetric else (-span[0], span[1])
    once = _quantize(values, low, high, bits, symmetric, grid)
    twice = _quantize(once.numpy(), low, high, bits, symmetric, grid)
    assert torch.allclose(once, twice, rtol=0, atol=1e-12 * max(1.0, high))


@SETTINGS
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(2, 32)),
              elements=st.floats(-8, 8, width=32, allow_subnormal=False)),
       st.integers(2, 8), st.booleans(), st.sampled_from(["rtn", "aciq", "mse"]))
def test_clip_range_never_wider_than_the_data_and_rtn_reaches_it(values, bits, symmetric, method):
    blocks = torch.from_numpy(values)
    low, high, info = clip_range(blocks, method, bits, symmetric, "gauss" if method == "aciq" else "none")
    lo_data, hi_data = blocks.min(1, keepdim=True).values, blocks.max(1, keepdim=True).values
    if symmetric:
        bound = torch.maximum(-lo_data, hi_data)
        assert torch.all(high <= bound) and torch.equal(low, -high)
        if method == "rtn":
            assert torch.equal(high, bound)
    else:
        assert torch.all(low >= lo_data.clamp_max(0)) and torch.all(high <= hi_data.clamp_min(0))
        if method == "rtn":  # [min, max] widened to contain 0
            assert torch.equal(low, lo_data.clamp_max(0)) and torch.equal(high, hi_data.clamp_min(0))
    assert torch.all(low <= 0) and torch.all(high >= 0)
    assert torch.allclose(info["alpha"], (high - low) / 2)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_symmetric_int_grid_enumerated(bits):
    """Every level of the INT-b grid is reached by a dense sweep, and nothing else is."""
    alpha = 1.0
    step = alpha / (2 ** (bits - 1) - 1)
    sweep = np.linspace(-2.0, 2.0, 4001)
    out = _quantize(sweep, -alpha, alpha, bits, True, "int").numpy()
    expected = np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1)) * step
    assert np.allclose(np.unique(out), expected, atol=1e-12)
