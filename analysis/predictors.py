"""Degradation vs per-language predictors across languages: resource class, tokenizer fertility,
activation kurtosis from the calibration report."""

from __future__ import annotations

import math

import pandas as pd

from analysis import stats
from analysis.language_degradation import Degradation
from analysis.loading import RunSet


def calibration_kurtosis(runset: RunSet) -> pd.DataFrame:
    """Per-language activation-weighted kurtosis from quant reports that carry calibration.

    Reads ``report["calibration"]["per_language"][lang]["activation_weighted_kurtosis"]``
    (or the same records directly under ``calibration``). Rows: run_id, lang, kurtosis.
    """
    rows = []
    for run in runset.runs.values():
        calibration = (run.quant_report or {}).get("calibration")
        if not isinstance(calibration, dict):
            continue
        per_language = calibration.get("per_language", calibration)
        for lang, record in per_language.items():
            if isinstance(record, dict) and isinstance(record.get("activation_weighted_kurtosis"), (int, float)):
                rows.append((run.run_id, lang, float(record["activation_weighted_kurtosis"])))
    return pd.DataFrame(rows, columns=["run_id", "lang", "kurtosis"])


def correlations(deg: Degradation, groups: dict[str, str], fert: pd.DataFrame | None = None, kurtosis: pd.DataFrame | None = None) -> pd.DataFrame:
    """Across-language Pearson/Spearman of degradation with each available predictor.

    One row per (quant_id, suite, predictor) with n, pearson_r/p, spearman_rho/p.
    Resource class is coded low = 1, high = 0 (point-biserial for Pearson).
    """
    rows = []
    for (quant_id, suite), block in deg.table.groupby(["quant_id", "suite"], sort=True):
        resource_code = block.lang.map(lambda lang: {"low": 1.0, "high": 0.0}.get(groups.get(lang), math.nan))
        predictors = {"low_resource (1=LR, 0=HR)": resource_code}
        if fert is not None and not fert.empty:
            merged = block.merge(fert, on=["suite", "lang"], how="left")
            predictors["tokens_per_byte"] = merged.tokens_per_byte
            predictors["tokens_per_word"] = merged.tokens_per_word
        if kurtosis is not None and not kurtosis.empty:
            own = kurtosis[kurtosis.run_id == quant_id]
            if not own.empty:
                predictors["activation_weighted_kurtosis"] = block.lang.map(dict(zip(own["lang"], own["kurtosis"])))
        for name, values in predictors.items():
            rows.append({"quant_id": quant_id, "suite": suite, "predictor": name, **stats.correlation(values.to_numpy(), block.degradation.to_numpy())})
    return pd.DataFrame(rows)
