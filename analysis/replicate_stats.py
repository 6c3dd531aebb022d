"""Intervals for degradations averaged over replicates (calibration draws) that share their documents.

A config evaluated in R draws on the same n documents has D = mean_r D_r, D_r = sum_i q[r, i] / sum_i b[i] - 1
(q: the draw's NLL per document, b: the baseline's). Two samples make it uncertain: which calibration texts
were drawn and which documents were evaluated. Every draw scores the same documents (a crossed design), so
Var(D) = s2_draw / R + s2_doc / n + s2_int / (n R) (draw effect, document effect, draw x document interaction).

The interval is studentized: ``D ± t(nu, (1 + level) / 2) * SE`` with

- ``SE**2 = v_draw + v_doc``; ``v_draw = var(D_r, ddof=1) / R`` (documents held fixed: estimates
  s2_draw / R + s2_int / (n R)); ``v_doc`` the delta-method variance of D over documents,
  ``n / (n - 1) * sum_i z_i**2 / (sum_i b_i)**2`` with ``z_i = qbar_i - (1 + D) b_i`` (qbar: the draw mean per
  document; estimates s2_doc / n + s2_int / (n R));
- ``nu`` by Welch–Satterthwaite: ``SE**4 / (v_draw**2 / (R - 1) + v_doc**2 / nu_doc)``, where
  ``nu_doc = (n - 1) / n * (sum_i w_i**2)**2 / sum_i w_i**4`` (w_i = b_i / sum b: the documents' weights in D)
  is the effective degrees of freedom of the weighted residuals: n - 1 for equal weights, fewer when a few
  long documents dominate D.

A linear combination sum_k c_k D_k (a difference: coefficients (1, -1)) has one draw term
``c_k**2 var(D_k,r) / R_k`` per config (the configs' draws are independent samples; draws with the same seed
but another method or calibration setting are not paired, which is conservative when their effects correlate
positively) and one document term on the combined residuals ``sum_k c_k z_ki`` (the documents are shared:
paired), each with its own degrees of freedom in ``nu``. A config whose result depends on no draw (no
calibration, e.g. RTN) and that is run once has no draw term; one that depends on its draw but was run once
has a draw variance nobody measured: no interval (NaN bounds, :data:`DRAW_NOISE_NOT_MEASURED`), never a
document-only interval that would read as if it covered the method's noise.

Why this interval: the percentile bootstrap of draws then documents estimates the draw variance as
(R - 1)/R of the sample variance and takes normal-like quantiles although that variance has R - 1 degrees
of freedom (2 with 3 draws, where t(0.975) = 4.30, not 1.96); at a nominal 95 % it covered 86 % (3 draws)
and 86-88 % (5 draws) of simulated truths with 5 documents, this interval 95-98 % and 95-96 %, differences
95-98 % (``scripts/coverage_calibration_draws.py``: normal, heavy-tailed and skewed draw effects). Limit: when the
draw term dominates (40 documents) and the draw effects are strongly skewed (centred exponential), 3-5 draws
cover 83-92 %; a t interval from so few draws cannot see the skew. The t quantile with
Satterthwaite's degrees of freedom accounts for estimating both variances from few draws and documents. The
document term is the delta method rather than a document bootstrap: closed form, unbiased with ddof 1 (the
bootstrap variance is (n - 1)/n of it, 0.8 at 5 documents), free of Monte Carlo noise, so the interval is
reproducible and can be checked exactly; with ``n - 1`` degrees of freedom whatever the weights it covered
93 % with 5 documents of unequal length. Adding the two terms counts s2_int / (n R) twice (slightly
conservative); the unbiased crossed-ANOVA combination (MS_draw + MS_doc - MS_int) / (n R) can be negative
and has no clean Satterthwaite form. Pure numpy/scipy; no method names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from analysis.stats import ratio_standard_error, relative_increase

DRAW_NOISE_NOT_MEASURED = "draw noise not measured"
"""Why a combination has no interval: a config that depends on its calibration draw has one draw."""


@dataclass(frozen=True)
class ReplicateInterval:
    """``estimate`` = sum_k c_k D_k with its t interval ``[low, high]``, ``se`` and Welch–Satterthwaite ``df``
    (module doc); NaN bounds with ``note`` saying why when there is no interval."""

    estimate: float
    low: float
    high: float
    se: float
    df: float
    note: str = ""


def replicate_interval(quant: Sequence, base, coefficients: Sequence[float], draw_dependent: Sequence[bool],
                       confidence: float = 0.95) -> ReplicateInterval:
    """The t interval of ``sum_k coefficients[k] * mean_r D_{k,r}`` (module doc).

    quant: K arrays (R_k, n) of per-document NLLs of config k's draws; base: (n,) baseline NLLs of the same
    documents; draw_dependent: K flags, config k's result depends on its calibration draw (a one-draw config
    with the flag set leaves the draw variance unmeasured: no interval). Never raises for degenerate numbers:
    a non-finite D or fewer than 2 documents gives NaN bounds; zero variance collapses the interval."""
    base = np.asarray(base, dtype=float)
    quants = [np.atleast_2d(np.asarray(q, dtype=float)) for q in quant]
    n = base.size
    if n == 0 or any(q.shape[1] != n or q.shape[0] == 0 for q in quants) or not len(quants) == len(coefficients) == len(draw_dependent):
        raise ValueError(f"quant must be K non-empty (R_k, {n}) arrays with K = len(coefficients) = len(draw_dependent); "
                         f"got {[q.shape for q in quants]}, {len(coefficients)} coefficients, {len(draw_dependent)} flags")
    draws = [relative_increase(q.sum(axis=1), base.sum()) for q in quants]  # K arrays (R_k,)
    estimate = float(sum(c * d.mean() for c, d in zip(coefficients, draws)))
    if not all(np.all(np.isfinite(d)) for d in draws):
        return ReplicateInterval(estimate, math.nan, math.nan, math.nan, math.nan, "non-finite D")
    if any(dependent and d.size == 1 for d, dependent in zip(draws, draw_dependent)):
        return ReplicateInterval(estimate, math.nan, math.nan, math.nan, math.nan, DRAW_NOISE_NOT_MEASURED)
    if n < 2:
        return ReplicateInterval(estimate, math.nan, math.nan, math.nan, math.nan, "fewer than 2 documents")
    terms = [(c * c * d.var(ddof=1) / d.size, d.size - 1) for c, d in zip(coefficients, draws) if d.size > 1]  # (variance, df)
    combined = sum(c * q.mean(axis=0) for c, q in zip(coefficients, quants))  # (n,): sum_k c_k qbar_k
    weights = base / base.sum()  # (n,): the documents' weights in D
    terms.append((float(ratio_standard_error(combined, base)) ** 2, (n - 1) / n * np.sum(weights**2) ** 2 / np.sum(weights**4)))
    variance = sum(v for v, _ in terms)
    se = math.sqrt(variance)
    if not math.isfinite(se):
        return ReplicateInterval(estimate, math.nan, math.nan, se, math.nan, "non-finite standard error")
    if se <= 1e-12 * (1.0 + abs(estimate)):  # every draw and document agree to rounding
        return ReplicateInterval(estimate, estimate, estimate, se, math.inf)
    df = variance**2 / sum(v * v / f for v, f in terms)
    half = float(sps.t.ppf((1.0 + confidence) / 2.0, df)) * se
    return ReplicateInterval(estimate, estimate - half, estimate + half, se, df)


def replicate_spread(values) -> dict:
    """Mean, sample SD (ddof=1; NaN for one value), min and max of per-replicate estimates."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1 else math.nan,
            "min": float(values.min()), "max": float(values.max())}
