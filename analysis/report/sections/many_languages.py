"""Many languages: the memorisation flags and, per (run, suite) with at least
:data:`analysis.many_languages.MIN_LANGUAGES` languages, D against the relative baseline, the most and
least degraded languages and D by script (``tables/many_languages.csv``, ``tables/script_summary.csv``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis import many_languages as views
from analysis.report.section import FigureFile, figure_slug, save_as_laid_out


@dataclass(frozen=True)
class LanguageBlock:
    """One (run, suite) with many languages."""

    quant_id: str
    suite: str
    label: str
    languages: pd.DataFrame
    """Its rows of :func:`analysis.many_languages.language_table`."""
    spearman: tuple[int, float, float]
    script_summary: pd.DataFrame

    @property
    def name(self) -> str:
        """The figure-name part of the block."""
        return f"{figure_slug(self.quant_id)}_{figure_slug(self.suite)}"


@dataclass(frozen=True)
class ManyLanguages:
    table: pd.DataFrame
    """:func:`analysis.many_languages.language_table` (empty: no suite has a paired run)."""
    flags: list[str]
    blocks: list[LanguageBlock]


class ManyLanguagesSection:
    name = "many_languages"

    def compute(self, analysis) -> ManyLanguages:
        table = views.language_table(analysis.deg.table, analysis.deg.docs)
        if table.empty:
            return ManyLanguages(table, [], [])
        blocks = [LanguageBlock(quant_id, suite, block.label.iloc[0], block, views.spearman(block), views.script_summary(block))
                  for (quant_id, suite), block in table.groupby(["quant_id", "suite"], sort=True) if block.lang.nunique() >= views.MIN_LANGUAGES]
        return ManyLanguages(table, views.memorisation_flags(table), blocks)

    def tables(self, result: ManyLanguages) -> dict[str, pd.DataFrame]:
        tables = {} if result.table.empty else {"many_languages": result.table}
        if result.blocks:
            tables["script_summary"] = pd.concat([b.script_summary.assign(quant_id=b.quant_id, suite=b.suite) for b in result.blocks])
        return tables

    def figures(self, result: ManyLanguages):
        for b in result.blocks:
            title = f"{b.label} — {b.suite}"
            fig, _ = views.scatter_vs_baseline(b.languages, title)
            yield FigureFile(f"many_scatter_{b.name}.png", fig, save_as_laid_out)
            fig, _ = views.script_view(b.script_summary, b.languages, f"{title}: by script")
            yield FigureFile(f"many_scripts_{b.name}.png", fig, save_as_laid_out)

    def markdown(self, result: ManyLanguages, figures) -> list[str]:
        if result.table.empty:
            return []
        out = ["## Many languages", "", "Baselines far below the suite's other languages (memorised text?):", ""]
        out += [f"- {line}" for line in result.flags] if result.flags else ["None."]
        out.append("")
        for b in result.blocks:
            block = b.languages
            n, rho, p = b.spearman
            out += [f"### {b.label} — `{b.quant_id}` — {b.suite} ({block.lang.nunique()} languages)", "",
                    f"Spearman ρ of D vs relative baseline (reference {views.REFERENCE_LANG}): {rho:.3f} (p = {p:.3g}, n = {n}).", ""]
            if block.relative_baseline.isna().all():
                out += [f"No relative baseline: needs `--log_samples` and the reference language {views.REFERENCE_LANG!r} in the suite.", ""]
            most, least = views.top_bottom(block)
            for heading, part in (("Most degraded", most), ("Least degraded", least)):
                rows = [f"| {r.lang} | {r.name} | {r.script} | {_fmt(r.bpb_base)} | {_fmt(r.relative_baseline)} | {100 * r.degradation:+.2f}% |"
                        for r in part.itertuples()]
                out += [f"{heading}:", "", "| lang | name | script | bits/byte base | rel. baseline | D |", "|---|---|---|---|---|---|", *rows, ""]
            rows = [f"| {r.script} | {r.n_langs} | {100 * r.median_D:+.2f}% | {100 * r.min_D:+.2f}% | {100 * r.max_D:+.2f}% | "
                    f"{_fmt(r.median_relative_baseline)} | {r.example_langs} |" for r in b.script_summary.itertuples()]
            out += ["By script:", "", "| script | languages | median D | min D | max D | median rel. baseline | e.g. |",
                    "|---|---|---|---|---|---|---|", *rows, ""]
            out += [f"![many_{view}_{b.name}](figures/many_{view}_{b.name}.png)" for view in ("scatter", "scripts")]
            out += ["", "All languages: tables/many_languages.csv; scripts: tables/script_summary.csv.", ""]
        return out


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


SECTION = ManyLanguagesSection()
