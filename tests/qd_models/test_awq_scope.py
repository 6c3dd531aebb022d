"""awq_scope=shared: groups of linears reading the same input (tiny Llama, GPT-2, BLOOM), the
shared scale against a grid search written here over recorded inputs, the fold into the norm
(forward equal to the unfolded model's), honest bits, option validation."""

from __future__ import annotations

import copy

import pytest
import torch

from qd_models import methods
from qd_models.awq_scope import fold_into_norm_, fold_kind, input_groups
from qd_models.calibration import CalibrationBatches, load_calibration_texts
from qd_models.config import parse_qd_args
from qd_models.engine import quantize_

EXPECTED_GROUPS = {
    "llama": [(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"],
               "model.layers.0.input_layernorm", "rmsnorm"),
              (["model.layers.0.self_attn.o_proj"], None, None),
              (["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"], "model.layers.0.post_attention_layernorm", "rmsnorm"),
              (["model.layers.0.mlp.down_proj"], None, None)],
    "gpt2": [(["transformer.h.0.attn.c_attn"], "transformer.h.0.ln_1", "layernorm"),
             (["transformer.h.0.attn.c_proj"], None, None),
             (["transformer.h.0.mlp.c_fc"], "transformer.h.0.ln_2", "layernorm"),
             (["transformer.h.0.mlp.c_proj"], "transformer.h.0.mlp.act", None)],
    "bloom": [(["transformer.h.0.self_attention.query_key_value"], "transformer.h.0.input_layernorm", "layernorm"),
              (["transformer.h.0.self_attention.dense"], None, None),
              (["transformer.h.0.mlp.dense_h_to_4h"], "transformer.h.0.post_attention_layernorm", "layernorm"),
              (["transformer.h.0.mlp.dense_4h_to_h"], "transformer.h.0.mlp.gelu_impl", None)],
}


def _load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def _calib(tokenizer, config):
    texts = {lang: group[:3] for lang, group in load_calibration_texts(config).items() if lang in ("en", "he")}
    return CalibrationBatches.from_texts(tokenizer, texts)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bloom"])
def test_groups_and_their_norms(tiny_model_dir, arch):
    model, _ = _load(tiny_model_dir(arch))
    quantized = {name for name, m in model.named_modules() if name and ".0." in name}
    groups = [(g.members, g.norm, g.fold) for g in input_groups(model, quantized) if ".0." in g.members[0]]
    assert groups == EXPECTED_GROUPS[arch]
    lm_head = [g for g in input_groups(model, quantized) if g.members == ["lm_head"]]
    assert len(lm_head) == 1 and lm_head[0].fold is None  # the head is not quantized: its norm stays


def test_gemma_norm_folds_through_one_plus_weight():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    norm = Gemma3RMSNorm(8)
    norm.weight.data = torch.randn(8)
    assert fold_kind(norm) == "rmsnorm_one_plus"
    x, s = torch.randn(5, 8), torch.rand(8) + 0.5
    expected = norm(x) / s
    fold_into_norm_(norm, "rmsnorm_one_plus", s)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-6)


def _reference_rtn(w, bits=4, group=16):
    """Symmetric INT-b per group of ``group`` inputs, written out here (AWQ's pseudo_quantize)."""
    blocks = w.reshape(-1, group)
    step = blocks.abs().amax(1, keepdim=True).clamp_min(1e-8) / (2 ** (bits - 1) - 1)
    return ((blocks / step).round().clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * step).reshape(w.shape)


def test_shared_scale_equals_a_grid_search_over_the_recorded_inputs(tiny_model_dir):
    model, tokenizer = _load(tiny_model_dir("llama"))
    original = copy.deepcopy(model)
    config = parse_qd_args({"method": "awq", "group_size": "16", "awq_scope": "shared", "keep_layers": "1"})[0]
    calib = _calib(tokenizer, config)
    # record block 0's inputs per language on the original model, one text at a time (prefix not counted)
    recorded, current = {"qkv": {}, "mlp": {}}, {}
    layer = original.model.layers[0]
    hooks = [layer.self_attn.q_proj.register_forward_pre_hook(lambda m, a: recorded["qkv"].setdefault(current["lang"], []).append(a[0][0, 1:])),
             layer.mlp.gate_proj.register_forward_pre_hook(lambda m, a: recorded["mlp"].setdefault(current["lang"], []).append(a[0][0, 1:]))]
    with torch.no_grad():
        for lang, seqs in calib.token_ids.items():
            current["lang"] = lang
            for seq in seqs:
                original(input_ids=torch.tensor([seq]))
    for hook in hooks:
        hook.remove()
    report = quantize_(model, config, calib=calib)
    by_name = {entry["name"]: entry for entry in report["layers"]}
    for key, members, norm_name in (("qkv", ["q_proj", "k_proj", "v_proj"], "input_layernorm"), ("mlp", ["gate_proj", "up_proj"], "post_attention_layernorm")):
        rows = {lang: torch.cat(chunks).double() for lang, chunks in recorded[key].items()}
        weight = {lang: 1.0 / (len(x) * len(rows)) for lang, x in rows.items()}  # equal total weight per language
        mean_abs = sum(weight[lang] * x.abs().sum(0) for lang, x in rows.items())
        parent = layer.self_attn if key == "qkv" else layer.mlp
        weights = [getattr(parent, m).weight.detach().double() for m in members]
        best = None
        for k in range(20):
            s = mean_abs.pow(k / 20).clamp_min(1e-4)
            s = s / (s.max() * s.min()).sqrt()
            error = sum(weight[lang] * ((x @ (_reference_rtn(w * s) / s - w).T) ** 2).sum() for w in weights for lang, x in rows.items())
            if best is None or error < best[0] - 1e-9 * abs(best[0]):
                best = (float(error), k / 20, s)
        _, alpha, s = best
        block = "model.layers.0.self_attn." if key == "qkv" else "model.layers.0.mlp."
        assert [by_name[block + m]["awq_alpha"] for m in members] == [alpha] * len(members)
        assert all(by_name[block + m]["awq_scale"] == f"folded into model.layers.0.{norm_name}" for m in members)
        # folded: the linears hold Q(W s), the norm divides by s
        new_parent = model.model.layers[0].self_attn if key == "qkv" else model.model.layers[0].mlp
        for m, w in zip(members, weights):
            torch.testing.assert_close(getattr(new_parent, m).weight.double(), _reference_rtn(w * s), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(getattr(model.model.layers[0], norm_name).weight.double(),
                                   getattr(layer, norm_name).weight.double() / s, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bloom"])
def test_folded_forward_equals_the_unfolded_scaled_model_and_bits_are_honest(tiny_model_dir, arch, monkeypatch):
    model, tokenizer = _load(tiny_model_dir(arch))
    unfolded = copy.deepcopy(model)
    config = parse_qd_args({"method": "awq", "group_size": "16", "awq_scope": "shared"})[0]
    calib = _calib(tokenizer, config)
    originals: dict = {}
    report = quantize_(model, config, calib=calib, originals_for_restore=originals)
    monkeypatch.setitem(methods.QUANTIZERS, "awq", methods.Quantizer(methods._awq_layer, plan=methods._awq_plan))  # no fold
    unfolded_report = quantize_(unfolded, config, calib=_calib(tokenizer, config))
    ids = torch.tensor([calib.token_ids["en"][0][:64]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, unfolded(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    norms = [name for name in originals if "norm" in name or "ln_" in name]
    assert norms and any(not torch.equal(model.get_parameter(n).cpu(), originals[n]) for n in norms)  # s = 1 where alpha = 0
    assert report["totals"] == unfolded_report["totals"]
    for entry in report["layers"]:
        if entry["status"] != "quantized":
            continue
        in_dim = entry["shape"][0] if arch == "gpt2" else entry["shape"][1]
        group = entry["awq_group"]
        charged = entry["awq_scale"] == "explicit input multiply" and group[0] == entry["name"]
        expected = 4 + 16 / 16 + (16 * in_dim / entry["numel"] if charged else 0)  # codes + group scale (+ one scale vector per group)
        assert entry["bits_per_weight"] == pytest.approx(expected)


def test_awq_scope_values_are_checked_before_loading():
    assert parse_qd_args({"method": "awq"})[0].options.awq_scope == "linear"
    with pytest.raises(ValueError, match=r"^awq_scope='both' is not allowed; allowed: linear, shared$"):
        parse_qd_args({"method": "awq", "awq_scope": "both"})
    with pytest.raises(ValueError, match="awq_scope not allowed with method=gptq"):
        parse_qd_args({"method": "gptq", "awq_scope": "shared"})
