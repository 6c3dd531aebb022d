"""Activation-weighted clipping (LA-ACIQ) and activation-aware keep scores: pure tensor maths.

Notation: a weight is oriented ``[out, in]``; ``second_moments`` holds per-input-channel second
moments of the layer's input, one column per calibration language, ``[in, L]``
(s_l[j] = E[x_j^2] over language l's tokens). :func:`normalise_second_moments` rescales every column to
mean 1 (``s_hat_l = s_l / mean_j s_l[j]``), so each language carries equal total weight
whatever its token count or activation scale.

For a block b (output channel, group or tensor, see :func:`qd_models.quant.core.to_blocks`)
and a clip ratio r_b the language-l weighted error is

    E_lb(r_b) = sum_{(i,j) in b} s_hat_l[j] * (W_ij - Q_r_b(W_ij))^2,

the diagonal approximation of the squared output error ``E||(W - Q(W)) x||^2`` on language l;
the layer's relative weighted error on l is R_l = sum_b E_lb / sum_ij s_hat_l[j] W_ij^2.
Every mode picks one r per block; grid and search are those of the MSE clip search
(``MSE_COARSE_STEPS`` ratios, then ``MSE_REFINE_STEPS`` golden-section steps):

* ``target``: minimise E_lb for the single calibration language;
* ``mean``: minimise (1/L) sum_l E_lb (i.e. weights ``mean_l s_hat_l``);
* ``minimax``: minimise the layer's worst language, max_l R_l. The blocks are coupled through
  the sum over blocks, so the search goes through language weights lambda (the Lagrangian
  dual): for fixed lambda each block minimises sum_l lambda_l E_lb / energy_l; lambda is
  moved by exponentiated-gradient steps on the coarse grid (:func:`minimax_language_weights`),
  the best lambda's ratios are refined like ``mean``'s, and the ``mean`` choice is kept when it
  has the smaller worst language. So a layer's worst-language R_l is never above ``mean``'s;
  it need not be the exact optimum (per-block choices reachable through some lambda are a
  subset of all combinations: a duality gap).
  (A per-block max_l E_lb would not give this: on Gemma-3-270M it made the layer-level worst
  language worse than ``mean``.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .core import block_moments, coarse_ratios, fake_quantize, min_max, search_clip_ratio

MODES = ("target", "mean", "minimax")
"""The objectives of :func:`weighted_clip_range` (module doc)."""

MINIMAX_STEPS = 100
"""Exponentiated-gradient steps on the language weights (mode ``minimax``); step t
moves log(lambda) by at most ``MINIMAX_STEP / sqrt(t + 1)``."""
MINIMAX_STEP = 0.5
MINIMAX_WINDOW = 3
"""Each block's candidates in the language-weight search: the coarse ratios within this many
steps of its uniform-weight optimum (the final ratios are refined afterwards)."""


def normalise_second_moments(second_moments: Tensor) -> tuple[Tensor, Tensor]:
    """``[in, L]`` second moments -> (float32 ``[in, L]`` with every column's mean 1,
    bool ``[L]`` degenerate flags). A column whose sum is 0 or non-finite is degenerate and
    replaced by ones (plain MSE weighting for that language)."""
    second_moments = second_moments.double()
    total = second_moments.sum(0)
    degenerate = ~(torch.isfinite(total) & (total > 0))
    scaled = second_moments * (second_moments.shape[0] / torch.where(degenerate, torch.ones_like(total), total))
    scaled[:, degenerate] = 1.0
    return scaled.float(), degenerate


def block_errors(sq_error: Tensor, weights: Tensor, granularity: str, group_size: int | None) -> Tensor:
    """Per-block weighted sums of an elementwise error ``[out, in]`` with input-channel
    weights ``[in, K]`` -> ``[n_blocks, K]`` (block order of ``to_blocks``)."""
    if granularity == "channel":
        return sq_error @ weights
    if granularity == "tensor":
        return (sq_error @ weights).sum(0, keepdim=True)
    if granularity == "group":
        out_dim, in_dim = sq_error.shape
        groups = in_dim // group_size
        if weights.shape[1] == 1:
            return (sq_error.view(out_dim, groups, group_size) * weights.view(groups, group_size)).sum(2).view(-1, 1)
        per_group = torch.einsum("ogk,gkl->ogl", sq_error.view(out_dim, groups, group_size), weights.view(groups, group_size, -1))
        return per_group.reshape(out_dim * groups, -1)
    raise ValueError(f"granularity={granularity!r} is not allowed; allowed: tensor, channel, group")


def weighted_clip_range(
    blocks: Tensor,
    out_dim: int,
    second_moments: Tensor,
    mode: str,
    bits: int,
    symmetric: bool,
    granularity: str,
    group_size: int | None = None,
    valid: Tensor | None = None,
    grid: str = "int",
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Per-block range ``(low, high, info)`` minimising the ``mode`` objective (module doc).

    ``blocks``: ``[n_blocks, block_len]`` view of an ``[out_dim, in]`` weight; ``second_moments``:
    normalised ``[in, L]`` (``target`` needs L == 1); ``valid``: 0/1 like ``blocks`` (0 =
    kept in original precision, excluded from the error); ``grid``: see :mod:`qd_models.quant.core`.
    ``info``: ``ratio``, ``alpha``, ``sigma`` (as :func:`qd_models.quant.core.mse_range`) and ``errors`` ``[n_blocks, L]``
    (per-language weighted errors at the chosen ratio).
    """
    if mode not in MODES:
        raise ValueError(f"calib_mode={mode!r} is not allowed; allowed: {', '.join(MODES)}")
    if mode == "target" and second_moments.shape[1] != 1:
        raise ValueError(f"calib_mode=target needs exactly one calibration language, got {second_moments.shape[1]}; allowed: calib_langs=<one language>")
    low, high = min_max(blocks, valid)
    if symmetric:
        high = torch.maximum(-low, high)
        low = -high

    def per_language(ratio: Tensor, weights: Tensor) -> Tensor:
        err = fake_quantize(blocks, ratio * low, ratio * high, bits, symmetric, grid).sub_(blocks).square_()
        if valid is not None:
            err.mul_(valid)
        return block_errors(err.view(out_dim, -1), weights, granularity, group_size)

    n_blocks = blocks.shape[0]
    mean_weights = second_moments.mean(1, keepdim=True)
    if mode != "minimax":
        ratio, _ = search_clip_ratio(lambda r: per_language(r, mean_weights), n_blocks, blocks)
        errors = per_language(ratio, second_moments)
    else:
        coarse_err = torch.stack([per_language(r, second_moments) for r in coarse_ratios(n_blocks, blocks)], dim=0)  # [steps, n, L]
        ratio, _ = search_clip_ratio(lambda r: per_language(r, mean_weights), n_blocks, blocks, coarse_err.mean(2, keepdim=True))
        errors = per_language(ratio, second_moments)
        energy = (blocks.view(out_dim, -1).square().sum(0) @ second_moments).clamp_min(1e-30)  # [L]
        lam = minimax_language_weights(coarse_err / energy)
        lam_weights = (second_moments / energy) @ lam.unsqueeze(1)  # [in, 1]
        lam_ratio, _ = search_clip_ratio(lambda r: per_language(r, lam_weights), n_blocks, blocks, (coarse_err / energy) @ lam.view(-1, 1))
        lam_errors = per_language(lam_ratio, second_moments)
        if float((lam_errors.sum(0) / energy).max()) < float((errors.sum(0) / energy).max()):
            ratio, errors = lam_ratio, lam_errors
    low, high = low * ratio, high * ratio
    moments = block_moments(blocks, valid, centered=not symmetric, kurtosis=False)
    info = {"ratio": ratio, "alpha": (high - low) / 2.0, "sigma": moments["sigma"], "errors": errors}
    return low, high, info


def minimax_language_weights(relative: Tensor) -> Tensor:
    """Language weights lambda ``[L]`` (sum 1) whose per-block choice on a grid,
    argmin_r sum_l lambda_l relative[r, b, l], has the smallest worst-language total
    max_l sum_b relative[r_b, b, l] among ``MINIMAX_STEPS`` exponentiated-gradient steps
    from uniform (gradient: the per-language totals, centred and scaled to max |g| = 1);
    candidates per block: ``MINIMAX_WINDOW``. ``relative``: ``[steps, n_blocks, L]`` errors
    divided by each language's layer energy."""
    n_steps, n_blocks, n_langs = relative.shape
    rows = torch.arange(n_blocks, device=relative.device)
    center = relative.mean(2).argmin(0)
    offsets = torch.arange(-MINIMAX_WINDOW, MINIMAX_WINDOW + 1, device=relative.device)
    candidates = (center.unsqueeze(1) + offsets).clamp_(0, n_steps - 1)  # [n, window]
    local = relative.permute(1, 0, 2)[rows.unsqueeze(1), candidates]  # [n, window, L]
    lam = torch.full((n_langs,), 1.0 / n_langs, dtype=relative.dtype, device=relative.device)
    best_lam, best_worst = lam, float("inf")
    for step in range(MINIMAX_STEPS):
        totals = local[rows, (local @ lam).argmin(1)].sum(0)  # [L]
        worst = float(totals.max())
        if worst < best_worst:
            best_lam, best_worst = lam, worst
        gradient = totals - totals.mean()
        scale = float(gradient.abs().max())
        if not scale > 0:
            break
        lam = lam * torch.exp(gradient * (MINIMAX_STEP / math.sqrt(step + 1) / scale))
        lam = lam / lam.sum()
    return best_lam


def mode_weights(second_moments: Tensor, mode: str) -> Tensor:
    """One input-channel weight vector ``[in]`` for a mode (activation-based keep scores):
    target: the language's column; mean: the column mean; minimax: the column max (a channel
    that matters to any language counts)."""
    if mode == "minimax":
        return second_moments.amax(1)
    return second_moments.mean(1)


def activation_keep_scores(weight: Tensor, channel_weights: Tensor) -> Tensor:
    """Salience ``|W_ij| * sqrt(s[j])`` (activation-based keep scores), ``[out, in]``."""
    return weight.abs() * channel_weights.clamp_min(0.0).sqrt()


def language_errors(weight: Tensor, quantized: Tensor, second_moments: Tensor) -> Tensor:
    """Relative weighted error per language of a whole layer, ``[L]``:
    sum_ij s_hat_l[j] (W_ij - Q_ij)^2 / sum_ij s_hat_l[j] W_ij^2 (NaN for an all-zero weight)."""
    error = (quantized - weight).square_().sum(0) @ second_moments
    energy = weight.square().sum(0) @ second_moments
    return error / energy


def activation_weighted_kurtosis(weight: Tensor, second_moments: Tensor) -> Tensor:
    """Excess kurtosis of the layer's weights under the distribution that gives W_ij the
    probability s_l[j] / (out * sum_j s_l[j]), one value per language, ``[L]``: with
    mu = E_p[W], m_k = E_p[(W - mu)^k], kappa_l = m4 / m2^2 - 3. Uniform ``s`` gives the
    plain (population) excess kurtosis. ``weight`` ``[out, in]``, ``second_moments`` ``[in, L]``."""
    w = weight.double()
    p = second_moments.double() / (second_moments.double().sum(0) * w.shape[0])  # [in, L]
    mu = w.sum(0) @ p  # [L]
    out = []
    for lang in range(p.shape[1]):
        dev2 = (w - mu[lang]).square_()
        m2 = dev2.sum(0) @ p[:, lang]
        m4 = dev2.square_().sum(0) @ p[:, lang]
        out.append(m4 / m2.square() - 3.0)
    return torch.stack(out).float()
