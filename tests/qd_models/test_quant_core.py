"""Tier-1 checks of the pure quantization functions against theory (hand-made tensors).

Core quantization pieces against numpy written here (mutants that survived the other tests:
docs/testing.md).

Properties of the grid that hold for every input (hypothesis), with the step Δ written out here.

INT-b symmetric (``grid=int``): levels k·Δ, k in [-2^(b-1), 2^(b-1) - 1], Δ = α / (2^(b-1) - 1).
midrise: levels k·Δ - α, k in [0, 2^b - 1] (no zero level), Δ = 2α / (2^b - 1). Asymmetric: Δ = (high - low) /
(2^b - 1), levels (k - z)·Δ with the integer zero point z = round(-low / Δ), k in [0, 2^b - 1]."""

from __future__ import annotations

import os

import gguf
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qd_models.methods import clip_range
from qd_models.quant import (
    aciq_constant,
    expected_mse,
    fake_quantize,
    grid_optimal_alpha,
    grid_steps,
    mse_clip_ratio,
    to_blocks,
    top_fraction_mask,
    weight_stats,
)

PAPER_LAPLACE = {2: 2.83, 3: 3.89, 4: 5.03, 5: 6.2, 6: 7.41, 7: 8.64, 8: 9.89}
PAPER_GAUSS = {2: 1.71, 3: 2.15, 4: 2.55, 5: 2.94, 6: 3.29, 7: 3.61, 8: 3.92}


@pytest.mark.parametrize("bits", range(2, 9))
def test_aciq_constants_match_paper(bits):
    assert aciq_constant(bits, "laplace") == pytest.approx(PAPER_LAPLACE[bits], rel=0.01)
    assert aciq_constant(bits, "gauss") == pytest.approx(PAPER_GAUSS[bits], rel=0.01)


def test_aciq_constant_is_the_minimum_of_the_expression():
    for prior in ("gauss", "laplace"):
        c = aciq_constant(4, prior)
        assert expected_mse(c, 4, prior) < expected_mse(0.97 * c, 4, prior)
        assert expected_mse(c, 4, prior) < expected_mse(1.03 * c, 4, prior)


def awq_pseudo_quantize(w: torch.Tensor, n_bit: int, zero_point: bool) -> torch.Tensor:
    """AWQ's ``pseudo_quantize_tensor`` (llm-awq, per row of ``w``), written out here as the
    independent reference of the INT-b grid."""
    if zero_point:
        max_val, min_val = w.amax(dim=1, keepdim=True), w.amin(dim=1, keepdim=True)
        max_int, min_int = 2**n_bit - 1, 0
        scales = (max_val - min_val).clamp(min=1e-5) / max_int
        zeros = (-torch.round(min_val / scales)).clamp_(min_int, max_int)
        return (torch.clamp(torch.round(w / scales) + zeros, min_int, max_int) - zeros) * scales
    max_val = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-5)
    max_int, min_int = 2 ** (n_bit - 1) - 1, -(2 ** (n_bit - 1))
    scales = max_val / max_int
    return torch.clamp(torch.round(w / scales), min_int, max_int) * scales


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rtn_equals_awq_reference_and_keeps_zeros(bits, symmetric):
    g = torch.Generator().manual_seed(bits)
    weight = torch.randn(16, 64, generator=g) * torch.linspace(0.1, 3.0, 16)[:, None]
    weight[:, ::5] = 0.0  # exact zeros (4.55 % of the default model's quantized weights are)
    weight[0, 1], weight[0, 2] = -1.0, 2.0  # every row has both signs (AWQ does not widen to 0)
    low, high, _ = clip_range(weight, "rtn", bits, symmetric)
    out = fake_quantize(weight, low, high, bits, symmetric)
    torch.testing.assert_close(out, awq_pseudo_quantize(weight, bits, zero_point=not symmetric), rtol=1e-6, atol=1e-7)
    assert bool((out[:, ::5] == 0).all())  # zero is a level: exact zeros stay zero
    for row in out:
        assert row.unique().numel() <= 2**bits


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_levels_and_half_step_error(bits, granularity, symmetric):
    g = torch.Generator().manual_seed(bits)
    weight = torch.randn(6, 32, generator=g) * torch.linspace(0.1, 3.0, 6)[:, None]
    blocks = to_blocks(weight, granularity, 8)
    low, high, _ = clip_range(blocks, "aciq", bits, symmetric, "gauss")
    out = fake_quantize(blocks, low, high, bits, symmetric)
    for row_in, row_out, lo, hi in zip(blocks, out, low[:, 0], high[:, 0]):
        levels = row_out.unique()
        assert levels.numel() <= 2**bits
        # INT-b: step alpha / (2^(b-1) - 1), levels are integer multiples of it (0 included)
        step = hi / (2 ** (bits - 1) - 1) if symmetric else (hi - lo) / (2**bits - 1)
        inside = (row_in >= lo) & (row_in <= hi)
        assert (row_out[inside] - row_in[inside]).abs().max() <= step / 2 * (1 + 1e-5)
        if symmetric:
            codes = levels / step
            assert torch.allclose(codes, codes.round(), atol=1e-4)
            assert codes.min() >= -(2 ** (bits - 1)) - 1e-4 and codes.max() <= 2 ** (bits - 1) - 1 + 1e-4
        # the integer zero point (asymmetric) may shift the grid by < step/2 past the range
        margin = 1e-6 if symmetric else float(step) / 2 + 1e-6
        assert row_out.max() <= hi + margin and row_out.min() >= (lo - step if symmetric else lo) - margin


def _away_from_ties(ratio: np.ndarray) -> np.ndarray:
    """Mask of entries not within 1e-3 of a rounding tie (round-half-even vs half-away differ there)."""
    return np.abs(np.abs(ratio - np.floor(ratio)) - 0.5) > 1e-3


def test_int8_group32_codes_equal_gguf_q8_0():
    g = torch.Generator().manual_seed(11)
    weight = torch.randn(64, 256, generator=g) * torch.linspace(0.01, 2.0, 64)[:, None]
    blocks = to_blocks(weight, "group", 32)
    low, high, _ = clip_range(blocks, "rtn", 8, True)
    step = (high / 127).numpy()
    ours = np.round(fake_quantize(blocks, low, high, 8, True).numpy() / step).astype(np.int64)
    raw = gguf.quants.quantize(blocks.numpy(), gguf.GGMLQuantizationType.Q8_0).reshape(-1, 34)
    theirs = raw[:, 2:].view(np.int8).astype(np.int64)  # each block: fp16 scale + 32 int8 codes
    mask = _away_from_ties(blocks.numpy() / step)
    assert mask.mean() > 0.99
    np.testing.assert_array_equal(ours[mask], theirs[mask])


def test_int4_grid_equals_gguf_q4_0_where_the_format_matches():
    """Q4_0 is the INT4 grid with scale |extreme| / 8 whose sign puts the extreme on code -8:
    with alpha = 7/8 |extreme| (and the block mirrored when the extreme is positive) ours is it."""
    g = torch.Generator().manual_seed(12)
    blocks = torch.randn(512, 32, generator=g)
    extreme = blocks.gather(1, blocks.abs().argmax(1, keepdim=True))
    sign = -torch.sign(extreme)  # mirror so the extreme is negative
    alpha = extreme.abs() * 7 / 8
    ours = sign * fake_quantize(sign * blocks, -alpha, alpha, 4, True)
    raw = gguf.quants.quantize(blocks.numpy(), gguf.GGMLQuantizationType.Q4_0)
    d = raw[:, :2].copy().view(np.float16).astype(np.float32)  # fp16 scale as stored
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_0).reshape(512, 32) / d
    ours_codes = (ours / (extreme / -8)).numpy()
    mask = _away_from_ties((blocks / (extreme / -8)).numpy() + 8.0)
    assert mask.mean() > 0.99
    np.testing.assert_allclose(ours_codes[mask], theirs[mask], atol=1e-3)


def test_midrise_grid_is_banners_levels():
    weight = torch.tensor([[-1.0, -0.2, 0.0, 0.3, 2.0]])
    low, high, _ = clip_range(weight, "rtn", 3, True, grid="midrise")
    out = fake_quantize(weight, low, high, 3, True, grid="midrise")
    assert out[0, -1] == pytest.approx(2.0)  # levels -2 + k * 4/7, k = 0..7: no zero level
    assert out[0, 0] == pytest.approx(-2.0 + 2 * 4 / 7)
    assert out[0, 2] != 0.0


def test_empty_range_rows_are_unchanged():
    weight = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    for symmetric in (True, False):
        low, high, _ = clip_range(weight, "rtn", 4, symmetric)
        out = fake_quantize(weight, low, high, 4, symmetric)
        assert torch.equal(out[0], weight[0]) and torch.isfinite(out).all()


def test_nonfinite_weights_are_reported_not_raised():
    weight = torch.tensor([[1.0, float("nan"), 2.0], [1.0, 2.0, 3.0]])
    stats = weight_stats(weight)
    assert stats["nonfinite"] == 1
    low, high, _ = clip_range(weight, "rtn", 4, True)
    out = fake_quantize(weight, low, high, 4, True)
    assert torch.isfinite(out[1]).all()


@pytest.mark.parametrize("grid", ["int", "midrise"])
@pytest.mark.parametrize("prior", ["gauss", "laplace"])
@pytest.mark.parametrize("bits", [3, 4, 6])
def test_mse_search_lands_on_analytic_optimum(prior, bits, grid):
    g = torch.Generator().manual_seed(7)
    if prior == "gauss":
        x, scale = torch.randn(1, 10**6, generator=g), 1.0
    else:
        u = torch.rand(1, 10**6, generator=g) - 0.5
        x, scale = -torch.sign(u) * torch.log1p(-2 * u.abs()), 1.0  # Laplace(0, 1) by inversion
    alpha = float(mse_clip_ratio(x, bits, True, grid=grid) * x.abs().max()) / scale
    # exact optimum of this grid's expected error (numpy integration, not fake_quantize)
    assert alpha == pytest.approx(grid_optimal_alpha(bits, prior, grid), rel=0.02)
    if bits >= 4:  # Banner's expression with this grid's step count approximates it
        assert alpha == pytest.approx(aciq_constant(bits, prior, grid_steps(bits, True, grid)), rel=0.06)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [3, 4])
def test_mse_error_is_the_brute_force_minimum(bits, symmetric):
    """method=mse's error is within 0.2 % of the minimum over 2000 clip ratios, each scored with
    the AWQ reference quantizer written above, and below rtn's (r = 1) on Laplace weights."""
    g = torch.Generator().manual_seed(bits)
    u = torch.rand(8, 256, generator=g, dtype=torch.float64) - 0.5
    weight = (-torch.sign(u) * torch.log1p(-2 * u.abs())).float()
    low, high, info = clip_range(weight, "mse", bits, symmetric)
    found = (fake_quantize(weight, low, high, bits, symmetric) - weight).square().sum(1)
    for row, err in zip(weight, found):
        lo, hi = float(row.min()), float(row.max())
        candidates = []
        for r in np.linspace(0.0005, 1.0, 2000):
            clipped = row.clamp(r * (-max(-lo, hi) if symmetric else lo), r * (max(-lo, hi) if symmetric else hi))
            # clamping to the clip range first is how the AWQ reference takes a clip ratio
            ref = awq_pseudo_quantize(clipped[None], bits, zero_point=not symmetric)[0]
            candidates.append(float((ref - row).square().sum()))
        assert float(err) <= min(candidates) * 1.002
        assert float(err) < 0.99 * candidates[-1]  # rtn: r = 1, clipping helps on Laplace tails
    assert float(info["ratio"].max()) < 1.0


def test_aciq_auto_picks_prior_by_kurtosis():
    g = torch.Generator().manual_seed(3)
    gauss = torch.randn(1, 4096, generator=g)
    u = torch.rand(1, 4096, generator=g) - 0.5
    laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
    _, _, info = clip_range(torch.cat([gauss, laplace]), "aciq", 4, True, "auto")
    assert info["laplace"][:, 0].tolist() == [False, True]


def test_mask_excludes_kept_weights_from_the_range():
    weight = torch.tensor([[0.1, -0.2, 0.3, 10.0]])
    valid = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    _, high, _ = clip_range(weight, "rtn", 4, True, valid=valid)
    assert float(high) == pytest.approx(0.3)


def test_top_fraction_mask_counts():
    scores = torch.arange(200.0).reshape(10, 20)
    mask = top_fraction_mask(scores, 5.0)
    assert int(mask.sum()) == 10 and bool(mask.reshape(-1)[-10:].all())
    assert top_fraction_mask(scores, 0.1) is None  # round(0.2) == 0
    assert bool(top_fraction_mask(scores, 100.0).all())


def test_weight_stats_against_numpy_formula():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 40, generator=g).double()
    x = w.numpy().ravel()
    m = x.mean()
    kurt = ((x - m) ** 4).mean() / ((x - m) ** 2).mean() ** 2 - 3
    stats = weight_stats(w.float())
    assert stats["kurtosis"] == pytest.approx(kurt, abs=1e-4)
    assert stats["sigma"] == pytest.approx(x.std(), rel=1e-5)


def test_group_size_must_divide_input_dim():
    with pytest.raises(ValueError, match="group_size"):
        to_blocks(torch.zeros(4, 10), "group", 4)


def _laplace(shape, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(*shape, generator=g) - 0.5
    return -torch.sign(u) * torch.log1p(-2 * u.abs())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [3, 4])
def test_aciq_clip_per_block_is_c_times_sigma_or_b_never_wider_than_data(bits, symmetric):
    """high == c_b * sigma (Gaussian) / c_b * b (Laplace), about 0 or the block mean (numpy
    moments here), capped by the data; c_b is the grid's optimum (checked against sampling above)."""
    weight = _laplace((8, 4096), seed=bits) * torch.linspace(0.5, 2.0, 8)[:, None] + (0.0 if symmetric else 0.3)
    weight[0, :8] = 0.0
    x = weight.double().numpy()
    center = np.zeros((8, 1)) if symmetric else x.mean(1, keepdims=True)
    shape = "int" if symmetric else "midrise"
    for prior, spread in (("gauss", np.sqrt(((x - center) ** 2).mean(1, keepdims=True))),
                          ("laplace", np.abs(x - center).mean(1, keepdims=True))):
        low, high, _ = clip_range(weight, "aciq", bits, symmetric, prior)
        alpha = grid_optimal_alpha(bits, prior, shape) * spread
        if symmetric:
            expected_high = np.minimum(alpha, np.abs(x).max(1, keepdims=True))
            np.testing.assert_allclose(high.numpy(), expected_high, rtol=1e-5)
            np.testing.assert_allclose(low.numpy(), -expected_high, rtol=1e-5)
        else:
            np.testing.assert_allclose(high.numpy(), np.minimum(center + alpha, x.max(1, keepdims=True)), rtol=1e-5)
            np.testing.assert_allclose(low.numpy(), np.maximum(center - alpha, np.minimum(x.min(1, keepdims=True), 0)),
                                       rtol=1e-5)
        assert bool((high < weight.abs().amax(1, keepdim=True)).all())  # heavy tails: it really clips


def test_aciq_beats_rtn_on_heavy_tailed_weights_at_3_bits():
    weight = _laplace((64, 1024), seed=5)
    errors = {}
    for method, clip in (("rtn", "none"), ("aciq", "laplace"), ("aciq", "auto")):
        low, high, _ = clip_range(weight, method, 3, True, clip)
        errors[(method, clip)] = float((fake_quantize(weight, low, high, 3, True) - weight).square().mean())
    assert errors[("aciq", "laplace")] < 0.7 * errors[("rtn", "none")]
    assert errors[("aciq", "auto")] < 0.7 * errors[("rtn", "none")]


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
