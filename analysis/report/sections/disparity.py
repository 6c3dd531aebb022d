"""Disparity (low- vs high-resource): group means, difference and ratio with hierarchical-bootstrap
CIs, the language-level permutation test and leave-one-language-out (``tables/disparity.csv``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.group_disparity import disparity
from analysis.report.text import config_name, md_table, num, pct


@dataclass(frozen=True)
class Disparity:
    table: pd.DataFrame
    """:func:`analysis.group_disparity.disparity`."""
    deg_table: pd.DataFrame
    groups: dict[str, str]
    confidence: float
    min_denominator: float


def group_readings(result: Disparity) -> list[str]:
    """One sentence per (run, suite) that says what the language-level statistics support."""
    alpha = 1.0 - result.confidence
    table = result.deg_table
    lines = []
    for r in result.table.itertuples():
        head = f"{r.label} ({r.suite}): D_LR − D_HR = {pct(r.difference)}"
        if r.loo_flips:
            langs = r.loo_flips.split(",")
            block = table[(table.quant_id == r.quant_id) & (table.suite == r.suite) & table.lang.isin(langs)]
            per_lang = ", ".join(f"{b.lang} D = {pct(b.degradation)}" + (f" [{pct(b.ci_low)}, {pct(b.ci_high)}]" if not math.isnan(b.ci_low) else "")
                                 for b in block.itertuples())
            lines.append(f"{head}, but its sign flips when {' or '.join(langs)} is left out: this is a statement about "
                         f"{', '.join(langs)}, not about the groups ({per_lang}).")
        elif math.isnan(r.perm_p):
            lines.append(f"{head}; no language-level test (needs at least one language with a finite D in each group).")
        elif r.perm_p >= alpha:
            lines.append(f"{head}; no language-level evidence of a group difference (permutation p = {r.perm_p:.3g} over "
                         f"{r.perm_n_splits} splits of {r.n_langs_HR + r.n_langs_LR} languages); compare languages individually.")
        else:
            direction = "more" if r.difference > 0 else "less"
            lines.append(f"{head}; low-resource languages degrade {direction} than high-resource ones at the language level "
                         f"(permutation p = {r.perm_p:.3g}; the sign survives leaving out any one language).")
    return lines


class DisparitySection:
    name = "disparity"

    def compute(self, analysis) -> Disparity:
        options = analysis.options
        table = disparity(analysis.deg, analysis.groups, options.min_denominator, options.random_state)
        return Disparity(table, analysis.deg.table, analysis.groups, options.confidence, options.min_denominator)

    def tables(self, result: Disparity) -> dict[str, pd.DataFrame]:
        return {"disparity": result.table}

    def figures(self, result: Disparity):
        return iter(())

    def markdown(self, result: Disparity, figures) -> list[str]:
        level = f"{result.confidence:.0%}"
        out = ["## Disparity (low- vs high-resource)", ""]
        hr = sorted(lang for lang, g in result.groups.items() if g == "high")
        lr = sorted(lang for lang, g in result.groups.items() if g == "low")
        out += [f"High-resource: {', '.join(hr) or 'none'}; low-resource: {', '.join(lr) or 'none'}. "
                f"Ratios whose denominator D_HR < {result.min_denominator:g} are marked unstable; D_HR ≤ 0 or D_LR ≤ 0 makes the ratio undefined (no zero or negative ratios).", ""]
        out += [("Unit of every group statistic: the language. CIs of D_LR − D_HR and D_LR/D_HR: hierarchical bootstrap (languages "
                 "resampled within each group, then documents within language). p: label-permutation test of D_LR − D_HR over languages "
                 "(two-sided; exact over all splits when feasible). Leave-one-out: D_LR − D_HR with each language dropped. Per-language "
                 "D_L CIs (tables above) resample that language's documents. No per-document group test is reported: the documents "
                 "of a parallel corpus are the same topics in every language, not independent units."), ""]
        if result.table.empty:
            return out
        several_models = result.table.model.nunique() > 1
        rows = []
        for r in result.table.itertuples():
            ratio = "undefined" if math.isnan(r.ratio) else f"{r.ratio:.2f}×"
            if not math.isnan(r.ratio_ci_low):
                ratio += f" [{r.ratio_ci_low:.2f}, {r.ratio_ci_high:.2f}]"
            diff = pct(r.difference) + (f" [{pct(r.difference_ci_low)}, {pct(r.difference_ci_high)}]" if not math.isnan(r.difference_ci_low) else "")
            notes_cell = "; ".join(n for n in (r.ratio_note, r.ci_note, r.max_over_min_note) if n)
            perm = "n/a" if math.isnan(r.perm_p) else f"{r.perm_p:.3g} ({r.perm_n_splits} {'splits' if r.perm_method == 'exact' else 'random splits'})"
            loo = "n/a" if not r.loo_differences else ("yes" if r.loo_sign_survives else f"no: flips without {r.loo_flips}")
            rows.append([config_name(r, several_models), r.suite, f"{r.n_langs_HR}/{r.n_langs_LR}", f"{pct(r.D_HR)} ({num(r.delta_bpb_HR, 3)})",
                         f"{pct(r.D_LR)} ({num(r.delta_bpb_LR, 3)})", diff, ratio, perm, loo,
                         f"{r.worst_lang} {pct(r.worst_degradation)}", num(r.max_over_min, 3), notes_cell])
        out += [md_table(["config", "suite", "languages HR/LR", "D_HR (Δbpb)", "D_LR (Δbpb)", f"D_LR − D_HR [{level} CI]",
                          f"D_LR/D_HR [{level} CI]", "permutation p", "sign survives leaving out any one language",
                          "worst language", "max/min", "notes"], rows), ""]
        out += ["Reading:", ""] + [f"- {line}" for line in group_readings(result)] + [""]
        rows = [[config_name(r, several_models), r.suite, r.loo_differences or "n/a"] for r in result.table.itertuples()]
        return out + ["Leave-one-language-out D_LR − D_HR (language dropped: difference without it):", "",
                      md_table(["config", "suite", "without language"], rows), ""]


SECTION = DisparitySection()
