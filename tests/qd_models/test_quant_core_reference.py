"""Core quantization pieces against numpy written here (mutants that survived the other tests:
docs/testing.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qd_models.methods import clip_range
from qd_models.quant import fake_quantize, grid_optimal_alpha, grid_steps, to_blocks


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


def test_one_valid_entry_is_its_own_statistics():
    """A block with a single valid entry: mean = that entry, count 1 (not clamped higher)."""
    blocks = torch.tensor([[3.0, 100.0, -100.0, 50.0], [1.0, -2.0, 2.0, -1.0]])
    valid = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    _, _, info = clip_range(blocks, "aciq", 4, True, "gauss", valid=valid)
    assert info["sigma"][:, 0].tolist() == pytest.approx([3.0, np.sqrt(2.5)])


def test_auto_prior_threshold_sits_at_excess_kurtosis_1_5():
    """+-1 (98 %) and +-4.5 (2 %): excess kurtosis 1.79 (numpy) -> laplace; +-4 -> 0.61 -> gauss."""
    rows = []
    for outlier in (4.5, 4.0):
        x = np.array([1.0, -1.0] * 49 + [outlier, -outlier])
        rows.append(x)
        kurt = np.mean(x**4) / np.mean(x**2) ** 2 - 3
        assert (kurt > 1.5) == (outlier == 4.5) and abs(kurt - 1.5) > 0.25
    _, _, info = clip_range(torch.tensor(np.array(rows), dtype=torch.float32), "aciq", 4, True, "auto")
    assert info["laplace"][:, 0].tolist() == [True, False]


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_ignores_kept_weights(symmetric):
    """With the same columns kept in every block, mse's range equals mse on the other columns alone."""
    g = torch.Generator().manual_seed(1)
    blocks = torch.randn(4, 64, generator=g)
    valid = torch.ones_like(blocks)
    valid[:, :4] = 0.0
    blocks[:, :4] = 25.0
    low, high, info = clip_range(blocks, "mse", 3, symmetric, valid=valid)
    ref_low, ref_high, ref_info = clip_range(blocks[:, 4:].contiguous(), "mse", 3, symmetric)
    assert torch.allclose(high, ref_high) and torch.allclose(low, ref_low)
    assert torch.allclose(info["ratio"], ref_info["ratio"])


def test_mse_keeps_the_rtn_range_when_it_is_exact():
    """Weights already on the INT-3 grid of their absmax: r = 1 (on the coarse grid) gives zero
    error, any r < 1 does not; the search returns exactly 1 and never a ratio above 1."""
    blocks = (torch.arange(-3, 4, dtype=torch.float32) * (2.0 / 3)).repeat(3, 4)  # absmax 2 = 3 steps of 2/3
    from qd_models.quant import mse_clip_ratio

    ratio = mse_clip_ratio(blocks, 3, True)  # default grid: int
    assert ratio[:, 0].tolist() == [1.0, 1.0, 1.0]


def test_clip_ratio_search_finds_a_known_minimum():
    """Objective (r - r*)^2 per block: the coarse grid then 12 golden-section steps in
    r* +- 1/20 land within the final bracket 0.1 * 0.618^12 ~ 3.1e-4 of r*, and never above 1."""
    from qd_models.quant.core import search_clip_ratio

    targets = torch.tensor([[0.537], [0.91], [0.2], [1.3]])
    best, best_err = search_clip_ratio(lambda r: (r - targets).square(), 4, targets)
    assert (best[:3] - targets[:3]).abs().max() < 3.2e-4
    assert float(best[3]) == 1.0 and float(best_err[3]) == pytest.approx(0.09)


def test_clip_range_rejects_unknown_method_and_clip_by_name():
    blocks = torch.ones(1, 4)
    with pytest.raises(ValueError, match="method='gptq' is not allowed; allowed: rtn, aciq, mse"):
        clip_range(blocks, "gptq", 4, True)
    with pytest.raises(ValueError, match="clip='none' is not allowed for method=aciq; allowed: gauss, laplace, auto"):
        clip_range(blocks, "aciq", 4, True)


def test_weight_stats_against_numpy():
    from qd_models.quant import weight_stats

    g = torch.Generator().manual_seed(2)
    w = (torch.randn(32, 16, generator=g) * 2 + 0.5).numpy().astype(np.float64)
    stats = weight_stats(torch.from_numpy(w).float())
    dev = w - w.mean()
    assert stats["sigma"] == pytest.approx(w.std(), rel=1e-5)
    assert stats["kurtosis"] == pytest.approx(np.mean(dev**4) / np.mean(dev**2) ** 2 - 3, rel=1e-4, abs=1e-5)
    assert stats["max_over_sigma"] == pytest.approx(np.abs(dev).max() / w.std(), rel=1e-5)
    assert stats["nonfinite"] == 0
    w[0, 0], w[1, 1] = np.nan, np.inf
    assert weight_stats(torch.from_numpy(w).float())["nonfinite"] == 2


def test_fake_quantize_rejects_an_unknown_symmetric_grid_by_name():
    blocks, alpha = torch.ones(1, 4), torch.ones(1, 1)
    with pytest.raises(ValueError, match=r"grid='nope' is not allowed; allowed: int, midrise$"):
        fake_quantize(blocks, -alpha, alpha, 4, True, "nope")
