"""Rate-distortion: slopes of ln D per extra bit (``tables/rate_distortion.csv``, curves of the first
families) and of the relative weight MSE (``tables/weight_mse.csv``, ``tables/weight_mse_slopes.csv``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.pairing import quant_config_family
from analysis.rate_distortion import rate_distortion, weight_mse, weight_mse_slopes
from analysis.report.section import FigureFile
from analysis.report.text import figure_links, md_table, num

MAX_RATE_DISTORTION_FIGURES = 3


@dataclass(frozen=True)
class RateDistortion:
    table: pd.DataFrame
    """:func:`analysis.rate_distortion.rate_distortion`."""
    weight_mse: pd.DataFrame
    weight_mse_slopes: pd.DataFrame
    curves: list[tuple[str, pd.DataFrame]]
    """(title, degradation rows of one family and suite) of the first :data:`MAX_RATE_DISTORTION_FIGURES` families."""
    groups: dict[str, str]
    confidence: float


class RateDistortionSection:
    name = "rate_distortion"

    def compute(self, analysis) -> RateDistortion:
        runset, options, table = analysis.runset, analysis.options, analysis.deg.table
        rd = rate_distortion(runset, analysis.deg, options.n_resamples, options.random_state, options.confidence)
        mse = weight_mse(runset)
        curves = []
        if not rd.empty:
            fam = table.assign(family_key=table.quant_id.map(lambda r: quant_config_family(runset.runs[r])))
            families = rd[["family_key", "suite"]].drop_duplicates()
            for family_key, suite in families.head(MAX_RATE_DISTORTION_FIGURES).itertuples(index=False):
                block = fam[(fam.family_key == family_key) & (fam.suite == suite)]
                curves.append((f"{block.model.iloc[0]} {runset.runs[block.quant_id.iloc[0]].family} — {suite}", block))
        return RateDistortion(rd, mse, weight_mse_slopes(mse, options.confidence), curves, analysis.groups, options.confidence)

    def tables(self, result: RateDistortion) -> dict[str, pd.DataFrame]:
        return {"rate_distortion": result.table, "weight_mse": result.weight_mse, "weight_mse_slopes": result.weight_mse_slopes}

    def figures(self, result: RateDistortion):
        from analysis import plots

        for i, (title, block) in enumerate(result.curves):
            fig, _ = plots.rate_distortion_curves(block, result.groups, title)
            yield FigureFile(f"rate_distortion_{i}.png", fig, plots.save)

    def markdown(self, result: RateDistortion, figures) -> list[str]:
        level, rd = f"{result.confidence:.0%}", result.table
        out = ["## Rate-distortion", ""]
        if rd.empty:
            out += ["No family of runs differing only in bits.", ""]
        else:
            rows = [[r.family, r.suite, r.lang, r.bits, r.fit_bits or "none", r.dropped_bits or "none", num(r.slope, 3),
                     f"[{num(r.low, 3)}, {num(r.high, 3)}]" if not math.isnan(r.low) else (r.ci_note or "n/a")]
                    for r in rd.itertuples()]
            out += [(f"Slope of ln D per extra bit (OLS over the bit widths where every language's D_L CI lies above 0 — the same widths for "
                     f"every language; {level} CI from a document bootstrap refitted per resample):"), "",
                    md_table(["family", "suite", "lang", "bits run", "bits fitted", "bits dropped (why)", "slope", "CI"], rows), ""]
        out += figure_links(figures) + [""]
        if len(figures) < len(rd[["family_key", "suite"]].drop_duplicates()) if not rd.empty else False:
            out += [f"(Curves for the first {MAX_RATE_DISTORTION_FIGURES} families only; all slopes are in tables/rate_distortion.csv.)", ""]
        if not result.weight_mse_slopes.empty:
            rows = [[r.label, r.grid, r.n, num(r.slope, 3), f"[{num(r.low, 3)}, {num(r.high, 3)}]", num(r.grid_reference_slope, 4),
                     num(r.theoretical_slope, 4)] for r in result.weight_mse_slopes.itertuples()]
            out += [("Weight relative MSE vs bits (mean over layers; OLS t-interval). Reference for uniform quantization noise, MSE ∝ "
                     "(range/steps)²: the OLS slope of ln(1/steps²) over the family's bit widths, with steps = 2^(b−1)−1 per half-range "
                     "for the int grid and 2^b−1 for midrise/asymmetric grids; it tends to −2·ln 2 ≈ −1.386 per bit (shown too)."), "",
                    md_table(["family", "grid", "n", "slope of ln MSE", "CI", "reference for this grid and bits", "asymptotic −2 ln 2"], rows), ""]
        return out


SECTION = RateDistortionSection()
