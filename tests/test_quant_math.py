"""Tier-1 checks of the pure quantization functions against theory (hand-made tensors)."""

import pytest
import torch

from qd_models.quant import (
    aciq_constant,
    clip_range,
    expected_mse,
    fake_quantize,
    grid_optimal_alpha,
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
        assert row_out.unique().numel() <= 2**bits
        step = (hi - lo) / (2**bits - 1)
        inside = (row_in >= lo) & (row_in <= hi)
        assert (row_out[inside] - row_in[inside]).abs().max() <= step / 2 * (1 + 1e-5)
        # the integer zero point (asymmetric) may shift the grid by < step/2 past the range
        margin = 1e-6 if symmetric else float(step) / 2 + 1e-6
        assert row_out.min() >= lo - margin and row_out.max() <= hi + margin


def test_symmetric_rtn_keeps_absmax_exactly_and_asymmetric_keeps_zero():
    weight = torch.tensor([[-1.0, -0.2, 0.0, 0.3, 2.0]])
    low, high, _ = clip_range(weight, "rtn", 3, True)
    out = fake_quantize(weight, low, high, 3, True)
    assert out[0, -1] == pytest.approx(2.0)  # levels -2 + k * 4/7, k = 0..7
    assert out[0, 0] == pytest.approx(-2.0 + 2 * 4 / 7)
    low, high, _ = clip_range(weight, "rtn", 3, False)
    out = fake_quantize(weight, low, high, 3, False)
    assert out[0, 2] == 0.0


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


@pytest.mark.parametrize("prior", ["gauss", "laplace"])
@pytest.mark.parametrize("bits", [3, 4, 6])
def test_mse_search_lands_on_analytic_optimum(prior, bits):
    g = torch.Generator().manual_seed(7)
    if prior == "gauss":
        x, scale = torch.randn(1, 10**6, generator=g), 1.0
    else:
        u = torch.rand(1, 10**6, generator=g) - 0.5
        x, scale = -torch.sign(u) * torch.log1p(-2 * u.abs()), 1.0  # Laplace(0, 1) by inversion
    alpha = float(mse_clip_ratio(x, bits, True) * x.abs().max()) / scale
    # exact optimum of this grid's expected error; the paper's approximation differs at low bits
    assert alpha == pytest.approx(grid_optimal_alpha(bits, prior), rel=0.02)
    if bits >= 4:
        assert alpha == pytest.approx(aciq_constant(bits, prior), rel=0.04)


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
