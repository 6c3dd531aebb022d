"""Calibration draws and method noise: per config, D over its calibration draws with the across-draw
spread and a CI over draws and documents (``tables/calibration_spread.csv``), and paired comparisons
of every two configs (``tables/method_comparisons.csv``); statistics: :mod:`analysis.calibration_draws`."""

from __future__ import annotations

import math

import pandas as pd

from analysis import calibration_draws
from analysis.calibration_draws import DrawAnalysis
from analysis.many_languages import MIN_LANGUAGES
from analysis.replicate_stats import DRAW_NOISE_NOT_MEASURED


class CalibrationDrawsSection:
    name = "calibration_draws"

    def compute(self, analysis) -> DrawAnalysis:
        return calibration_draws.draw_analysis(analysis.runset, analysis.deg, analysis.options.confidence)

    def tables(self, draws: DrawAnalysis) -> dict[str, pd.DataFrame]:
        return {"calibration_spread": draws.spread.reindex(columns=list(calibration_draws.SPREAD_COLUMNS)), "method_comparisons": draws.comparisons}

    def figures(self, draws: DrawAnalysis):
        return iter(())

    def markdown(self, draws: DrawAnalysis, figures) -> list[str]:
        """The section (suites with at least :data:`analysis.many_languages.MIN_LANGUAGES` languages: counts only)."""
        level = f"{draws.confidence:.0%}"
        out = ["## Calibration draws and method noise", "",
               ("Runs whose configs differ only in `calib_seed` are calibration draws of one config (`qd-sweep --calib_draws N`). "
                f"D of a config = mean over its draws; its {level} CI is a t interval whose standard error adds the across-draw variance "
                "of the draws' D (over the number of draws) and the document variance of the draw mean (delta method; every draw "
                "scores the same documents), with Welch–Satterthwaite degrees of freedom; a one-draw config keeps its document CI. "
                "Table `tables/calibration_spread.csv` (D, across-draw SD and range per config, suite and language). "
                f"Simulated coverage of the nominal 95% interval with 5 documents: {calibration_draws.COVERAGE} (`scripts/coverage_calibration_draws.py`). "
                "A calibrated config run once carries draw noise that nothing measured: its comparisons have no CI and read "
                f"\"{DRAW_NOISE_NOT_MEASURED}\" (run it with `--calib_draws 3` or more)."), ""]
        if draws.spread.empty:
            return out + ["No quantized run paired with a baseline.", ""]
        several = draws.spread[draws.spread.n_draws > 1]
        if several.empty:
            out += ["Every config has one calibration draw: the method's own noise is not measured, and a difference between two "
                    "calibrated methods may be inside it.", ""]
        else:
            rows = []
            for r in several.itertuples():
                if (draws.spread[draws.spread.suite == r.suite].lang.nunique()) >= MIN_LANGUAGES:
                    continue
                ci = f"[{_pct(r.d_ci_low)}, {_pct(r.d_ci_high)}]"
                rows.append(f"| {r.label} | {r.suite} | {r.lang} | {r.n_draws} | {_pct(r.d_mean)} | {100 * r.d_sd:.2f} | "
                            f"{_pct(r.d_min)} … {_pct(r.d_max)} | {ci} |")
            out += [f"| config | suite | lang | draws | D mean (%) | SD over draws (pp) | range (%) | {level} CI (%) |",
                    "|---|---|---|---|---|---|---|---|", *rows, ""]
        comparisons = draws.comparisons
        if comparisons.empty:
            return out
        out += ["### Method comparisons", "",
                (f"Paired difference D(a) − D(b) in percentage points with its {level} CI over draws and documents "
                 "(`tables/method_comparisons.csv`): a difference is stated only where the CI excludes 0."), ""]
        for (model, suite), block in comparisons.groupby(["model", "suite"], sort=True):
            langs = sorted(block.lang.unique())
            out += [f"#### {suite} ({model})", ""]
            if len(langs) >= MIN_LANGUAGES:
                for (a, b), pair in block.groupby(["label_a", "label_b"], sort=True):
                    beyond = pair[pair.reading.str.endswith(" D")]
                    unmeasured = int((pair.reading == DRAW_NOISE_NOT_MEASURED).sum())
                    out.append(f"- {a} vs {b}: beyond method noise in {len(beyond)} of {len(pair)} languages; within it in "
                               f"{int((pair.reading == calibration_draws.WITHIN_NOISE).sum())}" + (f"; {DRAW_NOISE_NOT_MEASURED} in {unmeasured}" if unmeasured else "") + ".")
                out.append("")
                continue
            out += ["| a vs b | " + " | ".join(langs) + " |", "|---" * (len(langs) + 1) + "|"]
            for (a, b), pair in block.groupby(["label_a", "label_b"], sort=True):
                cells = {r.lang: _comparison_cell(r) for r in pair.itertuples()}
                out.append(f"| {a} vs {b} | " + " | ".join(cells.get(lang, "") for lang in langs) + " |")
            out.append("")
            for (a, b), pair in block.groupby(["label_a", "label_b"], sort=True):
                beyond = pair[pair.reading.str.endswith(" D")]
                said = "; ".join(f"{r.lang}: {r.reading} ({_pct(r.difference)} pp)" for r in beyond.sort_values("lang").itertuples())
                within, unmeasured = (sorted(pair.lang[pair.reading == reading]) for reading in (calibration_draws.WITHIN_NOISE, DRAW_NOISE_NOT_MEASURED))
                if not said and not unmeasured:
                    out.append(f"- {a} vs {b}: no difference beyond method noise")
                    continue
                parts = [said] if said else []
                parts += [f"{reading} in {', '.join(where)}" for reading, where in ((calibration_draws.WITHIN_NOISE, within), (DRAW_NOISE_NOT_MEASURED, unmeasured)) if where]
                out.append(f"- {a} vs {b}: " + "; ".join(parts))
            out.append("")
        return out


def _comparison_cell(r) -> str:
    """``+d [low, high]`` with the reading (bold where the CI excludes 0), or ``+d (why no CI)``."""
    if math.isnan(r.ci_low):
        return f"{_pct(r.difference)} ({r.reading})"
    if r.reading == calibration_draws.WITHIN_NOISE:
        return f"{_pct(r.difference)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}] {calibration_draws.WITHIN_NOISE}"
    return f"{_pct(r.difference)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}] **{'a higher' if r.difference > 0 else 'a lower'}**"


def _pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.2f}"


SECTION = CalibrationDrawsSection()
