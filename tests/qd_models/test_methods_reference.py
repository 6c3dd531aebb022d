"""Every method's scores and weights against references that do not go through lm-eval.

Fake-quantization methods: the per-document log-likelihoods and bits/byte ``qd-hf`` reports equal a
direct forward pass (float64 log-softmax over ``[BOS] + encode(text, add_special_tokens=False)``,
written here) over ``quantize_`` applied to a freshly loaded copy of the same model. So the
evaluated model is exactly the quantized one, scored once per text token with one BOS.

bitsandbytes methods: the weights the loaded model computes with equal bitsandbytes' own
quantize -> dequantize of the original fp32 weights, and a hand-written NF4 / absmax-int8
reference (codebook from the QLoRA paper, blocks of 64) that shares no code with bitsandbytes.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference_passes import direct_doc_loglikelihoods

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
