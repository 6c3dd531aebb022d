"""Degradation by language: per (run, suite), D of every language with its CI (``tables/degradation.csv``,
``tables/doc_degradation.csv``), bar charts of the first runs and one run × language heatmap per suite."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis import many_languages, stats
from analysis.language_degradation import Degradation
from analysis.report.section import FigureFile, figure_slug
from analysis.report.text import figure_links, md_table, num, pct

MAX_LANGUAGE_FIGURES = 3
"""Per-run bar charts; beyond that one run × language heatmap."""


@dataclass(frozen=True)
class DegradationByLanguage:
    deg: Degradation
    groups: dict[str, str]
    confidence: float


def run_names(table: pd.DataFrame) -> dict[str, str]:
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


def figure_blocks(table: pd.DataFrame):
    """(quant_id, suite, block, figure name) of the (run, suite) blocks that get per-language figures:
    the first :data:`MAX_LANGUAGE_FIGURES`, except those with many languages (their own views)."""
    names = run_names(table)
    for i, ((quant_id, suite), block) in enumerate(table.groupby(["quant_id", "suite"], sort=True) if not table.empty else []):
        if i >= MAX_LANGUAGE_FIGURES:
            break
        if block.lang.nunique() < many_languages.MIN_LANGUAGES:
            yield quant_id, suite, block, names[quant_id]


class DegradationSection:
    name = "degradation"

    def compute(self, analysis) -> DegradationByLanguage:
        return DegradationByLanguage(analysis.deg, analysis.groups, analysis.options.confidence)

    def tables(self, result: DegradationByLanguage) -> dict[str, pd.DataFrame]:
        return {"degradation": result.deg.table, "doc_degradation": result.deg.docs}

    def figures(self, result: DegradationByLanguage):
        from analysis import plots

        table = result.deg.table
        for _, suite, block, name in figure_blocks(table):
            fig, _ = plots.degradation_by_language(block, result.groups, f"{name} — {suite}")
            yield FigureFile(f"degradation_{figure_slug(name)}_{figure_slug(suite)}.png", fig, plots.save)
        if table.empty or table.groupby(["quant_id", "suite"]).ngroups <= MAX_LANGUAGE_FIGURES:
            return
        names = run_names(table)
        for suite, block in table.groupby("suite"):
            if block.lang.nunique() >= many_languages.MIN_LANGUAGES:
                continue
            matrix = block.assign(run=block.quant_id.map(names)).pivot_table(index="run", columns="lang", values="degradation", aggfunc="first")
            matrix = matrix[block.groupby("lang").bpb_base.mean().sort_values().index]  # languages by baseline bits/byte
            fig, _ = plots.degradation_heatmap(matrix, "run", f"Degradation by run and language — {suite}")
            yield FigureFile(f"degradation_overview_{figure_slug(suite)}.png", fig, plots.save)

    def markdown(self, result: DegradationByLanguage, figures) -> list[str]:
        deg, level = result.deg, f"{result.confidence:.0%}"
        out = ["## Degradation by language", ""]
        if deg.table.empty:
            out += ["No quantized run could be paired with a baseline" + (" (see problems above)." if deg.problems else "; pass --baseline RUN to compare every run with one."), ""]
        for (quant_id, suite), block in deg.table.groupby(["quant_id", "suite"], sort=True) if not deg.table.empty else []:
            out += [f"### {block.label.iloc[0]} — `{quant_id}` — {suite}", ""]
            if block.lang.nunique() >= many_languages.MIN_LANGUAGES:
                out += [f"{block.lang.nunique()} languages: see Many languages below; every row is in tables/degradation.csv.", ""]
                continue
            rows = [[r.lang, result.groups.get(r.lang, "—"), num(r.bpb_base), num(r.bpb_quant), f"{r.delta_bpb:+.4f}",
                     pct(r.degradation) + (f" [{pct(r.ci_low)}, {pct(r.ci_high)}]" if not math.isnan(r.ci_low) else ""),
                     pct(r.byte_ppl_rel_change), r.n_docs, r.flag or ""] for r in block.sort_values("lang").itertuples()]
            out += [md_table(["lang", "group", "bits/byte base", "bits/byte quant", "Δ bits/byte", f"D (rel. NLL) [{level} CI]",
                              "seeds' style: rel. byte-ppl change", "docs", "flag"], rows), ""]
            for reason in sorted(set(block.ci_source[block.n_docs < stats.MIN_CI_DOCS])):
                out += [f"{', '.join(sorted(block.lang[block.ci_source == reason]))}: {reason}.", ""]
        out += figure_links(figures)
        if len(deg.table.groupby(["quant_id", "suite"])) > MAX_LANGUAGE_FIGURES if not deg.table.empty else False:
            out.append(f"(Bar charts for the first {MAX_LANGUAGE_FIGURES} run/suite combinations; the overview heatmap shows all runs; "
                       "all numbers are in tables/degradation.csv.)")
        return out + [""]


SECTION = DegradationSection()
