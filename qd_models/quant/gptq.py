"""GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", ICLR 2023): pure tensor maths, any device, in the weight's dtype.

A weight ``W`` ``[out, in]`` is quantized one input column at a time; the rounding error of
column i is spread over the not-yet-quantized columns through the inverse Hessian of the
layer's squared output error, H = E[x x^T] ``[in, in]`` (the paper's 2/n sum x x^T up to the
factor 2, to which damping and the result are invariant):

1. dead columns (H_ii = 0: an input that is always 0) get W[:, i] = 0 and H_ii = 1;
2. optional act-order: columns in decreasing H_ii order (the permutation is undone at the end);
3. damping: H += damp * mean(diag H) * I; U = upper Cholesky factor of H^-1
   (:func:`inverse_cholesky`: when a factorisation fails the damping is multiplied by 10 and
   retried, up to ``MAX_DAMP_RETRIES`` times; the damping used is returned);
4. for each column i: q_i = Q(w_i) on the project's grid (:func:`qd_models.quant.core.fake_quantize`),
   err_i = (w_i - q_i) / U_ii, later columns w_j -= err_i * U_ij; the updates are applied
   lazily per block of ``block_size`` columns (the paper's lazy batch updates, equal to the
   column-by-column algorithm up to float rounding).

Ranges (the round-to-nearest range :func:`qd_models.quant.core.full_range`): ``channel``/``tensor``
from W before any update (as the reference); ``group``: computed when the group's first column is
reached, from the group's current (error-updated) columns. ``block_size`` is rounded up to a
multiple of ``group_size`` so that a group never straddles two lazy blocks (the reference
``gptq.py`` reads the group from the outer W, whose columns inside the current block are stale).
With act-order, groups are runs of ``group_size`` consecutive columns in the permuted order
(the reference's ``act_order`` without ``static_groups``; storing it needs a group index per input
column, see ``info["g_idx"]``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .core import check_group_size, fake_quantize, full_range

MAX_DAMP_RETRIES = 6
"""Cholesky retries, each with 10x the damping; after that the layer falls back to
round-to-nearest (U = I, reported as ``cholesky_failed``)."""


def inverse_cholesky(hessian: Tensor, damp: float) -> tuple[Tensor | None, float, int]:
    """Upper Cholesky factor U of (H + lambda I)^-1, lambda = damp * mean(diag H), ``[in, in]``;
    returns (U or ``None`` when every retry failed, the damp fraction used, retries)."""
    mean_diag = float(torch.diagonal(hessian).mean())
    scale = mean_diag if mean_diag > 0 else 1.0
    fraction = damp
    for retry in range(MAX_DAMP_RETRIES + 1):
        damped = hessian.clone()
        damped.diagonal().add_(fraction * scale)
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if int(info) == 0 and bool(torch.isfinite(upper).all()):
                return upper, fraction, retry
        fraction *= 10.0
    return None, fraction / 10.0, MAX_DAMP_RETRIES


def _range(columns: Tensor, bits: int, symmetric: bool, grid: str) -> tuple[Tensor, Tensor]:
    low, high, _ = full_range(columns, bits, symmetric, "none", None, grid)
    return low, high


def gptq_quantize(
    weight: Tensor,
    hessian: Tensor,
    bits: int,
    symmetric: bool,
    granularity: str,
    group_size: int | None = None,
    grid: str = "int",
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
) -> tuple[Tensor, dict]:
    """GPTQ-quantized copy of ``weight`` ``[out, in]`` given ``hessian`` ``[in, in]`` (module doc);
    computed in ``weight``'s dtype on its device. ``info``: ``damp`` (fraction used),
    ``damp_retries``, ``cholesky_failed``, ``dead_columns``, ``g_idx`` (``[in]`` group of each
    column, or ``None`` when groups are contiguous)."""
    out_dim, columns = weight.shape
    if granularity == "group":
        check_group_size(group_size, columns)
    W = weight.clone()
    H = hessian.to(dtype=W.dtype, device=W.device).clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diagonal(H), descending=True, stable=True) if act_order else None
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    U, used, retries = inverse_cholesky(H, damp)
    failed = U is None
    if failed:
        U = torch.eye(columns, dtype=W.dtype, device=W.device)
    if granularity == "channel":
        low, high = _range(W, bits, symmetric, grid)
    elif granularity == "tensor":
        low, high = (t.expand(out_dim, 1) for t in _range(W.reshape(1, -1), bits, symmetric, grid))
    elif granularity != "group":
        raise ValueError(f"granularity={granularity!r} is not allowed; allowed: tensor, channel, group")
    if granularity == "group":
        block_size = -(-block_size // group_size) * group_size
    Q = torch.zeros_like(W)
    for i1 in range(0, columns, block_size):
        i2 = min(i1 + block_size, columns)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if granularity == "group" and (i1 + i) % group_size == 0:
                low, high = _range(W1[:, i : i + group_size], bits, symmetric, grid)
            w = W1[:, i : i + 1]
            q = fake_quantize(w, low, high, bits, symmetric, grid)
            Q1[:, i : i + 1] = q
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err @ U1[i : i + 1, i:]
            Err1[:, i : i + 1] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    g_idx = None
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
        if granularity == "group":
            g_idx = (torch.argsort(perm) // group_size).to(torch.int32)
    info = {"damp": used, "damp_retries": retries, "cholesky_failed": failed, "dead_columns": int(dead.sum()), "g_idx": g_idx}
    return Q, info


def output_error(error: Tensor, hessian: Tensor) -> float:
    """tr(E H E^T) = E||E x||^2 for an error ``[out, in]`` and H = E[x x^T] ``[in, in]``."""
    return float(((error @ hessian.to(error.dtype)) * error).sum())
