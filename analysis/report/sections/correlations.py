"""Correlations across languages of D with each predictor (resource class, tokenizer fertility,
activation kurtosis; ``tables/correlations.csv``), the fertility table (``tables/fertility.csv``) and
a D vs tokens-per-byte scatter per (run, suite) that has bar charts."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis import many_languages
from analysis.predictors import calibration_kurtosis, correlations
from analysis.report.section import FigureFile, figure_slug
from analysis.report.sections.degradation_by_language import figure_blocks
from analysis.report.text import figure_links, md_table, num


@dataclass(frozen=True)
class Correlations:
    table: pd.DataFrame
    """:func:`analysis.predictors.correlations`."""
    fertility: pd.DataFrame
    """:func:`analysis.tokenizer_fertility.fertility` (empty without a tokenizer)."""
    deg_table: pd.DataFrame
    groups: dict[str, str]


class CorrelationsSection:
    name = "correlations"

    def compute(self, analysis) -> Correlations:
        kurtosis = calibration_kurtosis(analysis.runset)
        if kurtosis.empty:
            analysis.notes.append("No quant report has per-language calibration kurtosis: that correlation is skipped.")
        deg = analysis.deg
        table = correlations(deg, analysis.groups, analysis.fertility, kurtosis) if not deg.table.empty else pd.DataFrame()
        return Correlations(table, analysis.fertility, deg.table, analysis.groups)

    def tables(self, result: Correlations) -> dict[str, pd.DataFrame]:
        return {"fertility": result.fertility, "correlations": result.table}

    def figures(self, result: Correlations):
        if result.fertility.empty:
            return
        from analysis import plots

        corr = result.table
        for quant_id, suite, block, name in figure_blocks(result.deg_table):
            merged = block.merge(result.fertility, on=["suite", "lang"], how="left")
            row = corr[(corr.quant_id == quant_id) & (corr.suite == suite) & (corr.predictor == "tokens_per_byte")]
            fig, _ = plots.predictor_scatter(merged, "tokens_per_byte", result.groups, row.iloc[0].to_dict() if len(row) else None, f"{name} — {suite}")
            yield FigureFile(f"fertility_{figure_slug(name)}_{figure_slug(suite)}.png", fig, plots.save)

    def markdown(self, result: Correlations, figures) -> list[str]:
        out = ["## Correlations across languages", ""]
        if result.table.empty:
            out += ["None computed.", ""]
        else:
            rows = [[r.quant_id, r.suite, r.predictor, r.n, num(r.pearson_r, 3), num(r.pearson_p, 3), num(r.spearman_rho, 3), num(r.spearman_p, 3)]
                    for r in result.table.itertuples()]
            out += [md_table(["run", "suite", "predictor", "n", "Pearson r", "p", "Spearman ρ", "p"], rows), ""]
            out += ["With n languages this small, p-values are indicative only.", ""]
        fertility = result.fertility
        if not fertility.empty:
            few = fertility.groupby("suite").lang.transform("nunique") < many_languages.MIN_LANGUAGES  # others: CSV only
            rows = [[r.suite, r.lang, r.n_tokens, r.n_bytes, num(r.tokens_per_byte), num(r.tokens_per_word)] for r in fertility[few].itertuples()]
            out += ["Tokenizer fertility (suites with many languages: tables/fertility.csv):", "",
                    md_table(["suite", "lang", "tokens", "bytes", "tokens/byte", "tokens/word"], rows), ""]
        return out + figure_links(figures) + [""]


SECTION = CorrelationsSection()
