"""`qd-hf` through the real lm_eval CLI on tiny random models."""

from __future__ import annotations

import math

import pytest

from qd_models.qd_hf import QDHFLM

LANGS = ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")


def _bpb(results: dict, lang: str) -> float:
    return results["results"][f"qd_multilingual_ppl_{lang}"]["bits_per_byte,none"]


@pytest.mark.integration
def test_cli_method_none_equals_plain_hf(tiny_model_dir, lm_eval_cli, tmp_path):
    """The real CLI in subprocesses, as a user runs it."""
    path = tiny_model_dir("llama")
    common = ["--tasks", "qd_multilingual_ppl", "--device", "cpu", "--batch_size", "4"]
    hf = lm_eval_cli(["--model", "hf", "--model_args", f"pretrained={path}", *common], tmp_path / "hf")
    qd = lm_eval_cli(
        ["--model", "qd-hf", "--model_args", f"pretrained={path},method=none", *common], tmp_path / "qd"
    )
    _assert_same_metrics(hf, qd)
    block = qd["config"]["quant_disparity"]
    assert block["quant_config"]["method"] == "none"
    assert block["baseline_note"] is None  # a user model, not the dequantized-GGUF default


@pytest.mark.parametrize("arch", ["gpt2", "bloom"])
def test_method_none_equals_plain_hf_in_process(arch, tiny_model_dir, evaluate_in_process):
    path = tiny_model_dir(arch)
    hf = evaluate_in_process("hf", f"pretrained={path}", ["qd_multilingual_ppl"])
    qd = evaluate_in_process("qd-hf", f"pretrained={path},method=none", ["qd_multilingual_ppl"])
    _assert_same_metrics(hf, qd)
    # a random byte-level model: about 8 bits per byte, finite, on every language
    assert all(math.isfinite(_bpb(qd, lang)) and 4 < _bpb(qd, lang) < 12 for lang in LANGS)


def _assert_same_metrics(hf: dict, qd: dict) -> None:
    """Equal up to float32 round-off of differently padded batches (qd-hf batches documents longest
    first): perplexities, exp(mean negative log-likelihood), are compared by their logarithm, as the
    log-likelihood metrics are (a random model's word perplexity is ~1e28: exp amplifies round-off)."""
    for lang in LANGS:
        task = f"qd_multilingual_ppl_{lang}"
        for metric, value in hf["results"][task].items():
            if isinstance(value, float):
                got = qd["results"][task][metric]
                if "perplexity" in metric:
                    got, value = math.log(got), math.log(value)
                assert got == pytest.approx(value, rel=1e-6, abs=1e-6), (task, metric)


def test_random_model_finishes_group_with_word_perplexity(tiny_model_dir, evaluate_in_process):
    results = evaluate_in_process(
        "qd-hf", f"pretrained={tiny_model_dir('gpt2')}", ["qd_multilingual_ppl"], limit=2
    )
    en = results["results"]["qd_multilingual_ppl_en"]
    assert en["word_perplexity,none"] > 1  # a number or inf, never a crash
    assert "word_perplexity,none" not in results["results"]["qd_multilingual_ppl_zh"]


def test_unknown_method_fails_before_loading(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(ValueError) as err:
        QDHFLM(pretrained=str(missing), method="hqq")
    message = str(err.value)
    assert "\n" not in message and "method" in message and "rtn" in message


@pytest.mark.integration
def test_cli_bad_argument_is_one_line_nonzero_exit(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "qd-hf", "--model_args",
         f"pretrained={tiny_model_dir('llama')},method=rtn,bits=9", "--tasks", "qd_multilingual_ppl_en",
         "--device", "cpu", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "bits" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()  # no half-written outputs
