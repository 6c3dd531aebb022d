"""Calibration language × evaluation language: per family of configs with at least two calibration
settings, D (and its CI) of each setting per evaluated language, with language-matched calibration
compared with ``all`` (``tables/calibration_matrix.csv``, one heatmap per family and suite;
:mod:`analysis.calibration_matrix`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from analysis import calibration_matrix
from analysis.report.section import FigureFile


@dataclass(frozen=True)
class MatrixBlock:
    """One family + suite of :func:`analysis.calibration_matrix.calibration_table`."""

    index: int
    name: str
    """Method, bits and granularity of the family."""
    suite: str
    rows: pd.DataFrame
    matched: list[str]
    """:func:`analysis.calibration_matrix.matched_comparisons` lines."""

    @property
    def figure(self) -> str:
        return f"calibration_matrix_{self.index}.png"


@dataclass(frozen=True)
class CalibrationMatrix:
    table: pd.DataFrame
    blocks: list[MatrixBlock]


class CalibrationMatrixSection:
    name = "calibration_matrix"

    def compute(self, analysis) -> CalibrationMatrix:
        draws = analysis.results["calibration_draws"]
        long = calibration_matrix.calibration_table(analysis.runset, draws.config_table)
        blocks = []
        for index, ((family, suite), block) in enumerate(long.groupby(["family", "suite"], sort=True) if not long.empty else []):
            config = json.loads(family)
            name = f"{config.get('method')} w{config.get('bits')} {config.get('granularity') or ''}{config.get('group_size') or ''}"
            matched = (calibration_matrix.matched_comparisons(analysis.runset, block, draws.comparisons)
                       if draws.comparisons is not None and not draws.comparisons.empty else [])
            blocks.append(MatrixBlock(index, name, suite, block, matched))
        return CalibrationMatrix(long, blocks)

    def tables(self, result: CalibrationMatrix) -> dict[str, pd.DataFrame]:
        return {"calibration_matrix": result.table}

    def figures(self, result: CalibrationMatrix):
        from analysis.plots import save

        for b in result.blocks:
            fig, _ = calibration_matrix.plot_matrix(b.rows, f"{b.name} — {b.suite}")
            yield FigureFile(b.figure, fig, save)

    def markdown(self, result: CalibrationMatrix, figures) -> list[str]:
        if result.table.empty:
            return []
        out = ["## Calibration language × evaluation language", "",
               ("D (%) of each calibration setting (rows; `all` = every language of the calibration source) per evaluated "
                "language, with its CI; table `tables/calibration_matrix.csv`."), ""]
        for b in result.blocks:
            summary = calibration_matrix.matched_summary(b.rows)
            pivot, low, high = calibration_matrix.matrices(b.rows)
            out += [f"### {b.name} — {b.suite}", "", f"![calibration matrix](figures/{b.figure})", "",
                    "| calibration | " + " | ".join(pivot.columns) + " |", "|---" * (len(pivot.columns) + 1) + "|"]
            for label in pivot.index:
                cells = [_cell(pivot.loc[label, lang], low.loc[label, lang], high.loc[label, lang]) for lang in pivot.columns]
                out.append(f"| {label} | " + " | ".join(cells) + " |")
            if summary["matched_mean"] is not None and summary["all_mean"] is not None:
                out += ["", (f"Mean D with language-matched calibration over {summary['n_matched']} languages: "
                             f"{100 * summary['matched_mean']:.2f} %; with `all` on the same languages: {100 * summary['all_mean']:.2f} %.")]
            if b.matched:
                out += ["", "Language-matched calibration vs `all`, paired per language (CI over calibration draws and documents):", "", *b.matched]
            out.append("")
        return out


def _cell(d: float, low: float, high: float) -> str:
    """A table cell: D and its CI in percent ("" without D; the CI left out where undefined)."""
    if pd.isna(d):
        return ""
    return f"{100 * d:.2f}" + (f" [{100 * low:.2f}, {100 * high:.2f}]" if pd.notna(low) and pd.notna(high) else " [CI undefined]")


SECTION = CalibrationMatrixSection()
