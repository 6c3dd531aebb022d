"""Fidelity to the baseline per token (KL, top-token agreement, Δp) per language, next to D_L
(``tables/fidelity.csv``, one figure per suite)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis import fidelity
from analysis.report.section import FigureFile, figure_slug
from analysis.report.text import figure_links, md_table, pct


@dataclass(frozen=True)
class Fidelity:
    table: pd.DataFrame
    """:func:`analysis.fidelity.fidelity_table`."""
    confidence: float


class FidelitySection:
    name = "fidelity"

    def compute(self, analysis) -> Fidelity:
        options = analysis.options
        table, problems = fidelity.fidelity_table(analysis.runset, analysis.deg.table, options.n_resamples, options.random_state,
                                                  options.confidence)
        analysis.notes.extend(problems)
        return Fidelity(table, options.confidence)

    def tables(self, result: Fidelity) -> dict[str, pd.DataFrame]:
        return {"fidelity": result.table}

    def figures(self, result: Fidelity):
        from analysis import plots

        for suite, block in result.table.groupby("suite") if not result.table.empty else []:
            fig, _ = plots.fidelity_by_language(block, fidelity.languages_by_baseline(block), f"Fidelity to the baseline by language — {suite}")
            yield FigureFile(f"fidelity_{figure_slug(suite)}.png", fig, plots.save)

    def markdown(self, result: Fidelity, figures) -> list[str]:
        """Per suite, one row per (config, language), D_L next to the fidelity numbers."""
        level = f"{result.confidence:.0%}"
        out = ["## Fidelity to the baseline (per token)", ""]
        if result.table.empty:
            return out + ["Not computed: needs runs with fidelity files (`qd-sweep --fidelity`, or qd-hf `fidelity_out`/`fidelity_baseline`).", ""]
        out += [(f"KL(base ‖ quant) over the baseline's top-k tokens + one tail bucket (a lower bound of the exact KL; `tail mass` is the "
                 f"baseline's mean probability outside the top-k), per scored token and per UTF-8 byte, in nats; same top token: share of "
                 f"positions where both models' argmax agree; Δp = p_quant(true token) − p_base(true token), mean and percentiles over positions. "
                 f"{level} CIs: studentized document bootstrap within the language (as D_L); Δp percentiles: percentile interval over at most "
                 f"{fidelity.MAX_PERCENTILE_RESAMPLES} document resamples. Languages ordered by baseline bits/byte."), ""]

        def ci(r, column, scale=1.0, fmt="{:.4g}"):
            value, low, high = (getattr(r, name) for name in (column, f"{column}_ci_low", f"{column}_ci_high"))
            text = "n/a" if math.isnan(value) else fmt.format(scale * value)
            return text + (f" [{fmt.format(scale * low)}, {fmt.format(scale * high)}]" if not math.isnan(low) else "")

        for suite, block in result.table.groupby("suite"):
            order = {lang: i for i, lang in enumerate(fidelity.languages_by_baseline(block))}
            names = fidelity.series_names(block)
            block = block.assign(order=block.lang.map(order), name=block.quant_id.map(names)).sort_values(["order", "name"])
            rows = [[r.lang, r.name, pct(r.degradation) + (f" [{pct(r.degradation_ci_low)}, {pct(r.degradation_ci_high)}]" if not math.isnan(r.degradation_ci_low) else ""),
                     ci(r, "kl_per_token"), ci(r, "kl_per_byte"), ci(r, "same_top_token", 100, "{:.2f}%"), ci(r, "dp_mean", 1, "{:+.2e}"),
                     " / ".join(f"{getattr(r, f'dp_p{p}'):+.2e}" for p in fidelity.PERCENTILES), f"{r.base_tail:.2e} (k={r.topk})", r.n_docs, r.n_tokens]
                    for r in block.itertuples()]
            out += [f"### {suite}", "", md_table(["lang", "config", f"D [{level} CI]", "KL/token", "KL/byte", "same top token", "Δp mean",
                                                  "Δp p" + "/p".join(map(str, fidelity.PERCENTILES)), "tail mass", "docs", "tokens"], rows), ""]
            for note in sorted(set(block.ci_note) - {""}):
                out += [f"{', '.join(sorted(set(block.lang[block.ci_note == note])))}: {note}.", ""]
        return out + figure_links(figures) + [""]


SECTION = FidelitySection()
