"""quantize_ on tiny random HF models (GPT-2 Conv1D, Llama, BLOOM): selection, orientation,
identity cases, preservation accounting, restore, bnb kwargs and export."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from qd_models.config import parse_qd_args, validate_for_model
from qd_models.engine import bnb_from_pretrained_kwargs, quantize_, restore_
from qd_models.model_layout import block_index
from qd_models.report import summarize_report
from qd_models.saving import save_quantized


def _load(tiny_model_dir, arch):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch), dtype=torch.float32)


def _weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _changed(model, before):
    return {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
def test_default_skips_and_counts(tiny_model_dir, arch):
    model = _load(tiny_model_dir, arch)
    before = _weights(model)
    report = quantize_(model, parse_qd_args({"method": "rtn"})[0])
    changed = _changed(model, before)
    assert changed and all(name.endswith(".weight") for name in changed)
    assert not any(key in name for name in changed for key in ("norm", "ln_", "embed", "wte", "wpe", "lm_head", "bias"))
    totals = report["totals"]
    assert totals["params_quantized"] + totals["params_kept"] + totals["params_skipped"] == sum(
        p.numel() for p in model.parameters()
    )
    assert totals["params_quantized"] == sum(before[name].numel() for name in changed)
    json.dumps(report, allow_nan=False)
    assert "effective bits/weight" in summarize_report(report)


@pytest.mark.parametrize("args", [{"method": "none"}, {"method": "rtn", "bits": 16}, {"method": "mse", "keep_top": 100}])
def test_identity_cases_are_bit_identical(tiny_model_dir, args):
    model = _load(tiny_model_dir, "llama")
    before = _weights(model)
    quantize_(model, parse_qd_args(args)[0])
    assert not _changed(model, before)


def test_conv1d_channels_are_output_columns(tiny_model_dir):
    model = _load(tiny_model_dir, "gpt2")
    module = model.transformer.h[0].mlp.c_fc  # Conv1D weight [in=64, out=256]
    with torch.no_grad():
        module.weight.mul_(torch.linspace(0.01, 10.0, module.weight.shape[1]))  # scale per output column
    original = module.weight.detach().clone()
    quantize_(model, parse_qd_args({"method": "rtn", "bits": 2})[0])
    quantized = module.weight.detach()
    for column in range(0, original.shape[1], 37):  # each output column: own absmax, <= 4 levels
        assert quantized[:, column].unique().numel() <= 4
        assert quantized[:, column].abs().max() == pytest.approx(float(original[:, column].abs().max()), rel=1e-5)


def test_keep_layers_pattern_and_filter(tiny_model_dir):
    model = _load(tiny_model_dir, "llama")
    before = _weights(model)
    config = parse_qd_args({"method": "rtn", "keep_layers": "1", "keep": "re:.*mlp.*;model.layers.0.self_attn.q_proj"})[0]
    report = quantize_(model, config, filter_fn=lambda module, name: not name.endswith("o_proj"))
    changed = _changed(model, before)
    assert changed == {f"model.layers.0.self_attn.{p}_proj.weight" for p in "kv"}
    kept = {layer["name"]: layer["reason"] for layer in report["layers"] if layer["status"] == "kept"}
    assert kept["model.layers.1.mlp.up_proj"] == "keep_layers:1" and kept["model.layers.0.self_attn.o_proj"] == "filter_fn"
    assert report["totals"]["effective_bits_per_weight"] > 4  # kept layers cost 32 bits each here


def test_unmatched_keep_pattern_is_an_error(tiny_model_dir):
    model = _load(tiny_model_dir, "llama")
    with pytest.raises(ValueError, match="keep="):
        quantize_(model, parse_qd_args({"method": "rtn", "keep": "model.layers.0.mlpp"})[0])


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_keep_top_keeps_largest_and_counts_bits(tiny_model_dir, scope):
    model = _load(tiny_model_dir, "llama")
    before = _weights(model)
    report = quantize_(model, parse_qd_args({"method": "rtn", "keep_top": 2, "keep_top_scope": scope})[0])
    layer = next(lay for lay in report["layers"] if lay["name"] == "model.layers.0.mlp.down_proj")
    name = "model.layers.0.mlp.down_proj.weight"
    w, q = before[name], model.get_parameter(name).detach()
    same = w == q
    if scope == "layer":
        assert layer["kept_fraction"] == pytest.approx(0.02, abs=1 / w.numel())
        threshold = w.abs().reshape(-1).kthvalue(w.numel() - round(0.02 * w.numel()) + 1).values
        assert bool(same[w.abs() >= threshold].all())
    totals = report["totals"]
    assert totals["params_kept"] >= 0.02 * (totals["params_quantized"] + totals["params_kept"]) - 1
    # layer bits: 4-bit codes + 16-bit scale per row + kept values at kept_value_bits (16) + min(32-bit index, bitmap)
    numel, rows, kept = w.numel(), w.shape[0], round(layer["kept_fraction"] * w.numel())
    assert layer["bits_per_weight"] * numel == pytest.approx(4 * numel + 16 * rows + kept * 16 + min(32 * kept, numel))
    assert totals["kept_value_bits"] == 16


def test_global_keep_top_keeps_the_global_top_fraction(tiny_model_dir):
    """Independent expectation: the exact global top-2 % of |w| over all quantized layers (numpy),
    within one of the engine's 65536 histogram bins."""
    model = _load(tiny_model_dir, "llama")
    before = _weights(model)
    report = quantize_(model, parse_qd_args({"method": "rtn", "keep_top": 2, "keep_top_scope": "global"})[0])
    names = [f"{lay['name']}.weight" for lay in report["layers"] if lay["status"] == "quantized"]
    original = np.concatenate([before[n].abs().reshape(-1).numpy() for n in names])
    unchanged = np.concatenate([(before[n] == model.get_parameter(n).detach()).reshape(-1).numpy() for n in names])
    wanted = round(0.02 * original.size)
    exact = np.sort(original)[-wanted]  # the wanted-th largest |w|
    bin_width = original.max() / 65536
    kept = report["totals"]["params_kept"]
    assert wanted <= kept <= int((original >= exact - bin_width).sum())
    assert bool(unchanged[original >= exact].all())  # the top 2 % are bit-identical
    # nothing below the kept set was kept: the kept count equals the weights at or above a threshold
    threshold = np.sort(original)[-kept]
    assert int((original >= threshold).sum()) == kept
    assert bool(unchanged[original >= threshold].all())


def test_restore_and_determinism(tiny_model_dir):
    model = _load(tiny_model_dir, "bloom")
    before = _weights(model)
    config = parse_qd_args({"method": "aciq", "granularity": "group", "group_size": 16})[0]
    originals = {}
    first = quantize_(model, config, originals_for_restore=originals)
    once = _weights(model)
    restore_(model, originals)
    assert not _changed(model, before)
    second = quantize_(model, config)
    assert not _changed(model, once) and first["layers"] == second["layers"]


def test_methods_reduce_error_in_theory_order(tiny_model_dir):
    """``mse <= rtn`` holds by construction (r = 1, the rtn range, is on mse's grid): a
    regression test. Informative: ``test_mse_error_is_the_brute_force_minimum`` (test_quant_math)."""
    errors = {}
    for method in ("rtn", "aciq", "mse"):
        model = _load(tiny_model_dir, "llama")
        report = quantize_(model, parse_qd_args({"method": method, "bits": 3, "granularity": "tensor"})[0])
        errors[method] = sum(lay["rel_mse"] for lay in report["layers"] if lay["status"] == "quantized")
    assert errors["mse"] <= errors["aciq"] and errors["mse"] <= errors["rtn"]


def test_validate_for_model_checks_layers_and_groups(tiny_model_dir):
    hf_config = AutoConfig.from_pretrained(tiny_model_dir("gpt2"))
    validate_for_model(parse_qd_args({"method": "rtn", "keep_layers": "1"})[0], hf_config)
    with pytest.raises(ValueError, match="keep_layers"):
        validate_for_model(parse_qd_args({"method": "rtn", "keep_layers": "2"})[0], hf_config)
    with pytest.raises(ValueError, match="group_size"):
        validate_for_model(parse_qd_args({"method": "rtn", "granularity": "group", "group_size": 48})[0], hf_config)


def test_block_index_names():
    assert block_index("model.layers.3.mlp.up_proj") == 3
    assert block_index("transformer.h.11.attn.c_attn") == 11
    assert block_index("transformer.h.2") == 2
    assert block_index("lm_head") is None


def test_bnb_kwargs_and_nf4_runs_on_cpu(tiny_model_dir):
    assert bnb_from_pretrained_kwargs(parse_qd_args({"method": "rtn"})[0]) == {}
    config = parse_qd_args({"method": "nf4"})[0]
    kwargs = bnb_from_pretrained_kwargs(config)
    assert kwargs["quantization_config"].bnb_4bit_quant_type == "nf4"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), device_map="cpu", **kwargs)
    report = quantize_(model, config)
    assert report["totals"]["layers_quantized"] == 14
    assert report["totals"]["effective_bits_per_weight"] == pytest.approx(4.5)  # 4 bits + fp32 absmax per 64
    assert torch.isfinite(model(torch.tensor([[1, 5, 9]])).logits).all()


def test_save_quantized_loads_back_identical(tiny_model_dir, tmp_path):
    model = _load(tiny_model_dir, "gpt2")
    report = quantize_(model, parse_qd_args({"method": "rtn", "bits": 3})[0])
    path = save_quantized(model, None, tmp_path / "out", report)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert json.loads(open(path).read())["config"]["bits"] == 3
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert torch.equal(p, q), name


def test_build_report_totals_from_hand_counts():
    """The one report builder (fake and bitsandbytes): totals from the counts it is given, the
    caller's extra totals last, in their order; no candidates: effective bits NaN."""
    from qd_models.report import build_report

    config = parse_qd_args({"method": "rtn"})[0]
    layers = [{"status": "quantized"}, {"status": "kept"}, {"status": "unchanged"}, {"status": "quantized"}]
    skipped = [{"name": "a", "numel": 3, "reason": "bias"}, {"name": "b", "numel": 5, "reason": "norm"}]
    report = build_report(config, layers, skipped, 8 * 16, 1001, 200, 50, original_size_bytes=7, nonfinite_weights=0)
    assert report["totals"] == {
        "params_quantized": 200, "params_kept": 50, "params_skipped": 8, "layers_quantized": 2, "layers_kept": 1,
        "effective_bits_per_weight": 1001 / 250, "estimated_size_bytes": (1001 + 128) // 8, "original_size_bytes": 7,
        "nonfinite_weights": 0,
    }
    assert list(report["totals"])[-2:] == ["original_size_bytes", "nonfinite_weights"]
    assert report["layers"] is layers and report["skipped"] is skipped and report["config"] == config.to_dict()
    empty = build_report(config, [], [], 0, 0, 0, 0)["totals"]
    assert np.isnan(empty["effective_bits_per_weight"]) and empty["estimated_size_bytes"] == 0


def test_skipped_parameters_lists_the_unhandled_once_with_their_bits():
    from torch import nn

    from qd_models.report import skipped_parameters

    model = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2), nn.Linear(2, 2, bias=False))
    model.add_module("again", model[1])  # the LayerNorm reachable twice: listed once
    skipped, bits = skipped_parameters(model, {id(model[0].weight)}, lambda param: 16)
    assert skipped == [{"name": "0.bias", "numel": 2, "reason": "bias"}, {"name": "1.weight", "numel": 2, "reason": "other"},
                       {"name": "1.bias", "numel": 2, "reason": "bias"}, {"name": "2.weight", "numel": 4, "reason": "other"}]
    assert bits == 16 * (2 + 2 + 2 + 4)
