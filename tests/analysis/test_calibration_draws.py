"""A real tiny-model sweep with calibration draws, analysed by ``python -m analysis``: the draws share one
label, the spread table matches numpy over the draws' D, and the combined CIs (spread, method comparisons,
calibration matrix) equal the t interval written here with numpy and scipy.stats.t; a calibrated config
with one draw is compared without a CI ("draw noise not measured")."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

SPREAD_COLUMNS = ["model", "suite", "lang", "label", "n_draws", "d_mean", "d_sd", "d_min", "d_max", "d_ci_low", "d_ci_high"]
GPTQ_ALL = "gptq-w3-group-g16-calib_samples=2"
GPTQ_EN = "gptq-w3-group-g16-calib_langs=en-calib_samples=2"
RTN = "rtn-w3-group-g16"


@pytest.fixture(scope="module")
def analysed(tiny_model_dir, tmp_path_factory):
    """baseline, RTN and GPTQ calibrated on every language / on en, 2 draws each; 3 English documents."""
    from qd_models.sweep import main as sweep_main

    root = tmp_path_factory.mktemp("draws")
    patch = pytest.MonkeyPatch()
    patch.setenv("QD_CACHE_DIR", str(root / "cache"))
    grid = root / "grid.yaml"
    grid.write_text("grid:\n  - {method: rtn, bits: 3, granularity: group, group_size: 16}\n"
                    "  - {method: gptq, bits: 3, group_size: 16, calib_samples: 2, calib_langs: [all, en]}\n")
    out = root / "sweep"
    assert sweep_main(["--grid", str(grid), "--calib_draws", "2", "--tasks", "qd_multilingual_ppl_en",
                       "--output_path", str(out), "--model_args", f"pretrained={tiny_model_dir('llama')}", "--limit", "3",
                       "--device", "cpu", "--log_samples"]) == 0
    report = root / "report"
    proc = subprocess.run([sys.executable, "-m", "analysis", str(out), "--out", str(report)], capture_output=True, text=True, timeout=600)
    patch.undo()
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = report / "tables"
    return {"sweep": out, "report": (report / "report.md").read_text(), "spread": pd.read_csv(tables / "calibration_spread.csv"),
            "comparisons": pd.read_csv(tables / "method_comparisons.csv"), "deg": pd.read_csv(tables / "degradation.csv"),
            "docs": pd.read_csv(tables / "doc_degradation.csv", dtype={"doc_id": str}),
            "matrix": pd.read_csv(tables / "calibration_matrix.csv"), "runs": pd.read_csv(tables / "runs.csv")}


def _draw_matrix(docs: pd.DataFrame, quant_ids: list[str], lang: str) -> tuple[list[list[float]], list[float]]:
    block = docs[docs.lang == lang]
    doc_ids = sorted(set(block.doc_id))
    rows = [[float(block[(block.quant_id == q) & (block.doc_id == d)].nll_quant.iloc[0]) for d in doc_ids] for q in quant_ids]
    base = [float(block[(block.quant_id == quant_ids[0]) & (block.doc_id == d)].nll_base.iloc[0]) for d in doc_ids]
    return rows, base


def _t_interval(configs, base, coefficients, level=0.95) -> tuple[float, float]:
    """sum_k c_k mean_r D_kr ± t(df) SE: SE**2 = sum_k c_k**2 var(D_k., ddof=1)/R_k (configs with several runs) + the
    delta-method document variance n/(n-1) sum(z**2)/sum(b)**2 of the combined draw means; Welch–Satterthwaite df."""
    base = np.asarray(base)
    n = base.size
    d = [np.asarray(rows).sum(axis=1) / base.sum() - 1.0 for rows in configs]
    estimate = sum(c * dk.mean() for c, dk in zip(coefficients, d))
    residual = sum(c * (np.asarray(rows).mean(axis=0) - (1.0 + dk.mean()) * base) for c, rows, dk in zip(coefficients, configs, d))
    terms = [(c**2 * np.var(dk, ddof=1) / dk.size, dk.size - 1) for c, dk in zip(coefficients, d) if dk.size > 1]
    weights = base / base.sum()  # effective document df: (n-1)/n (sum w**2)**2 / sum w**4
    terms.append((n / (n - 1) * np.sum(residual**2) / base.sum() ** 2, (n - 1) / n * np.sum(weights**2) ** 2 / np.sum(weights**4)))
    variance = sum(v for v, _ in terms)
    half = stats.t.ppf(0.5 + level / 2, variance**2 / sum(v**2 / f for v, f in terms)) * math.sqrt(variance)
    return estimate - half, estimate + half


@pytest.mark.integration
def test_draws_share_one_label(analysed):
    labels = analysed["runs"].label.value_counts().to_dict()
    assert labels == {"baseline": 1, RTN: 1, GPTQ_ALL: 2, GPTQ_EN: 2}


@pytest.mark.integration
def test_spread_table_against_numpy_and_the_t_interval(analysed):
    spread, deg, docs = analysed["spread"], analysed["deg"], analysed["docs"]
    assert list(spread.columns) == SPREAD_COLUMNS
    assert sorted(zip(spread.label, spread.lang, spread.n_draws)) == sorted(
        (label, lang, n) for label, n in ((RTN, 1), (GPTQ_ALL, 2), (GPTQ_EN, 2)) for lang in ("en",))
    for row in spread.itertuples():
        draws = deg[(deg.label == row.label) & (deg.lang == row.lang)]
        values = draws.degradation.to_numpy()
        assert (row.d_mean, row.d_min, row.d_max) == pytest.approx((np.mean(values), np.min(values), np.max(values)), rel=1e-12)
        if row.n_draws == 1:  # one draw: its own document CI, as in degradation.csv
            assert math.isnan(row.d_sd)
            assert (row.d_ci_low, row.d_ci_high) == (draws.ci_low.iloc[0], draws.ci_high.iloc[0])
            continue
        assert row.d_sd == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        assert np.ptp(values) > 0  # the two draws calibrated on different texts
        rows, base = _draw_matrix(docs, sorted(draws.quant_id), row.lang)
        assert (row.d_ci_low, row.d_ci_high) == pytest.approx(_t_interval([rows], base, [1.0]), rel=1e-9)


@pytest.mark.integration
def test_method_comparisons_against_the_t_interval_and_report(analysed):
    comparisons, deg, docs, report = analysed["comparisons"], analysed["deg"], analysed["docs"], analysed["report"]
    assert len(comparisons) == 3  # 3 config pairs x 1 language
    for row in comparisons.itertuples():
        ids = [sorted(deg[(deg.label == label) & (deg.lang == row.lang)].quant_id) for label in (row.label_a, row.label_b)]
        configs = [_draw_matrix(docs, group, row.lang)[0] for group in ids]
        base = _draw_matrix(docs, ids[0], row.lang)[1]
        d = [np.mean(deg[(deg.label == label) & (deg.lang == row.lang)].degradation) for label in (row.label_a, row.label_b)]
        assert row.difference == pytest.approx(d[0] - d[1], rel=1e-9)
        assert (row.ci_low, row.ci_high) == pytest.approx(_t_interval(configs, base, [1.0, -1.0]), rel=1e-9)
        excludes_zero = row.ci_low > 0 or row.ci_high < 0
        assert (row.reading == "within method noise") == (not excludes_zero)
        if excludes_zero:
            assert row.reading == f"{row.label_a} {'higher' if row.difference > 0 else 'lower'} D"
    assert "## Calibration draws and method noise" in report and "### Method comparisons" in report
    assert f"| {GPTQ_ALL} | qd_multilingual_ppl | en | 2 |" in report


@pytest.mark.integration
def test_calibration_matrix_cells_are_draw_means_with_the_combined_ci(analysed):
    matrix, spread, comparisons, report = analysed["matrix"], analysed["spread"], analysed["comparisons"], analysed["report"]
    assert sorted(set(matrix.calibration)) == ["all", "en"]
    for row in matrix.itertuples():
        label = GPTQ_ALL if row.calibration == "all" else GPTQ_EN
        cell = spread[(spread.label == label) & (spread.lang == row.lang)].iloc[0]
        assert (row.degradation, row.ci_low, row.ci_high) == pytest.approx((cell.d_mean, cell.d_ci_low, cell.d_ci_high), rel=1e-12)
    en = comparisons[(comparisons.lang == "en") & (comparisons.label_a == GPTQ_EN) & (comparisons.label_b == GPTQ_ALL)].iloc[0]
    line = f"- en: D(calibrated on en) − D(all) = {100 * en.difference:+.2f} pp [{100 * en.ci_low:+.2f}, {100 * en.ci_high:+.2f}]"
    assert line in report


@pytest.mark.integration
def test_one_draw_of_a_calibrated_config_reads_draw_noise_not_measured(analysed, tmp_path):
    """Drop one of GPTQ_EN's two draws: its comparisons have no CI and say so; RTN vs GPTQ_ALL keeps its t interval."""
    from analysis.report import analyze, write_outputs

    runs = tmp_path / "runs"
    dropped = sorted(analysed["sweep"].glob("gptq-*calib_langs=en-*"))[0]
    shutil.copytree(analysed["sweep"], runs, ignore=lambda folder, names: [dropped.name] if folder == str(analysed["sweep"]) else [])
    report = write_outputs(analyze([runs]), tmp_path / "report").read_text()
    comparisons = pd.read_csv(tmp_path / "report" / "tables" / "method_comparisons.csv")
    for row in comparisons.itertuples():
        if GPTQ_EN in (row.label_a, row.label_b):
            assert row.reading == "draw noise not measured" and math.isnan(row.ci_low) and math.isnan(row.ci_high)
            assert row.ci_method == "no CI: draw noise not measured"
        else:
            assert math.isfinite(row.ci_low) and row.ci_method.startswith("t interval, draws + documents (Welch df ")
    assert "(draw noise not measured)" in report
    assert ": draw noise not measured." in report  # the calibration matrix's matched-vs-all line, without a CI


@pytest.mark.parametrize(("args", "dependent"), [
    ({"method": "gguf", "gguf_type": "q4_k_s"}, False),  # its stored config (bits, clip resolved) does not parse again
    ({"method": "gguf", "gguf_type": "q4_k_s", "calib_langs": "en"}, True),  # importance matrix from calibration texts
    ({"method": "rtn", "bits": 4}, False),
    ({"method": "nf4"}, False),
    ({"method": "none"}, False),
    ({"method": "gptq", "bits": 4}, True),
    ({"method": "gptq", "bits": 16}, False),  # identity bits: nothing quantized, nothing calibrated
    ({"method": "awq", "bits": 4}, True),
    ({"method": "laaciq", "bits": 4}, True),
])
def test_depends_on_draw_reads_the_stored_resolved_config(args, dependent):
    """Decided from the stored config as qd-hf wrote it, without parsing it again (a GGUF config without
    calibration used to read "draw noise not measured"); an unknown method counts as dependent."""
    from analysis.calibration_draws import depends_on_draw
    from qd_models.config import parse_qd_args

    assert depends_on_draw(parse_qd_args(args)[0].to_dict()) is dependent
    assert depends_on_draw({"method": "some-future-method", "bits": 4}) is True
