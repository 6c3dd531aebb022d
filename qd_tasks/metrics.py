"""Aggregations for ``loglikelihood_rolling`` perplexities that report ``inf`` instead of raising.

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
