"""Aggregations for ``loglikelihood_rolling`` perplexities that report ``inf`` instead of raising,
and the one degradation rule (:func:`relative_increase`) of ``qd-scan`` and ``qd-analyze``.

lm-eval's stock ``weighted_perplexity`` is ``math.exp(-weighted_mean(items))``; for a random
model the word-level exponent exceeds ~709.78 and ``math.exp`` raises ``OverflowError``,
which aborts the whole run. Referenced from the task YAMLs as
``aggregation: !function qd_tasks.metrics.weighted_perplexity``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def weighted_perplexity(items: Iterable[tuple[float, int]]) -> float:
    """``exp(-sum(loglikelihood) / sum(units))`` over per-document ``(loglikelihood, units)`` pairs.

    ``units`` is the document's word or byte count. Returns ``inf`` where the exponential
    overflows (or a log-likelihood is ``-inf``), ``nan`` for a ``nan`` log-likelihood or
    when the documents hold no units.
    """
    pairs = list(items)
    total_loglikelihood = sum(loglikelihood for loglikelihood, _ in pairs)
    total_units = sum(units for _, units in pairs)
    if total_units <= 0 or math.isnan(total_loglikelihood):
        return math.nan
    try:
        return math.exp(-total_loglikelihood / total_units)
    except OverflowError:
        return math.inf


def relative_increase(new_total, old_total):
    """``new_total / old_total - 1``: the relative increase of a total (NLL, bits per byte).

    Numbers or numpy arrays (elementwise, by the arrays' own division). A zero ``old_total`` gives
    ``inf``/``-inf`` (``nan`` for 0/0) instead of raising; inf and NaN propagate.
    """
    try:
        return new_total / old_total - 1.0
    except ZeroDivisionError:
        if new_total == 0 or math.isnan(new_total):
            return math.nan
        return math.copysign(math.inf, new_total) * math.copysign(1.0, old_total)
