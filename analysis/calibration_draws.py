"""Calibration draws as replicates: per config, D as the mean over its draws with the across-draw
spread and a CI over both draws and documents, and paired comparisons of every two configs.

Runs whose quant configs differ only in ``calib_seed`` (:data:`qd_models.run_record.DRAW`) are draws
of one config (same model, scoring and baseline); a config with one run is one draw. Per config,
suite and language (:func:`draw_analysis`, ``tables/calibration_spread.csv``): ``d_mean`` (mean of the
draws' D), ``d_sd`` (sample SD, ddof=1), ``d_min``/``d_max`` and ``d_ci_low``/``d_ci_high``, the t
interval of :func:`analysis.replicate_stats.replicate_interval` (across-draw and document variance,
Welch–Satterthwaite degrees of freedom); a one-draw config keeps its own document CI
(``tables/degradation.csv``). Every two configs of one model, suite and baseline are compared per
language (``DrawAnalysis.comparisons``, ``tables/method_comparisons.csv``): the difference of their
draw means (documents paired, draw sets independent) with the same kind of interval; a difference is
stated only where it excludes 0 (else "within method noise"). A config that depends on its calibration
draw (:func:`depends_on_draw`) but has one draw has an unmeasured draw noise: its comparisons get no
interval and read "draw noise not measured".
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.language_degradation import Degradation
from analysis.loading import RunSet
from analysis.replicate_stats import DRAW_NOISE_NOT_MEASURED, replicate_interval, replicate_spread
from qd_models.config import METHODS, calibration_passes
from qd_models.run_record import DRAW, config_draw

SPREAD_COLUMNS = ("model", "suite", "lang", "label", "n_draws", "d_mean", "d_sd", "d_min", "d_max", "d_ci_low", "d_ci_high")
COMPARISON_COLUMNS = ("model", "suite", "lang", "label_a", "label_b", "n_draws_a", "n_draws_b", "difference", "ci_low", "ci_high",
                      "ci_method", "reading")
WITHIN_NOISE = "within method noise"
COVERAGE = ("95-98% with 3 draws, 95-96% with 5, 94-95% with 10, 95-98% for the difference of two configs with 3 or 5 draws "
            "each or of one such config and an uncalibrated one (normal, heavy-tailed and skewed draw effects); with 40 documents, "
            "where the draw noise dominates, 93-98% for normal and heavy-tailed draw effects but 83-92% for a strongly skewed one "
            "with 3-5 draws (no interval from 3 draws can know the skew)")
"""What ``scripts/coverage_calibration_draws.py`` measured (the report quotes it)."""


@dataclass
class DrawAnalysis:
    """``spread``: :data:`SPREAD_COLUMNS` (+ ``config``, ``quant_id``, ``draws``, ``method``, ``n_docs``);
    ``comparisons``: :data:`COMPARISON_COLUMNS`; ``config_table``: one row per config, suite and language
    with the columns of ``Degradation.table`` that :mod:`analysis.calibration_matrix` reads (D = d_mean,
    its CI = the combined one; ``quant_id`` = the config's first draw)."""

    spread: pd.DataFrame
    comparisons: pd.DataFrame
    config_table: pd.DataFrame
    confidence: float = 0.95


def replicate_key(runset: RunSet, quant_id: str) -> str:
    """Model + quant config without the draw + scoring: equal for the draws of one config."""
    run = runset.runs[quant_id]
    config = {k: v for k, v in run.quant_config.items() if k != DRAW}
    return json.dumps({"model": run.model, "quant": config, "scoring": run.scoring}, sort_keys=True, default=str)


def _doc_nll(deg: Degradation) -> dict:
    """{(quant_id, suite, lang): {doc_id: (nll_quant, nll_base)}} from the paired documents."""
    out: dict = {}
    for row in deg.docs[["quant_id", "suite", "lang", "doc_id", "nll_quant", "nll_base"]].itertuples(index=False):
        out.setdefault((row.quant_id, row.suite, row.lang), {})[row.doc_id] = (row.nll_quant, row.nll_base)
    return out


def _matrices(docs: dict, keys: list[list[tuple]]) -> tuple[list[np.ndarray], np.ndarray] | None:
    """Per config (a list of draw keys): (R, n) NLLs over the documents every draw of every config
    scored, and the (n,) baseline NLLs; ``None`` when a draw has no documents or none are common."""
    flat = [docs.get(key) for group in keys for key in group]
    if not all(flat):
        return None
    common = [doc for doc in flat[0] if all(doc in d for d in flat[1:])]
    if not common:
        return None
    quant = [np.array([[docs[key][doc][0] for doc in common] for key in group]) for group in keys]
    return quant, np.array([flat[0][doc][1] for doc in common])


def depends_on_draw(quant_config: dict) -> bool:
    """The stored (resolved) config read calibration texts, so its result depends on which were drawn
    (:func:`qd_models.config.calibration_passes`, without parsing the config again; an unknown method
    counts as dependent: its draw noise is not known to be absent)."""
    method = str(quant_config.get("method", "none"))
    if method not in METHODS:
        return True
    return bool(calibration_passes(method, quant_config.get("bits"), quant_config.get("calib_mode")))


def _interval_method(interval, n_docs: int) -> str:
    if interval.note:
        return f"no CI: {interval.note}"
    return f"t interval, draws + documents (Welch df {interval.df:.1f}), {n_docs} docs"


def draw_analysis(runset: RunSet, deg: Degradation, confidence: float = 0.95) -> DrawAnalysis:
    """The spread, comparison and config tables (module doc) of ``deg``."""
    table = deg.table
    if table.empty:
        return DrawAnalysis(pd.DataFrame(columns=SPREAD_COLUMNS), pd.DataFrame(columns=COMPARISON_COLUMNS), table.copy(), confidence)
    docs = _doc_nll(deg)
    groups: dict[tuple, list[dict]] = {}
    for record in table.to_dict("records"):
        key = (record["model"], record["base_id"], record["suite"], record["lang"], replicate_key(runset, record["quant_id"]))
        groups.setdefault(key, []).append(record)
    spread_rows, config_rows = [], []
    by_cell: dict[tuple, list[dict]] = {}
    for (model, base_id, suite, lang, config), records in sorted(groups.items(), key=lambda item: item[0][:4] + (item[1][0]["label"],)):
        records.sort(key=lambda r: (config_draw(runset.runs[r["quant_id"]].quant_config) or -1, r["quant_id"]))
        values = [r["degradation"] for r in records]
        spread = replicate_spread(values)
        row = {"model": model, "suite": suite, "lang": lang, "label": records[0]["label"], "n_draws": len(records),
               "d_mean": spread["mean"], "d_sd": spread["sd"], "d_min": spread["min"], "d_max": spread["max"]}
        ids = [r["quant_id"] for r in records]
        dependent = depends_on_draw(runset.runs[ids[0]].quant_config)
        if len(records) == 1:
            low, high, method = records[0]["ci_low"], records[0]["ci_high"], records[0]["ci_source"]
        else:
            matrices = _matrices(docs, [[(quant_id, suite, lang) for quant_id in ids]])
            if matrices is None:
                low, high, method = math.nan, math.nan, "no CI: a draw has no samples"
            else:
                interval = replicate_interval(matrices[0], matrices[1], [1.0], [dependent], confidence)
                low, high, method = interval.low, interval.high, _interval_method(interval, matrices[1].size)
        row.update(d_ci_low=low, d_ci_high=high, config=config, base_id=base_id, quant_id=ids[0], draws=";".join(ids), method=method,
                   n_docs=min(r["n_docs"] for r in records))
        spread_rows.append(row)
        config_rows.append({**records[0], "degradation": spread["mean"], "ci_low": low, "ci_high": high, "n_draws": len(records),
                            "n_docs": row["n_docs"]})
        by_cell.setdefault((model, base_id, suite, lang), []).append({**row, "ids": ids, "dependent": dependent})
    comparisons = [_compare(a, b, docs, confidence) for cell in by_cell.values() for a, b in itertools.combinations(cell, 2)]
    spread = pd.DataFrame(spread_rows)
    return DrawAnalysis(spread, pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS), pd.DataFrame(config_rows), confidence)


def _compare(a: dict, b: dict, docs: dict, confidence: float) -> dict:
    """The difference of two configs' draw means in one language (documents paired), with its t interval."""
    difference = a["d_mean"] - b["d_mean"]
    matrices = _matrices(docs, [[(quant_id, a["suite"], a["lang"]) for quant_id in cfg["ids"]] for cfg in (a, b)])
    low = high = math.nan
    method = "no CI: a draw has no samples"
    if matrices is not None:
        interval = replicate_interval(matrices[0], matrices[1], [1.0, -1.0], [a["dependent"], b["dependent"]], confidence)
        low, high, method = interval.low, interval.high, _interval_method(interval, matrices[1].size)
    if method == f"no CI: {DRAW_NOISE_NOT_MEASURED}":
        reading = DRAW_NOISE_NOT_MEASURED
    elif math.isnan(low):
        reading = "no CI (needs --log_samples)" if matrices is None else method
    elif low > 0 or high < 0:
        reading = f"{a['label']} {'higher' if difference > 0 else 'lower'} D"
    else:
        reading = WITHIN_NOISE
    return {"model": a["model"], "suite": a["suite"], "lang": a["lang"], "label_a": a["label"], "label_b": b["label"],
            "n_draws_a": a["n_draws"], "n_draws_b": b["n_draws"], "difference": difference, "ci_low": low, "ci_high": high,
            "ci_method": method, "reading": reading}
