"""method=gptq / method=awq through the engine, qd-hf and the real lm_eval CLI on tiny models;
calibration sources disjoint from evaluation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types

import pytest

from qd_models.config import parse_qd_args


def quantize(model_dir, args: dict, record=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qd_models.calibration import CalibrationBatches, load_calibration_texts
    from qd_models.calibration.sufficiency import calibration_texts_for_model
    from qd_models.engine import quantize_

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = parse_qd_args(dict(args))[0]
    texts = calibration_texts_for_model(load_calibration_texts(config), config, model, tokenizer)
    calib = CalibrationBatches.from_texts(tokenizer, texts, "bundled calibration split + udhr")
    return model, tokenizer, calib, quantize_(model, config, calib=calib)


def test_gptq_block_inputs_come_from_the_quantized_earlier_blocks(tiny_model_dir, monkeypatch):
    """Block 1's first linear sees the output of the already-quantized block 0."""
    from qd_models import calibration

    seen = {}
    original = calibration.BlockInputs.grams

    def recording(self, block, names):
        grams = original(self, block, names)
        seen.update({name: grams[name][0].clone() for name in names})
        return grams

    monkeypatch.setattr(calibration.BlockInputs, "grams", recording)
    path = tiny_model_dir("llama")
    model, _, calib, report = quantize(path, {"method": "gptq", "group_size": "16", "calib_samples": "3"})
    name = "model.layers.1.self_attn.q_proj"
    after = calibration.collect_input_grams(model, calib, [name], "model.layers.1")[name][0]
    from transformers import AutoModelForCausalLM

    before = calibration.collect_input_grams(AutoModelForCausalLM.from_pretrained(path), calib, [name], "model.layers.1")[name][0]
    assert float((seen[name] - after).abs().max()) <= 1e-12 * float(after.abs().max())
    assert float((seen[name] - before).abs().max()) > 1e-6 * float(before.abs().max())
    # one capture pass; blocks run on cached inputs: block 0 collects and propagates, block 1 collects
    assert report["calibration"]["forward_passes"] == 1 and report["calibration"]["block_evaluations"] == 3
    layers = [layer for layer in report["layers"] if layer["status"] == "quantized"]
    assert len(layers) == 14 and all(layer["rel_output_error"] < layer["rtn_rel_output_error"] for layer in layers)
    assert all(layer["bits_per_weight"] == 4 + 16 / 16 for layer in layers)  # codes + one 16-bit scale per group


def test_awq_report_and_honest_bits(tiny_model_dir):
    _, _, _, report = quantize(tiny_model_dir("gpt2"), {"method": "awq", "group_size": "16", "symmetric": "false", "awq_clip": "true"})
    layers = [layer for layer in report["layers"] if layer["status"] == "quantized"]
    for layer in layers:
        in_dim = layer["shape"][0]  # Conv1D weights are [in, out]
        assert 0 <= layer["awq_alpha"] < 1 and 0.55 <= layer["clip_ratio_mean"] <= 1
        assert layer["rel_output_error"] <= layer["rtn_rel_output_error"] * (1 + 1e-6)
        # codes + (16-bit scale + 4-bit zero) per group of 16 + one 16-bit scale per input channel
        assert layer["bits_per_weight"] == pytest.approx(4 + 20 / 16 + 16 * in_dim / layer["numel"])
    calibration = report["calibration"]
    # default mix (calib_samples unset): bundled split (en, de, he, sw) topped up with UDHR's 8 default languages
    assert calibration["langs"][:4] == ["en", "de", "he", "sw"] and set(calibration["langs"]) == {"en", "de", "he", "sw", "fr", "zh", "ar", "yo"}
    assert all(v["tokens"] > 0 for v in calibration["per_language"].values())
    assert report["wall_seconds"] > 0


def test_gptq_act_order_charges_group_index(tiny_model_dir):
    _, _, _, report = quantize(tiny_model_dir("llama"), {"method": "gptq", "group_size": "32", "act_order": "true", "keep_layers": "1"})
    layer = next(layer for layer in report["layers"] if layer["name"] == "model.layers.0.mlp.down_proj")  # [64, 128]
    assert layer["bits_per_weight"] == pytest.approx(4 + 16 / 32 + 32 * 128 / (64 * 128))
    assert all(layer["status"] == "kept" for layer in report["layers"] if ".layers.1." in layer["name"])


@pytest.mark.parametrize("args,needle", [
    ("method=gptq,damp=2", "damp=2.0 is not allowed"),
    ("method=rtn,act_order=true", "act_order not allowed with method=rtn; allowed with method=gptq"),
    ("method=awq,keep_top=1", "keep_top=1.0 is not allowed with method=awq"),
    ("method=gptq,calib_mode=mean", "calib_mode='mean' is not allowed with method=gptq"),
])
def test_bad_method_arguments(args, needle):
    with pytest.raises(ValueError, match="allowed") as err:
        parse_qd_args(dict(part.split("=") for part in args.split(",")))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_calib_langs_all_is_every_language():
    assert parse_qd_args({"method": "awq", "calib_langs": "all"})[0].calib_langs == ()


@pytest.mark.integration
def test_real_cli_gptq_with_language_calibration(tiny_model_dir, lm_eval_cli, tmp_path):
    args = f"pretrained={tiny_model_dir('llama')},method=gptq,bits=4,group_size=16,calib_langs=he,calib_samples=2"
    results = lm_eval_cli(["--model", "qd-hf", "--model_args", args, "--tasks", "qd_multilingual_ppl_en", "--device", "cpu",
                           "--limit", "1"], tmp_path)
    assert math.isfinite(results["results"]["qd_multilingual_ppl_en"]["bits_per_byte,none"])
    report = results["config"]["quant_disparity"]["quant_report"]
    assert report["config"]["calib_langs"] == ["he"] and report["config"]["damp"] == 0.01
    assert list(report["calibration"]["per_language"]) == ["he"] and report["calibration"]["samples_per_language"] == {"he": 2}
    assert report["totals"]["layers_quantized"] == 14


@pytest.mark.integration
def test_real_cli_bad_method_value_is_one_line_error(tiny_model_dir, tmp_path):
    cmd = [sys.executable, "-m", "lm_eval", "--model", "qd-hf", "--model_args",
           f"pretrained={tiny_model_dir('llama')},method=awq,awq_grid=0,calib_langs=en;he", "--tasks", "qd_multilingual_ppl_en",
           "--device", "cpu", "--output_path", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    last = proc.stderr.strip().splitlines()[-1]  # lm_eval prints the traceback of the model's ValueError
    assert proc.returncode != 0 and last.startswith("ValueError: awq_grid=0 is not allowed; allowed:"), proc.stderr[-2000:]


# ----------------------------------------------------------------------------- calibration sources


def test_bundled_calibration_is_disjoint_from_evaluation():
    from qd_models.calibration import calibration_records, evaluation_texts
    from qd_tasks.corpus import corpus_path, read_corpus_file

    records, _ = calibration_records(None)
    eval_records = read_corpus_file(corpus_path("eval"))
    assert not {r["text"] for r in records} & {r["text"] for r in eval_records}
    assert not {r["doc_id"] for r in records} & {r["doc_id"] for r in eval_records}
    assert not {r["text"] for r in records} & evaluation_texts()


def test_udhr_split_is_by_article(monkeypatch):
    """The UDHR source keeps every article outside the evaluation subset and no article inside."""
    from qd_models.calibration import (
        calibration_records,
        evaluation_texts,
        load_calibration_texts,
    )

    langs, articles, held = ("en", "he"), [f"udhr-a{i}" for i in range(1, 7)], ("udhr-a2", "udhr-a5")
    corpus = [{"lang": lang, "doc_id": doc, "text": f"{lang} {doc}"} for lang in langs for doc in articles]

    def load_udhr(langs=None, doc_ids=None):
        return [dict(r) for r in corpus if (langs is None or r["lang"] in langs) and (doc_ids is None or r["doc_id"] in doc_ids)]

    fake = types.SimpleNamespace(UDHR8_ARTICLES=held, DEFAULT_LANGS=langs, load_udhr=load_udhr)
    monkeypatch.setitem(sys.modules, "qd_tasks.udhr", fake)
    monkeypatch.setattr("qd_tasks.udhr", fake, raising=False)
    records, name = calibration_records("udhr")
    assert name == "udhr" and sorted({r["doc_id"] for r in records}) == sorted(set(articles) - set(held))
    assert {f"{lang} {doc}" for lang in langs for doc in held} <= evaluation_texts()
    texts = load_calibration_texts(parse_qd_args({"method": "gptq", "calib_data": "udhr", "calib_langs": "he"})[0])
    assert texts == {"he": [f"he {doc}" for doc in articles if doc not in held]}


def test_udhr_calibration_split_is_disjoint_from_evaluation():
    from qd_models.calibration import udhr_calibration_records
    from qd_tasks import udhr

    records = udhr_calibration_records()
    assert {r["lang"] for r in records} == set(udhr.DEFAULT_LANGS)
    assert not {r["doc_id"] for r in records} & set(udhr.UDHR8_ARTICLES)
    evaluated = {r["text"] for r in udhr.load_udhr(udhr.DEFAULT_LANGS, udhr.UDHR8_ARTICLES)}
    assert not {r["text"] for r in records} & evaluated
    assert json.dumps(records[0])  # plain records
