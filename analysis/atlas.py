"""The atlas: which languages pay, with languages as the unit (the atlas suite, ≥ 30 languages).

Only suites in :data:`ATLAS_SUITES` get the section (``qd_udhr_atlas_ppl``; the 521-language
``qd_udhr_ppl`` keeps the many-language view: its permutation and bootstrap fits cost minutes).

Per (run, suite) block, one row per language: D (relative NLL increase) with its document-bootstrap
CI, absolute Δ bits/byte, and the predictors

- ``log2_rel_baseline``: log2 of the language's baseline bits/byte over the block's median
  (0 = the model knows the language as well as the median language; +1 = twice the bits/byte),
- ``script`` and ``family`` (Glottolog) as factors: levels with ≥ :data:`MIN_LEVEL` languages,
  the rest pooled as ``other``; references :data:`REFERENCE_SCRIPT` and :data:`REFERENCE_FAMILY`,
- ``joshi_class`` (0-5) in a second model over the languages that have one.

Both outcomes (D and Δ) are regressed on the same design (:mod:`analysis.regression`):
coefficients with bootstrap-over-languages CIs, a Freedman–Lane permutation p per column and
per factor, and the language that drives each coefficient (largest change when left out).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import regression
from analysis.many_languages import language_metadata

ATLAS_SUITES = ("qd_udhr_atlas_ppl",)
MIN_LEVEL = 5
REFERENCE_SCRIPT = "Latn"
REFERENCE_FAMILY = "Indo-European"
OTHER = "other"
OUTCOMES = {"degradation": "D", "delta_bpb": "Δ bits/byte"}
TOP_K = 10
MIN_JOSHI_LANGUAGES = 10


def _families(iso_codes) -> list[str]:
    try:
        from qd_tasks.families import language_family
    except ImportError:
        return ["unknown"] * len(iso_codes)
    return [language_family(code) or "unknown" for code in iso_codes]


def _levels(values: pd.Series, reference: str) -> pd.Series:
    """Values with fewer than :data:`MIN_LEVEL` languages pooled as ``other`` (the reference is always kept)."""
    counts = values.value_counts()
    return values.where(values.map(counts).ge(MIN_LEVEL) | values.eq(reference), OTHER)


def language_frame(block: pd.DataFrame) -> pd.DataFrame:
    """One (run, suite) block of ``Degradation.table`` with metadata and predictors, finite D and baseline only."""
    block = block[np.isfinite(block.degradation.to_numpy(dtype=float)) & (block.bpb_base.to_numpy(dtype=float) > 0)]
    meta = language_metadata(list(block.lang))
    meta["family"] = _families(list(meta.iso639_3))
    frame = block.merge(meta, on="lang", how="left").sort_values("lang").reset_index(drop=True)
    frame["rel_baseline"] = frame.bpb_base / frame.bpb_base.median()
    frame["log2_rel_baseline"] = np.log2(frame.rel_baseline)
    frame["script_level"] = _levels(frame.script, REFERENCE_SCRIPT)
    frame["family_level"] = _levels(frame.family, REFERENCE_FAMILY)
    return frame


def design(frame: pd.DataFrame, numeric: list[str], factors: dict[str, str]) -> tuple[np.ndarray, list[str], dict[str, list[int]]]:
    """Design matrix (intercept, numeric columns, one indicator per non-reference level), column
    names and {term: column indices}. factors: {column: reference level}; a reference absent from
    the data becomes the most frequent level."""
    columns, names, terms = [np.ones(len(frame))], ["intercept"], {}
    for name in numeric:
        terms[name] = [len(names)]
        columns.append(frame[name].to_numpy(dtype=float))
        names.append(name)
    for factor, reference in factors.items():
        levels = sorted(set(frame[factor]))
        if reference not in levels:
            reference = frame[factor].value_counts().sort_index().idxmax()
        terms[factor] = []
        for level in [level for level in levels if level != reference]:
            terms[factor].append(len(names))
            columns.append((frame[factor] == level).to_numpy(dtype=float))
            names.append(f"{factor}={level}")
    return np.column_stack(columns), names, terms


def fit_model(frame: pd.DataFrame, numeric: list[str], factors: dict[str, str], n_resamples: int, random_state: int,
              confidence: float, model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(coefficients, terms) of both outcomes: per column coef, bootstrap CI, permutation p, driving
    language and the coefficient without it; per multi-column factor its F and permutation p."""
    X, names, terms = design(frame, numeric, factors)
    coef_rows, term_rows = [], []
    for outcome in OUTCOMES:
        y = frame[outcome].to_numpy(dtype=float)
        coef, _ = regression.ols(X, y)
        boot = regression.bootstrap_coefficients(X, y, n_resamples, random_state, confidence)
        loo = regression.leave_one_out(X, y)
        for j, name in enumerate(names):
            test = regression.permutation_p(X, [j], y, n_resamples, random_state) if j else {"p": math.nan}
            change = np.abs(loo[:, j] - coef[j])
            driver = int(np.nanargmax(change)) if np.isfinite(change).any() else None
            coef_rows.append({
                "model": model, "outcome": outcome, "column": name, "coef": coef[j],
                "ci_low": boot["low"][j], "ci_high": boot["high"][j], "p_perm": test["p"],
                "driver": frame.lang.iloc[driver] if driver is not None else "",
                "coef_without_driver": loo[driver, j] if driver is not None else math.nan,
                "n_langs": len(frame), "n_boot_skipped": boot["n_skipped"],
            })
        for term, cols in terms.items():
            if len(cols) > 1:
                test = regression.permutation_p(X, cols, y, n_resamples, random_state)
                term_rows.append({"model": model, "outcome": outcome, "term": term, "df": len(cols), "f": test["f"],
                                  "p_perm": test["p"], "method": test["method"]})
    return pd.DataFrame(coef_rows), pd.DataFrame(term_rows)


def analyze_block(frame: pd.DataFrame, n_resamples: int = 2000, random_state: int = 0, confidence: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model ``all`` (baseline + script + family, every language) and model ``joshi`` (baseline +
    Joshi class, the languages that have one, when ≥ :data:`MIN_JOSHI_LANGUAGES` and ≥ 2 classes)."""
    coefs, terms = fit_model(frame, ["log2_rel_baseline"], {"script_level": REFERENCE_SCRIPT, "family_level": REFERENCE_FAMILY},
                             n_resamples, random_state, confidence, "all")
    known = frame[np.isfinite(frame.joshi_class.to_numpy(dtype=float))].reset_index(drop=True)
    if len(known) >= MIN_JOSHI_LANGUAGES and known.joshi_class.nunique() >= 2:
        extra, _ = fit_model(known, ["log2_rel_baseline", "joshi_class"], {}, n_resamples, random_state, confidence, "joshi")
        coefs = pd.concat([coefs, extra], ignore_index=True)
    return coefs, terms


def group_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per script level and family level: languages, mean and median D, mean Δ, mean relative baseline."""
    rows = []
    for kind in ("script_level", "family_level"):
        for level, part in frame.groupby(kind, sort=True):
            rows.append({"grouping": kind.split("_")[0], "level": level, "n_langs": len(part),
                         "mean_D": part.degradation.mean(), "median_D": part.degradation.median(),
                         "mean_delta_bpb": part.delta_bpb.mean(), "mean_rel_baseline": part.rel_baseline.mean(),
                         "langs": ", ".join(sorted(part.lang)[:6]) + (", ..." if len(part) > 6 else "")})
    return pd.DataFrame(rows)


def scatter(frame: pd.DataFrame, coefs: pd.DataFrame, title: str = ""):
    """D (%) and Δ bits/byte vs log2 relative baseline, the two outcomes side by side, fitted
    baseline slopes drawn through the means. Returns (fig, ax) with ax the pair of axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 4.0))
    ax = fig.subplots(1, 2)
    x = frame.log2_rel_baseline.to_numpy(dtype=float)
    families = list(frame.family_level.value_counts().index)
    for axis, (outcome, label) in zip(ax, OUTCOMES.items()):
        scale = 100.0 if outcome == "degradation" else 1.0
        y = scale * frame[outcome].to_numpy(dtype=float)
        for i, family in enumerate(families):
            mask = (frame.family_level == family).to_numpy()
            axis.scatter(x[mask], y[mask], s=10, alpha=0.75, color=f"C{i}", label=f"{family} ({int(mask.sum())})")
        row = coefs[(coefs.model == "all") & (coefs.outcome == outcome) & (coefs.column == "log2_rel_baseline")]
        if len(row) and np.isfinite(x).any():
            slope = scale * float(row.coef.iloc[0])
            grid = np.linspace(np.nanmin(x), np.nanmax(x), 2)
            axis.plot(grid, y.mean() + slope * (grid - x.mean()), color="black", lw=1,
                      label=f"slope {slope:+.3g} (p={float(row.p_perm.iloc[0]):.2g})")
        for i in np.argsort(y)[[0, 1, 2, -3, -2, -1]] if len(y) >= 6 else []:
            axis.annotate(frame.lang.iloc[i], (x[i], y[i]), fontsize=6, xytext=(2, 2), textcoords="offset points")
        axis.axvline(0.0, color="grey", lw=0.5, ls=":")
        axis.set_title(label, fontsize=8)
        axis.set_xlabel("log2 baseline bits/byte relative to the median language")
        axis.set_ylabel("D (%)" if outcome == "degradation" else "Δ bits/byte")
        axis.legend(fontsize=5.5, loc="best")
    fig.suptitle(title or "Who pays: relative D and absolute Δ vs how well the model knows the language", fontsize=9)
    fig.subplots_adjust(left=0.08, bottom=0.13, right=0.98, top=0.9, wspace=0.25)
    return fig, ax
