"""The atlas: which languages pay, with languages as the unit (suites of
:data:`analysis.atlas.ATLAS_SUITES` with at least :data:`analysis.many_languages.MIN_LANGUAGES` languages):
D and Δ bits/byte regressed on the relative baseline, script, family and Joshi class
(``tables/atlas_*.csv``, one figure per block)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis import atlas
from analysis.many_languages import MIN_LANGUAGES
from analysis.report.section import FigureFile, figure_slug, save_as_laid_out


@dataclass(frozen=True)
class AtlasBlock:
    """One (run, suite) of the atlas: :func:`analysis.atlas.language_frame` and its fits."""

    quant_id: str
    suite: str
    label: str
    frame: pd.DataFrame
    coefficients: pd.DataFrame
    terms: pd.DataFrame
    groups: pd.DataFrame
    """:func:`analysis.atlas.group_summary`."""

    @property
    def figure(self) -> str:
        return f"atlas_{figure_slug(self.quant_id)}_{figure_slug(self.suite)}.png"


@dataclass(frozen=True)
class Atlas:
    blocks: list[AtlasBlock]
    n_resamples: int
    random_state: int
    confidence: float


class AtlasSection:
    name = "atlas"

    def compute(self, analysis) -> Atlas:
        options, table = analysis.options, analysis.deg.table
        blocks = []
        for (quant_id, suite), block in table.groupby(["quant_id", "suite"], sort=True) if not table.empty else []:
            if suite not in atlas.ATLAS_SUITES or block.lang.nunique() < MIN_LANGUAGES:
                continue
            frame = atlas.language_frame(block)
            coefs, terms = atlas.analyze_block(frame, options.n_resamples, options.random_state, options.confidence)
            blocks.append(AtlasBlock(quant_id, suite, block.label.iloc[0], frame, coefs, terms, atlas.group_summary(frame)))
        return Atlas(blocks, options.n_resamples, options.random_state, options.confidence)

    def tables(self, result: Atlas) -> dict[str, pd.DataFrame]:
        if not result.blocks:
            return {}
        parts = {"atlas_languages": "frame", "atlas_coefficients": "coefficients", "atlas_terms": "terms", "atlas_groups": "groups"}
        return {name: pd.concat([getattr(b, field).assign(quant_id=b.quant_id, suite=b.suite, config=b.label) for b in result.blocks],
                                ignore_index=True) for name, field in parts.items()}

    def figures(self, result: Atlas):
        for b in result.blocks:
            fig, _ = atlas.scatter(b.frame, b.coefficients, f"{b.label} — {b.suite} ({len(b.frame)} languages)")
            yield FigureFile(b.figure, fig, save_as_laid_out)

    def markdown(self, result: Atlas, figures) -> list[str]:
        if not result.blocks:
            return []
        out = ["## Atlas: which languages pay (languages as the unit)", "",
               f"Suites {', '.join(atlas.ATLAS_SUITES)} with ≥ {MIN_LANGUAGES} languages. D = relative NLL increase, Δ = absolute bits/byte increase, side by side. "
               "Regression per config and outcome: D (or Δ) ~ log2(baseline bits/byte / median) + script + family (levels with "
               f"< {atlas.MIN_LEVEL} languages pooled as `{atlas.OTHER}`; references {atlas.REFERENCE_SCRIPT}, {atlas.REFERENCE_FAMILY}); second model "
               "~ log2 rel. baseline + Joshi class over the languages that have one. CIs: bootstrap over languages; p: Freedman–Lane "
               f"permutation of languages ({result.n_resamples} permutations, random_state={result.random_state}); driver = the language whose "
               "removal changes the coefficient most.", ""]
        for b in result.blocks:
            out += _block_lines(b.frame, b.coefficients, b.terms, b.label, b.quant_id, b.suite, result.confidence)
            out += [f"![atlas_{figure_slug(b.quant_id)}](figures/{b.figure})", ""]
        return out + ["Tables: tables/atlas_languages.csv, atlas_coefficients.csv, atlas_terms.csv, atlas_groups.csv.", ""]


def _block_lines(frame, coefs, terms, label, quant_id, suite, confidence) -> list[str]:
    """The most and least paying languages, the coefficients and the factor tests of one block."""
    level = f"{100 * confidence:.0f}%"
    out = [f"### {label} — `{quant_id}` — {suite} ({len(frame)} languages, {frame.script.nunique()} scripts, "
           f"{frame.family.nunique()} families)", ""]
    ordered = frame.sort_values(["degradation", "lang"], ascending=[False, True])
    for heading, part in (("Pay most", ordered.head(atlas.TOP_K)), ("Pay least", ordered.tail(atlas.TOP_K).iloc[::-1])):
        rows = [f"| {r.lang} | {r.name} | {r.script} | {r.family} | {_fmt(r.joshi_class, '.0f')} | {_fmt(r.bpb_base)} | "
                f"{_fmt(r.rel_baseline)} | {_pct(r.degradation)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}] | {r.delta_bpb:+.3f} |"
                for r in part.itertuples()]
        out += [f"{heading} (D with its {level} document-bootstrap CI):", "",
                "| lang | name | script | family | Joshi | bits/byte base | rel. baseline | D [CI] | Δ bits/byte |",
                "|---|---|---|---|---|---|---|---|---|", *rows, ""]
    out += [f"Coefficients ({level} bootstrap-over-languages CI, permutation p; D in %, Δ in bits/byte):", "",
            "| model | term | D: coef [CI] | p | driver (D without it) | Δ: coef [CI] | p | driver (Δ without it) |",
            "|---|---|---|---|---|---|---|---|"]
    for (model, column), part in coefs[coefs.column != "intercept"].groupby(["model", "column"], sort=False):
        cells = []
        for outcome in atlas.OUTCOMES:
            r = part[part.outcome == outcome].iloc[0]
            scale, fmt = (100.0, "+.2f") if outcome == "degradation" else (1.0, "+.3f")
            cells += [f"{scale * r.coef:{fmt}} [{scale * r.ci_low:{fmt}}, {scale * r.ci_high:{fmt}}]", f"{r.p_perm:.3g}",
                      f"{r.driver} ({scale * r.coef_without_driver:{fmt}})"]
        out.append(f"| {model} (n={int(part.n_langs.iloc[0])}) | {column} | " + " | ".join(cells) + " |")
    out.append("")
    if not terms.empty:
        by = {(t.term, t.outcome): t for t in terms.itertuples()}
        rows = []
        for term in dict.fromkeys(terms.term):
            d, a = by[(term, "degradation")], by[(term, "delta_bpb")]
            rows.append(f"| {term} | {d.df} | {d.f:.3g} | {d.p_perm:.3g} | {a.f:.3g} | {a.p_perm:.3g} |")
        out += ["Factors as a whole (F of dropping the factor, permutation p):", "",
                "| factor | df | D: F | p | Δ: F | p |", "|---|---|---|---|---|---|", *rows, ""]
    return out


def _pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.1f}%"


def _fmt(value, spec: str = ".3g") -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):{spec}}"


SECTION = AtlasSection()
