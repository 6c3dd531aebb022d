"""Pure tensor functions for weight-only fake quantization (quantize -> dequantize).

Shapes: a weight is oriented ``[out, in]`` (one row per output channel) and reshaped to
``blocks`` of shape ``[n_blocks, block_len]``: ``tensor`` -> ``[1, out*in]``, ``channel`` ->
``[out, in]``, ``group`` -> ``[out*in/g, g]`` (consecutive input weights of one row).
Per-block quantities (ranges, scales, ratios) have shape ``[n_blocks, 1]``. All maths runs in
float32. ``valid`` (optional, float 0/1, shape of ``blocks``) marks the weights that will be
quantized; entries with 0 (kept in original precision) are ignored by every statistic.

Grids (the error is <= Delta/2 inside the range; zero is exact except on ``midrise``):

* symmetric ``int`` (the default; AWQ's ``pseudo_quantize_tensor`` / SmoothQuant's fake quant,
  the INT-b grid of deployed formats): ``s = alpha / (2^(bits-1) - 1)``,
  ``q = clamp(round(w / s), -2^(bits-1), 2^(bits-1) - 1)``, ``w' = q * s``; 2^bits levels
  including 0, ``2^bits - 2`` steps across [-alpha, alpha] (one more level below -alpha);
* symmetric ``midrise`` (Banner et al.'s analysis grid, kept to reproduce the paper): 2^bits
  levels ``-alpha + k * Delta``, ``Delta = 2 alpha / (2^bits - 1)``, ends on +-alpha, no zero;
* asymmetric: ``[low, high]`` (always widened to contain 0), ``Delta = (high - low) / (2^bits - 1)``,
  integer zero point round(-low/Delta), so zero is exact (``grid`` does not apply).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .aciq import grid_optimal_alpha

AUTO_LAPLACE_KURTOSIS = 1.5
"""``clip=auto``: a block whose excess kurtosis exceeds this uses the Laplace prior
(Gaussian: 0, Laplace: 3; 1.5 is the midpoint), otherwise the Gaussian prior."""

GRIDS = ("int", "midrise")
"""Symmetric grids (module doc)."""

MSE_COARSE_STEPS = 20
"""MSE clip search (:func:`mse_clip_ratio`): coarse grid of clip ratios r = k/20, k = 1..20, times the block's absmax
(symmetric) or its [min, max] (asymmetric) ..."""

MSE_REFINE_STEPS = 12
"""... then golden-section search per block in [r* - 1/20, r* + 1/20] (12 steps, bracket
shrinks to 0.1 * 0.618^12 ~ 3e-4); the best ratio ever evaluated is returned."""


def check_group_size(group_size: int, in_dim: int, where: str = "") -> None:
    """One-line ``ValueError`` unless ``group_size`` divides the input dim ``in_dim`` (of layer ``where``)."""
    if in_dim % group_size:
        of = f" of {where}" if where else ""
        raise ValueError(f"group_size={group_size} does not divide the input dim {in_dim}{of}; allowed: a divisor of every quantized layer's input dim")


def to_blocks(weight: Tensor, granularity: str, group_size: int | None = None) -> Tensor:
    """``[out, in]`` -> ``[n_blocks, block_len]`` (a view of a contiguous weight)."""
    if granularity == "tensor":
        return weight.reshape(1, -1)
    if granularity == "channel":
        return weight
    if granularity == "group":
        check_group_size(group_size, weight.shape[1])
        return weight.reshape(-1, group_size)
    raise ValueError(f"granularity={granularity!r} is not allowed; allowed: tensor, channel, group")


def _count(blocks: Tensor, valid: Tensor | None) -> Tensor:
    if valid is None:
        return torch.full((blocks.shape[0], 1), float(blocks.shape[1]), dtype=blocks.dtype, device=blocks.device)
    return valid.sum(1, keepdim=True).clamp_min_(1.0)


def _masked(blocks: Tensor, valid: Tensor | None) -> Tensor:
    return blocks if valid is None else blocks * valid


def min_max(blocks: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-block (min, max) of the valid entries, widened to contain 0; ``[n, 1]`` each."""
    masked = _masked(blocks, valid)
    return masked.amin(1, keepdim=True).clamp_max_(0.0), masked.amax(1, keepdim=True).clamp_min_(0.0)


def block_moments(blocks: Tensor, valid: Tensor | None, centered: bool, kurtosis: bool) -> dict[str, Tensor]:
    """Per-block ``center``, ``sigma`` (RMS about center), ``b`` (mean |x - center|) and,
    if asked, excess ``kurtosis`` m4/m2^2 - 3; each ``[n, 1]``. ``centered=False`` uses 0."""
    count = _count(blocks, valid)
    if centered:
        center = _masked(blocks, valid).sum(1, keepdim=True) / count
        dev = _masked(blocks - center, valid)
    else:
        center = torch.zeros_like(count)
        dev = _masked(blocks, valid)
    out = {"center": center, "b": dev.abs().sum(1, keepdim=True) / count}
    sq = dev.square()
    m2 = sq.sum(1, keepdim=True) / count
    out["sigma"] = m2.sqrt()
    if kurtosis:
        m4 = sq.square_().sum(1, keepdim=True) / count
        out["kurtosis"] = m4 / m2.square() - 3.0
    return out


def grid_steps(bits: int, symmetric: bool, grid: str = "int") -> int:
    """Number of quantization steps across the clip range (``2 alpha`` or ``high - low``)."""
    if not symmetric or grid == "midrise":
        return 2**bits - 1
    if grid == "int":
        return 2**bits - 2
    raise ValueError(f"grid={grid!r} is not allowed; allowed: {', '.join(GRIDS)}")


def fake_quantize(blocks: Tensor, low: Tensor, high: Tensor, bits: int, symmetric: bool, grid: str = "int") -> Tensor:
    """Quantize then dequantize ``blocks`` ``[n, len]`` to the grid given by per-block
    ``[low, high]`` ``[n, 1]`` (symmetric uses ``alpha = high``; ``grid``: module doc).
    Blocks with an empty range come back unchanged."""
    top = 2**bits - 1
    if symmetric and grid == "int":
        half = 2 ** (bits - 1)
        step = high / (half - 1) if half > 1 else high
        out = blocks / step
        out.round_().clamp_(-half, half - 1).mul_(step)
    elif symmetric and grid == "midrise":
        step = high * (2.0 / top)
        out = blocks / step
        out.add_(top / 2).round_().clamp_(0, top).sub_(top / 2).mul_(step)
    elif symmetric:
        raise ValueError(f"grid={grid!r} is not allowed; allowed: {', '.join(GRIDS)}")
    else:
        step = (high - low) / top
        zero_point = torch.round(-low / step)
        out = blocks / step
        out.round_().add_(zero_point).clamp_(0, top).sub_(zero_point).mul_(step)
    empty = ~(step > 0).squeeze(1)
    if bool(empty.any()):
        out[empty] = blocks[empty]
    return out


def _squared_error(blocks: Tensor, low: Tensor, high: Tensor, bits: int, symmetric: bool, grid: str,
                   valid: Tensor | None) -> Tensor:
    err = fake_quantize(blocks, low, high, bits, symmetric, grid).sub_(blocks).square_()
    if valid is not None:
        err.mul_(valid)
    return err.sum(1, keepdim=True)


def coarse_ratios(n_blocks: int, like: Tensor) -> list[Tensor]:
    """The coarse grid r = k / ``MSE_COARSE_STEPS``, k = 1.., as ``[n_blocks, 1]`` tensors."""
    return [torch.full((n_blocks, 1), k / MSE_COARSE_STEPS, dtype=like.dtype, device=like.device)
            for k in range(1, MSE_COARSE_STEPS + 1)]


def search_clip_ratio(objective: Callable[[Tensor], Tensor], n_blocks: int, like: Tensor,
                      coarse: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-block ratio r in (0, 1] minimising ``objective(r [n, 1]) -> [n, 1]`` on the
    MSE clip-search grid; returns (best ratio, best objective), ``[n, 1]`` each. ``coarse``:
    the objective already evaluated on :func:`coarse_ratios`, ``[steps, n, 1]``."""
    if coarse is None:
        coarse = torch.stack([objective(ratio) for ratio in coarse_ratios(n_blocks, like)], dim=0)
    best_err, best_k = coarse.min(0)
    best = (best_k + 1).to(like.dtype) / MSE_COARSE_STEPS
    a = (best - 1.0 / MSE_COARSE_STEPS).clamp_min(1e-3)
    b = (best + 1.0 / MSE_COARSE_STEPS).clamp_max(1.0)
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = objective(c), objective(d)
    for r, f in ((c, fc), (d, fd)):
        better = f < best_err
        best, best_err = torch.where(better, r, best), torch.where(better, f, best_err)
    for _ in range(MSE_REFINE_STEPS):
        left = fc < fd
        a, b = torch.where(left, a, c), torch.where(left, d, b)
        new = torch.where(left, b - golden * (b - a), a + golden * (b - a))
        f_new = objective(new)
        c, d, fc, fd = (
            torch.where(left, new, d),
            torch.where(left, c, new),
            torch.where(left, f_new, fd),
            torch.where(left, fc, f_new),
        )
        better = f_new < best_err
        best, best_err = torch.where(better, new, best), torch.where(better, f_new, best_err)
    return best, best_err


def mse_clip_ratio(blocks: Tensor, bits: int, symmetric: bool, valid: Tensor | None = None, grid: str = "int") -> Tensor:
    """Per-block clip ratio r in (0, 1] minimising the squared error of
    ``fake_quantize(blocks, r*low, r*high)`` (see ``MSE_COARSE_STEPS``), ``[n, 1]``."""
    low, high = min_max(blocks, valid)
    if symmetric:
        high = torch.maximum(-low, high)

    def error(ratio: Tensor) -> Tensor:
        return _squared_error(blocks, ratio * low, ratio * high, bits, symmetric, grid, valid)

    best, _ = search_clip_ratio(error, blocks.shape[0], blocks)
    return best


def _symmetric_range(blocks: Tensor, valid: Tensor | None, symmetric: bool) -> tuple[Tensor, Tensor]:
    low, high = min_max(blocks, valid)
    if symmetric:
        high = torch.maximum(-low, high)
        low = -high
    return low, high


def _with_alpha(low: Tensor, high: Tensor, info: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    info["alpha"] = (high - low) / 2.0
    return low, high, info


def full_range(blocks: Tensor, bits: int, symmetric: bool, clip: str, valid: Tensor | None,
               grid: str) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Round-to-nearest range: absmax (symmetric) or [min, max], ``(low, high, info)``."""
    low, high = _symmetric_range(blocks, valid, symmetric)
    return _with_alpha(low, high, {"sigma": block_moments(blocks, valid, centered=not symmetric, kurtosis=False)["sigma"]})


def aciq_range(blocks: Tensor, bits: int, symmetric: bool, clip: str, valid: Tensor | None,
               grid: str) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """ACIQ: alpha = c_bits * sigma (``clip=gauss``) or c_bits * b (``laplace``; ``auto``: by
    kurtosis, see ``AUTO_LAPLACE_KURTOSIS``) about 0 (symmetric) or the block mean
    (asymmetric: mean +- alpha), never wider than the data; c_bits is the exact optimum of
    the expected error of the grid actually used (:func:`qd_models.quant.aciq.grid_optimal_alpha`)."""
    moments = block_moments(blocks, valid, centered=not symmetric, kurtosis=(clip == "auto"))
    info: dict[str, Tensor] = {"sigma": moments["sigma"]}
    low, high = _symmetric_range(blocks, valid, symmetric)
    shape = grid if symmetric else "midrise"  # mean +- alpha in 2^bits - 1 steps
    alpha_gauss = grid_optimal_alpha(bits, "gauss", shape) * moments["sigma"]
    alpha_laplace = grid_optimal_alpha(bits, "laplace", shape) * moments["b"]
    if clip == "gauss":
        alpha = alpha_gauss
    elif clip == "laplace":
        alpha = alpha_laplace
    elif clip == "auto":
        laplace = moments["kurtosis"] > AUTO_LAPLACE_KURTOSIS
        info["laplace"] = laplace
        alpha = torch.where(laplace, alpha_laplace, alpha_gauss)
    else:
        raise ValueError(f"clip={clip!r} is not allowed; allowed: gauss, laplace, auto")
    center = moments["center"]
    low = torch.maximum(low, center - alpha).clamp_max_(0.0)
    high = torch.minimum(high, center + alpha).clamp_min_(0.0)
    return _with_alpha(low, high, info)


def mse_range(blocks: Tensor, bits: int, symmetric: bool, clip: str, valid: Tensor | None,
              grid: str) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """:func:`mse_clip_ratio` times the round-to-nearest range; ``info["ratio"]``."""
    low, high = _symmetric_range(blocks, valid, symmetric)
    ratio = mse_clip_ratio(blocks, bits, symmetric, valid, grid)
    info = {"sigma": block_moments(blocks, valid, centered=not symmetric, kurtosis=False)["sigma"], "ratio": ratio}
    return _with_alpha(low * ratio, high * ratio, info)


def top_fraction_mask(scores: Tensor, percent: float) -> Tensor | None:
    """Boolean mask (shape of ``scores``) of the round(percent% * numel) largest scores, or
    ``None`` when that count is 0. Ties are broken by ``torch.topk`` (deterministic on CPU)."""
    count = round(percent / 100.0 * scores.numel())
    if count == 0:
        return None
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    mask[torch.topk(scores.reshape(-1), count, sorted=False).indices] = True
    return mask.view_as(scores)


def weight_stats(weight: Tensor) -> dict[str, float]:
    """Whole-tensor ``sigma`` (population std), excess ``kurtosis`` (m4/m2^2 - 3, plain central
    moments), ``max_over_sigma`` (max |w - mean| / sigma) and ``nonfinite`` count."""
    w = weight.reshape(-1).float()
    mean = w.mean()
    dev = w - mean
    sq = dev.square()
    m2 = sq.mean()
    m4 = sq.square_().mean()
    sigma = m2.sqrt()
    finite = bool(torch.isfinite(m4))  # else count (isfinite over the tensor is slow)
    return {
        "sigma": float(sigma),
        "kurtosis": float(m4 / m2.square() - 3.0),
        "max_over_sigma": float(dev.abs_().max() / sigma),
        "nonfinite": 0 if finite else int((~torch.isfinite(w)).sum()),
    }
