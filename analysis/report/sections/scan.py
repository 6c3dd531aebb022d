"""The sensitivity scan: block × language D (``tables/scan.csv``, one heatmap), from ``qd-scan`` runs or ``--scan-csv``."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.report.section import FigureFile
from analysis.sensitivity_scan import scan_matrix_from_runs, scan_pivot

FIGURE = "scan_heatmap.png"


@dataclass(frozen=True)
class Scan:
    table: pd.DataFrame
    """Long (block, lang, degradation) rows."""


class ScanSection:
    name = "scan"

    def compute(self, analysis) -> Scan:
        return Scan(analysis.scan_csv if analysis.scan_csv is not None else scan_matrix_from_runs(analysis.runset, analysis.deg))

    def tables(self, result: Scan) -> dict[str, pd.DataFrame]:
        return {"scan": result.table}

    def figures(self, result: Scan):
        if result.table.empty:
            return
        from analysis import plots

        fig, _ = plots.degradation_heatmap(scan_pivot(result.table), "block", "Sensitivity scan")
        yield FigureFile(FIGURE, fig, plots.save)

    def markdown(self, result: Scan, figures) -> list[str]:
        return [] if result.table.empty else ["## Sensitivity scan", "", f"![scan](figures/{FIGURE})", ""]


SECTION = ScanSection()
