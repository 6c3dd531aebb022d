"""``qd-hf`` with ``method=laaciq`` end to end through lm-eval on tiny random models."""

from __future__ import annotations

import math

import pytest


@pytest.mark.parametrize("arch,mode,extra", [
    ("llama", "mean", ""),
    ("gpt2", "minimax", ",granularity=group,group_size=16"),
    ("bloom", "target", ",calib_langs=he,calib_samples=3"),
])
def test_laaciq_runs_and_reports_calibration(arch, mode, extra, tiny_model_dir, evaluate_in_process, tmp_path, monkeypatch):
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path))
    args = f"pretrained={tiny_model_dir(arch)},method=laaciq,bits=3,calib_mode={mode}{extra}"
    results = evaluate_in_process("qd-hf", args, ["qd_multilingual_ppl_en", "qd_multilingual_ppl_he"], limit=1)
    for task in ("qd_multilingual_ppl_en", "qd_multilingual_ppl_he"):
        assert math.isfinite(results["results"][task]["bits_per_byte,none"])
    report = results["config"]["quant_disparity"]["quant_report"]
    calibration = report["calibration"]
    langs = ["he"] if mode == "target" else ["en", "de", "he", "sw"]
    assert calibration["mode"] == mode and calibration["langs"] == langs
    assert calibration["layers"] == report["totals"]["layers_quantized"] > 0
    for lang in langs:
        figures = calibration["per_language"][lang]
        assert figures["tokens"] > 0
        assert math.isfinite(figures["activation_weighted_kurtosis"])
        assert 0 < figures["weighted_rel_error"] <= figures["weighted_rel_error_max"] < 1
    quantized = [layer for layer in report["layers"] if layer["status"] == "quantized"]
    assert all(0 < layer["clip_ratio"]["min"] <= layer["clip_ratio"]["max"] <= 1 for layer in quantized)
    assert all(set(layer["calibration"]["weighted_rel_error"]) == set(langs) for layer in quantized)
