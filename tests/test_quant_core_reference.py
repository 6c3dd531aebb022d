"""Core quantization pieces against numpy written here (mutants that survived the other tests:
docs/testing.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qd_models.quant import clip_range, fake_quantize, grid_optimal_alpha, grid_steps, to_blocks


def test_grid_steps_count_the_intervals_between_levels():
    for bits in range(2, 9):
        assert grid_steps(bits, True) == 2**bits - 2  # default grid: int, levels -2^(b-1)..2^(b-1)-1, alpha at 2^(b-1)-1
        assert grid_steps(bits, True, "int") == 2**bits - 2
        assert grid_steps(bits, True, "midrise") == 2**bits - 1
        assert grid_steps(bits, False) == grid_steps(bits, False, "midrise") == 2**bits - 1
    with pytest.raises(ValueError, match="grid='nope' is not allowed"):
        grid_steps(4, True, "nope")


def test_tensor_granularity_is_one_block_with_one_scale():
    weight = torch.arange(24, dtype=torch.float32).reshape(4, 6) - 11.5
    blocks = to_blocks(weight, "tensor")
    assert blocks.shape == (1, 24)
    low, high, _ = clip_range(blocks, "rtn", 3, True)
    out = fake_quantize(blocks, low, high, 3, True).view(4, 6).numpy()
    step = 11.5 / 3  # absmax of the whole tensor / (2^(b-1) - 1)
    expected = np.clip(np.round(weight.numpy() / step), -4, 3) * step
    assert np.allclose(out, expected, atol=1e-6)
    assert to_blocks(weight, "group", 3).shape == (8, 3) and to_blocks(weight, "channel").shape == (4, 6)
    with pytest.raises(ValueError, match="granularity='row' is not allowed; allowed: tensor, channel, group"):
        to_blocks(weight, "row")


@pytest.mark.parametrize("symmetric", [True, False])
def test_aciq_statistics_ignore_kept_weights_per_block(symmetric):
    """sigma (and the mean, asymmetric) over the valid entries of each block only; blocks hold
    different numbers of valid entries."""
    g = torch.Generator().manual_seed(0)
    blocks = torch.randn(3, 64, generator=g, dtype=torch.float64).float() * torch.tensor([[1.0], [2.0], [0.5]])
    valid = torch.ones_like(blocks)
    valid[0, :5] = 0.0
    valid[1, 10:30] = 0.0
    blocks[0, :5] = 40.0  # kept outliers: must not enter sigma
    low, high, info = clip_range(blocks, "aciq", 3, symmetric, "gauss", valid=valid)
    c = grid_optimal_alpha(3, "gauss", "int" if symmetric else "midrise")
    for i in range(3):
        x = blocks[i][valid[i] > 0].double().numpy()
        center = 0.0 if symmetric else x.mean()
        sigma = np.sqrt(np.mean((x - center) ** 2))
        assert float(info["sigma"][i]) == pytest.approx(sigma, rel=1e-5)
        lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
        if symmetric:
            hi = max(-lo, hi)
            lo = -hi
        assert float(high[i]) == pytest.approx(min(hi, max(center + c * sigma, 0.0)), rel=1e-5)
        assert float(low[i]) == pytest.approx(max(lo, min(center - c * sigma, 0.0)), rel=1e-5)


@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_auto_prior_by_kurtosis_whatever_the_scale(scale):
    """Excess kurtosis m4 / m2^2 - 3 is scale-free: Gaussian ~0 -> gauss, Laplace ~3 -> laplace."""
    g = torch.Generator().manual_seed(5)
    gauss = torch.randn(1, 8192, generator=g)
    u = torch.rand(1, 8192, generator=g) - 0.5
    laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
    blocks = torch.cat([gauss, laplace]) * scale
    _, high, info = clip_range(blocks, "aciq", 4, True, "auto")
    assert info["laplace"][:, 0].tolist() == [False, True]
    b = float(blocks[1].abs().mean())
    assert float(high[1]) == pytest.approx(grid_optimal_alpha(4, "laplace", "int") * b, rel=1e-5)
