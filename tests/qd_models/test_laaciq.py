"""LA-ACIQ maths (qd_models.quant.weighted) against theory and independent computations.

qd_models.quant.weighted against expectations written here: a numpy reference quantizer (the
INT grid of ``awq_pseudo_quantize`` in test_quant_core.py, and the midrise grid), brute force
over clip ratios, hand-computed exponentiated-gradient steps and exact error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from qd_models.methods import clip_range
from qd_models.quant import fake_quantize, mse_clip_ratio, to_blocks
from qd_models.quant.weighted import (
    activation_keep_scores,
    activation_weighted_kurtosis,
    block_errors,
    language_errors,
    minimax_language_weights,
    mode_weights,
    normalise_second_moments,
    weighted_clip_range,
)


def _laplace(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(shape, generator=generator) - 0.5
    return -uniform.sign() * torch.log1p(-2 * uniform.abs())


def _language_inputs(in_dim: int, n_langs: int, seed: int) -> torch.Tensor:
    """[in, L] second moments: a shared log-normal profile times a per-language profile with
    a few language-specific hot channels (as in multilingual models)."""
    generator = torch.Generator().manual_seed(seed)
    shared = torch.exp(torch.randn(in_dim, 1, generator=generator))
    own = torch.exp(1.5 * torch.randn(in_dim, n_langs, generator=generator))
    return shared * own


def _quantize(weight, inputs, mode, bits, symmetric, granularity, group_size=None):
    blocks = to_blocks(weight, granularity, group_size)
    low, high, info = weighted_clip_range(blocks, weight.shape[0], inputs, mode, bits, symmetric, granularity, group_size)
    return fake_quantize(blocks, low, high, bits, symmetric).view_as(weight), info


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity,group_size", [("channel", None), ("group", 16), ("tensor", None)])
def test_uniform_weights_reproduce_mse_search(symmetric, granularity, group_size):
    """With s = 1 the weighted objective is the plain squared error: same grid, same ratios."""
    weight = _laplace((24, 64), seed=1)
    blocks = to_blocks(weight, granularity, group_size)
    _, _, info = weighted_clip_range(blocks, 24, torch.ones(64, 1), "mean", 3, symmetric, granularity, group_size)
    low, high, plain = clip_range(blocks, "mse", 3, symmetric)
    # summation order differs (matmul vs sum), so near-ties may resolve differently inside
    # the final golden-section bracket (~3e-4 wide); the errors reached must agree
    torch.testing.assert_close(info["ratio"], plain["ratio"], rtol=0, atol=1e-3)
    plain_error = (fake_quantize(blocks, low, high, 3, symmetric) - blocks).square().sum(1)
    torch.testing.assert_close(info["errors"][:, 0], plain_error, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("granularity,group_size", [("channel", None), ("group", 8), ("tensor", None)])
def test_block_errors_match_explicit_loops(granularity, group_size):
    generator = torch.Generator().manual_seed(0)
    sq_error, weights = torch.rand(6, 32, generator=generator), torch.rand(32, 3, generator=generator)
    got = block_errors(sq_error, weights, granularity, group_size)
    width = {"channel": 32, "group": group_size, "tensor": 6 * 32}[granularity]
    rows = []
    for block, cols in zip(sq_error.reshape(-1, width), torch.arange(6 * 32).reshape(-1, width) % 32):
        rows.append([float(sum(block[k] * weights[cols[k], lang] for k in range(width))) for lang in range(3)])
    torch.testing.assert_close(got, torch.tensor(rows), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [3, 4])
def test_weighted_choice_beats_mse_on_known_activation_covariance(bits):
    """Inputs x ~ N(0, diag(s)): E||(W - Q)x||^2 = sum_ij s_j (W_ij - Q_ij)^2 exactly. The
    weighted choice must beat the unweighted MSE choice on it (exact and Monte-Carlo)."""
    out_dim, in_dim = 32, 128
    weight = _laplace((out_dim, in_dim), seed=2)
    weight[:, :8] *= 6.0  # outlier weights on channels ...
    variance = torch.full((in_dim,), 1.0)
    variance[:8] = 1e-3  # ... that see (almost) no activation
    variance[8:16] = 50.0
    inputs, _ = normalise_second_moments(variance.unsqueeze(1))
    weighted, _ = _quantize(weight, inputs, "target", bits, True, "channel")
    plain_ratio = mse_clip_ratio(weight, bits, True)
    absmax = weight.abs().amax(1, keepdim=True)
    plain = fake_quantize(weight, -plain_ratio * absmax, plain_ratio * absmax, bits, True)

    def exact(q):
        return float(((q - weight).square() * variance).sum())

    def monte_carlo(q, n=20000):
        x = torch.randn(n, in_dim, generator=torch.Generator().manual_seed(3)) * variance.sqrt()
        return float(((x @ (q - weight).t()).square().sum(1)).mean())

    assert exact(weighted) < 0.8 * exact(plain)
    assert monte_carlo(weighted) < 0.8 * monte_carlo(plain)
    assert monte_carlo(plain) == pytest.approx(exact(plain), rel=0.05)  # the theory holds


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity,group_size", [("channel", None), ("group", 32), ("tensor", None)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minimax_worst_language_never_above_mean(symmetric, granularity, group_size, seed):
    """Layer-level relative weighted error per language (computed independently from the
    quantized weight by ``language_errors``): minimax's worst language <= mean's.

    True by construction (minimax keeps the ``mean`` ratios when its own have the larger worst
    language): a regression test, not evidence. The informative checks are
    ``test_minimax_helps_the_language_mean_neglects`` (a strict 5 % gain) and
    ``test_minimax_language_weights_find_the_enumerated_optimum`` (hand-enumerated optimum)."""
    weight = _laplace((48, 128), seed=10 + seed)
    inputs, _ = normalise_second_moments(_language_inputs(128, 4, seed))
    mean_q, _ = _quantize(weight, inputs, "mean", 3, symmetric, granularity, group_size)
    minimax_q, _ = _quantize(weight, inputs, "minimax", 3, symmetric, granularity, group_size)
    mean_errors, minimax_errors = language_errors(weight, mean_q, inputs), language_errors(weight, minimax_q, inputs)
    assert float(minimax_errors.max()) <= float(mean_errors.max()) * (1 + 1e-6)
    # mean minimises the average; minimax may trade some of it for the worst language
    assert float(mean_errors.mean()) <= float(minimax_errors.mean()) * (1 + 1e-2)


def test_minimax_helps_the_language_mean_neglects():
    """Languages 0-2 are hot on channels 0-7, language 3 on channels 56-63, which hold 8x
    outlier weights. mean's objective (absolute errors) is dominated by language 3's outliers,
    so the clip is wide and languages 0-2 get a large *relative* error; minimax must lower the
    worst language's relative error."""
    in_dim = 64
    weight = _laplace((32, in_dim), seed=20)
    weight[:, 56:] *= 8.0
    inputs = torch.ones(in_dim, 4)
    inputs[:8, :3] = 40.0
    inputs[56:, 3] = 40.0
    inputs, _ = normalise_second_moments(inputs)
    mean_errors = language_errors(weight, _quantize(weight, inputs, "mean", 3, True, "channel")[0], inputs)
    minimax_errors = language_errors(weight, _quantize(weight, inputs, "minimax", 3, True, "channel")[0], inputs)
    assert int(mean_errors.argmax()) in (0, 1, 2) and float(mean_errors[3]) < float(mean_errors[0])
    assert float(minimax_errors.max()) < 0.95 * float(mean_errors.max())


def test_minimax_language_weights_find_the_enumerated_optimum():
    """Two blocks, two ratios, two languages. Enumerating the four choices by hand: totals
    (0.2, 0.8), (0.5, 0.6), (1.1, 0.5), (1.4, 0.3); the best worst language is 0.6 (block 0 ->
    ratio 0, block 1 -> ratio 1), reached only for lambda_1 / lambda_0 in (1.5, 3): uniform
    weights (the mean choice) give 0.8."""
    relative = torch.tensor([
        [[0.10, 0.40], [0.10, 0.40]],  # ratio 0 for block 0, block 1
        [[1.00, 0.10], [0.40, 0.20]],  # ratio 1
    ])
    lam = minimax_language_weights(relative)
    choice = (relative @ lam).argmin(0)
    assert choice.tolist() == [0, 1]
    assert 1.5 < float(lam[1] / lam[0]) < 3.0
    totals = relative[choice, torch.arange(2)].sum(0)
    torch.testing.assert_close(totals, torch.tensor([0.5, 0.6]))


def test_target_mode_equals_mean_over_that_language_only():
    weight = _laplace((16, 64), seed=4)
    inputs, _ = normalise_second_moments(_language_inputs(64, 3, 5))
    _, target = _quantize(weight, inputs[:, 1:2], "target", 4, True, "channel")
    _, mean_one = _quantize(weight, inputs[:, 1:2], "mean", 4, True, "channel")
    torch.testing.assert_close(target["ratio"], mean_one["ratio"])
    with pytest.raises(ValueError, match="calib_mode=target"):
        _quantize(weight, inputs, "target", 4, True, "channel")
    with pytest.raises(ValueError, match="calib_mode='median'"):
        _quantize(weight, inputs, "median", 4, True, "channel")


def test_normalise_inputs_equal_weight_and_degenerate_columns():
    raw = torch.stack([torch.arange(1.0, 9.0), 1000 * torch.arange(1.0, 9.0), torch.zeros(8),
                       torch.full((8,), float("inf"))], dim=1)
    scaled, degenerate = normalise_second_moments(raw)
    torch.testing.assert_close(scaled.mean(0), torch.ones(4))
    torch.testing.assert_close(scaled[:, 0], scaled[:, 1])  # token count / scale does not matter
    assert degenerate.tolist() == [False, False, True, True]
    assert bool((scaled[:, 2:] == 1).all())


def test_language_errors_explicit_formula():
    weight = _laplace((8, 16), seed=6)
    quantized = weight + 0.01 * _laplace((8, 16), seed=7)
    inputs = _language_inputs(16, 2, 8)
    got = language_errors(weight, quantized, inputs)
    for lang in range(2):
        s = inputs[:, lang].numpy()
        w, q = weight.numpy(), quantized.numpy()
        expected = (s * (w - q) ** 2).sum() / (s * w**2).sum()
        assert float(got[lang]) == pytest.approx(float(expected), rel=1e-5)


def test_activation_weighted_kurtosis_is_kurtosis_of_repeated_columns():
    """Integer weights s_j: the weighted distribution is the sample with column j repeated
    s_j times, so scipy's population excess kurtosis of that sample is the answer."""
    weight = _laplace((10, 12), seed=9)
    counts = torch.tensor([1, 2, 3, 1, 5, 1, 1, 4, 1, 2, 7, 1], dtype=torch.float32)
    inputs = torch.stack([torch.ones(12), counts], dim=1)
    got = activation_weighted_kurtosis(weight, inputs)
    plain = stats.kurtosis(weight.numpy().ravel(), fisher=True, bias=True)
    repeated = np.repeat(weight.numpy(), counts.int().numpy(), axis=1).ravel()
    assert float(got[0]) == pytest.approx(plain, rel=1e-4)
    assert float(got[1]) == pytest.approx(stats.kurtosis(repeated, fisher=True, bias=True), rel=1e-4)


def test_activation_keep_scores_prefer_active_channels():
    weight = torch.tensor([[10.0, 1.0], [0.5, 2.0]])
    scores = activation_keep_scores(weight, torch.tensor([0.0, 4.0]))
    torch.testing.assert_close(scores, torch.tensor([[0.0, 2.0], [0.0, 4.0]]))


def _reference_quantize(w: np.ndarray, low: np.ndarray, high: np.ndarray, bits: int, symmetric: bool, grid: str) -> np.ndarray:
    """Quantize-dequantize rows of ``w`` ``[n, len]`` to ``[low, high]`` ``[n, 1]`` (float64).
    Symmetric INT: levels k * alpha / (2^(b-1) - 1), k in [-2^(b-1), 2^(b-1) - 1]; symmetric
    midrise: 2^b levels (k - (2^b - 1) / 2) * 2 alpha / (2^b - 1); asymmetric: 2^b - 1 steps
    across [low, high] with an integer zero point."""
    top = 2**bits - 1
    if symmetric and grid == "int":
        half = 2 ** (bits - 1)
        step = high / (half - 1)
        return np.clip(np.round(w / step), -half, half - 1) * step
    if symmetric:
        step = 2 * high / top
        return (np.clip(np.round(w / step + top / 2), 0, top) - top / 2) * step
    step = (high - low) / top
    zero = np.round(-low / step)
    return (np.clip(np.round(w / step) + zero, 0, top) - zero) * step


def _block_layout(weight: np.ndarray, granularity: str, group_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(values, input-column index) of every block, ``[n_blocks, block_len]`` each, row-major."""
    out_dim, in_dim = weight.shape
    length = {"channel": in_dim, "group": group_size, "tensor": out_dim * in_dim}[granularity]
    columns = np.tile(np.arange(in_dim), out_dim)
    return weight.reshape(-1, length), columns.reshape(-1, length)


def _reference_errors(weight, moments, ratio, bits, symmetric, granularity, group_size=None, grid="int", valid=None):
    """Per-block, per-language weighted squared error ``[n_blocks, L]`` of clipping every block
    at ``ratio`` ``[n_blocks]`` times its (valid) range; numpy float64."""
    values, columns = _block_layout(np.asarray(weight, dtype=np.float64), granularity, group_size)
    keep = np.ones_like(values) if valid is None else np.asarray(valid, dtype=np.float64).reshape(values.shape)
    low = np.minimum((values * keep).min(1, keepdims=True), 0.0)
    high = np.maximum((values * keep).max(1, keepdims=True), 0.0)
    if symmetric:
        high = np.maximum(-low, high)
        low = -high
    r = np.asarray(ratio, dtype=np.float64).reshape(-1, 1)
    err = (_reference_quantize(values, r * low, r * high, bits, symmetric, grid) - values) ** 2 * keep
    return np.einsum("bk,bkl->bl", err, np.asarray(moments, dtype=np.float64)[columns])


def _heavy_tailed(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) ** 3


def _moments(in_dim, n_langs, seed):
    raw = torch.exp(2 * torch.randn(in_dim, n_langs, generator=torch.Generator().manual_seed(seed)))
    return normalise_second_moments(raw)[0]


FINE = np.arange(1, 2001) / 2000


@pytest.mark.parametrize("mode", ["target", "mean"])
@pytest.mark.parametrize("symmetric,grid", [(True, "int"), (True, "midrise"), (False, "int")])
@pytest.mark.parametrize("granularity,group_size", [("channel", None), ("group", 16), ("tensor", None)])
def test_ratio_is_the_brute_force_minimum_and_errors_match_the_reference(mode, symmetric, grid, granularity, group_size):
    """Every block's ratio is at least as good as the best of r = k / 20 and within 2 % of the
    minimum over 2000 ratios of its mean-of-languages objective (reference quantizer), and
    ``errors`` are the reference per-language errors at that ratio."""
    weight = _heavy_tailed((4, 64), seed=1)
    moments = _moments(64, 1 if mode == "target" else 3, seed=2)
    blocks = to_blocks(weight, granularity, group_size)
    low, high, info = weighted_clip_range(blocks, 4, moments, mode, 3, symmetric, granularity, group_size, None, grid)
    ratio = info["ratio"].double().numpy().ravel()
    errors = _reference_errors(weight, moments, ratio, 3, symmetric, granularity, group_size, grid)
    np.testing.assert_allclose(info["errors"].double().numpy(), errors, rtol=1e-4, atol=1e-7)
    brute = np.stack([_reference_errors(weight, moments, np.full(blocks.shape[0], r), 3, symmetric, granularity,
                                        group_size, grid).mean(1) for r in FINE], 1)  # [n_blocks, ratios]
    coarse = brute[:, 99::100]  # r = k / 20, the search's first grid: refining only improves on it
    assert (errors.mean(1) <= coarse.min(1) * (1 + 1e-5)).all()
    assert (errors.mean(1) <= brute.min(1) * 1.02).all()  # a local search: near, not at, the global minimum
    assert (errors.mean(1) < brute[:, -1] * 0.95).any()  # clipping matters here: r = 1 is not optimal


@pytest.mark.parametrize("symmetric", [True, False])
def test_range_alpha_and_sigma_by_hand(symmetric):
    """``low, high`` = ratio times the block's range ([-absmax, absmax] when symmetric),
    ``alpha`` = (high - low) / 2, ``sigma`` = RMS about 0 (symmetric) or the population std."""
    weight = _heavy_tailed((5, 12), seed=3) + 0.5
    blocks = to_blocks(weight, "channel")
    low, high, info = weighted_clip_range(blocks, 5, _moments(12, 2, seed=4), "mean", 3, symmetric, "channel")
    w = weight.double().numpy()
    ratio = info["ratio"].double().numpy()
    if symmetric:
        absmax = np.abs(w).max(1, keepdims=True)
        expected_low, expected_high = -ratio * absmax, ratio * absmax
        sigma = np.sqrt((w**2).mean(1, keepdims=True))
    else:
        expected_low, expected_high = ratio * np.minimum(w.min(1, keepdims=True), 0), ratio * np.maximum(w.max(1, keepdims=True), 0)
        sigma = w.std(1, keepdims=True)
    np.testing.assert_allclose(low.double().numpy(), expected_low, rtol=1e-6)
    np.testing.assert_allclose(high.double().numpy(), expected_high, rtol=1e-6)
    np.testing.assert_allclose(info["alpha"].double().numpy(), (expected_high - expected_low) / 2, rtol=1e-6)
    np.testing.assert_allclose(info["sigma"].double().numpy(), sigma, rtol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "minimax"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_entries_kept_in_full_precision_are_left_out(mode, symmetric):
    """``valid = 0`` entries (kept in original precision) hold 100x outliers: they must not
    widen the range, enter ``sigma`` or count in ``errors``."""
    weight = _heavy_tailed((6, 16), seed=5)
    valid = torch.ones(6, 16)
    valid[torch.arange(6), torch.arange(6) * 2] = 0.0
    weight[valid == 0] = 100.0
    moments = _moments(16, 2, seed=6)
    low, high, info = weighted_clip_range(to_blocks(weight, "channel"), 6, moments, mode, 3, symmetric, "channel", None, valid)
    w, keep = weight.double().numpy(), valid.numpy() == 1
    kept_values = [w[row][keep[row]] for row in range(6)]
    ratio = info["ratio"].double().numpy().ravel()
    if symmetric:
        top = np.array([np.abs(v).max() for v in kept_values])
        sigma = np.array([np.sqrt((v**2).mean()) for v in kept_values])
        np.testing.assert_allclose(low.double().numpy().ravel(), -ratio * top, rtol=1e-6)
    else:
        top = np.array([max(v.max(), 0.0) for v in kept_values])
        sigma = np.array([v.std() for v in kept_values])
    np.testing.assert_allclose(high.double().numpy().ravel(), ratio * top, rtol=1e-6)
    np.testing.assert_allclose(info["sigma"].double().numpy().ravel(), sigma, rtol=1e-5)
    expected = _reference_errors(weight, moments, ratio, 3, symmetric, "channel", valid=valid)
    np.testing.assert_allclose(info["errors"].double().numpy(), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 2])
def test_minimax_reaches_the_brute_force_worst_language_optimum(seed):
    """Three blocks, two languages: the smallest worst-language relative error
    max_l sum_b E_lb / energy_l over all 100^3 combinations of ratios k / 100 (brute force);
    minimax reaches it to 1 %, mean is at least 20 % above it (these seeds have no duality gap)."""
    weight = _heavy_tailed((3, 16), seed=seed)
    moments = _moments(16, 2, seed=seed + 10)
    w, s = weight.double().numpy(), moments.double().numpy()
    energy = (w**2).sum(0) @ s
    grid = np.arange(1, 101) / 100
    per_ratio = np.stack([_reference_errors(w, s, np.full(3, r), 3, True, "channel") for r in grid], 1)  # [3, 100, 2]
    totals = per_ratio[0][:, None, None] + per_ratio[1][None, :, None] + per_ratio[2][None, None, :]
    brute = float((totals / energy).max(-1).min())
    worst = {}
    for mode in ("mean", "minimax"):
        _, _, info = weighted_clip_range(to_blocks(weight, "channel"), 3, moments, mode, 3, True, "channel")
        worst[mode] = float((_reference_errors(w, s, info["ratio"].double().numpy(), 3, True, "channel").sum(0) / energy).max())
    assert worst["minimax"] <= brute * 1.01
    assert worst["mean"] >= brute * 1.2


@pytest.mark.parametrize("mode", ["target", "mean", "minimax"])
def test_ratios_do_not_depend_on_the_weight_scale(mode):
    """Scaling W by 2^-12 (exact in floats) scales every error and energy by 2^-24 and leaves
    every comparison, so every ratio, unchanged; energies here are far below 1."""
    weight = _heavy_tailed((8, 32), seed=7)
    moments = _moments(32, 1 if mode == "target" else 3, seed=8)
    ratios = [weighted_clip_range(to_blocks(w, "channel"), 8, moments, mode, 3, True, "channel")[2]["ratio"]
              for w in (weight, weight * 2.0**-12)]
    assert float(((weight * 2.0**-12).square().sum(0) @ moments).max()) < 1e-3
    torch.testing.assert_close(ratios[1], ratios[0], rtol=0, atol=0)


def test_minimax_with_one_language_is_mean():
    """With L = 1 the worst language is the only one: minimax's ratios are mean's (= target's)."""
    weight = _heavy_tailed((8, 32), seed=9)
    moments = _moments(32, 1, seed=10)
    ratios = {mode: weighted_clip_range(to_blocks(weight, "channel"), 8, moments, mode, 4, False, "channel")[2]["ratio"]
              for mode in ("target", "mean", "minimax")}
    torch.testing.assert_close(ratios["mean"], ratios["target"], rtol=0, atol=0)
    torch.testing.assert_close(ratios["minimax"], ratios["mean"], rtol=0, atol=1e-3)


def test_mean_mode_equals_target_on_the_mean_column():
    """``mean`` minimises (1/L) sum_l E_lb: the single-language objective with weights mean_l s_l."""
    weight = _heavy_tailed((8, 32), seed=11)
    moments = _moments(32, 4, seed=12)
    column = torch.from_numpy(moments.double().numpy().mean(1, keepdims=True)).float()
    blocks = to_blocks(weight, "group", 8)
    mean = weighted_clip_range(blocks, 8, moments, "mean", 3, True, "group", 8)[2]["ratio"]
    target = weighted_clip_range(blocks, 8, column, "target", 3, True, "group", 8)[2]["ratio"]
    torch.testing.assert_close(mean, target, rtol=0, atol=1e-3)


def test_error_messages():
    blocks, moments = torch.ones(2, 4), torch.ones(4, 2)
    with pytest.raises(ValueError) as unknown_mode:
        weighted_clip_range(blocks, 2, moments, "median", 4, True, "channel")
    assert str(unknown_mode.value) == "calib_mode='median' is not allowed; allowed: target, mean, minimax"
    with pytest.raises(ValueError) as target_needs_one:
        weighted_clip_range(blocks, 2, moments, "target", 4, True, "channel")
    assert str(target_needs_one.value) == (
        "calib_mode=target needs exactly one calibration language, got 2; allowed: calib_langs=<one language>")
    with pytest.raises(ValueError) as unknown_granularity:
        block_errors(torch.ones(2, 4), moments, "row", None)
    assert str(unknown_granularity.value) == "granularity='row' is not allowed; allowed: tensor, channel, group"


@pytest.mark.parametrize("n_langs", [1, 2])
def test_group_block_errors_by_hand(n_langs):
    """One row, two groups of two: block sums of error * weight, written out."""
    sq_error = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    weights = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])[:, :n_langs]
    expected = torch.tensor([[1 * 1 + 2 * 2, 10 * 1 + 20 * 2], [3 * 3 + 4 * 4, 30 * 3 + 40 * 4]])[:, :n_langs]
    torch.testing.assert_close(block_errors(sq_error, weights, "group", 2), expected.float())


def test_normalise_keeps_small_positive_columns():
    """A column summing to 0.4 (below 1) is rescaled, not degenerate."""
    scaled, degenerate = normalise_second_moments(torch.tensor([[0.1], [0.3]]))
    assert degenerate.tolist() == [False]
    torch.testing.assert_close(scaled, torch.tensor([[0.5], [1.5]]))


def test_mode_weights_by_hand():
    moments = torch.tensor([[1.0, 3.0], [4.0, 0.0], [2.0, 2.0]])
    torch.testing.assert_close(mode_weights(moments, "mean"), torch.tensor([2.0, 2.0, 2.0]))
    torch.testing.assert_close(mode_weights(moments, "minimax"), torch.tensor([3.0, 4.0, 2.0]))
    torch.testing.assert_close(mode_weights(moments[:, :1], "target"), torch.tensor([1.0, 4.0, 2.0]))


# --- minimax_language_weights, one block, two languages -------------------------------------
# Candidate totals (language 0, language 1): A = (0.1, 1.0) is the uniform-weight choice;
# B = (0.8, 0.9) has the better worst language (0.9) and wins over A once
# lambda_1 / lambda_0 > (0.8 - 0.1) / (1.0 - 0.9) = 7; C = (0.85, 0.5) would be better still,
# but lies 4 grid steps from A (outside MINIMAX_WINDOW = 3). Every other step: (10, 10).
# Language 1 stays the worst, so each step moves log(lambda_1 / lambda_0) by
# 2 * 0.5 / sqrt(t + 1) (gradient (-1, +1) after scaling to max |g| = 1): the ratio is
# exp(1), exp(1 + 1/sqrt 2) = 5.5 (A still) and exp(1 + 1/sqrt 2 + 1/sqrt 3) = 9.8 at step 3,
# where B is first chosen; later steps keep B with the same worst language (no strict gain).
_A, _B, _C, _FAR = (0.1, 1.0), (0.8, 0.9), (0.85, 0.5), (10.0, 10.0)
_RHO_AT_STEP_3 = math.exp(1 + 1 / math.sqrt(2) + 1 / math.sqrt(3))


def _one_block(placed: dict[int, tuple[float, float]]) -> torch.Tensor:
    relative = torch.tensor([_FAR] * 10, dtype=torch.float64)
    for index, totals in placed.items():
        relative[index] = torch.tensor(totals, dtype=torch.float64)
    return relative.unsqueeze(1)  # [10 ratios, 1 block, 2 languages]


@pytest.mark.parametrize("placed", [{5: _A, 7: _B, 9: _C}, {5: _A, 2: _B, 1: _C}], ids=["above", "below"])
def test_minimax_language_weights_follow_the_hand_computed_steps(placed):
    lam = minimax_language_weights(_one_block(placed))
    expected = torch.tensor([1 / (1 + _RHO_AT_STEP_3), _RHO_AT_STEP_3 / (1 + _RHO_AT_STEP_3)], dtype=torch.float64)
    torch.testing.assert_close(lam, expected, rtol=1e-12, atol=0)


def test_minimax_language_weights_stop_at_equal_totals():
    """Uniform weights already give equal language totals: the uniform weights come back."""
    lam = minimax_language_weights(_one_block({5: (0.5, 0.5)}))
    torch.testing.assert_close(lam, torch.tensor([0.5, 0.5], dtype=torch.float64), rtol=0, atol=0)
