"""The atlas report section on a synthetic Degradation (coefficients recomputed with numpy lstsq from its own CSVs)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import atlas
from analysis.language_degradation import Degradation
from qd_tasks.atlas import atlas_languages


def _degradation(n_langs=40, seed=0) -> Degradation:
    rng = np.random.default_rng(seed)
    langs = sorted(lang.key for lang in atlas_languages())[:n_langs]
    base = np.exp(rng.normal(0.3, 0.5, size=n_langs))
    d = 0.1 + 0.05 * np.log2(base / np.median(base)) + rng.normal(scale=0.02, size=n_langs)
    table = pd.DataFrame({"quant_id": "q1", "suite": "qd_udhr_atlas_ppl", "label": "rtn", "lang": langs, "bpb_base": base,
                          "bpb_quant": base * (1 + d), "delta_bpb": base * d, "degradation": d, "ci_low": d - 0.01, "ci_high": d + 0.01})
    return Degradation(table=table, docs=pd.DataFrame(), draws={}, pairs=[])


def test_design_pools_small_levels_and_keeps_the_reference():
    frame = pd.DataFrame({"x": [1.0, 2, 3, 4, 5, 6, 7], "f": ["a", "a", "a", "b", "b", "c", "a"]})
    X, names, terms = atlas.design(frame, ["x"], {"f": "b"})
    assert names == ["intercept", "x", "f=a", "f=c"] and terms == {"x": [1], "f": [2, 3]}
    np.testing.assert_array_equal(X[:, 2], [1, 1, 1, 0, 0, 0, 1])
    levels = atlas._levels(pd.Series(["L"] * 5 + ["C"] * 2 + ["R"]), "R")
    assert list(levels) == ["L"] * 5 + [atlas.OTHER] * 2 + ["R"]


def _write_atlas_section(deg, out, n_resamples: int = 2000) -> list[str]:
    """The report's atlas section of ``deg`` written under ``out`` (tables/, figures/); its report lines."""
    from analysis.report import AnalysisOptions, write_section
    from analysis.report.sections.atlas import SECTION

    result = SECTION.compute(SimpleNamespace(deg=deg, options=AnalysisOptions(n_resamples=n_resamples)))
    return write_section(SECTION, result, out)


def test_write_section_tables_report_and_figure(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "figures").mkdir()
    lines = _write_atlas_section(_degradation(), tmp_path, n_resamples=200)
    text = "\n".join(lines)
    assert "## Atlas" in text and "Pay most" in text and "log2_rel_baseline" in text
    langs = pd.read_csv(tmp_path / "tables" / "atlas_languages.csv", keep_default_na=False, na_values=[""])
    coefs = pd.read_csv(tmp_path / "tables" / "atlas_coefficients.csv", keep_default_na=False, na_values=[""])
    assert len(langs) == 40 and len(list((tmp_path / "figures").glob("atlas_*.png"))) == 1
    assert np.allclose(langs.rel_baseline, langs.bpb_base / np.median(langs.bpb_base))
    X = [np.ones(len(langs)), np.log2(langs.bpb_base / np.median(langs.bpb_base))]
    names = ["intercept", "log2_rel_baseline"]
    for factor, reference in (("script_level", atlas.REFERENCE_SCRIPT), ("family_level", atlas.REFERENCE_FAMILY)):
        for level in sorted(set(langs[factor]) - {reference}):
            X.append((langs[factor] == level).to_numpy(dtype=float))
            names.append(f"{factor}={level}")
    X = np.column_stack(X)
    for outcome in ("degradation", "delta_bpb"):
        expected = np.linalg.lstsq(X, langs[outcome].to_numpy(), rcond=None)[0]
        got = coefs[(coefs.model == "all") & (coefs.outcome == outcome)].set_index("column").coef
        np.testing.assert_allclose(got[names].to_numpy(), expected, rtol=1e-8, atol=1e-12)
    slope = coefs[(coefs.model == "all") & (coefs.outcome == "degradation") & (coefs.column == "log2_rel_baseline")].iloc[0]
    assert slope.ci_low < 0.05 < slope.ci_high and slope.p_perm < 0.01  # the planted slope, found
    assert slope.driver in set(langs.lang)


def test_scatter_returns_fig_and_axes(tmp_path):
    frame = atlas.language_frame(_degradation().table)
    coefs, _ = atlas.analyze_block(frame, n_resamples=50)
    fig, ax = atlas.scatter(frame, coefs)
    assert len(ax) == 2 and ax[0].get_ylabel() == "D (%)" and ax[1].get_ylabel() == "Δ bits/byte"


def test_no_section_below_the_language_threshold_or_outside_the_atlas_suite(tmp_path):
    assert _write_atlas_section(_degradation(n_langs=10), tmp_path) == []
    other = _degradation()
    other.table["suite"] = "qd_udhr_ppl"
    assert _write_atlas_section(other, tmp_path) == []


@pytest.mark.parametrize("value, text", [(0.1234, "+12.3%"), (float("nan"), "n/a")])
def test_percent_format(value, text):
    from analysis.report.sections import atlas as atlas_section

    assert atlas_section._pct(value) == text
