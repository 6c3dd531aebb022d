"""Method comparison: worst-language D, D_LR − D_HR and D_LR/D_HR per config against its effective
bits per weight, with the Pareto front (``tables/pareto.csv``, one figure per suite)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.pareto import pareto_front
from analysis.report.section import FigureFile, figure_slug
from analysis.report.text import config_name, figure_links, md_table, num, pct


@dataclass(frozen=True)
class MethodComparison:
    points: pd.DataFrame
    """The disparity table with ``on_front`` (:func:`analysis.pareto.pareto_front`)."""

    @property
    def has_sizes(self) -> bool:
        return not self.points.empty and self.points.effective_bits_per_weight.notna().any()


class MethodComparisonSection:
    name = "method_comparison"

    def compute(self, analysis) -> MethodComparison:
        disp = analysis.results["disparity"].table
        if disp.empty:
            return MethodComparison(disp)
        points = disp.copy()
        points["on_front"] = pareto_front(points).to_numpy()
        return MethodComparison(points)

    def tables(self, result: MethodComparison) -> dict[str, pd.DataFrame]:
        return {"pareto": result.points}

    def figures(self, result: MethodComparison):
        if not result.has_sizes:
            return
        from analysis import plots

        for suite, block in result.points.groupby("suite"):
            fig, _ = plots.pareto(block, block.on_front, title=f"Worst-language degradation vs size — {suite}")
            yield FigureFile(f"pareto_{figure_slug(suite)}.png", fig, plots.save)

    def markdown(self, result: MethodComparison, figures) -> list[str]:
        out = ["## Method comparison", ""]
        if not result.has_sizes:
            return out + ["No run reports effective bits per weight (needs the qd-hf quant totals).", ""]
        points = result.points
        several_models = points.model.nunique() > 1
        rows = [[config_name(r, several_models), r.suite, num(r.effective_bits_per_weight), pct(r.worst_degradation), pct(r.difference),
                 "undefined" if math.isnan(r.ratio) else f"{r.ratio:.2f}×", "yes" if r.on_front else ""]
                for r in points.sort_values(["suite", "effective_bits_per_weight"]).itertuples()]
        out += [md_table(["config", "suite", "eff. bits/weight", "worst-language D", "D_LR − D_HR", "D_LR/D_HR", "Pareto front"], rows), ""]
        return out + figure_links(figures) + [""]


SECTION = MethodComparisonSection()
