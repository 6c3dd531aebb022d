"""Tier-1 checks of the pure quantization functions against theory (hand-made tensors)."""

import gguf
import numpy as np
import pytest
import torch

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
