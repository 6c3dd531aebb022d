"""The report's figures (``figures/*.png``); matplotlib is imported only when they are written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from analysis import fidelity, many_languages, relations

if TYPE_CHECKING:
    from analysis.report import Analysis

MAX_LANGUAGE_FIGURES = 3
"""Per-run bar charts; beyond that one run × language heatmap."""
MAX_RATE_DISTORTION_FIGURES = 3


def slug(text: str) -> str:
    """``text`` as a file-name part (characters other than ``A-Za-z0-9_.-`` as ``_``, at most 80)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def write_figures(analysis: Analysis, folder: Path) -> dict[str, list[Path]]:
    """Every figure of ``analysis`` under ``folder``, by report section; files and titles are
    named after the config label (:func:`run_names`)."""
    from analysis import plots  # matplotlib only when figures are written

    figures: dict[str, list[Path]] = {"degradation": [], "fertility": [], "rate_distortion": [], "pareto": [], "scan": [], "fidelity": []}
    for suite, block in analysis.fidelity.groupby("suite") if not analysis.fidelity.empty else []:
        fig, _ = plots.fidelity_by_language(block, fidelity.languages_by_baseline(block), f"Fidelity to the baseline by language — {suite}")
        figures["fidelity"].append(plots.save(fig, folder / f"fidelity_{slug(suite)}.png"))
    table = analysis.deg.table
    names = run_names(table)
    if not table.empty:
        for i, ((quant_id, suite), block) in enumerate(table.groupby(["quant_id", "suite"], sort=True)):
            if i >= MAX_LANGUAGE_FIGURES:
                break
            if block.lang.nunique() >= many_languages.MIN_LANGUAGES:
                continue  # the many-language views replace unreadable per-language bars
            title = f"{names[quant_id]} — {suite}"
            fig, _ = plots.degradation_by_language(block, analysis.groups, title)
            figures["degradation"].append(plots.save(fig, folder / f"degradation_{slug(names[quant_id])}_{slug(suite)}.png"))
            if not analysis.fertility.empty:
                merged = block.merge(analysis.fertility, on=["suite", "lang"], how="left")
                corr = analysis.correlations
                row = corr[(corr.quant_id == quant_id) & (corr.suite == suite) & (corr.predictor == "tokens_per_byte")]
                fig, _ = plots.predictor_scatter(merged, "tokens_per_byte", analysis.groups, row.iloc[0].to_dict() if len(row) else None, title)
                figures["fertility"].append(plots.save(fig, folder / f"fertility_{slug(names[quant_id])}_{slug(suite)}.png"))
    if not table.empty and table.groupby(["quant_id", "suite"]).ngroups > MAX_LANGUAGE_FIGURES:
        for suite, block in table.groupby("suite"):
            if block.lang.nunique() >= many_languages.MIN_LANGUAGES:
                continue
            matrix = block.assign(run=block.quant_id.map(names)).pivot_table(index="run", columns="lang", values="degradation", aggfunc="first")
            matrix = matrix[block.groupby("lang").bpb_base.mean().sort_values().index]  # languages by baseline bits/byte
            fig, _ = plots.degradation_heatmap(matrix, "run", f"Degradation by run and language — {suite}")
            figures["degradation"].append(plots.save(fig, folder / f"degradation_overview_{slug(suite)}.png"))
    if not analysis.rate_distortion.empty:
        fam = table.assign(family_key=table.quant_id.map(lambda r: relations.quant_config_family(analysis.runset.runs[r])))
        families = analysis.rate_distortion[["family_key", "suite"]].drop_duplicates()
        for family_key, suite in families.head(MAX_RATE_DISTORTION_FIGURES).itertuples(index=False):
            block = fam[(fam.family_key == family_key) & (fam.suite == suite)]
            title = f"{block.model.iloc[0]} {analysis.runset.runs[block.quant_id.iloc[0]].family} — {suite}"
            fig, _ = plots.rate_distortion_curves(block, analysis.groups, title)
            figures["rate_distortion"].append(plots.save(fig, folder / f"rate_distortion_{len(figures['rate_distortion'])}.png"))
    if not analysis.pareto.empty and analysis.pareto.effective_bits_per_weight.notna().any():
        for suite, block in analysis.pareto.groupby("suite"):
            fig, _ = plots.pareto(block, block.on_front, title=f"Worst-language degradation vs size — {suite}")
            figures["pareto"].append(plots.save(fig, folder / f"pareto_{slug(suite)}.png"))
    if not analysis.scan.empty:
        fig, _ = plots.degradation_heatmap(relations.scan_pivot(analysis.scan), "block", "Sensitivity scan")
        figures["scan"].append(plots.save(fig, folder / "scan_heatmap.png"))
    return figures




def run_names(table) -> dict[str, str]:
    """quant_id -> a name for figures: the config label, plus the model when several runs share
    it, plus a number when that is still not unique."""
    if table.empty:
        return {}
    runs = table.drop_duplicates("quant_id").sort_values("quant_id")
    shared = runs.label.duplicated(keep=False)
    names = {r.quant_id: f"{r.label} ({r.model})" if flag else r.label for r, flag in zip(runs.itertuples(), shared)}
    seen: dict[str, int] = {}
    for quant_id, name in list(names.items()):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[quant_id] = f"{name} #{seen[name]}"
    return names
