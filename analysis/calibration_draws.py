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
from qd_models.config import QD_ARGS, parse_qd_args
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
    """The config reads calibration texts, so its result depends on which were drawn (a config that no
    longer parses counts as dependent: its draw noise is not known to be absent)."""
    try:
        return bool(parse_qd_args({k: v for k, v in quant_config.items() if k in QD_ARGS and v is not None})[0].calibration_passes)
    except ValueError:
        return True


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


def _comparison_cell(r) -> str:
    """``+d [low, high]`` with the reading (bold where the CI excludes 0), or ``+d (why no CI)``."""
    if math.isnan(r.ci_low):
        return f"{_pct(r.difference)} ({r.reading})"
    if r.reading == WITHIN_NOISE:
        return f"{_pct(r.difference)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}] {WITHIN_NOISE}"
    return f"{_pct(r.difference)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}] **{'a higher' if r.difference > 0 else 'a lower'}**"


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
            f"D of a config = mean over its draws; its {level} CI is a t interval whose standard error adds the across-draw variance "
            "of the draws' D (over the number of draws) and the document variance of the draw mean (delta method; every draw "
            "scores the same documents), with Welch–Satterthwaite degrees of freedom; a one-draw config keeps its document CI. "
            "Table `tables/calibration_spread.csv` (D, across-draw SD and range per config, suite and language). "
            f"Simulated coverage of the nominal 95% interval with 5 documents: {COVERAGE} (`scripts/coverage_calibration_draws.py`). "
            "A calibrated config run once carries draw noise that nothing measured: its comparisons have no CI and read "
            f"\"{DRAW_NOISE_NOT_MEASURED}\" (run it with `--calib_draws 3` or more)."), ""]
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
                beyond = pair[pair.reading.str.endswith(" D")]
                unmeasured = int((pair.reading == DRAW_NOISE_NOT_MEASURED).sum())
                out.append(f"- {a} vs {b}: beyond method noise in {len(beyond)} of {len(pair)} languages; within it in "
                           f"{int((pair.reading == WITHIN_NOISE).sum())}" + (f"; {DRAW_NOISE_NOT_MEASURED} in {unmeasured}" if unmeasured else "") + ".")
            out.append("")
            continue
        out += ["| a vs b | " + " | ".join(langs) + " |", "|---" * (len(langs) + 1) + "|"]
        for (a, b), pair in block.groupby(["label_a", "label_b"], sort=True):
            cells = {r.lang: _comparison_cell(r) for r in pair.itertuples()}
            out.append(f"| {a} vs {b} | " + " | ".join(cells.get(lang, "") for lang in langs) + " |")
        out.append("")
        for (a, b), pair in block.groupby(["label_a", "label_b"], sort=True):
            beyond = pair[pair.reading.str.endswith(" D")]
            said = "; ".join(f"{r.lang}: {r.reading} ({_pct(r.difference)} pp)" for r in beyond.sort_values("lang").itertuples())
            within, unmeasured = (sorted(pair.lang[pair.reading == reading]) for reading in (WITHIN_NOISE, DRAW_NOISE_NOT_MEASURED))
            if not said and not unmeasured:
                out.append(f"- {a} vs {b}: no difference beyond method noise")
                continue
            parts = [said] if said else []
            parts += [f"{reading} in {', '.join(where)}" for reading, where in ((WITHIN_NOISE, within), (DRAW_NOISE_NOT_MEASURED, unmeasured)) if where]
            out.append(f"- {a} vs {b}: " + "; ".join(parts))
        out.append("")
    return out
