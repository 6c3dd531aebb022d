"""quantize_ on tiny random HF models (GPT-2 Conv1D, Llama, BLOOM): selection, orientation,
identity cases, preservation accounting, restore, bnb kwargs and export.

The quant report of ``quantize_`` (fake and bitsandbytes), selection and keep rules, and
``save_quantized`` against expectations written here: counts from the model's own modules, bits
from the storage formula (codes + 16-bit scales + zero points + kept values and indices),
round-to-nearest in numpy, skip reasons by name."""

import json
import os

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

import qd_models
from qd_models.config import QuantConfig, parse_qd_args, validate_for_model
from qd_models.engine import bnb_from_pretrained_kwargs, quantize_, restore_
from qd_models.model_layout import block_index, skip_reason
from qd_models.report import summarize_report
from qd_models.saving import REPORT_FILENAME, save_quantized, write_report
from qd_models.targets import global_threshold, matches, quantization_targets, select_targets


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
    regression test. Informative: ``test_mse_error_is_the_brute_force_minimum`` (test_quant_core)."""
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


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)  # weight [16, 8], bias [16]
        self.conv = Conv1D(8, 16)  # nf=8 outputs, nx=16 inputs: weight [16, 8] stored [in, out]
        self.norm = nn.LayerNorm(8)


class _Toy(nn.Module):
    """embed [10, 8]; layers.{0,1}: proj (Linear 8->16), conv (Conv1D 16->8), norm; lm_head [10, 8]."""

    def __init__(self, tied=False):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 8)
        self.layers = nn.ModuleList([_Block(), _Block()])
        self.lm_head = nn.Linear(8, 10, bias=False)
        with torch.no_grad():
            for block in self.layers:
                block.conv.weight.normal_()
        if tied:
            self.lm_head.weight = self.embed.weight

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.lm_head


BLOCK_MODULES = ["layers.0.proj", "layers.0.conv", "layers.1.proj", "layers.1.conv"]
SKIP_REASONS = {"embed.weight": "embedding", "lm_head.weight": "lm_head"}


def _expected_skip(name):
    if name.endswith("bias"):
        return "bias"
    if ".norm." in name:
        return "norm"
    return SKIP_REASONS[name]


def _oriented(model, name):
    """numpy float64 ``[out, in]`` weight of module ``name`` (Conv1D transposed)."""
    module = model.get_submodule(name)
    weight = module.weight.detach().double().numpy()
    return weight.T if isinstance(module, Conv1D) else weight


def _rtn(rows, bits):
    """Symmetric round-to-nearest per row: step = absmax / (2^(bits-1) - 1), codes in [-2^(bits-1), 2^(bits-1) - 1]."""
    half = 2 ** (bits - 1)
    step = np.abs(rows).max(axis=1, keepdims=True) / (half - 1)
    return np.clip(np.round(rows / step), -half, half - 1) * step


def _stats(weight):
    w = weight.reshape(-1)
    dev = w - w.mean()
    sigma = np.sqrt(np.mean(dev**2))
    return {"sigma": sigma, "kurtosis": np.mean(dev**4) / sigma**4 - 3.0, "max_over_sigma": np.abs(dev).max() / sigma,
            "nonfinite": 0}


def _assert_same(actual, expected, rel=1e-5):
    """Same keys and values; floats within ``rel``."""
    assert set(actual) == set(expected), (sorted(actual), sorted(expected))
    for key, value in expected.items():
        if isinstance(value, dict):
            _assert_same(actual[key], value, rel)
        elif isinstance(value, float):
            assert actual[key] == pytest.approx(value, rel=rel, abs=1e-12), key
        else:
            assert actual[key] == value and type(actual[key]) is type(value), (key, actual[key], value)


def _skipped(model, quantized_or_kept):
    return [{"name": name, "numel": p.numel(), "reason": _expected_skip(name)}
            for name, p in model.named_parameters() if name not in {f"{m}.weight" for m in quantized_or_kept}]


# ---------------------------------------------------------------------------- fake quantization


@pytest.mark.parametrize("kept_value_bits", [16, 8])
def test_rtn_report_of_a_toy_model_layer_by_layer(kept_value_bits):
    """rtn 4-bit per channel, block 1 kept by keep_layers: every field of every layer and total."""
    model = _Toy()
    before = {name: _oriented(model, name) for name in BLOCK_MODULES}
    config = parse_qd_args({"method": "rtn", "keep_layers": "1", "kept_value_bits": kept_value_bits})[0]
    report = quantize_(model, config)
    expected_layers, storage, quantized, kept = [], 0, 0, 0
    for name in BLOCK_MODULES:
        w = before[name]
        layer = {"name": name, "kind": "conv1d" if name.endswith("conv") else "linear",
                 "shape": list(model.get_submodule(name).weight.shape), "numel": w.size, **_stats(w)}
        if name.startswith("layers.1."):
            layer.update(status="kept", reason="keep_layers:1", rel_mse=0.0, kept_fraction=1.0,
                         bits_per_weight=float(kept_value_bits))
            storage += kept_value_bits * w.size
            kept += w.size
            np.testing.assert_array_equal(_oriented(model, name), w)
        else:
            q = _rtn(w, 4)
            np.testing.assert_allclose(_oriented(model, name), q, rtol=1e-6, atol=1e-7)
            bits = 4 * w.size + 16 * w.shape[0]  # 4-bit codes + one 16-bit scale per output row
            ratio = np.abs(w).max(axis=1) / np.sqrt(np.mean(w**2, axis=1))
            layer.update(status="quantized", n_blocks=w.shape[0], rel_mse=float(((q - w) ** 2).sum() / (w**2).sum()),
                         kept_fraction=0.0, bits_per_weight=bits / w.size,
                         alpha_over_sigma={"mean": ratio.mean(), "min": ratio.min(), "max": ratio.max()})
            storage += bits
            quantized += w.size
        expected_layers.append(layer)
    assert len(report["layers"]) == len(expected_layers)
    for actual, expected in zip(report["layers"], expected_layers):
        _assert_same(actual, expected)
    skipped = _skipped(model, BLOCK_MODULES)
    assert report["skipped"] == skipped
    skipped_numel = sum(s["numel"] for s in skipped)
    _assert_same(report["totals"], {
        "params_quantized": quantized, "params_kept": kept, "params_skipped": skipped_numel,
        "layers_quantized": 2, "layers_kept": 2,
        "effective_bits_per_weight": storage / (quantized + kept),
        "estimated_size_bytes": (storage + kept_value_bits * skipped_numel) // 8,
        "original_size_bytes": (32 * (quantized + kept) + kept_value_bits * skipped_numel) // 8,
        "kept_value_bits": kept_value_bits, "nonfinite_weights": 0,
    })
    assert report["config"] == config.to_dict() and report["package_version"] == qd_models.__version__
    assert isinstance(report["wall_seconds"], float) and 0 <= report["wall_seconds"] < 60
    assert set(report) == {"config", "package_version", "totals", "layers", "skipped", "wall_seconds"}


@pytest.mark.parametrize(("args", "blocks_of", "zero_bits"), [
    ({"symmetric": "false"}, lambda w: w.shape[0], 3),  # per channel + a 3-bit zero point per row
    ({"granularity": "group", "group_size": 4}, lambda w: w.size // 4, 0),
    ({"granularity": "tensor"}, lambda w: 1, 0),
])
def test_bits_per_weight_counts_blocks_scales_and_zero_points(args, blocks_of, zero_bits):
    model = _Toy()
    weights = {name: _oriented(model, name) for name in BLOCK_MODULES}
    report = quantize_(model, parse_qd_args({"method": "rtn", "bits": 3, **args})[0])
    storage = 0
    for layer in report["layers"]:
        w = weights[layer["name"]]
        n_blocks = blocks_of(w)
        bits = 3 * w.size + (16 + zero_bits) * n_blocks
        assert layer["n_blocks"] == n_blocks and layer["bits_per_weight"] == pytest.approx(bits / w.size)
        storage += bits
    numel = sum(w.size for w in weights.values())
    assert report["totals"]["effective_bits_per_weight"] == pytest.approx(storage / numel)


def test_keep_top_per_layer_keeps_the_largest_and_charges_value_and_index():
    """keep_top=10: round(10 % of numel) largest |w| per layer stay exact; each costs 16 value bits
    plus min(32-bit index, 1-bit bitmap of the layer)."""
    model = _Toy()
    weights = {name: _oriented(model, name) for name in BLOCK_MODULES}
    report = quantize_(model, parse_qd_args({"method": "rtn", "keep_top": 10})[0])
    total_quantized = total_kept = storage = 0
    for layer in report["layers"]:
        w = weights[layer["name"]]
        n_kept = round(0.1 * w.size)
        threshold = np.sort(np.abs(w).reshape(-1))[-n_kept]
        mask = np.abs(w) >= threshold
        assert mask.sum() == n_kept
        after = _oriented(model, layer["name"])
        np.testing.assert_array_equal(after[mask], w[mask])
        assert not np.array_equal(after[~mask], w[~mask])
        bits = 4 * w.size + 16 * w.shape[0] + n_kept * 16 + min(32 * n_kept, w.size)
        assert layer["kept_fraction"] == n_kept / w.size and layer["bits_per_weight"] == pytest.approx(bits / w.size)
        total_quantized += w.size - n_kept
        total_kept += n_kept
        storage += bits
    totals = report["totals"]
    assert (totals["params_quantized"], totals["params_kept"]) == (total_quantized, total_kept)
    assert totals["effective_bits_per_weight"] == pytest.approx(storage / (total_quantized + total_kept))


def _two_layer_model(values):
    """Two bias-free Linear layers whose weights are ``values[:64]`` and ``values[64:]``."""
    model = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(values[:64]).view(8, 8))
        model[1].weight.copy_(torch.tensor(values[64:]).view(8, 8))
    return model


def test_global_keep_top_keeps_exactly_the_global_top_when_values_are_bins_apart():
    """128 magnitudes 1/128 .. 1 (each far more than one of 65536 bins apart, none on a bin edge):
    keep_top=25 global keeps exactly the 32 largest |w| over both layers, in whichever layer."""
    rng = np.random.default_rng(3)
    magnitudes = (np.arange(1, 129) - 0.3) / 128.0
    values = (rng.permutation(magnitudes) * rng.choice([-1.0, 1.0], 128)).astype(np.float32)
    model = _two_layer_model(values)
    report = quantize_(model, parse_qd_args({"method": "rtn", "keep_top": 25, "keep_top_scope": "global"})[0])
    after = np.concatenate([model[0].weight.detach().numpy().reshape(-1), model[1].weight.detach().numpy().reshape(-1)])
    top = np.abs(values) >= np.sort(np.abs(values))[-32]
    np.testing.assert_array_equal(after[top], values[top])
    assert report["totals"]["params_kept"] == 32 and report["totals"]["params_quantized"] == 96
    for index, layer in enumerate(report["layers"]):
        assert layer["kept_fraction"] == top[64 * index: 64 * (index + 1)].sum() / 64


def test_global_threshold_edges():
    """The lower edge of the bin holding the wanted-th largest |w|; inf when nothing is wanted;
    layers with status keep take no part."""
    values = np.linspace(0.01, 1.0, 128).astype(np.float32)
    model = _two_layer_model(values)
    targets, _ = select_targets(model, parse_qd_args({"method": "rtn"})[0], None)
    bins = 65536
    # 10 % of 128 = 12.8 -> 13 wanted: the 13th largest value's bin
    thirteenth = float(np.sort(values)[-13])
    edge = np.floor(thirteenth / 1.0 * bins) / bins
    assert global_threshold(targets, 10) == pytest.approx(edge, abs=1e-9)
    assert global_threshold(targets, 0.3) == float("inf")  # round(0.384) = 0
    targets[1].status = "keep"  # only layer 0 (values[:64], max 0.5 approx) counts now
    top = float(values[63])
    sixth = float(np.sort(values[:64])[-6])  # round(10 % of 64) = 6
    assert global_threshold(targets, 10) == pytest.approx(np.floor(sixth / top * bins) / bins * top, abs=1e-9)


def test_bare_linear_and_restore_names():
    """A model that is one Linear: its parameter is ``weight``; originals are CPU copies by that name."""
    model = nn.Linear(16, 4, bias=False)
    original = model.weight.detach().clone()
    originals = {}
    report = quantize_(model, parse_qd_args({"method": "rtn"})[0], originals_for_restore=originals)
    assert list(originals) == ["weight"] and torch.equal(originals["weight"], original)
    assert originals["weight"] is not model.weight and not torch.equal(model.weight.detach(), original)
    assert [layer["name"] for layer in report["layers"]] == [""] and report["skipped"] == []


def test_float16_weights_report_the_error_of_the_stored_value():
    """A float16 layer: rel_mse of the value the parameter holds after the copy (rounded to fp16)."""
    model = nn.Linear(16, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 16, generator=torch.Generator().manual_seed(1)))
    model = model.half()
    w = model.weight.detach().double().numpy()
    report = quantize_(model, parse_qd_args({"method": "rtn", "bits": 8})[0])
    stored = model.weight.detach().double().numpy()
    np.testing.assert_array_equal(stored, _rtn(w, 8).astype(np.float16).astype(np.float64))
    assert report["layers"][0]["rel_mse"] == pytest.approx(((stored - w) ** 2).sum() / (w**2).sum(), rel=1e-6)
    # original size at the load width (16), skipped params at kept_value_bits (16)
    assert report["totals"]["original_size_bytes"] == 2 * 64


def test_all_zero_layer_has_undefined_rel_mse():
    model = nn.Linear(16, 4, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    report = quantize_(model, parse_qd_args({"method": "rtn"})[0])
    assert report["layers"][0]["rel_mse"] is None  # nan -> null in strict JSON
    assert torch.equal(model.weight.detach(), torch.zeros(4, 16))


def test_method_none_reports_every_layer_unchanged_at_its_load_width():
    """method=none has no kept_value_bits: weights are charged at their dtype's width (32 here)."""
    model = _Toy()
    config = parse_qd_args({"method": "none"})[0]
    assert config.kept_value_bits is None
    report = quantize_(model, config)
    for layer in report["layers"]:
        assert (layer["status"], layer["reason"], layer["rel_mse"], layer["kept_fraction"], layer["bits_per_weight"]) == (
            "unchanged", "none", 0.0, 1.0, 32.0)
    numel = sum(p.numel() for p in model.parameters())
    assert report["totals"]["estimated_size_bytes"] == report["totals"]["original_size_bytes"] == 4 * numel
    assert report["totals"]["layers_quantized"] == 0 and report["totals"]["layers_kept"] == 0
    assert report["totals"]["params_quantized"] == 0


def test_nonfinite_weights_are_counted():
    model = _Toy()
    with torch.no_grad():
        model.layers[0].proj.weight[0, :3] = float("nan")
        model.layers[1].proj.weight[2, 0] = float("inf")
    report = quantize_(model, parse_qd_args({"method": "rtn", "keep_layers": "0"})[0])
    assert report["totals"]["nonfinite_weights"] == 4
    assert [layer["nonfinite"] for layer in report["layers"]] == [3, 0, 1, 0]


def test_all_kept_warns_and_leaves_weights(caplog):
    model = _Toy()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with caplog.at_level("WARNING", logger="qd_models.engine"):
        report = quantize_(model, parse_qd_args({"method": "rtn", "keep_layers": "0;1"})[0])
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert [r.getMessage() for r in caplog.records] == [
        "qd-hf: method=rtn quantizes 0 parameters: every quantizable module is kept (keep_layers:0, keep_layers:1); "
        "results equal the baseline"]
    assert report["totals"]["effective_bits_per_weight"] == 16.0


def test_nothing_quantizable_warns_and_reports_nan(caplog):
    model = nn.Sequential(nn.LayerNorm(4))
    with caplog.at_level("WARNING", logger="qd_models.engine"):
        report = quantize_(model, parse_qd_args({"method": "rtn"})[0])
    assert [r.getMessage() for r in caplog.records] == [
        "qd-hf: method=rtn quantizes 0 parameters: every quantizable module is kept (no quantizable module); "
        "results equal the baseline"]
    assert report["layers"] == [] and report["totals"]["effective_bits_per_weight"] is None
    assert [s["reason"] for s in report["skipped"]] == ["other", "bias"]  # "0.weight": no norm in the name


# ---------------------------------------------------------------------------- selection


@pytest.mark.parametrize(("flags", "expected"), [
    ({}, BLOCK_MODULES),
    ({"quantize_embeddings": "true"}, ["embed", *BLOCK_MODULES]),
    ({"quantize_lm_head": "true"}, [*BLOCK_MODULES, "lm_head"]),
    ({"quantize_embeddings": "true", "quantize_lm_head": "true"}, ["embed", *BLOCK_MODULES, "lm_head"]),
])
def test_embedding_and_head_flags_untied(flags, expected):
    assert quantization_targets(_Toy(), parse_qd_args({"method": "rtn", **flags})[0]) == expected


@pytest.mark.parametrize(("flags", "expected"), [
    ({}, BLOCK_MODULES),
    ({"quantize_embeddings": "true"}, BLOCK_MODULES),
    ({"quantize_lm_head": "true"}, BLOCK_MODULES),
    ({"quantize_embeddings": "true", "quantize_lm_head": "true"}, ["embed", *BLOCK_MODULES]),
])
def test_a_tied_weight_needs_both_flags_and_is_quantized_once(flags, expected):
    model = _Toy(tied=True)
    config = parse_qd_args({"method": "rtn", **flags})[0]
    assert quantization_targets(model, config) == expected
    report = quantize_(model, config)
    assert [layer["kind"] for layer in report["layers"]] == [
        "embedding" if name == "embed" else "conv1d" if name.endswith("conv") else "linear" for name in expected]
    assert ("embed.weight" in {s["name"] for s in report["skipped"]}) == (expected == BLOCK_MODULES)
    assert "lm_head.weight" not in {s["name"] for s in report["skipped"]}  # the tied copy is one parameter


def test_embedding_is_quantized_per_row():
    model = _Toy()
    before = model.embed.weight.detach().double().numpy()
    report = quantize_(model, parse_qd_args({"method": "rtn", "quantize_embeddings": "true"})[0])
    np.testing.assert_allclose(model.embed.weight.detach().double().numpy(), _rtn(before, 4), rtol=1e-6, atol=1e-7)
    assert report["layers"][0]["n_blocks"] == 10


class _NoAccessors(nn.Module):
    """No get_input/output_embeddings: the head is found by its name ``lm_head``."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.body = nn.Linear(8, 8)
        self.decoder = nn.Module()
        self.decoder.lm_head = nn.Linear(8, 10)
        self.tail = nn.Linear(10, 4)  # after the head: skipping the head goes on to the next module


def test_head_by_name_without_accessors():
    model = _NoAccessors()
    assert quantization_targets(model, parse_qd_args({"method": "rtn"})[0]) == ["body", "tail"]
    assert quantization_targets(model, parse_qd_args({"method": "rtn", "quantize_lm_head": "true"})[0]) == [
        "body", "decoder.lm_head", "tail"]
    assert quantization_targets(model, parse_qd_args({"method": "rtn", "quantize_embeddings": "true"})[0]) == [
        "embed", "body", "tail"]


def test_keep_rules_reasons_and_precedence():
    """keep_layers before keep patterns before filter_fn; filter_fn sees (module, name)."""
    model = _Toy()
    seen = []

    def filter_fn(module, name):
        seen.append((name, module.weight.shape[0]))
        return name != "layers.0.proj"

    config = parse_qd_args({"method": "rtn", "keep_layers": "1", "keep": "re:layers\\.\\d\\.conv"})[0]
    targets, ids = select_targets(model, config, filter_fn)
    assert [(t.name, t.param_name, t.layout, t.status, t.reason) for t in targets] == [
        ("layers.0.proj", "layers.0.proj.weight", "linear", "keep", "filter_fn"),
        ("layers.0.conv", "layers.0.conv.weight", "conv1d", "keep", "keep:re:layers\\.\\d\\.conv"),
        ("layers.1.proj", "layers.1.proj.weight", "linear", "keep", "keep_layers:1"),
        ("layers.1.conv", "layers.1.conv.weight", "conv1d", "keep", "keep_layers:1"),
    ]
    assert seen == [("layers.0.proj", 16)]
    assert ids == {id(model.get_submodule(name).weight) for name in BLOCK_MODULES}


def test_unused_keep_patterns_are_named_in_one_line():
    with pytest.raises(ValueError) as error:
        quantization_targets(_Toy(), parse_qd_args({"method": "rtn", "keep": "layers.0.proj;nope;re:x.*"})[0])
    assert str(error.value) == ("keep=nope;re:x.* matches no quantizable module; allowed: exact module names "
                                "or re:<regex> (fullmatch)")


def test_matches():
    assert matches("abc", ("abc",)) == "abc"
    assert matches("abc", ("ab",)) is None
    assert matches("abc", ("re:abc",)) == "re:abc"
    assert matches("abc", ("re:a",)) is None  # fullmatch, not match
    assert matches("xabc", ("re:abc",)) is None  # fullmatch, not search
    assert matches("abc", ("x", "re:a.*", "abc")) == "re:a.*"  # the first matching pattern
    assert matches("", ("re:",)) is None  # an empty regex matches nothing
    assert matches("re:abc", ("re:abc",)) is None
    assert matches("a", ("re:a",)) == "re:a"  # a one-character regex


@pytest.mark.parametrize(("name", "reason"), [
    ("h.0.attn.bias", "bias"), ("h.0.ln_1.bias", "bias"), ("lm_head.bias", "bias"), ("Embed.BIAS", "bias"),
    ("bias_table.weight", "other"),
    ("model.norm.weight", "norm"), ("encoder.LayerNorm.weight", "norm"), ("transformer.ln_f.weight", "norm"),
    ("embeddings.LayerNorm.weight", "norm"),
    ("model.embed_tokens.weight", "embedding"), ("transformer.wte.weight", "embedding"),
    ("transformer.wpe.weight", "embedding"), ("WTE.weight", "embedding"), ("lm_head.embed", "embedding"),
    ("lm_head.weight", "lm_head"), ("LM_HEAD.weight", "lm_head"),
    ("model.rotary.inv_freq", "other"), ("ln.weight", "other"),
])
def test_skip_reason(name, reason):
    assert skip_reason(name) == reason


# ---------------------------------------------------------------------------- bitsandbytes


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_bnb_report_counts_every_layer_and_skipped_parameter(tiny_model_dir, method):
    """Linear4bit: 4-bit codes + a 32-bit absmax per 64 weights; Linear8bitLt: 8-bit codes + a
    32-bit scale per output row. Everything else (embeddings, norms, lm_head) skipped at 32 bits."""
    path = tiny_model_dir("llama")
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    linears = [(name, m.out_features, m.in_features) for name, m in reference.named_modules()
               if isinstance(m, nn.Linear) and name != "lm_head"]
    config = parse_qd_args({"method": method})[0]
    model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", **bnb_from_pretrained_kwargs(config))
    if method == "nf4":  # a layer without quant_state falls back to blocks of 64
        model.model.layers[1].mlp.up_proj.weight.quant_state = None
    report = quantize_(model, config)
    expected, storage = [], 0
    for name, out_features, in_features in linears:
        numel = out_features * in_features
        bits = numel * 4 + numel // 64 * 32 if method == "nf4" else numel * 8 + out_features * 32
        expected.append({"name": name, "kind": "Linear4bit" if method == "nf4" else "Linear8bitLt",
                         "shape": [out_features, in_features], "numel": numel, "status": "quantized",
                         "bits_per_weight": bits / numel})
        storage += bits
    assert report["layers"] == expected
    quantized = sum(o * i for _, o, i in linears)
    linear_weights = {f"{name}.weight" for name, _, _ in linears}
    skipped = [{"name": name, "numel": p.numel(),
                "reason": "embedding" if "embed" in name else "lm_head" if name == "lm_head.weight" else "norm"}
               for name, p in reference.named_parameters() if name not in linear_weights]
    assert report["skipped"] == skipped
    skipped_numel = sum(s["numel"] for s in skipped)
    _assert_same(report["totals"], {
        "params_quantized": quantized, "params_kept": 0, "params_skipped": skipped_numel,
        "layers_quantized": len(linears), "layers_kept": 0, "effective_bits_per_weight": storage / quantized,
        "estimated_size_bytes": (storage + 32 * skipped_numel) // 8, "original_size_bytes": None,
        "nonfinite_weights": None,
    }, rel=1e-12)
    rows = sum(o for _, o, _ in linears)
    assert report["totals"]["effective_bits_per_weight"] == pytest.approx(4.5 if method == "nf4" else 8 + 32 * rows / quantized)
    assert report["config"] == config.to_dict() and report["package_version"] == qd_models.__version__
    assert set(report) == {"config", "package_version", "totals", "layers", "skipped"}


# ---------------------------------------------------------------------------- saving


def test_save_quantized_replaces_the_folder_and_writes_the_report(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("gpt2"), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("gpt2"))
    report = quantize_(model, parse_qd_args({"method": "rtn", "bits": 3})[0])
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old model")
    path = save_quantized(model, tokenizer, target, report)
    assert path == os.path.join(str(target), REPORT_FILENAME)
    assert json.loads(open(path, encoding="utf-8").read()) == report
    assert not (target / "stale.txt").exists()  # the old folder was replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left
    assert os.stat(target).st_mode & 0o777 == 0o755
    assert (target / "tokenizer.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert torch.equal(p, q), name


def test_save_quantized_into_a_new_nested_folder_without_tokenizer(tmp_path):
    model = _TinySaveable()
    path = save_quantized(model, None, tmp_path / "a" / "b", {"x": 1})
    assert path == os.path.join(str(tmp_path / "a" / "b"), REPORT_FILENAME)
    assert json.loads(open(path, encoding="utf-8").read()) == {"x": 1}
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["model.bin", REPORT_FILENAME]
    assert sorted(os.listdir(tmp_path / "a")) == ["b"]


class _TinySaveable(nn.Linear):
    def __init__(self, fail=False):
        super().__init__(2, 2)
        self.fail = fail

    def save_pretrained(self, directory):
        torch.save(self.state_dict(), os.path.join(directory, "model.bin"))
        if self.fail:
            raise RuntimeError("disk full")


def test_a_failed_save_leaves_the_folder_as_it_was(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("user file")
    with pytest.raises(RuntimeError, match="disk full"):
        save_quantized(_TinySaveable(fail=True), None, target, {})
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(target) == ["keep.txt"]


def test_write_report_is_strict_indented_json(tmp_path):
    path = tmp_path / "r.json"
    write_report({"a": [1, 2.5], "é": None}, path)
    text = path.read_text(encoding="utf-8")
    assert text == '{\n "a": [\n  1,\n  2.5\n ],\n "\\u00e9": null\n}'
    with pytest.raises(ValueError):
        write_report({"a": float("nan")}, tmp_path / "n.json")


def test_direct_config_without_kept_value_bits_is_resolved():
    assert QuantConfig(method="rtn").kept_value_bits == 16


# ---------------------------------------------------------------------------- method hooks


def _recording_quantizer(calls, info=None, plan=None):
    """A method that halves every weight, records what the engine passed it and returns ``info``."""
    from qd_models.methods import Quantizer

    def layer(weight, blocks, valid, config, inputs):
        calls.append({"shape": tuple(weight.shape), "blocks": None if blocks is None else tuple(blocks.shape),
                      "valid": valid, "inputs": inputs})
        return weight * 0.5, dict(info or {})

    return Quantizer(layer, plan=plan)


def test_plan_sees_every_target_and_each_layer_gets_its_entry(monkeypatch):
    from qd_models import methods

    seen, calls = [], []

    model = _Toy()
    config = parse_qd_args({"method": "rtn", "keep": "layers.1.conv"})[0]
    marker = object()  # rtn needs no statistics: passed through to the plan untouched

    def plan(planned_model, targets, planned_config, act_stats):
        assert planned_model is model and planned_config is config and act_stats is marker
        seen.extend(targets)
        return {target.name: f"plan of {target.name}" for target in targets}

    monkeypatch.setitem(methods.QUANTIZERS, "rtn", _recording_quantizer(calls, plan=plan))
    quantize_(model, config, act_stats=marker)
    assert [(t.name, t.in_features, t.block, t.quantized) for t in seen] == [
        ("layers.0.proj", 8, 0, True), ("layers.0.conv", 16, 0, True),
        ("layers.1.proj", 8, 1, True), ("layers.1.conv", 16, 1, False)]
    assert [c["inputs"].plan for c in calls] == ["plan of layers.0.proj", "plan of layers.0.conv", "plan of layers.1.proj"]
    assert all(c["inputs"].gram is None and c["inputs"].stats is None for c in calls)
    assert [c["shape"] for c in calls] == [(16, 8), (8, 16), (16, 8)]  # Conv1D passed as [out, in]


@pytest.mark.parametrize(("info", "bits", "extra"), [
    ({"storage_bits": 1000}, lambda numel, rows: 1000, {}),
    ({"extra_bits": 7}, lambda numel, rows: 4 * numel + 16 * rows + 7, {}),
    ({"report": {"custom": 1}, "laplace": torch.tensor([True, False, False, False])}, lambda numel, rows: 4 * numel + 16 * rows,
     {"custom": 1, "laplace_fraction": 0.25}),
    ({"ratio": torch.tensor([0.5, 1.0, 0.75])}, lambda numel, rows: 4 * numel + 16 * rows,
     {"clip_ratio": {"mean": 0.75, "min": 0.5, "max": 1.0}}),
    ({"alpha": torch.tensor([2.0, 6.0]), "sigma": torch.tensor([1.0, 2.0])}, lambda numel, rows: 4 * numel + 16 * rows,
     {"alpha_over_sigma": {"mean": 2.5, "min": 2.0, "max": 3.0}}),
    ({"alpha": torch.tensor([2.0])}, lambda numel, rows: 4 * numel + 16 * rows, {}),  # no sigma: no ratio
    ({"sigma": torch.tensor([2.0])}, lambda numel, rows: 4 * numel + 16 * rows, {}),  # no alpha: no ratio
])
def test_method_info_reaches_the_report(monkeypatch, info, bits, extra):
    from qd_models import methods

    calls = []
    monkeypatch.setitem(methods.QUANTIZERS, "rtn", _recording_quantizer(calls, info=info))
    model = nn.Linear(8, 4, bias=False)
    w = model.weight.detach().double().numpy().copy()
    report = quantize_(model, parse_qd_args({"method": "rtn"})[0])
    layer = report["layers"][0]
    expected = {"name": "", "kind": "linear", "shape": [4, 8], "numel": 32, **_stats(w), "status": "quantized",
                "n_blocks": 4, "rel_mse": 0.25, "kept_fraction": 0.0, "bits_per_weight": bits(32, 4) / 32, **extra}
    _assert_same(layer, expected)
    np.testing.assert_allclose(model.weight.detach().double().numpy(), w * 0.5, rtol=1e-7)
    assert calls[0]["blocks"] == (4, 8) and calls[0]["valid"] is None


def test_keep_top_passes_the_unkept_mask_to_the_method(monkeypatch):
    from qd_models import methods

    calls = []
    monkeypatch.setitem(methods.QUANTIZERS, "rtn", _recording_quantizer(calls))
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.1, -0.9, 0.2, 0.3], [0.4, 0.5, -0.6, 0.05]]))
    report = quantize_(model, parse_qd_args({"method": "rtn", "keep_top": 25, "granularity": "group", "group_size": 2})[0])
    # 25 % of 8 = 2 largest |w| (0.9 and 0.6) kept; groups of 2 along the input dim
    assert torch.equal(calls[0]["valid"], torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(model.weight.detach(), torch.tensor([[0.05, -0.9, 0.1, 0.15], [0.2, 0.25, -0.6, 0.025]]))
    layer = report["layers"][0]
    assert layer["n_blocks"] == 4 and layer["kept_fraction"] == 0.25
    assert layer["bits_per_weight"] * 8 == pytest.approx(4 * 8 + 16 * 4 + 2 * 16 + min(2 * 32, 8))


class _FakeCalib:
    tokens = {"en": 64}  # calibration tokens per language (the sufficiency report reads their sum)

    def report(self):
        return {"kind": "inputs", "marker": 1}


def test_inputs_calibration_collects_each_block_once_in_order(monkeypatch):
    """gptq-style methods: the Gram matrices of all quantized targets of a block are collected
    when its first target is reached; embeddings get none; the report carries calib.report()."""
    from qd_models import calibration, methods

    collected, calls = [], []

    calib = _FakeCalib()

    def fake_grams(model, batches, names, block):
        assert batches is calib
        collected.append((list(names), block))
        return {name: (torch.eye(model.get_submodule(name).weight.shape[0 if name.endswith("conv") else 1],
                                 dtype=torch.float64) * (1 + len(collected)),
                       torch.full((3,), 2.0, dtype=torch.float64)) for name in names}

    class FakeBlockInputs:  # block targets: each block run on its cached inputs
        def __init__(self, model, batches, blocks):
            assert blocks == ["layers.0", "layers.1"]
            self.model, self.batches = model, batches

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def grams(self, block, names):
            return fake_grams(self.model, self.batches, names, block)

    monkeypatch.setattr(calibration, "collect_input_grams", fake_grams)  # targets outside the blocks: a full pass
    monkeypatch.setattr(calibration, "BlockInputs", FakeBlockInputs)
    monkeypatch.setitem(methods.QUANTIZERS, "gptq", _recording_quantizer(calls))
    model = _Toy()
    config = parse_qd_args({"method": "gptq", "group_size": 8, "quantize_embeddings": "true",
                            "quantize_lm_head": "true", "keep": "layers.1.proj"})[0]
    with pytest.raises(ValueError, match="^calib is required with method=gptq; allowed: "):
        quantize_(_Toy(), config)
    report = quantize_(model, config, calib=calib)
    assert collected == [(["layers.0.proj", "layers.0.conv"], "layers.0"), (["layers.1.conv"], "layers.1"),
                         (["lm_head"], None)]  # outside the blocks: block None
    inputs = [c["inputs"] for c in calls]
    assert inputs[0].gram is None and inputs[0].mean_abs is None  # the embedding
    assert [None if i.gram is None else (i.gram.dtype, float(i.gram[0, 0]), i.gram.shape[0]) for i in inputs[1:]] == [
        (torch.float32, 2.0, 8), (torch.float32, 2.0, 16), (torch.float32, 3.0, 16), (torch.float32, 4.0, 8)]
    assert all(i.mean_abs.dtype == torch.float32 for i in inputs[1:])
    # calib.report() carried, plus the sufficiency summary of the fakes: 64 tokens, widest input 16,
    # four identity-shaped Gram matrices (full rank, condition 1)
    assert report["calibration"] == {"kind": "inputs", "marker": 1, "tokens": 64, "largest_input_dim": 16,
                                     "tokens_per_largest_input_dim": 4.0, "gram_layers": 4,
                                     "rank_deficient_layers": 0, "max_gram_condition": 1.0}


def test_block_module_name():
    from qd_models.model_layout import block_module_name

    assert block_module_name("model.layers.3.mlp.down_proj") == "model.layers.3"
    assert block_module_name("transformer.h.11.attn.c_attn") == "transformer.h.11"
    assert block_module_name("layers.0") == "layers.0"
    assert block_module_name("lm_head") is None and block_module_name("model.embed_tokens") is None


def test_missing_act_stats_is_a_one_line_error():
    config = parse_qd_args({"method": "laaciq"})[0]
    with pytest.raises(ValueError) as error:
        quantize_(_Toy(), config)
    assert str(error.value) == (f"act_stats is required with method=laaciq, keep_by={config.keep_by}; allowed: "
                                "qd_models.calibration.collect_activation_stats(...)")


def test_group_size_must_divide_every_quantized_input_dim():
    with pytest.raises(ValueError, match="the input dim 8 of layers.1.proj;"):  # the first quantized misfit
        quantize_(_Toy(), parse_qd_args({"method": "rtn", "granularity": "group", "group_size": 16, "keep": "layers.0.proj"})[0])
    # kept layers are not checked (16 does not divide layers.*.proj's 8 inputs); Conv1D's input dim
    # is its weight's shape[0] (16)
    report = quantize_(_Toy(), parse_qd_args({"method": "rtn", "granularity": "group", "group_size": 16, "keep": "re:layers.*proj"})[0])
    assert [layer["n_blocks"] for layer in report["layers"] if layer["status"] == "quantized"] == [8, 8]


# ---------------------------------------------------------------------------- save target


def test_check_save_target_refusals(tmp_path):
    from qd_models.saving import check_save_target

    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    afile = tmp_path / "file.txt"
    afile.write_text("x")

    def message(save_to, pretrained=str(source), overwrite=False):
        with pytest.raises(ValueError) as error:
            check_save_target(str(save_to), pretrained, overwrite)
        return str(error.value)

    assert message(afile) == f"save_to={afile} is an existing file; allowed: a new or empty folder"
    assert message(afile, overwrite=True) == f"save_to={afile} is an existing file; allowed: a new or empty folder"
    assert message(source) == (f"save_to={source} is the source model folder; allowed: another folder, "
                               "or save_overwrite=true to replace it")
    assert message(tmp_path) == (f"save_to={tmp_path} is a non-empty folder; allowed: a new or empty folder, "
                                 "or save_overwrite=true to replace it")
    assert message(source, pretrained="hub/id") == message(tmp_path / "model", pretrained=None)
    assert "non-empty folder" in message(source, pretrained="hub/id")
    assert message(afile / "sub" / "x") == f"save_to={afile / 'sub' / 'x'}: {afile} is a file; allowed: a folder path"
    check_save_target(str(source), str(source), overwrite=True)
    with pytest.raises(ValueError, match="is a non-empty folder"):
        check_save_target(str(tmp_path), str(source))  # overwrite defaults to False
    # issue 19: a folder holding the source model (or inside it) is refused even with overwrite
    assert message(tmp_path, overwrite=True) == f"save_to={tmp_path} holds the input {source}; allowed: a folder outside the inputs"
    assert message(source / "q", overwrite=True) == f"save_to={source / 'q'} is inside the input {source}; allowed: a folder outside the inputs"
    check_save_target(str(tmp_path), "hub/id", overwrite=True)
    check_save_target(str(tmp_path / "new" / "deeper"), str(source))
    (tmp_path / "empty").mkdir()
    check_save_target(str(tmp_path / "empty"), str(source))


def test_check_save_target_unwritable_parent(tmp_path, monkeypatch):
    """The nearest existing parent must allow writing and entering (os.access faked: root passes any check)."""
    from qd_models.saving import check_save_target

    locked = tmp_path / "locked"
    locked.mkdir()
    asked = []

    def access(path, mode):
        asked.append((str(path), mode))
        return str(path) != str(locked)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(ValueError) as error:
        check_save_target(str(locked / "a" / "b"), None)
    assert str(error.value) == (f"save_to={locked / 'a' / 'b'} is not writable ({locked} does not allow writing); "
                                "allowed: a folder you can write to")
    assert asked == [(str(locked), os.W_OK | os.X_OK)]
    check_save_target(str(tmp_path / "other"), None)


def test_global_keep_top_keeps_a_weight_on_the_threshold():
    """Magnitudes k/128 (exact bin edges of 65536 bins over [0, 1]): the 32nd largest, 97/128,
    is the threshold itself and is kept (``>=``)."""
    rng = np.random.default_rng(5)
    values = (rng.permutation(np.arange(1, 129) / 128.0) * rng.choice([-1.0, 1.0], 128)).astype(np.float32)
    model = _two_layer_model(values)
    report = quantize_(model, parse_qd_args({"method": "rtn", "keep_top": 25, "keep_top_scope": "global"})[0])
    after = np.concatenate([model[0].weight.detach().numpy().reshape(-1), model[1].weight.detach().numpy().reshape(-1)])
    top = np.abs(values) >= 97 / 128
    np.testing.assert_array_equal(after[top], values[top])
    assert report["totals"]["params_kept"] == 32


def test_activation_keep_top_uses_the_selected_language_moments():
    """keep_by=activation: salience |w_ij| * sqrt(s_j) of the calib_langs moments (here he only).
    he weights input 0 by 100: the 2 kept are w[1,0] (0.4 * 10) and w[0,1] (0.9 * 1); with both
    languages' mean, w[0,3] would replace w[0,1]."""
    from qd_models.calibration import ActivationStats

    model = nn.Linear(4, 2, bias=False)
    weight = torch.tensor([[0.1, -0.9, 0.2, 0.3], [0.4, 0.5, -0.6, 0.04]])
    with torch.no_grad():
        model.weight.copy_(weight)
    moments = torch.tensor([[1.0, 1.0, 1.0, 100.0], [100.0, 1.0, 1.0, 1.0]], dtype=torch.float64)  # [L=2, in]
    stats = ActivationStats(langs=("en", "he"), tokens={"en": 5, "he": 7}, second_moments={"": moments})
    config = parse_qd_args({"method": "rtn", "keep_top": 25, "keep_by": "activation", "calib_langs": "he"})[0]
    with pytest.raises(ValueError, match="^act_stats is required"):
        quantize_(nn.Linear(4, 2, bias=False), config)
    report = quantize_(model, config, act_stats=stats)
    after = model.weight.detach()
    kept = torch.tensor([[False, True, False, False], [True, False, False, False]])
    assert torch.equal(after[kept], weight[kept]) and not torch.equal(after[~kept], weight[~kept])
    layer = report["layers"][0]
    assert layer["kept_fraction"] == 0.25
    s = moments[1].numpy()
    w, q = weight.double().numpy(), after.double().numpy()
    expected_error = float((s * (w - q) ** 2).sum() / (s * w**2).sum())
    assert list(layer["calibration"]["weighted_rel_error"]) == ["he"]
    assert layer["calibration"]["weighted_rel_error"]["he"] == pytest.approx(expected_error, rel=1e-5)
    p = np.broadcast_to(s / (2 * s.sum()), w.shape)  # probability of w_ij: s_j / (out * sum s)
    mu = (p * w).sum()
    kurtosis = (p * (w - mu) ** 4).sum() / (p * (w - mu) ** 2).sum() ** 2 - 3.0
    assert layer["calibration"]["activation_weighted_kurtosis"] == {"he": pytest.approx(kurtosis, rel=1e-5)}
    assert layer["calibration"]["degenerate_langs"] == []
    assert list(report["calibration"]["per_language"]) == ["he"]
    assert report["calibration"]["per_language"]["he"]["tokens"] == 7


def test_activation_moments_reach_the_method_normalised(monkeypatch):
    """The method gets the calib_langs columns of the moments, each scaled to mean 1: ``[in, L]``."""
    from qd_models import methods
    from qd_models.calibration import ActivationStats

    calls = []
    monkeypatch.setitem(methods.QUANTIZERS, "rtn", _recording_quantizer(calls))
    moments = torch.tensor([[1.0, 2.0, 3.0, 4.0], [8.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    stats = ActivationStats(langs=("en", "he", "sw"), tokens={"en": 5, "he": 7, "sw": 1}, second_moments={"": moments})
    config = parse_qd_args({"method": "rtn", "keep_top": 25, "keep_by": "activation", "calib_langs": "sw;en"})[0]
    model = nn.Linear(4, 2, bias=False)
    w = model.weight.detach().double().numpy().copy()
    report = quantize_(model, config, act_stats=stats)
    q = model.weight.detach().double().numpy()
    expected = torch.tensor([[1.0, 0.4], [1.0, 0.8], [1.0, 1.2], [1.0, 1.6]])  # sw all zero: degenerate -> ones
    assert torch.allclose(calls[0]["inputs"].stats, expected)
    calibration = report["layers"][0]["calibration"]
    assert calibration["degenerate_langs"] == ["sw"]
    # sum_ij s_j (w - q)^2 / sum_ij s_j w^2, sw weighted as plain MSE (degenerate)
    weighted = {lang: (column * (w - q) ** 2).sum() / (column * w**2).sum()
                for lang, column in (("sw", np.ones(4)), ("en", np.array([1.0, 2.0, 3.0, 4.0])))}
    assert calibration["weighted_rel_error"] == {lang: pytest.approx(value, rel=1e-5) for lang, value in weighted.items()}
    assert list(calibration["weighted_rel_error"]) == ["sw", "en"]


def test_no_warning_when_something_is_quantized_or_nothing_is_asked(caplog):
    with caplog.at_level("WARNING", logger="qd_models.engine"):
        quantize_(_Toy(), parse_qd_args({"method": "rtn", "keep_layers": "1"})[0])
        quantize_(_Toy(), parse_qd_args({"method": "none"})[0])
    assert caplog.records == []


def test_act_stats_are_ignored_when_the_config_needs_none():
    from qd_models.calibration import ActivationStats

    stats = ActivationStats(langs=("en",), tokens={"en": 3}, second_moments={"": torch.ones(1, 4, dtype=torch.float64)})
    report = quantize_(nn.Linear(4, 2, bias=False), parse_qd_args({"method": "rtn", "keep_top": 25})[0], act_stats=stats)
    assert "calibration" not in report and "calibration" not in report["layers"][0]


def test_bnb_report_lists_a_tied_weight_once(tiny_model_dir):
    """BLOOM ties lm_head to the word embeddings: one skipped parameter, biases skipped as bias."""
    path = tiny_model_dir("bloom")
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    linear_weights = {f"{name}.weight" for name, m in reference.named_modules() if isinstance(m, nn.Linear) and name != "lm_head"}
    config = parse_qd_args({"method": "int8"})[0]
    model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", **bnb_from_pretrained_kwargs(config))
    report = quantize_(model, config)
    distinct = dict(reference.named_parameters())  # one entry per tensor
    assert "lm_head.weight" not in distinct
    assert [s["name"] for s in report["skipped"]] == [name for name in distinct if name not in linear_weights]
    assert {s["reason"] for s in report["skipped"] if s["name"].endswith("bias")} == {"bias"}
    assert report["totals"]["params_skipped"] + report["totals"]["params_quantized"] == sum(p.numel() for p in distinct.values())


def test_keep_top_of_one_percent():
    """keep_top=1: global keeps round(1 % of 128) = 1 weight in all; per layer round(1 % of 64) = 1 each."""
    values = ((np.arange(1, 129) - 0.3) / 128.0).astype(np.float32)
    report = quantize_(_two_layer_model(values), parse_qd_args({"method": "rtn", "keep_top": 1, "keep_top_scope": "global"})[0])
    assert report["totals"]["params_kept"] == 1 and [layer["kept_fraction"] for layer in report["layers"]] == [0.0, 1 / 64]
    report = quantize_(_two_layer_model(values), parse_qd_args({"method": "rtn", "keep_top": 1})[0])
    assert report["totals"]["params_kept"] == 2


@pytest.mark.parametrize("mode", ["minimax", "mean"])
def test_activation_keep_top_of_one_percent_by_mode(mode):
    """Salience |w_ij| * sqrt(s_j), s_j = max (minimax) or mean over languages of the moments
    scaled to mean 1 per language: the single kept weight (1 % of 100) is its argmax."""
    from qd_models.calibration import ActivationStats

    rng = np.random.default_rng(11)
    w = rng.uniform(-0.3, 0.3, size=(10, 10)).astype(np.float32)
    w[0, 0], w[0, 3] = 1.0, 1.13
    # input 0 large for en only, input 3 fairly large for both: minimax favours w[0, 0], mean w[0, 3]
    moments = np.stack([np.r_[50.0, 1, 1, 10, np.ones(6)], np.r_[1.0, 1, 1, 10, np.ones(6)]])  # [L=2, in]
    scaled = moments / moments.mean(axis=1, keepdims=True)
    salience = {m: np.abs(w) * np.sqrt(f(scaled, axis=0)) for m, f in (("minimax", np.max), ("mean", np.mean))}
    assert salience["minimax"].argmax() != salience["mean"].argmax()  # the modes disagree here
    model = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w))
    stats = ActivationStats(langs=("en", "he"), tokens={"en": 1, "he": 1}, second_moments={"": torch.from_numpy(moments)})
    config = parse_qd_args({"method": "rtn", "keep_top": 1, "keep_by": "activation", "calib_mode": mode})[0]
    quantize_(model, config, act_stats=stats)
    after = model.weight.detach().numpy()
    assert np.unravel_index(salience[mode].argmax(), w.shape) == ((0, 0) if mode == "minimax" else (0, 3))
    # row 0: the kept weight exact, the rest round-to-nearest over a range that excludes it
    kept = 0 if mode == "minimax" else 3
    row = w[0].astype(np.float64)
    step = np.abs(np.delete(row, kept)).max() / 7
    expected = np.clip(np.round(row / step), -8, 7) * step
    expected[kept] = row[kept]
    np.testing.assert_allclose(after[0], expected, rtol=1e-6)


def test_gguf_layer_has_no_blocks_and_its_own_bits():
    """q8_0: blocks of 32 weights stored as 32 int8 codes + one fp16 scale = 8.5 bits per weight."""
    model = nn.Linear(32, 2, bias=False)
    report = quantize_(model, parse_qd_args({"method": "gguf", "gguf_type": "q8_0"})[0])
    layer = report["layers"][0]
    assert "n_blocks" not in layer and layer["bits_per_weight"] == 8.5


def test_size_in_bytes_rounds_down_the_bits():
    """Linear(5, 1), 3 bits: 15 code bits + one 16-bit scale = 31 bits -> 3 bytes."""
    report = quantize_(nn.Linear(5, 1, bias=False), parse_qd_args({"method": "rtn", "bits": 3})[0])
    assert report["totals"]["estimated_size_bytes"] == 3


def test_bnb_report_without_bnb_layers_and_with_another_blocksize(tiny_model_dir):
    """A model without bitsandbytes layers: nothing quantized, effective bits undefined (null).
    Llama with one layer's quant_state at blocksize 128: its absmax bits follow."""
    config = parse_qd_args({"method": "nf4"})[0]
    report = quantize_(nn.Linear(4, 2, bias=False), config)
    assert report["layers"] == [] and report["totals"]["effective_bits_per_weight"] is None
    assert report["skipped"] == [{"name": "weight", "numel": 8, "reason": "other"}]
    llama = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), device_map="cpu", **bnb_from_pretrained_kwargs(config))
    llama.model.layers[0].self_attn.q_proj.weight.quant_state.blocksize = 128
    layer = quantize_(llama, config)["layers"][0]
    assert layer["name"] == "model.layers.0.self_attn.q_proj" and layer["bits_per_weight"] == 4 + 32 / 128


def test_save_quantized_stages_in_hidden_sibling_folders(tmp_path, monkeypatch):
    """The new folder is built as a hidden sibling (same file system: the final rename is atomic)
    and the old one is moved to another hidden sibling before removal (qd_tasks.folder_swap)."""
    renames = []
    original = os.rename

    def recording(src, dst):
        renames.append((os.path.dirname(src), os.path.basename(src), os.path.dirname(dst), os.path.basename(dst)))
        return original(src, dst)

    monkeypatch.setattr(os, "rename", recording)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    save_quantized(_TinySaveable(), None, tmp_path / "out", {})
    (aside, staged) = renames
    assert aside[:3] == (str(tmp_path), "out", str(tmp_path)) and aside[3].startswith(".old-out-")
    assert staged[0] == str(tmp_path) and staged[1].startswith(".tmp-out-") and staged[2:] == (str(tmp_path), "out")
    assert sorted(os.listdir(tmp_path)) == ["out"] and "old.txt" not in os.listdir(tmp_path / "out")


def test_global_threshold_counts_exactly_past_float32_integers():
    """2^24 + 4096 weights: one 1.0, 2^23 at 0.9, 2^23 + 2 at 0.8, 4 at 0.5, the rest 0.1. Running
    counts from the top: 1, 2^23 + 1, 2^24 + 3, 2^24 + 7 — 2^24 + 3 is not a float32. Wanting
    2^24 + 4 reaches into the 0.5 bin (2^24 + 7 kept); wanting 2^24 + 3 stops in the 0.8 bin."""
    model = nn.Linear(4096, 4097, bias=False)
    with torch.no_grad():
        flat = model.weight.view(-1)
        flat.fill_(0.8)
        flat[0] = 1.0
        flat[1:5] = 0.5
        flat[5:4094] = 0.1
        flat[4094:4094 + 2**23] = 0.9
    total = 4097 * 4096
    targets, _ = select_targets(model, parse_qd_args({"method": "rtn"})[0], None)
    for wanted, kept in ((2**24 + 4, 2**24 + 7), (2**24 + 3, 2**24 + 3)):
        threshold = global_threshold(targets, 100.0 * wanted / total)
        assert int((model.weight.detach().abs() >= threshold).sum()) == kept, wanted
