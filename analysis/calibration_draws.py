"""Calibration draws as replicates: per config, D as the mean over its draws with the across-draw
spread and a CI over both draws and documents, and paired comparisons of every two configs.

Runs whose quant configs differ only in ``calib_seed`` (:data:`qd_models.run_record.DRAW`) are draws
of one config (same model, scoring and baseline); a config with one run is one draw. Per config,
suite and language (:func:`draw_analysis`, ``tables/calibration_spread.csv``): ``d_mean`` (mean of the
draws' D), ``d_sd`` (sample SD, ddof=1), ``d_min``/``d_max`` and ``d_ci_low``/``d_ci_high`` from
:func:`analysis.replicate_stats.replicate_bootstrap` (draws, then the documents they share); a
one-draw config keeps its own document CI (``tables/degradation.csv``). Every two configs of one
model, suite and baseline are compared per language (``DrawAnalysis.comparisons``,
``tables/method_comparisons.csv``): the paired difference of their draw means with the same combined
CI; a difference is stated only where that CI excludes 0 (else "within method noise").
"""

from __future__ import annotations

import itertools
import json
import math
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.language_degradation import Degradation
from analysis.loading import RunSet
from analysis.replicate_stats import quantile_interval, replicate_bootstrap, replicate_spread
from qd_models.run_record import DRAW, config_draw

SPREAD_COLUMNS = ("model", "suite", "lang", "label", "n_draws", "d_mean", "d_sd", "d_min", "d_max", "d_ci_low", "d_ci_high")
COMPARISON_COLUMNS = ("model", "suite", "lang", "label_a", "label_b", "n_draws_a", "n_draws_b", "difference", "ci_low", "ci_high",
                      "ci_method", "reading")
WITHIN_NOISE = "within method noise"
MAX_EXACT = 20000
"""Enumerate every resample when there are at most this many (else seeded Monte Carlo)."""


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


def draw_analysis(runset: RunSet, deg: Degradation, n_resamples: int = 2000, random_state: int = 0,
                  confidence: float = 0.95, max_exact: int = MAX_EXACT) -> DrawAnalysis:
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
        if len(records) == 1:
            low, high, method = records[0]["ci_low"], records[0]["ci_high"], records[0]["ci_source"]
        else:
            matrices = _matrices(docs, [[(quant_id, suite, lang) for quant_id in ids]])
            if matrices is None or not all(math.isfinite(v) for v in values):
                low, high, method = math.nan, math.nan, "no CI: a draw has no samples or a non-finite D"
            else:
                seed = [random_state, zlib.crc32(f"{config}|{suite}|{lang}".encode())]
                draws, how = replicate_bootstrap(matrices[0], matrices[1], [1.0], n_resamples, seed, max_exact)
                (low, high), method = quantile_interval(draws, confidence), f"draws x documents bootstrap ({how}), {matrices[1].size} docs"
        row.update(d_ci_low=low, d_ci_high=high, config=config, base_id=base_id, quant_id=ids[0], draws=";".join(ids), method=method,
                   n_docs=min(r["n_docs"] for r in records))
        spread_rows.append(row)
        config_rows.append({**records[0], "degradation": spread["mean"], "ci_low": low, "ci_high": high, "n_draws": len(records),
                            "n_docs": row["n_docs"]})
        by_cell.setdefault((model, base_id, suite, lang), []).append({**row, "ids": ids})
    comparisons = [_compare(a, b, docs, n_resamples, random_state, confidence, max_exact)
                   for cell in by_cell.values() for a, b in itertools.combinations(cell, 2)]
    spread = pd.DataFrame(spread_rows)
    return DrawAnalysis(spread, pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS), pd.DataFrame(config_rows), confidence)


def _compare(a: dict, b: dict, docs: dict, n_resamples: int, random_state: int, confidence: float, max_exact: int) -> dict:
    """The paired difference of two configs' draw means in one language, with the combined CI."""
    difference = a["d_mean"] - b["d_mean"]
    matrices = _matrices(docs, [[(quant_id, a["suite"], a["lang"]) for quant_id in cfg["ids"]] for cfg in (a, b)])
    low = high = math.nan
    method = "no CI: a draw has no samples"
    if matrices is not None and math.isfinite(difference):
        seed = [random_state, zlib.crc32(f"{a['config']}|{b['config']}|{a['suite']}|{a['lang']}".encode())]
        values, how = replicate_bootstrap(matrices[0], matrices[1], [1.0, -1.0], n_resamples, seed, max_exact)
        (low, high), method = quantile_interval(values, confidence), f"draws x documents bootstrap ({how}), {matrices[1].size} docs"
    if math.isnan(low):
        reading = "no CI (needs --log_samples)"
    elif low > 0 or high < 0:
        reading = f"{a['label']} {'higher' if difference > 0 else 'lower'} D"
    else:
        reading = WITHIN_NOISE
    return {"model": a["model"], "suite": a["suite"], "lang": a["lang"], "label_a": a["label"], "label_b": b["label"],
            "n_draws_a": a["n_draws"], "n_draws_b": b["n_draws"], "difference": difference, "ci_low": low, "ci_high": high,
            "ci_method": method, "reading": reading}


def _pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.2f}"


def write_section(draws: DrawAnalysis, tables, max_languages: int) -> list[str]:
    """Write ``calibration_spread.csv`` and ``method_comparisons.csv`` into ``tables``; return the
    report's section (suites with at least ``max_languages`` languages: counts only)."""
    draws.spread.reindex(columns=list(SPREAD_COLUMNS)).to_csv(tables / "calibration_spread.csv", index=False)
    draws.comparisons.to_csv(tables / "method_comparisons.csv", index=False)
    level = f"{draws.confidence:.0%}"
    out = ["## Calibration draws and method noise", "",
           ("Runs whose configs differ only in `calib_seed` are calibration draws of one config (`qd-sweep --calib_draws N`). "
            f"D of a config = mean over its draws; {level} CIs resample the draws, then the documents they all share (every draw "
            "and every compared config is evaluated on those same resampled documents); a one-draw config keeps its document CI. "
            "Table `tables/calibration_spread.csv` (D, across-draw SD and range per config, suite and language). "
            "With few draws these intervals are too narrow (simulated coverage of a nominal 95% interval: about 82% with 3 draws, "
            "90% with 5, 94% with 10; `scripts/coverage_calibration_draws.py`), and a calibrated config run once carries draw noise "
            "that no interval sees: read a stated difference as indicative unless each calibrated config has >= 5 draws."), ""]
    if draws.spread.empty:
        return out + ["No quantized run paired with a baseline.", ""]
    several = draws.spread[draws.spread.n_draws > 1]
    if several.empty:
        out += ["Every config has one calibration draw: the method's own noise is not measured, and a difference between two "
                "calibrated methods may be inside it.", ""]
    else:
        rows = []
        for r in several.itertuples():
            if (draws.spread[draws.spread.suite == r.suite].lang.nunique()) >= max_languages:
                continue
            ci = f"[{_pct(r.d_ci_low)}, {_pct(r.d_ci_high)}]"
            rows.append(f"| {r.label} | {r.suite} | {r.lang} | {r.n_draws} | {_pct(r.d_mean)} | {100 * r.d_sd:.2f} | "
                        f"{_pct(r.d_min)} … {_pct(r.d_max)} | {ci} |")
        out += [f"| config | suite | lang | draws | D mean (%) | SD over draws (pp) | range (%) | {level} CI (%) |",
                "|---|---|---|---|---|---|---|---|", *rows, ""]
    comparisons = draws.comparisons
    if comparisons.empty:
        return out
    out += ["### Method comparisons", "",
            (f"Paired difference D(a) − D(b) in percentage points with its {level} CI over draws and documents "
             "(`tables/method_comparisons.csv`): a difference is stated only where the CI excludes 0."), ""]
    for (model, suite), block in comparisons.groupby(["model", "suite"], sort=True):
        langs = sorted(block.lang.unique())
        out += [f"#### {suite} ({model})", ""]
        if len(langs) >= max_languages:
            for (a, b), pair in block.groupby(["label_a", "label_b"], sort=True):
                beyond = pair[~pair.reading.isin([WITHIN_NOISE]) & pair.ci_low.notna()]
                out.append(f"- {a} vs {b}: beyond method noise in {len(beyond)} of {len(pair)} languages; within it in "
                           f"{int((pair.reading == WITHIN_NOISE).sum())}.")
            out.append("")
            continue
        out += ["| a vs b | " + " | ".join(langs) + " |", "|---" * (len(langs) + 1) + "|"]
        for (a, b), pair in block.groupby(["label_a", "label_b"], sort=True):
            cells = {r.lang: (f"{_pct(r.difference)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}]" +
                              (f" {WITHIN_NOISE}" if r.reading == WITHIN_NOISE else "" if math.isnan(r.ci_low) else " **"
                               + ("a higher" if r.difference > 0 else "a lower") + "**"))
                     for r in pair.itertuples()}
            out.append(f"| {a} vs {b} | " + " | ".join(cells.get(lang, "") for lang in langs) + " |")
        out.append("")
        for (a, b), pair in block.groupby(["label_a", "label_b"], sort=True):
            beyond = pair[pair.reading.str.endswith(" D")]
            within = sorted(pair.lang[pair.reading == WITHIN_NOISE])
            said = "; ".join(f"{r.lang}: {r.reading} ({_pct(r.difference)} pp)" for r in beyond.sort_values("lang").itertuples())
            out.append(f"- {a} vs {b}: " + (said or "no difference beyond method noise") +
                       (f"; {WITHIN_NOISE} in {', '.join(within)}" if within and said else ""))
        out.append("")
    return out
