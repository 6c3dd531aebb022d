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


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("method", "clip"), [("rtn", "none"), ("mse", "none"), ("aciq", "gauss")])
def test_range_info_sigma_is_the_rms_of_the_valid_entries(method, clip, symmetric):
    """``info["sigma"]`` (the report's alpha/sigma) over the entries not kept: RMS about 0
    (symmetric) or the population std (asymmetric), numpy over the valid entries of each block."""
    g = torch.Generator().manual_seed(5)
    blocks = torch.randn(3, 40, generator=g) * torch.tensor([[0.5], [1.0], [2.0]]) + 0.7
    valid = torch.ones_like(blocks)
    valid[:, :4] = 0.0
    blocks[:, :4] = 60.0  # kept weights: must not enter sigma
    _, _, info = clip_range(blocks, method, 4, symmetric, clip, valid)
    for row, sigma in zip(blocks[:, 4:].double().numpy(), info["sigma"][:, 0].tolist()):
        expected = np.sqrt(np.mean(row**2)) if symmetric else row.std()
        assert sigma == pytest.approx(expected, rel=1e-5)


def test_asymmetric_range_always_contains_zero():
    blocks = torch.tensor([[0.2, 0.5, 0.9, 0.3], [-0.9, -0.2, -0.4, -0.6]])
    low, high, _ = clip_range(blocks, "rtn", 4, False)
    assert low[:, 0].tolist() == [0.0, pytest.approx(-0.9)] and high[:, 0].tolist() == [pytest.approx(0.9), 0.0]


@pytest.mark.parametrize("symmetric", [True, False])
def test_aciq_clip_is_never_wider_than_the_valid_entries(symmetric):
    """At 8 bits c*sigma exceeds the data's own range: the clip is the valid entries' range, not
    the range of a kept (excluded) outlier."""
    g = torch.Generator().manual_seed(6)
    blocks = torch.rand(2, 64, generator=g) * 0.2 - 0.1
    valid = torch.ones_like(blocks)
    blocks[:, 0], valid[:, 0] = 50.0, 0.0
    low, high, _ = clip_range(blocks, "aciq", 8, symmetric, "gauss", valid)
    rows = blocks[:, 1:]
    if symmetric:
        assert torch.equal(high[:, 0], rows.abs().amax(1)) and torch.equal(low, -high)
    else:
        assert torch.equal(high[:, 0], rows.amax(1)) and torch.equal(low[:, 0], rows.amin(1))


def midrise_reference(row: torch.Tensor, alpha: float, bits: int) -> torch.Tensor:
    """Symmetric midrise grid written out: 2^bits levels -alpha + k * 2 alpha / (2^bits - 1)."""
    step = 2 * alpha / (2**bits - 1)
    return torch.clamp(torch.round((row + alpha) / step), 0, 2**bits - 1) * step - alpha


def test_mse_on_the_midrise_grid_is_the_brute_force_minimum_of_that_grid():
    g = torch.Generator().manual_seed(7)
    u = torch.rand(4, 256, generator=g, dtype=torch.float64) - 0.5
    weight = (-torch.sign(u) * torch.log1p(-2 * u.abs())).float()
    low, high, _ = clip_range(weight, "mse", 3, True, "none", None, "midrise")
    found = (fake_quantize(weight, low, high, 3, True, "midrise") - weight).square().sum(1)
    for row, err in zip(weight, found):
        absmax = float(row.abs().max())
        best = min(float((midrise_reference(row, r * absmax, 3) - row).square().sum()) for r in np.linspace(0.0005, 1.0, 2000))
        assert float(err) <= best * 1.002


def test_search_precision_is_the_golden_section_bracket_of_one_coarse_step():
    """Twelve golden-section steps in [r* - 1/20, r* + 1/20] leave a bracket of 0.1 * 0.618^12 =
    3.2e-4 around the minimum of a smooth objective, for 200 targets across (0, 1)."""
    from qd_models.quant.core import search_clip_ratio

    targets = torch.linspace(0.031, 0.969, 200)[:, None]
    best, _ = search_clip_ratio(lambda r: (r - targets).square(), 200, targets)
    assert (best - targets).abs().max() <= 0.1 * 0.618034**12


def test_group_size_errors_name_the_layer_only_when_given():
    from qd_models.quant.core import check_group_size

    allowed = "allowed: a divisor of every quantized layer's input dim"
    with pytest.raises(ValueError, match=rf"^group_size=48 does not divide the input dim 100 of model\.layers\.0\.mlp; {allowed}$"):
        check_group_size(48, 100, "model.layers.0.mlp")
    with pytest.raises(ValueError, match=rf"^group_size=48 does not divide the input dim 100; {allowed}$"):
        check_group_size(48, 100)
    check_group_size(25, 100)


def test_unknown_grid_message_lists_the_allowed_grids():
    with pytest.raises(ValueError, match=r"^grid='nope' is not allowed; allowed: int, midrise$"):
        grid_steps(4, True, "nope")


def test_new_tensors_are_made_on_the_blocks_device():
    """Counts, coarse ratios and keep masks are created on the input's device (meta here; CUDA in use)."""
    from qd_models.quant.core import block_moments, coarse_ratios, top_fraction_mask

    blocks = torch.empty(3, 8, device="meta")
    assert block_moments(blocks, None, centered=False, kurtosis=False)["sigma"].device.type == "meta"
    assert all(r.device.type == "meta" for r in coarse_ratios(3, blocks))
    assert top_fraction_mask(torch.empty(4, 8, device="meta"), 25.0).device.type == "meta"


def test_golden_section_refines_only_within_one_coarse_step_of_the_coarse_best():
    """After the 20 coarse ratios, the search is a golden-section search of [r* - 1/20, r* + 1/20]
    (r* the coarse best, recomputed here from the coarse calls): its first two points are the
    golden points of that bracket, and nothing outside it is evaluated."""
    from qd_models.quant.core import search_clip_ratio

    targets = torch.tensor([[0.537], [0.262], [0.71]])
    calls = []

    def objective(r):
        calls.append(r.clone())
        return (r - targets).square()

    search_clip_ratio(objective, 3, targets)
    coarse = torch.stack(calls[:20])  # [20, 3, 1]
    best = coarse[torch.stack([(c - targets).square() for c in calls[:20]]).argmin(0)[:, 0], torch.arange(3)]
    for r in calls[20:]:
        assert bool(((r - best).abs() <= 1 / 20 + 1e-6).all())
    golden = (5**0.5 - 1) / 2  # the first two golden-section points of [r* - 0.05, r* + 0.05]
    torch.testing.assert_close(calls[20], best + 0.05 - golden * 0.1, atol=1e-6, rtol=0)
    torch.testing.assert_close(calls[21], best - 0.05 + golden * 0.1, atol=1e-6, rtol=0)
    assert len(calls) == 20 + 2 + 12


def test_aciq_range_called_directly_rejects_an_unknown_clip_by_name():
    from qd_models.quant.core import aciq_range

    with pytest.raises(ValueError, match=r"^clip='none' is not allowed; allowed: gauss, laplace, auto$"):
        aciq_range(torch.ones(1, 4), 4, True, "none", None, "int")
