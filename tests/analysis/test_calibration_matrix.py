"""qd-sweep over calibration languages -> qd-analyze calibration x evaluation-language matrix (tiny model)."""

from __future__ import annotations

import csv

import pandas as pd
import pytest


def test_sweep_calibration_grid_gives_matrix(tiny_model_dir, tmp_path, monkeypatch):
    from qd_models.sweep import main as sweep_main

    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))
    grid = tmp_path / "grid.yaml"
    grid.write_text('grid:\n  method: gptq\n  bits: 3\n  group_size: 16\n  calib_samples: 2\n  calib_langs: [en, he, all]\n')
    out, analysis_dir = tmp_path / "sweep", tmp_path / "analysis"
    code = sweep_main(["--grid", str(grid), "--tasks", "qd_multilingual_ppl_en,qd_multilingual_ppl_he", "--output_path", str(out),
                       "--model_args", f"pretrained={tiny_model_dir('llama')}", "--limit", "3", "--device", "cpu", "--log_samples",
                       "--analyze", str(analysis_dir)])
    assert code == 0
    rows = list(csv.DictReader((analysis_dir / "tables" / "calibration_matrix.csv").open()))
    assert sorted({row["calibration"] for row in rows}) == ["all", "en", "he"]
    assert sorted({row["lang"] for row in rows}) == ["en", "he"]
    degradation = pd.read_csv(analysis_dir / "tables" / "degradation.csv")
    for row in rows:  # every cell is the degradation table's D and CI of that run and language
        match = degradation[(degradation.quant_id == row["quant_id"]) & (degradation.lang == row["lang"])]
        assert float(row["degradation"]) == pytest.approx(float(match.degradation.iloc[0]), rel=1e-12)
        assert float(row["ci_low"]) <= float(row["degradation"]) <= float(row["ci_high"])
    report = (analysis_dir / "report.md").read_text()
    assert "## Calibration language × evaluation language" in report and "| he |" in report
    assert (analysis_dir / "figures" / "calibration_matrix_0.png").stat().st_size > 0


def test_matrix_order_and_matched_summary():
    from analysis.calibration_matrix import matched_summary, matrix

    block = pd.DataFrame({"calibration": ["all", "en", "en;he", "he"] * 2, "lang": ["en"] * 4 + ["he"] * 4,
                          "degradation": [0.1, 0.05, 0.2, 0.3, 0.4, 0.6, 0.5, 0.2]})
    assert list(matrix(block).index) == ["en", "he", "en;he", "all"]
    summary = matched_summary(block)
    assert summary["matched_mean"] == pytest.approx((0.05 + 0.2) / 2) and summary["all_mean"] == pytest.approx((0.1 + 0.4) / 2)
