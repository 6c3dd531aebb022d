"""Statistics used by the analysis: paired document bootstrap, group tests, effect size,
correlations and slope fits. Every function returns NaN (never raises) for degenerate
inputs that can legitimately occur (too few points, zero variance)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile interval (NaN bounds when undefined)."""

    estimate: float
    low: float
    high: float


def relative_increase(new_total, old_total):
    """``new/old - 1`` elementwise; inf/NaN propagate (old == 0 gives inf or NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(new_total, dtype=float) / np.asarray(old_total, dtype=float) - 1.0


def bootstrap_degradation_draws(nll_quant, nll_base, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Paired document bootstrap of the relative NLL increase.

    nll_quant, nll_base: (n_docs,) total NLL of each document under the two models, in the
    same document order. Each resample draws n_docs document indices with replacement and
    returns ``sum(nll_quant[idx]) / sum(nll_base[idx]) - 1``. Returns (n_resamples,).
    """
    nll_quant = np.asarray(nll_quant, dtype=float)
    nll_base = np.asarray(nll_base, dtype=float)
    if nll_quant.shape != nll_base.shape or nll_quant.ndim != 1 or nll_quant.size == 0:
        raise ValueError(f"nll_quant/nll_base must be equal-length non-empty 1-D arrays; got {nll_quant.shape} and {nll_base.shape}")
    idx = rng.integers(0, nll_quant.size, size=(n_resamples, nll_quant.size))
    return relative_increase(nll_quant[idx].sum(axis=1), nll_base[idx].sum(axis=1))


def percentile_interval(estimate: float, draws: np.ndarray, confidence: float = 0.95) -> Interval:
    """Percentile interval of bootstrap ``draws``; NaN bounds if any draw is non-finite."""
    draws = np.asarray(draws, dtype=float)
    if draws.size == 0 or not np.all(np.isfinite(draws)):
        return Interval(float(estimate), math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(low), float(high))


def welch_t_test(a, b) -> tuple[float, float]:
    """Welch's unequal-variance t-test of mean(b) vs mean(a): (t, two-sided p)."""
    a, b = _finite(a), _finite(b)
    if a.size < 2 or b.size < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return math.nan, math.nan
    result = sps.ttest_ind(b, a, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def mann_whitney(a, b) -> tuple[float, float]:
    """Mann–Whitney U of b vs a: (U of b, two-sided p)."""
    a, b = _finite(a), _finite(b)
    if a.size < 1 or b.size < 1:
        return math.nan, math.nan
    result = sps.mannwhitneyu(b, a, alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def cohens_d(a, b) -> float:
    """(mean(b) - mean(a)) / pooled standard deviation (ddof=1); NaN if undefined."""
    a, b = _finite(a), _finite(b)
    if a.size < 2 or b.size < 2:
        return math.nan
    pooled_var = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    if pooled_var == 0:
        return math.nan
    return float((b.mean() - a.mean()) / math.sqrt(pooled_var))


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


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]
