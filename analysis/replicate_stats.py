"""Bootstrap of degradations averaged over replicates that share their documents.

A config evaluated in R replicates (e.g. calibration draws) on the same n documents has the
estimate mean_r D_r, D_r = sum_i q[r, i] / sum_i b[i] - 1 (q: the replicate's NLL per document,
b: the baseline's). Both the replicates and the documents are samples, and every replicate (and
every config compared with it) scores the *same* documents: one resample picks R replicates with
replacement, then n documents with replacement, and evaluates every picked replicate on those
documents (replicates and documents crossed; resampling documents separately per replicate would
treat the shared documents as independent and shrink their part of the variance by R). A linear
combination of configs (coefficients ``(1, -1)``: a paired difference) picks each config's
replicates independently and shares the documents. Every ordered resample is enumerated when there
are at most ``max_exact`` of them (all equally likely), otherwise ``n_resamples`` are drawn from a
generator seeded with ``random_state``. Pure numpy; no method names.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np


def _counts(picks: np.ndarray, size: int) -> np.ndarray:
    """``picks`` (m, k) indices in [0, size) -> (m, size) how often each index was picked."""
    counts = np.zeros((picks.shape[0], size))
    np.add.at(counts, (np.arange(picks.shape[0])[:, None], picks), 1.0)
    return counts


def _all_picks(size: int) -> np.ndarray:
    """Every ordered choice of ``size`` indices from ``size`` with replacement: (size**size, size)."""
    return np.array(list(itertools.product(range(size), repeat=size)), dtype=int).reshape(-1, size)


def replicate_bootstrap(quant: Sequence, base, coefficients: Sequence[float], n_resamples: int,
                        random_state: int | Sequence[int] = 0, max_exact: int = 20000) -> tuple[np.ndarray, str]:
    """Bootstrap distribution of ``sum_k coefficients[k] * mean_r D_{k,r}`` (module doc).

    quant: K arrays (R_k, n) of per-document NLLs of config k's replicates; base: (n,) baseline
    NLLs of the same documents. Returns (values, method): (m,) equally likely resampled statistics
    (all n**n * prod_k R_k**R_k of them when that is at most ``max_exact``), and ``exact`` or
    ``Monte Carlo, N resamples``."""
    base = np.asarray(base, dtype=float)
    quants = [np.atleast_2d(np.asarray(q, dtype=float)) for q in quant]
    n = base.size
    if n == 0 or any(q.shape[1] != n or q.shape[0] == 0 for q in quants) or len(quants) != len(coefficients):
        raise ValueError(f"quant must be K non-empty (R_k, {n}) arrays with K = len(coefficients); got {[q.shape for q in quants]}")
    sizes = [q.shape[0] for q in quants]
    total = n**n * math.prod(r**r for r in sizes) if n <= 12 and max(sizes) <= 12 else math.inf
    exact = total <= max_exact
    if exact:
        doc_counts = _counts(_all_picks(n), n)  # (n**n, n)
        row_counts = [_counts(_all_picks(r), r) for r in sizes]
    else:
        rng = np.random.default_rng(random_state)
        doc_counts = _counts(rng.integers(n, size=(n_resamples, n)), n)
        row_counts = [_counts(rng.integers(r, size=(n_resamples, r)), r) for r in sizes]
    with np.errstate(divide="ignore", invalid="ignore"):
        base_sums = doc_counts @ base  # (m_docs,)
        parts = [c * ((doc_counts @ q.T) / base_sums[:, None] - 1.0) for c, q in zip(coefficients, quants)]  # (m_docs, R_k)
    if not exact:  # one resample = row s of the documents and of every config's replicate picks
        values = sum((part * rows).sum(axis=1) / r for part, rows, r in zip(parts, row_counts, sizes))
        return np.asarray(values, dtype=float), f"Monte Carlo, {n_resamples} resamples"
    values = np.zeros(doc_counts.shape[0])  # (m_docs,), then one axis per config's replicate picks
    for k, (part, rows, r) in enumerate(zip(parts, row_counts, sizes)):
        means = part @ rows.T / r  # (m_docs, R_k**R_k)
        values = values[..., None] + means.reshape(means.shape[0], *([1] * k), means.shape[1])
    return values.reshape(-1), "exact"


def quantile_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high): the (1 ± confidence)/2 quantiles of equally likely ``values`` (inverted CDF: each
    bound is one of the values); NaN when there are none or any is non-finite."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(low), float(high)


def replicate_spread(values) -> dict:
    """Mean, sample SD (ddof=1; NaN for one value), min and max of per-replicate estimates."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1 else math.nan,
            "min": float(values.min()), "max": float(values.max())}
