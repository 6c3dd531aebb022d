"""Every method's scores and weights against references that do not go through lm-eval.

Fake-quantization methods: the per-document log-likelihoods and bits/byte ``qd-hf`` reports equal a
direct forward pass (float64 log-softmax over ``[BOS] + encode(text, add_special_tokens=False)``,
written here) over ``quantize_`` applied to a freshly loaded copy of the same model. So the
evaluated model is exactly the quantized one, scored once per text token with one BOS.

bitsandbytes methods: the weights the loaded model computes with equal bitsandbytes' own
quantize -> dequantize of the original fp32 weights, and a hand-written NF4 / absmax-int8
reference (codebook from the QLoRA paper, blocks of 64) that shares no code with bitsandbytes.

Every quantization method end to end through lm-eval on tiny random models.

method=gptq / method=awq through the engine, qd-hf and the real lm_eval CLI on tiny models;
calibration sources disjoint from evaluation.

``qd-hf`` with ``method=laaciq`` end to end through lm-eval on tiny random models."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from reference_passes import direct_doc_loglikelihoods

from qd_models.config import parse_qd_args
from qd_tasks.corpus import load_corpus

TASK = "qd_multilingual_ppl_he"
LIMIT = 3


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


FAKE_METHODS = [
    "method=rtn,bits=3",
    "method=rtn,bits=4,granularity=group,group_size=32,symmetric=false",
    "method=aciq,bits=3,clip=gauss",
    "method=aciq,bits=4,clip=auto",
    "method=mse,bits=3",
    "method=laaciq,bits=3,calib_samples=2",
    "method=rtn,bits=3,keep_top=2",
    "method=rtn,bits=3,keep_top=2,keep_top_scope=global",
    "method=aciq,bits=3,keep_layers=[1]",
]


@pytest.mark.parametrize("args", FAKE_METHODS)
def test_qd_hf_scores_equal_a_direct_pass_over_quantize_of_a_fresh_model(args, tiny_model_dir, evaluate_in_process):
    from lm_eval.utils import simple_parse_args_string

    from qd_models.config import parse_qd_args
    from qd_models.engine import quantize_

    path = tiny_model_dir("llama", add_bos=True)
    results = evaluate_in_process("qd-hf", f"pretrained={path},dtype=float32,{args}", [TASK], limit=LIMIT, log_samples=True)
    scored = {s["doc"]["doc_id"]: s["bits_per_byte"][0] for s in results["samples"][TASK]}
    report = results["config"]["quant_disparity"]["quant_report"]

    config, _ = parse_qd_args(simple_parse_args_string(args))
    model, tokenizer = _load(path)
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    act_stats = None
    if "stats" in config.calibration_passes:
        from qd_models.calibration import (
            collect_activation_stats,
            load_calibration_texts,
        )
        from qd_models.targets import quantization_targets

        act_stats = collect_activation_stats(model, tokenizer, load_calibration_texts(config), quantization_targets(model, config),
                                             progress=False, prefix_id=tokenizer.bos_token_id)
    fresh_report = quantize_(model, config, act_stats=act_stats)
    assert fresh_report["totals"] == report["totals"]
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, original[name])}
    assert changed and all(".layers." in name and name.endswith("proj.weight") for name in changed)
    if config.keep_layers:
        assert not any(name.startswith("model.layers.1.") for name in changed)

    texts = {r["doc_id"]: r["text"] for r in load_corpus("eval", langs=["he"])}
    ids = list(scored)
    expected = dict(zip(ids, direct_doc_loglikelihoods(model, tokenizer, [texts[i] for i in ids])))
    for doc_id in ids:
        assert scored[doc_id] == pytest.approx(expected[doc_id], rel=1e-4), doc_id
    n_bytes = sum(len(texts[i].encode("utf-8")) for i in ids)
    bpb = -sum(expected.values()) / n_bytes / math.log(2)
    assert results["results"][TASK]["bits_per_byte,none"] == pytest.approx(bpb, rel=1e-4)
    # the unquantized model's score lies outside the tolerance: the comparison above can fail
    base = direct_doc_loglikelihoods(_load(path)[0], tokenizer, [texts[i] for i in ids])
    assert max(abs(b - expected[i]) / abs(b) for b, i in zip(base, ids)) > 2e-4


# NF4 levels (Dettmers et al. 2023, appendix E), written out rather than read from bitsandbytes
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
    -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])


def _nf4_reference(weight: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Nearest NF4 level of w / absmax per block of ``block`` consecutive (row-major) weights, times absmax."""
    flat = weight.double().reshape(-1, block)
    absmax = flat.abs().amax(dim=1, keepdim=True)
    scaled = flat / absmax
    codes = (scaled.unsqueeze(-1) - NF4_CODE.double()).abs().argmin(dim=-1)
    return (NF4_CODE.double()[codes] * absmax).reshape(weight.shape)


def _qd_hf_model(path, method: str):
    from lm_eval.api.registry import get_model

    return get_model("qd-hf")(pretrained=str(path), dtype="float32", device="cpu", method=method)


@pytest.mark.parametrize("method", ["nf4", "fp4"])
def test_4bit_weights_equal_bitsandbytes_dequantize_of_the_originals(method, tiny_model_dir):
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    path = tiny_model_dir("llama")
    original, _ = _load(path)
    lm = _qd_hf_model(path, method)
    modules = {name: m for name, m in lm.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    expected_names = {name for name, m in original.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"}
    assert set(modules) == expected_names == {layer["name"] for layer in lm.quant_report["layers"]}
    for name, module in modules.items():
        weight = original.get_submodule(name).weight.detach()
        state = module.weight.quant_state
        assert state.quant_type == method and state.blocksize == 64
        loaded = dequantize_4bit(module.weight.data, state).float()
        packed, ref_state = quantize_4bit(weight, blocksize=64, quant_type=method)
        assert torch.equal(loaded, dequantize_4bit(packed, ref_state).float()), name
        if method == "nf4":  # independent of bitsandbytes: nearest level, up to fp32 ties
            ref = _nf4_reference(weight)
            bound = (ref - weight.double()).abs().max()
            assert torch.allclose(loaded.double(), ref, atol=1e-6) and bound < weight.abs().max()
    assert lm.quant_report["totals"]["effective_bits_per_weight"] == pytest.approx(4 + 32 / 64)


def test_int8_weights_equal_absmax_rowwise_rounding_of_the_originals(tiny_model_dir):
    import bitsandbytes as bnb
    from bitsandbytes.functional import int8_vectorwise_quant

    path = tiny_model_dir("llama")
    original, _ = _load(path)
    lm = _qd_hf_model(path, "int8")
    modules = {name: m for name, m in lm.model.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)}
    assert set(modules) == {name for name, m in original.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"}
    for name, module in modules.items():
        weight = original.get_submodule(name).weight.detach()
        codes, scales = module.weight.data, module.weight.SCB
        assert codes.dtype == torch.int8 and scales.shape == (weight.shape[0],)
        ref_codes, ref_scales, _ = int8_vectorwise_quant(weight.half())
        assert torch.equal(codes, ref_codes) and torch.equal(scales, ref_scales), name
        # hand-written: row absmax scale, round(127 w / absmax)
        absmax = weight.half().float().abs().amax(dim=1, keepdim=True)
        hand = torch.round(weight.half().float() * 127 / absmax)
        assert (codes.float() - hand).abs().max() <= 1  # fp16 vs fp32 rounding of the ratio
        assert (codes.float() == hand).float().mean() > 0.99
        dequantized = codes.float() * scales.float()[:, None] / 127
        assert (dequantized - weight).abs().max() <= absmax.max() / 127


FIXTURE_TASKS = Path(__file__).parents[1] / "fixtures" / "tasks"


def _bpb(results: dict, lang: str) -> float:
    return results["results"][f"qd_multilingual_ppl_{lang}"]["bits_per_byte,none"]


@pytest.mark.integration
def test_cli_rtn_on_gpt2_conv1d_writes_report_beside_results(tiny_model_dir, lm_eval_cli, tmp_path):
    path = tiny_model_dir("gpt2")
    out = tmp_path / "out"
    results = lm_eval_cli(
        ["--model", "qd-hf", "--model_args", f"pretrained={path},method=rtn,bits=3",
         "--tasks", "qd_multilingual_ppl_en,qd_multilingual_ppl_sw", "--device", "cpu"],
        out,
    )
    block = results["config"]["quant_disparity"]
    assert block["quant_config"]["method"] == "rtn" and block["quant_config"]["bits"] == 3
    assert (block["config_label"], block["config_family"]) == ("rtn-w3", "rtn")  # stored when the run is made
    report = block["quant_report"]
    conv1d = [layer for layer in report["layers"] if layer["kind"] == "conv1d"]
    assert conv1d and all(layer["status"] == "quantized" for layer in conv1d)
    assert block["quant_totals"]["params_quantized"] == sum(layer["numel"] for layer in conv1d)
    assert "transformer.wte.weight" in {s["name"] for s in report["skipped"]}
    assert report["totals"] == block["quant_totals"] and not list(out.rglob("quant_report_*.json"))  # stored once: in the results


@pytest.mark.parametrize(
    "arch,args",
    [
        ("llama", "method=aciq,bits=4,clip=auto"),
        ("bloom", "method=mse,bits=4,granularity=group,group_size=32"),
        ("llama", "method=rtn,bits=4,keep_top=5,keep_layers=[1]"),
        ("llama", "method=nf4"),
        ("llama", "method=fp4"),
        ("bloom", "method=int8"),
    ],
)
def test_method_runs_and_changes_the_model(arch, args, tiny_model_dir, evaluate_in_process):
    path = tiny_model_dir(arch)
    tasks = ["qd_multilingual_ppl_en", "qd_multilingual_ppl_yo"]
    base = evaluate_in_process("qd-hf", f"pretrained={path}", tasks, limit=2)
    quant = evaluate_in_process("qd-hf", f"pretrained={path},{args}", tasks, limit=2)
    block = quant["config"]["quant_disparity"]
    assert block["quant_config"]["method"] == args.split(",")[0].split("=")[1]
    assert block["quant_totals"]["effective_bits_per_weight"] < 32  # float32 originals
    for lang in ("en", "yo"):
        assert math.isfinite(_bpb(quant, lang))
        assert _bpb(quant, lang) != _bpb(base, lang)  # the weights really changed


def test_standard_tasks_run_quantized(tiny_model_dir, qd_task_manager):
    """Any lm-eval task works with a quantized model: a multiple-choice and a generate_until YAML."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False, include_path=str(FIXTURE_TASKS))
    results = simple_evaluate(
        model="qd-hf", model_args=f"pretrained={tiny_model_dir('llama')},method=rtn,bits=4",
        tasks=["qd_test_local_mc", "qd_test_local_gen"], task_manager=manager, device="cpu",
    )
    assert 0.0 <= results["results"]["qd_test_local_mc"]["acc,none"] <= 1.0
    assert results["results"]["qd_test_local_gen"]["exact_match,none"] >= 0.0
    assert results["n-samples"]["qd_test_local_mc"]["effective"] == 3
    assert results["config"]["quant_disparity"]["quant_config"]["bits"] == 4


def test_comma_lists_survive_lm_eval_arg_parser():
    """`keep_layers=0,11` as docs/methods.md writes it, through lm-eval's own --model_args parser."""
    from lm_eval.utils import simple_parse_args_string

    from qd_models.config import parse_qd_args

    parsed = simple_parse_args_string("pretrained=x,method=rtn,keep_layers=0,11,bits=3,keep=re:.*mlp.*,re:.*o_proj")
    config, rest = parse_qd_args(parsed)
    assert config.keep_layers == (0, 11) and config.bits == 3
    assert config.keep == ("re:.*mlp.*", "re:.*o_proj")
    assert rest == {"pretrained": "x"}


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
