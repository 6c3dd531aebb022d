"""GPTQ and AWQ maths against independent references written here, and their properties."""

from __future__ import annotations

import pytest
import torch

from qd_models.quant.awq import awq_quantize
from qd_models.quant.gptq import gptq_quantize, inverse_cholesky


def rtn_int_grid(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Symmetric INT-b round-to-nearest per group, by hand (AWQ's pseudo_quantize_tensor)."""
    top = 2 ** (bits - 1)
    groups = weight.reshape(-1, group_size)
    scale = groups.abs().amax(1, keepdim=True) / (top - 1)
    return (torch.clamp(torch.round(groups / scale), -top, top - 1) * scale).view_as(weight)


def reference_gptq(weight, hessian, bits, group_size, damp):
    """Column-by-column OBQ/GPTQ from the paper in float64: quantize column i, spread its error
    with the current inverse Hessian, then remove i from the inverse (Gaussian elimination);
    group scales from the current (updated) group when its first column is reached."""
    W, H = weight.clone().double(), hessian.clone().double()
    n = W.shape[1]
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.diagonal(H).mean() * torch.eye(n, dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    Q, top = torch.zeros_like(W), 2 ** (bits - 1)
    for i in range(n):
        if i % group_size == 0:
            scale = W[:, i : i + group_size].abs().amax(1) / (top - 1)
        Q[:, i] = torch.clamp(torch.round(W[:, i] / scale), -top, top - 1) * scale
        W[:, i:] -= torch.outer((W[:, i] - Q[:, i]) / Hinv[i, i], Hinv[i, i:])
        Hinv = Hinv - torch.outer(Hinv[:, i], Hinv[i, :]) / Hinv[i, i]
    return Q


def output_error(quantized, weight, X):
    return float(((quantized - weight) @ X.T).square().sum())


@pytest.fixture
def problem():
    """W [48, 64]; X [512, 64] correlated inputs with uneven channel scales; H = X^T X / n."""
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(48, 64, generator=gen, dtype=torch.float64)
    X = torch.randn(512, 64, generator=gen, dtype=torch.float64) @ torch.randn(64, 64, generator=gen, dtype=torch.float64)
    X = X * (0.1 + 3 * torch.rand(64, generator=gen, dtype=torch.float64))
    return W, X, X.T @ X / X.shape[0]


@pytest.mark.parametrize("group_size,block_size", [(16, 128), (16, 24), (64, 16), (8, 8)])
def test_gptq_equals_column_by_column_reference(problem, group_size, block_size):
    W, _, H = problem
    H = H.clone()
    H[5, :] = H[:, 5] = 0.0  # a dead input channel
    Q, info = gptq_quantize(W, H, 4, True, "group", group_size, block_size=block_size)
    assert info["dead_columns"] == 1 and not info["cholesky_failed"] and torch.all(Q[:, 5] == 0)
    torch.testing.assert_close(Q, reference_gptq(W, H, 4, group_size, 0.01), rtol=0, atol=1e-12)


@pytest.mark.parametrize("granularity,group_size", [("group", 16), ("channel", None), ("tensor", None)])
def test_gptq_with_identity_hessian_is_round_to_nearest(problem, granularity, group_size):
    W = problem[0].float()
    Q, _ = gptq_quantize(W, torch.eye(64), 3, True, granularity, group_size)
    size = {"group": 16, "channel": 64, "tensor": W.numel()}[granularity]
    assert torch.equal(Q, rtn_int_grid(W, 3, size))


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_output_error_below_rtn(problem, act_order, symmetric):
    W, X, H = problem
    Q, info = gptq_quantize(W.float(), H.float(), 4, symmetric, "group", 16, act_order=act_order)
    assert (info["g_idx"] is not None) == act_order
    if act_order:  # every group has group_size columns
        assert torch.bincount(info["g_idx"].long()).tolist() == [16] * 4
    rtn = rtn_int_grid(W, 4, 16) if symmetric else None
    if rtn is None:  # asymmetric RTN by hand: [min, max] widened to 0, integer zero point
        g = W.reshape(-1, 16)
        low, high = g.amin(1, keepdim=True).clamp_max(0), g.amax(1, keepdim=True).clamp_min(0)
        step = (high - low) / 15
        zero = torch.round(-low / step)
        rtn = ((torch.clamp(torch.round(g / step) + zero, 0, 15) - zero) * step).view_as(W)
    assert output_error(Q.double(), W, X) < 0.7 * output_error(rtn, W, X)


def test_cholesky_fallback_increases_damping():
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    H = A @ A.T  # rank 4, and made indefinite below
    H[0, 0] = -5.0
    U, damp, retries = inverse_cholesky(H, 0.01)
    assert U is not None and retries > 0 and damp == pytest.approx(0.01 * 10**retries)
    damped = H + damp * torch.diagonal(H).mean() * torch.eye(32, dtype=H.dtype)
    torch.testing.assert_close(U.T @ U, torch.linalg.inv(damped))
    nan = torch.full((4, 4), float("nan"), dtype=torch.float64)
    W = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    Q, info = gptq_quantize(W, nan, 4, True, "channel")  # degenerate: reported, falls back to RTN
    assert info["cholesky_failed"] and torch.equal(Q, rtn_int_grid(W, 4, 4))


def reference_awq_error(W, X, bits, group_size, alpha):
    """Output error of Q(W diag(s)) diag(s)^-1 with s from mean |x| (llm-awq auto_scale)."""
    s = X.abs().mean(0).pow(alpha).clamp_min(1e-4)
    s = s / (s.max() * s.min()).sqrt()
    return output_error(rtn_int_grid(W * s, bits, group_size) / s, W, X)


def test_awq_alpha_zero_is_rtn_and_search_picks_the_reference_minimum(problem):
    W, X, H = problem
    Q0, _ = awq_quantize(W, H, X.abs().mean(0), 4, True, "group", 16, alphas=[0.0])
    assert torch.equal(Q0, rtn_int_grid(W, 4, 16))
    Q, info = awq_quantize(W, H, X.abs().mean(0), 4, True, "group", 16)
    errors = {k / 20: reference_awq_error(W, X, 4, 16, k / 20) for k in range(20)}
    best = min(errors, key=errors.get)
    assert info["alpha"] == best and info["alpha"] > 0
    assert info["output_error"] * X.shape[0] == pytest.approx(errors[best], rel=1e-9)
    assert output_error(Q, W, X) < 0.9 * output_error(rtn_int_grid(W, 4, 16), W, X)


def per_group_error(quantized, W, X, group_size):
    """Sum over (row, group) of that group's own output error ||(q - w)_g x_g||^2 (llm-awq auto_clip)."""
    total = 0.0
    for g in range(0, W.shape[1], group_size):
        total += float(((quantized - W)[:, g : g + group_size] @ X[:, g : g + group_size].T).square().sum())
    return total


def test_awq_clip_lowers_the_per_group_error(problem):
    W, X, H = problem
    mean_abs = X.abs().mean(0)
    Q0, plain = awq_quantize(W, H, mean_abs, 3, True, "group", 16)
    Q, clipped = awq_quantize(W, H, mean_abs, 3, True, "group", 16, clip=True)
    ratio = clipped["clip_ratio"]
    assert ratio.shape == (48 * 4, 1) and bool(((ratio >= 0.55 - 1e-12) & (ratio <= 1)).all()) and bool((ratio < 1).any())
    assert clipped["alpha"] == plain["alpha"]
    assert per_group_error(Q, W, X, 16) < per_group_error(Q0, W, X, 16)
    assert clipped["output_error"] * X.shape[0] == pytest.approx(output_error(Q, W, X), rel=1e-9)
