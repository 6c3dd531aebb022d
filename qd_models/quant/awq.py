"""AWQ (Lin et al., "AWQ: Activation-aware Weight Quantization", MLSys 2024): pure tensor maths.

For a linear layer ``W`` ``[out, in]`` with inputs x, per-input-channel scales
s = mean|x|^alpha (normalised by sqrt(max s * min s), clamped at 1e-4, as llm-awq's
``auto_scale``) protect the salient input channels: the weight is fake-quantized as

    W' = Q(W diag(s)) diag(s)^-1

(the scales folded back into W, so the model stays a plain HF model). alpha = k / n_grid,
k = 0..n_grid-1 (llm-awq's grid; alpha = 0 is s = 1, i.e. round-to-nearest), is chosen to
minimise the layer's output error on the calibration inputs, E||(W' - W) x||^2 =
tr(E H E^T) with H = E[x x^T]. llm-awq measures the error at the output of the module that
consumes the layer group (e.g. the attention block for q/k/v, which share one s so that s can
be folded into the preceding norm). :func:`awq_quantize` gives every linear layer its own s and
its own output error (``awq_scope=linear``: s is then not foldable into a shared norm, and the
report charges 16 bits per input channel for it); :func:`awq_quantize_shared` gives a group of
linears reading the same input one s (``awq_scope=shared``, see :mod:`qd_models.awq_scope`).

Optional clip search (llm-awq ``auto_clip``): on the scaled weight W diag(s) with the scaled
inputs (H_s = diag(s)^-1 H diag(s)^-1), every block's range is shrunk by the ratio
r = 1 - i/20, i = 0..9, minimising the block's output error (a ``group`` block sees only its own
diagonal block of H_s, as llm-awq's per-group error; ``channel``/``tensor`` blocks see all of H_s).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .core import fake_quantize, full_range, to_blocks

CLIP_GRID = 20
CLIP_MAX_SHRINK = 0.5
"""llm-awq ``auto_clip``: ratios 1 - i / CLIP_GRID for i < CLIP_MAX_SHRINK * CLIP_GRID."""
MIN_SCALE = 1e-4


def awq_scales(mean_abs: Tensor, alpha: float) -> Tensor:
    """Per-input-channel scales ``[in]`` from mean |x| ``[in]`` (module doc)."""
    scales = mean_abs.pow(alpha).clamp_min(MIN_SCALE)
    return scales / (scales.max() * scales.min()).sqrt()


def block_output_errors(error: Tensor, hessian: Tensor, granularity: str, group_size: int | None = None) -> Tensor:
    """Per-block output error of an error ``[out, in]`` under H ``[in, in]``, ``[n_blocks, 1]``
    in :func:`qd_models.quant.core.to_blocks` order (``group``: diagonal blocks of H only)."""
    if granularity == "group":
        out_dim, in_dim = error.shape
        groups = in_dim // group_size
        diagonal = torch.stack([hessian[g * group_size : (g + 1) * group_size, g * group_size : (g + 1) * group_size] for g in range(groups)])
        per = torch.einsum("ogk,gkl,ogl->og", error.view(out_dim, groups, group_size), diagonal, error.view(out_dim, groups, group_size))
        return per.reshape(-1, 1)
    rows = ((error @ hessian) * error).sum(1, keepdim=True)
    return rows.sum(0, keepdim=True) if granularity == "tensor" else rows


def _quantize(weight: Tensor, bits: int, symmetric: bool, granularity: str, group_size: int | None, grid: str,
              ratio: Tensor | None = None) -> Tensor:
    blocks = to_blocks(weight.contiguous(), granularity, group_size)
    low, high, _ = full_range(blocks, bits, symmetric, "none", None, grid)
    if ratio is not None:
        low, high = low * ratio, high * ratio
    return fake_quantize(blocks, low, high, bits, symmetric, grid).view_as(weight)


def awq_quantize(
    weight: Tensor,
    hessian: Tensor,
    mean_abs: Tensor,
    bits: int,
    symmetric: bool,
    granularity: str,
    group_size: int | None = None,
    grid: str = "int",
    n_grid: int = 20,
    clip: bool = False,
    alphas: list[float] | None = None,
) -> tuple[Tensor, dict]:
    """AWQ fake-quantized ``weight`` ``[out, in]`` from H = E[x x^T] ``[in, in]`` and mean |x|
    ``[in]`` (module doc). ``alphas``: the exponents tried (default k / n_grid). ``info``:
    ``alpha`` chosen, ``output_error`` at it, ``rtn_output_error`` (alpha = 0, no clip),
    ``scales`` ``[in]``, ``clip_ratio`` ``[n_blocks, 1]`` (with ``clip``)."""
    quantized, infos = awq_quantize_shared([weight], hessian, mean_abs, bits, symmetric, granularity, group_size, grid, n_grid,
                                           clip, alphas)
    return quantized[0], infos[0]


def awq_quantize_shared(
    weights: list[Tensor],
    hessian: Tensor,
    mean_abs: Tensor,
    bits: int,
    symmetric: bool,
    granularity: str,
    group_size: int | None = None,
    grid: str = "int",
    n_grid: int = 20,
    clip: bool = False,
    alphas: list[float] | None = None,
) -> tuple[list[Tensor], list[dict]]:
    """AWQ with one scale vector for linears that read the same input (q/k/v, gate/up: llm-awq's
    ``auto_scale`` groups): ``weights`` ``[out_i, in]`` share H ``[in, in]`` and mean |x| ``[in]``;
    alpha minimises the sum over the group of each linear's output error
    tr(E_i H E_i^T) (llm-awq measures the output of the module that consumes the group, e.g. the
    attention block; the sum of the linears' errors is its second-order, nonlinearity-free
    counterpart). The clip search (``clip``) stays per linear, as ``auto_clip``. Returns the
    quantized weights and one ``info`` per linear (as :func:`awq_quantize`: the group's ``alpha``
    and ``scales``, the linear's own ``output_error``/``rtn_output_error``)."""
    device, dtype = weights[0].device, weights[0].dtype
    H = hessian.to(dtype=dtype, device=device)
    mean_abs = mean_abs.to(dtype=dtype, device=device)
    alphas = [k / n_grid for k in range(n_grid)] if alphas is None else alphas

    def errors_of(quantized: list[Tensor]) -> list[float]:
        return [float(((q - w) @ H * (q - w)).sum()) for q, w in zip(quantized, weights)]

    best = None
    rtn_errors = None
    for alpha in alphas:
        scales = awq_scales(mean_abs, alpha)
        quantized = [_quantize(w * scales, bits, symmetric, granularity, group_size, grid) / scales for w in weights]
        errors = errors_of(quantized)
        if alpha == 0:
            rtn_errors = errors
        if best is None or sum(errors) < sum(best[0]):
            best = (errors, alpha, scales, quantized)
    errors, alpha, scales, quantized = best
    infos = [{"alpha": alpha, "output_error": error, "rtn_output_error": None if rtn_errors is None else rtn_errors[i], "scales": scales}
             for i, error in enumerate(errors)]
    if clip:
        H_scaled = H / scales.unsqueeze(0) / scales.unsqueeze(1)
        ratios = [1.0 - i / CLIP_GRID for i in range(int(CLIP_MAX_SHRINK * CLIP_GRID))]
        for i, weight in enumerate(weights):
            scaled = weight * scales
            block_errors = []
            for r in ratios:
                q = _quantize(scaled, bits, symmetric, granularity, group_size, grid, torch.tensor(r, dtype=dtype, device=device))
                block_errors.append(block_output_errors(q - scaled, H_scaled, granularity, group_size))
            best_index = torch.stack(block_errors).argmin(0)  # [n_blocks, 1], first (largest ratio) on ties
            ratio = torch.tensor(ratios, dtype=dtype, device=device)[best_index]
            quantized[i] = _quantize(scaled, bits, symmetric, granularity, group_size, grid, ratio) / scales
            infos[i]["clip_ratio"] = ratio
            infos[i]["output_error"] = float(((quantized[i] - weight) @ H * (quantized[i] - weight)).sum())
    return quantized, infos
