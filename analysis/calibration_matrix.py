"""Calibration language as a factor: a calibration-setting x evaluation-language matrix of D.

Runs are grouped by model + quant config without the calibration arguments (``calib_langs``,
``calib_data``, ``calib_samples``, ``calib_seed``); a group with at least two calibration settings (e.g. from
``qd-sweep`` with ``calib_langs: [en, he, sw, all, "en;he"]``) gives one matrix: rows are the
settings (``en``, ``en;he``, ``all`` = every language of the calibration source), columns the
evaluated languages, cells D with its CI from :func:`analysis.language_degradation.degradation`, or,
given the config table of :mod:`analysis.calibration_draws`, D as the mean over a setting's calibration
draws with the CI over draws and documents; with its comparisons, each language's language-matched
setting is compared with ``all`` (a difference only where the CI excludes 0).
"""

from __future__ import annotations

import json
import math

import pandas as pd

from analysis.loading import RunSet
from qd_models.config import METHODS

CALIB_KEYS = ("calib_langs", "calib_data", "calib_samples", "calib_seed")
COLUMNS = ("family", "method", "suite", "calibration", "lang", "degradation", "ci_low", "ci_high", "n_docs", "quant_id")


def calibration_label(quant_config: dict) -> str | None:
    """``en`` / ``en;he`` / ``all`` (plus ``@source`` when ``calib_data`` is set), or ``None``
    for a run without a calibration pass."""
    report_langs = quant_config.get("calib_langs")
    spec = METHODS.get(str(quant_config.get("method")))
    if report_langs is None or not (spec is not None and spec.reads_calibration) and not quant_config.get("calib_mode"):
        return None
    label = ";".join(report_langs) if report_langs else "all"
    return f"{label}@{quant_config['calib_data']}" if quant_config.get("calib_data") else label


def calibration_table(runset: RunSet, table: pd.DataFrame) -> pd.DataFrame:
    """Long rows (family, method, suite, calibration, lang, degradation, ci_low, ci_high, ...)
    of the families with >= 2 calibration settings; ``table`` is ``Degradation.table``."""
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for row in table.itertuples(index=False):
        config = runset.runs[row.quant_id].quant_config
        label = calibration_label(config)
        if label is None:
            continue
        family = json.dumps({"model": row.model, **{k: v for k, v in config.items() if k not in CALIB_KEYS}}, sort_keys=True, default=str)
        rows.append({"family": family, "method": row.method, "suite": row.suite, "calibration": label, "lang": row.lang,
                     "degradation": row.degradation, "ci_low": row.ci_low, "ci_high": row.ci_high, "n_docs": row.n_docs,
                     "quant_id": row.quant_id})
    out = pd.DataFrame(rows, columns=COLUMNS)
    if out.empty:
        return out
    settings = out.groupby("family").calibration.nunique()
    return out[out.family.isin(settings[settings >= 2].index)].reset_index(drop=True)


def matrix(block: pd.DataFrame, value: str = "degradation") -> pd.DataFrame:
    """One family + suite of :func:`calibration_table` as calibration (rows) x language (columns);
    single languages first, then mixes, then ``all``."""
    pivot = block.pivot_table(index="calibration", columns="lang", values=value, aggfunc="first")

    def order(label: str):
        return (label.startswith("all"), ";" in label, label)

    return pivot.loc[sorted(pivot.index, key=order)]


def matrices(block: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`matrix` of D and of its CI bounds, on the same rows and columns (a CI may be
    undefined, e.g. from fewer than 3 documents: NaN there)."""
    values = matrix(block)
    low, high = (matrix(block, name).reindex(index=values.index, columns=values.columns) for name in ("ci_low", "ci_high"))
    return values, low, high


def matched_summary(block: pd.DataFrame) -> dict:
    """For one family + suite: mean over evaluated languages of D with language-matched
    calibration (row = that language) and with ``all``; ``None`` where a row is missing."""
    pivot = matrix(block)
    langs = [lang for lang in pivot.columns if lang in pivot.index and pd.notna(pivot.loc[lang, lang])]
    if not langs or "all" not in pivot.index:
        return {"matched_mean": None, "all_mean": None, "n_matched": len(langs)}
    matched = sum(pivot.loc[lang, lang] for lang in langs) / len(langs)
    return {"matched_mean": matched, "all_mean": float(pivot.loc["all", langs].mean()), "n_matched": len(langs)}


def plot_matrix(block: pd.DataFrame, title: str = ""):
    """Heatmap of :func:`matrix` with each cell's D and CI written in it; returns (fig, ax)."""
    from analysis.plots import degradation_heatmap

    values, low, high = matrices(block)
    fig, ax = degradation_heatmap(values, "calibration", title)
    ax.set_xlabel("evaluation language")
    for i, label in enumerate(values.index):
        for j, lang in enumerate(values.columns):
            d = values.loc[label, lang]
            if pd.notna(d):
                ci = f"\n[{100 * low.loc[label, lang]:.1f}, {100 * high.loc[label, lang]:.1f}]" if pd.notna(low.loc[label, lang]) else ""
                ax.text(j, i, f"{100 * d:.1f}{ci}", ha="center", va="center", fontsize=6, color="white")
    return fig, ax


def matched_comparisons(runset: RunSet, block: pd.DataFrame, comparisons: pd.DataFrame) -> list[str]:
    """One line per evaluated language with a language-matched row and an ``all`` row in ``block``
    (one family + suite): D(matched) − D(all) with its CI from ``comparisons``
    (``analysis.calibration_draws.DrawAnalysis.comparisons``) and its reading ("within method noise", "draw noise
    not measured": no CI)."""
    labels = {(r.calibration, r.lang): runset.runs[r.quant_id].label for r in block.itertuples()}
    lines = []
    for lang in sorted(block.lang.unique()):
        matched, pooled = labels.get((lang, lang)), labels.get(("all", lang))
        if matched is None or pooled is None:
            continue
        for r in comparisons[(comparisons.suite == block.suite.iloc[0]) & (comparisons.lang == lang)].itertuples():
            if {r.label_a, r.label_b} == {matched, pooled}:
                sign = 1.0 if r.label_a == matched else -1.0
                low, high = sorted((sign * r.ci_low, sign * r.ci_high))
                reading = ("matched higher D" if sign * r.difference > 0 else "matched lower D") if r.reading.endswith(" D") else r.reading
                ci = f" [{100 * low:+.2f}, {100 * high:+.2f}]" if math.isfinite(low) and math.isfinite(high) else ""
                lines.append(f"- {lang}: D(calibrated on {lang}) − D(all) = {100 * sign * r.difference:+.2f} pp{ci}: {reading}.")
    return lines
