"""Statistics used by the analysis: paired document bootstrap with studentized intervals,
language-level permutation tests and hierarchical bootstrap, paired item comparisons (bootstrap
interval of a mean difference, exact McNemar test), correlations and slope fits.
Every function returns NaN (never raises) for degenerate inputs that can legitimately occur
(too few points, zero variance). Array inputs are read as float64, so a None entry is a missing
value (NaN)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from qd_tasks import metrics


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile interval (NaN bounds when undefined)."""

    estimate: float
    low: float
    high: float


MIN_CI_DOCS = 3
"""Fewest documents a per-language bootstrap interval is computed from: with 1 or 2 documents most
resamples repeat one document, and the interval comes out as [0, inf] or ±1e8 (reported undefined)."""


def too_few_docs_note(n_docs: int) -> str:
    """Why a per-language interval of ``n_docs`` documents is undefined ("" when it is not)."""
    return f"no CI: {n_docs} docs (an interval needs at least {MIN_CI_DOCS})" if 0 < n_docs < MIN_CI_DOCS else ""


def relative_increase(new_total, old_total):
    """:func:`qd_tasks.metrics.relative_increase` (``new/old - 1``) elementwise on float64 arrays;
    inf/NaN propagate (old == 0 gives inf or NaN) without warnings."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return metrics.relative_increase(np.asarray(new_total, dtype=float), np.asarray(old_total, dtype=float))


def bootstrap_degradation_draws(nll_quant, nll_base, n_resamples: int, rng: np.random.Generator, with_se: bool = False):
    """Paired document bootstrap of the relative NLL increase.

    nll_quant, nll_base: (n_docs,) total NLL of each document under the two models, in the
    same document order. Each resample draws n_docs document indices with replacement and
    returns ``sum(nll_quant[idx]) / sum(nll_base[idx]) - 1``. Returns (n_resamples,) draws,
    or (draws, se) with ``with_se``: se (n_resamples,) is :func:`ratio_standard_error` of each resample.
    """
    nll_quant = np.asarray(nll_quant, dtype=float)
    nll_base = np.asarray(nll_base, dtype=float)
    if nll_quant.shape != nll_base.shape or nll_quant.ndim != 1 or nll_quant.size == 0:
        raise ValueError(f"nll_quant/nll_base must be equal-length non-empty 1-D arrays; got {nll_quant.shape} and {nll_base.shape}")
    idx = rng.integers(nll_quant.size, size=(n_resamples, nll_quant.size))
    draws = relative_increase(nll_quant[idx].sum(axis=1), nll_base[idx].sum(axis=1))
    return (draws, ratio_standard_error(nll_quant[idx], nll_base[idx])) if with_se else draws


def ratio_standard_error(nll_quant, nll_base) -> np.ndarray:
    """Linearised (delta-method) standard error of ``sum(q)/sum(b)`` over the last axis.

    nll_quant, nll_base: (..., n) -> (...). With ratio R and residuals e = q - R b:
    ``se = sqrt(n/(n-1) * sum(e**2)) / sum(b)``; NaN for n < 2.
    """
    q, b = np.asarray(nll_quant, dtype=float), np.asarray(nll_base, dtype=float)
    n = q.shape[-1]
    if n < 2:
        return np.full(q.shape[:-1], math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        total_b = b.sum(axis=-1)
        residual = q - (q.sum(axis=-1) / total_b)[..., None] * b
        return np.sqrt(n / (n - 1) * (residual**2).sum(axis=-1)) / total_b


def studentized_interval(estimate: float, se: float, draws, draw_se, confidence: float = 0.95) -> Interval:
    """Bootstrap-t interval ``[est - t_hi * se, est - t_lo * se]``, t = (draw - est) / draw_se.

    draws, draw_se: (n_resamples,) bootstrap estimates and their standard errors; t_lo, t_hi
    are the (1 ± confidence)/2 quantiles (inverted CDF) of t. A resample with draw_se = 0 has
    t = ±inf (0 when draw = est), which can make a bound infinite. se = 0 (to rounding) means every
    document has the same ratio, so the interval collapses to the estimate. "To rounding" is
    within 1e-12 * (1 + |est|), for se and for draw - est alike. NaN bounds when undefined
    (a non-finite est, se or draw, no draws, a NaN draw_se).
    """
    draws, draw_se = np.asarray(draws, dtype=float), np.asarray(draw_se, dtype=float)
    if not (math.isfinite(estimate) and math.isfinite(se)) or draws.size == 0 or not np.all(np.isfinite(draws)):
        return Interval(float(estimate), math.nan, math.nan)
    tolerance = 1e-12 * (1.0 + abs(estimate))  # rounding noise of a ratio of sums
    if se <= tolerance:
        return Interval(float(estimate), float(estimate), float(estimate))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (draws - estimate) / draw_se
    t[np.abs(draws - estimate) <= tolerance] = 0.0
    if np.isnan(t).any():
        return Interval(float(estimate), math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    t_lo, t_hi = np.quantile(t, [alpha, 1.0 - alpha], method="inverted_cdf")
    return Interval(float(estimate), float(estimate - t_hi * se), float(estimate - t_lo * se))


def percentile_interval(estimate: float, draws: np.ndarray, confidence: float = 0.95) -> Interval:
    """Percentile interval of bootstrap ``draws``; NaN bounds if any draw is non-finite."""
    draws = np.asarray(draws, dtype=float)
    if draws.size == 0 or not np.all(np.isfinite(draws)):
        return Interval(float(estimate), math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(low), float(high))


def permutation_test(values, is_low, max_exact: int, n_resamples: int = 20000, random_state: int = 0) -> dict:
    """Label-permutation test of mean(values[is_low]) - mean(values[~is_low]) over units (languages).

    values: (n,) one number per unit; is_low: (n,) bool group labels. Every relabelling that
    keeps the group sizes is enumerated when there are at most ``max_exact`` of them, otherwise
    ``n_resamples`` seeded random relabellings are drawn (p = (1 + hits) / (1 + n_resamples)).
    Two-sided p: share of relabellings with |statistic| >= the observed one (ties within 1e-12).
    Non-finite values are left out. Returns statistic, p, n_low, n_high, n_splits, method.
    """
    values, is_low = np.asarray(values, dtype=float), np.asarray(is_low, dtype=bool)
    keep = np.isfinite(values)
    values, is_low = values[keep], is_low[keep]
    n, k = values.size, int(is_low.sum())
    out = {"statistic": math.nan, "p": math.nan, "n_low": k, "n_high": n - k, "n_splits": 0, "method": "none: needs >= 1 language per group"}
    if k == 0 or k == n:
        return out
    out["statistic"] = float(values[is_low].mean() - values[~is_low].mean())
    total = math.comb(n, k)
    if total <= max_exact:
        labels = np.zeros((total, n), dtype=bool)
        for row, chosen in enumerate(itertools.combinations(range(n), k)):
            labels[row, list(chosen)] = True
        method = "exact"
    else:
        rng = np.random.default_rng(random_state)
        labels = rng.permuted(np.tile(is_low, (n_resamples, 1)), axis=1)
        method = f"Monte Carlo, {n_resamples} relabellings, random_state={random_state}"
    stats_ = (labels * values).sum(axis=1) / k - (~labels * values).sum(axis=1) / (n - k)
    hits = int(np.sum(np.abs(stats_) >= abs(out["statistic"]) - 1e-12))
    p = hits / total if method == "exact" else (1 + hits) / (1 + n_resamples)
    out.update(p=float(p), n_splits=total if method == "exact" else n_resamples, method=method)
    return out


def hierarchical_draws(draws, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Two-stage bootstrap of a group mean: resample languages, then documents within each.

    draws: (n_langs, n_doc_resamples) document-bootstrap draws of each language's D_L. Each
    resample picks n_langs languages with replacement and, for each pick, one of that
    language's document-level draws at random; returns the (n_resamples,) means.
    """
    draws = np.asarray(draws, dtype=float)
    n_langs, n_doc = draws.shape
    langs = rng.integers(n_langs, size=(n_resamples, n_langs))
    columns = rng.integers(n_doc, size=(n_resamples, n_langs))
    return draws[langs, columns].mean(axis=1)


def ols_slopes(x, y) -> np.ndarray:
    """OLS slope of each row of y on x. x: (n,), y: (m, n) -> (m,); NaN rows give NaN."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    centred = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ centred / (centred @ centred)


def correlation(x, y) -> dict:
    """Pearson and Spearman correlation over the finite pairs: n, r, p, rho, p."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"n": int(x.size), "pearson_r": math.nan, "pearson_p": math.nan, "spearman_rho": math.nan, "spearman_p": math.nan}
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    pearson = sps.pearsonr(x, y)
    spearman = sps.spearmanr(x, y)
    out.update(
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman_rho=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
    )
    return out


def fit_slope(x, y, confidence: float = 0.95) -> dict:
    """Ordinary least squares y = intercept + slope*x over finite pairs.

    Returns n, slope, intercept, stderr and a t-based interval (low, high); the interval
    needs n >= 3 and the slope needs n >= 2 distinct x values, otherwise NaN.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"n": int(x.size), "slope": math.nan, "intercept": math.nan, "stderr": math.nan, "low": math.nan, "high": math.nan}
    if np.unique(x).size < 2:
        return out
    fit = sps.linregress(x, y)
    out.update(slope=float(fit.slope), intercept=float(fit.intercept))
    if x.size >= 3:
        half = sps.t.ppf(0.5 + confidence / 2.0, x.size - 2) * fit.stderr
        out.update(stderr=float(fit.stderr), low=float(fit.slope - half), high=float(fit.slope + half))
    return out



def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p: ``min(1, 2 · P(X ≤ min(b, c)))``, X ~ Bin(b + c, 1/2), by exact
    integer sums; 1.0 when there is no discordant pair."""
    b, c = int(right_to_wrong), int(wrong_to_right)
    if b < 0 or c < 0:
        raise ValueError(f"flip counts must be >= 0, got {b} and {c}")
    n, k = b + c, min(b, c)
    if n == 0 or 2 * k == n:
        return 1.0
    term, tail = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / (1 << n))


def paired_comparison(base, quant, n_resamples: int, random_state, confidence: float = 0.95) -> dict:
    """Paired statistics of per-item values. base, quant: (n_items,) in the same item order.

    Returns n_items, base, quant, delta (mean difference) with a paired bootstrap percentile
    interval (ci_low, ci_high; draws ``mean(d[idx])`` with idx ~ rng.integers(0, n, (n_resamples, n)),
    rng = ``np.random.default_rng(random_state)``: a seed, a seed sequence or a Generator), and for
    0/1 values right_to_wrong, wrong_to_right and mcnemar_p (:func:`mcnemar_exact`; NaN otherwise).
    """
    base, quant = np.asarray(base, dtype=float), np.asarray(quant, dtype=float)
    if base.shape != quant.shape or base.ndim != 1 or base.size == 0:
        raise ValueError(f"base/quant must be equal-length non-empty 1-D arrays; got {base.shape} and {quant.shape}")
    diff = quant - base
    idx = np.random.default_rng(random_state).integers(0, diff.size, (n_resamples, diff.size))
    interval = percentile_interval(float(diff.mean()), diff[idx].mean(axis=-1), confidence)
    out = {"n_items": int(base.size), "base": float(base.mean()), "quant": float(quant.mean()), "delta": interval.estimate,
           "ci_low": interval.low, "ci_high": interval.high, "right_to_wrong": math.nan, "wrong_to_right": math.nan,
           "mcnemar_p": math.nan}
    if np.isin(base, (0.0, 1.0)).all() and np.isin(quant, (0.0, 1.0)).all():
        b, c = int(np.sum((base == 1) & (quant == 0))), int(np.sum((base == 0) & (quant == 1)))
        out.update(right_to_wrong=b, wrong_to_right=c, mcnemar_p=mcnemar_exact(b, c))
    return out
