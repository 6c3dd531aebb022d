"""Calibration pass (qd_models.calibration): statistics, hooks, cache, argument checks.

One-pass sequential calibration (:class:`qd_models.calibration.BlockInputs`): the Gram matrices
equal an independent per-block re-run written here (GPT-2/Conv1D, Llama, BLOOM/ALiBi, Gemma-3 with
sliding-window and global layers), the weights equal the old per-block re-run path byte for byte,
block forward calls are counted, the memory budget spills to disk without changing a weight, and
GPTQ is byte-identical across runs and processes.

Calibration size: the Gram matrices' rank/condition against numpy, the warning threshold,
the default token target on a tiny model, and no calibration text among the evaluated texts.

``qd-hf``'s calibration pass (``QDHFLM.apply_quantization``) on a tiny byte-level model: the
calibration texts are read once, tokenized as evaluation scores them (``prefix_token_id`` then
the text's own tokens, one token per UTF-8 byte), and the report records the source; a sweep's
call without texts loads them itself."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch
from per_block_calibration import per_block_layer_inputs

from qd_models import calibration, engine, methods, model_layout
from qd_models.calibration import CalibrationBatches, collect_activation_stats, load_calibration_texts, stats_cache_dir
from qd_models.calibration.sufficiency import (
    GramReport,
    gram_rank_condition,
    texts_for_token_target,
    warn_if_few_tokens,
)
from qd_models.config import parse_qd_args
from qd_models.engine import quantize_
from qd_models.targets import quantization_targets
from qd_tasks.corpus import load_corpus

TEXTS = {"en": ["The cat sat on the mat.", "Quantization is lossy.", "Hi"],
         "he": ["שלום עולם", "החתול ישב על השטיח והסתכל החוצה."]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "calibration"


@pytest.fixture
def llama(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir("llama")
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _config(**kwargs):
    return parse_qd_args({"method": "laaciq", **kwargs})[0]


def _reference_moments(model, tokenizer, texts, name):
    """E[x^2] of ``name``'s input over the text positions of ``[BOS] + text`` (the BOS position,
    identical in every sequence, is not counted), one unpadded text at a time, full forward pass."""
    module = dict(model.named_modules())[name]
    rows = []
    handle = module.register_forward_pre_hook(lambda m, args: rows.append(args[0].detach()[0, 1:]))
    try:
        with torch.no_grad():
            for text in texts:
                ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
                model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    stacked = torch.cat(rows).double()
    return stacked.square().mean(0), stacked.shape[0]


def test_moments_match_unbatched_reference_and_hooks_are_removed(llama, cache):
    model, tokenizer = llama
    names = quantization_targets(model, _config())
    stats = collect_activation_stats(model, tokenizer, TEXTS, names, batch_size=2, progress=False)
    assert "lm_head" not in names and stats.stopped_before == "lm_head"
    for lang_index, lang in enumerate(TEXTS):
        for name in (names[0], names[-1]):  # first attention projection, last MLP projection
            expected, tokens = _reference_moments(model, tokenizer, TEXTS[lang], name)
            torch.testing.assert_close(stats.second_moments[name][lang_index], expected, rtol=1e-4, atol=1e-7)
            assert stats.tokens[lang] == tokens
    assert all(not module._forward_pre_hooks for module in model.modules())


def test_hooks_removed_when_forward_fails(llama, cache, monkeypatch):
    model, tokenizer = llama

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(model.model, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        collect_activation_stats(model, tokenizer, TEXTS, quantization_targets(model, _config()), progress=False)
    assert all(not module._forward_pre_hooks for module in model.modules())
    assert not cache.exists()


def test_cache_hit_miss_and_invalidation(llama, cache):
    model, tokenizer = llama
    names = quantization_targets(model, _config())
    first = collect_activation_stats(model, tokenizer, TEXTS, names, progress=False)
    assert not first.from_cache and (stats_cache_dir() / f"{first.key}.pt").is_file()
    assert stats_cache_dir() == cache
    again = collect_activation_stats(model, tokenizer, TEXTS, names, progress=False)
    assert again.from_cache and again.key == first.key and again.tokens == first.tokens
    for name in names:
        torch.testing.assert_close(again.second_moments[name], first.second_moments[name], rtol=0, atol=0)

    other_texts = {**TEXTS, "he": TEXTS["he"][:1]}  # calibration data changed
    assert not collect_activation_stats(model, tokenizer, other_texts, names, progress=False).from_cache
    fewer = collect_activation_stats(model, tokenizer, TEXTS, names[:-1], progress=False)  # modules changed
    assert not fewer.from_cache and fewer.key != first.key
    shorter = collect_activation_stats(model, tokenizer, TEXTS, names, max_length=4, progress=False)  # tokens changed
    assert not shorter.from_cache
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3  # weights changed
    changed = collect_activation_stats(model, tokenizer, TEXTS, names, progress=False)
    assert not changed.from_cache and changed.key != first.key
    assert len(list(cache.glob("*.pt"))) == 5


def test_load_calibration_texts_defaults_samples_and_errors(tmp_path):
    texts = load_calibration_texts(_config())
    assert list(texts) == ["en", "de", "he", "sw"] and all(len(group) == 10 for group in texts.values())
    assert [len(g) for g in load_calibration_texts(_config(calib_samples=3, calib_langs="sw;he")).values()] == [3, 3]
    checks = [
        ({"calib_langs": "he;yo"}, "calib_langs=yo"),
        ({"calib_data": str(tmp_path / "missing.jsonl")}, "calib_data="),
    ]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    checks.append(({"calib_data": str(empty)}, "calib_data="))
    for kwargs, needle in checks:
        with pytest.raises(ValueError) as err:
            load_calibration_texts(_config(**kwargs))
        assert needle in str(err.value) and "\n" not in str(err.value) and "allowed" in str(err.value)


def test_user_calibration_file_and_leakage_warning(tmp_path, caplog):
    from qd_tasks.corpus import load_corpus

    leaked = load_corpus("eval", langs=["yo"])[0]["text"]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"lang": "yo", "text": leaked}, {"lang": "xx", "text": "abc"}]) + "\n")
    with caplog.at_level("WARNING"):
        texts = load_calibration_texts(_config(calib_data=str(path)))
    assert texts == {"yo": [leaked], "xx": ["abc"]}
    assert "leakage" in caplog.text


@pytest.mark.parametrize("kwargs,needle", [
    ({"method": "laaciq", "calib_mode": "median"}, "calib_mode"),
    ({"method": "laaciq", "calib_mode": "target", "calib_langs": "en;he"}, "calib_langs"),
    ({"method": "laaciq", "calib_samples": "0"}, "calib_samples"),
    ({"method": "mse", "calib_langs": "en"}, "calib_langs"),
    ({"method": "rtn", "keep_top": "1", "keep_by": "activation", "keep_top_scope": "global"}, "keep_top_scope"),
    ({"method": "laaciq", "calib_langs": "e n"}, "calib_langs"),
])
def test_bad_arguments_are_one_line_errors(kwargs, needle):
    with pytest.raises(ValueError) as err:
        parse_qd_args(kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_qd_hf_checks_calibration_data_before_loading_weights(tiny_model_dir, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from qd_models.qd_hf import QDHFLM

    def must_not_load(*args, **kwargs):
        raise AssertionError("weights loaded before the calibration data was checked")

    monkeypatch.setattr(HFLM, "__init__", must_not_load)
    with pytest.raises(ValueError, match="calib_langs=yo"):
        QDHFLM(pretrained=str(tiny_model_dir("llama")), method="laaciq", calib_langs="yo")


def test_quantize_requires_stats_and_keep_by_activation_uses_them(llama, cache):
    model, tokenizer = llama
    config = parse_qd_args({"method": "rtn", "keep_top": "5", "keep_by": "activation"})[0]
    with pytest.raises(ValueError, match="act_stats"):
        quantize_(model, config)
    names = quantization_targets(model, config)
    stats = collect_activation_stats(model, tokenizer, TEXTS, names, progress=False)
    name = names[0]
    original = dict(model.named_modules())[name].weight.detach().clone()
    report = quantize_(model, config, act_stats=stats)
    layer = next(layer for layer in report["layers"] if layer["name"] == name)
    assert layer["kept_fraction"] == pytest.approx(0.05, abs=1e-3)
    from qd_models.quant.weighted import normalise_second_moments

    scores = original.abs() * normalise_second_moments(stats.inputs(name))[0].mean(1).sqrt()
    top = scores.reshape(-1).topk(round(0.05 * scores.numel())).indices
    by_magnitude = original.abs().reshape(-1).topk(top.numel()).indices
    assert set(top.tolist()) != set(by_magnitude.tolist())  # the activation ranking matters here
    quantized = dict(model.named_modules())[name].weight.detach().reshape(-1)
    torch.testing.assert_close(quantized[top], original.reshape(-1)[top], rtol=0, atol=0)  # kept exactly
    assert set(report["calibration"]["per_language"]) == {"en", "he"}


@pytest.mark.parametrize("granularity", ["channel", "group"])
def test_minimax_report_worst_language_never_above_mean_on_calibration_data(llama, cache, granularity):
    """``<=`` per layer holds by construction (minimax falls back to ``mean``'s ratios): a
    regression test. The strict ``<`` over the layers' sum is the informative check."""
    from qd_models.engine import restore_

    model, tokenizer = llama
    extra = {"granularity": granularity, "group_size": "16"} if granularity == "group" else {}
    reports = {}
    for mode in ("mean", "minimax"):
        config = _config(calib_mode=mode, bits="3", **extra)
        stats = collect_activation_stats(model, tokenizer, TEXTS, quantization_targets(model, config), progress=False)
        originals: dict = {}
        reports[mode] = quantize_(model, config, originals_for_restore=originals, act_stats=stats)
        restore_(model, originals)
    worst = {mode: [max(layer["calibration"]["weighted_rel_error"].values()) for layer in report["layers"]]
             for mode, report in reports.items()}
    assert all(mm <= m * (1 + 1e-6) for mm, m in zip(worst["minimax"], worst["mean"]))
    assert sum(worst["minimax"]) < sum(worst["mean"])


N_BLOCKS = 3


def tiny_model(arch: str, n_blocks: int = N_BLOCKS):
    """A random ``arch`` model with ``n_blocks`` blocks (hidden 64) and the byte tokenizer."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    from qd_models.tiny_models import build_byte_tokenizer, tiny_config

    torch.manual_seed(0)
    if arch == "gemma3":  # layers alternate a sliding window of 8 tokens (rope 1e4) and global attention (rope 1e6)
        config = Gemma3TextConfig(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=n_blocks,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                  layer_types=["sliding_attention", "full_attention"] * (n_blocks // 2) + ["sliding_attention"] * (n_blocks % 2),
                                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    else:
        config = tiny_config(arch)
        config.num_hidden_layers = n_blocks
    return AutoModelForCausalLM.from_config(config).eval(), build_byte_tokenizer()


def calib_batches(tokenizer, samples: int = 2) -> CalibrationBatches:
    config = parse_qd_args({"method": "gptq", "calib_samples": str(samples)})[0]
    return CalibrationBatches.from_texts(tokenizer, load_calibration_texts(config), "bundled")


class _Stop(Exception):
    pass


def rerun_grams(model, tokenizer, texts: dict[str, list[str]], block, names: list[str]) -> dict:
    """Independent reference: every text alone (no padding) through the full model, stopped after
    ``block``; float64 sum over each language's text tokens (the BOS position excluded) of
    x x^T / (tokens of the language * languages)."""
    modules = dict(model.named_modules())
    seqs = {lang: [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False).input_ids][:512] for t in group]
            for lang, group in texts.items()}
    tokens = {lang: sum(len(s) - 1 for s in group) for lang, group in seqs.items()}
    grams = {name: torch.zeros(modules[name].weight.shape[1 if isinstance(modules[name], torch.nn.Linear) else 0],
                               modules[name].weight.shape[1 if isinstance(modules[name], torch.nn.Linear) else 0],
                               dtype=torch.float64) for name in names}
    scale = {"value": 0.0}

    def hook_for(name):
        def hook(module, args):
            x = args[0][0, 1:].double()  # [T - 1, in]
            grams[name] += scale["value"] * x.t() @ x
        return hook

    def stop(*args):
        raise _Stop

    handles = [modules[name].register_forward_pre_hook(hook_for(name)) for name in names]
    handles.append(modules[block].register_forward_hook(stop))
    try:
        with torch.no_grad():
            for lang, group in seqs.items():
                scale["value"] = 1.0 / (tokens[lang] * len(seqs))
                for seq in group:
                    try:
                        model(input_ids=torch.tensor([seq]), use_cache=False)
                    except _Stop:
                        pass
    finally:
        for handle in handles:
            handle.remove()
    return grams


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom", "gemma3"])
def test_block_grams_equal_an_independent_per_block_rerun(arch, monkeypatch):
    """Block k's Gram matrices, collected on the cached inputs, equal a full-model re-run of each
    text alone with blocks < k in their quantized state and blocks >= k original."""
    model, tokenizer = tiny_model(arch)
    original = copy.deepcopy(model)
    calib = calib_batches(tokenizer)
    seen: dict = {}
    real_grams = calibration.BlockInputs.grams

    def recording(self, block, names):
        grams = real_grams(self, block, names)
        seen[block] = {name: grams[name][0].clone() for name in names}
        return grams

    monkeypatch.setattr(calibration.BlockInputs, "grams", recording)
    engine.quantize_(model, parse_qd_args({"method": "gptq", "group_size": "16"})[0], calib=calib)
    texts = load_calibration_texts(parse_qd_args({"method": "gptq", "calib_samples": "2"})[0])
    blocks = model_layout.block_names(model)
    assert list(seen) == blocks
    for k, block in enumerate(blocks):
        state = copy.deepcopy(original)  # blocks < k quantized as the engine left them, blocks >= k original
        for earlier in blocks[:k]:
            state.get_submodule(earlier).load_state_dict(model.get_submodule(earlier).state_dict())
        expected = rerun_grams(state, tokenizer, texts, block, list(seen[block]))
        for name, gram in seen[block].items():
            scale = float(expected[name].abs().max())
            assert float((gram - expected[name]).abs().max()) <= 1e-5 * scale, (block, name)
        if k > 0:  # and the quantization of the earlier blocks is visible in block k's inputs
            unquantized = rerun_grams(original, tokenizer, texts, block, list(seen[block]))
            name = next(iter(seen[block]))
            assert float((seen[block][name] - unquantized[name]).abs().max()) > 1e-3 * float(unquantized[name].abs().max())


@pytest.mark.parametrize("arch,args", [("gpt2", {"method": "gptq"}), ("llama", {"method": "gptq", "keep_layers": "1"}),
                                       ("bloom", {"method": "awq"}), ("gemma3", {"method": "gptq", "act_order": "true"}),
                                       ("llama", {"method": "gptq", "quantize_lm_head": "true"})])
def test_weights_equal_the_per_block_rerun_path_byte_for_byte(arch, args, monkeypatch):
    model, tokenizer = tiny_model(arch)
    reference = copy.deepcopy(model)
    config = parse_qd_args({**args, "group_size": "16"})[0]
    new_calib, old_calib = calib_batches(tokenizer), calib_batches(tokenizer)
    report = engine.quantize_(model, config, calib=new_calib)
    monkeypatch.setattr(engine, "_layer_inputs", per_block_layer_inputs)
    engine.quantize_(reference, config, calib=old_calib)
    for (name, got), (_, want) in zip(model.named_parameters(), reference.named_parameters()):
        assert torch.equal(got, want), name
    assert sum(layer["status"] == "quantized" for layer in report["layers"]) > 0
    # 2n - 1: each block once to collect and once to propagate, the last one only to collect; a kept block only propagates
    assert report["calibration"]["block_evaluations"] == 2 * N_BLOCKS - 1 - ("keep_layers" in args)
    assert report["calibration"]["forward_passes"] == 1 + ("quantize_lm_head" in args)  # the head: one full pass


@pytest.mark.parametrize("n_blocks", [1, 5])
def test_block_forward_calls_are_counted(n_blocks, monkeypatch):
    """2n - 1 block evaluations per batch (+ one call on the first batch that learns the block's
    output structure), against n(n + 1) / 2 for the per-block re-run."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    calls = [0]
    real_forward = LlamaDecoderLayer.forward

    def counting(self, *args, **kwargs):
        calls[0] += 1
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaDecoderLayer, "forward", counting)
    model, tokenizer = tiny_model("llama", n_blocks)
    config = parse_qd_args({"method": "gptq", "group_size": "16"})[0]
    calib = calib_batches(tokenizer)
    calib.batch_size = 1  # 2 texts per language: 2 batches per language
    n_batches = sum(len(seqs) for seqs in calib.token_ids.values())
    assert n_batches == 8
    report = engine.quantize_(copy.deepcopy(model), config, calib=calib)
    assert calls[0] == (2 * n_blocks - 1) * n_batches + 1
    assert report["calibration"]["block_evaluations"] == 2 * n_blocks - 1
    calls[0] = 0
    monkeypatch.setattr(engine, "_layer_inputs", per_block_layer_inputs)
    engine.quantize_(model, config, calib=calib)
    assert calls[0] == n_blocks * (n_blocks + 1) // 2 * n_batches


def _spill_files(folder) -> list:
    return [p for p in folder.rglob("*") if p.name.startswith("qd-calibration-")]


def test_memory_budget_spills_to_disk_without_changing_a_weight(tmp_path, monkeypatch):
    model, tokenizer = tiny_model("llama")
    config = parse_qd_args({"method": "gptq", "group_size": "16"})[0]
    in_memory = copy.deepcopy(model)
    engine.quantize_(in_memory, config, calib=calib_batches(tokenizer))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first_batch_bytes = 2 * max(len(s) for s in calib_batches(tokenizer).token_ids["en"]) * 64 * 4  # 2 texts, hidden 64, float32
    for gib, spilled in ((0.0, 4), (first_batch_bytes / 2**30, 3)):  # nothing fits / only the first batch fits
        monkeypatch.setenv("QD_CALIB_MEMORY_GB", repr(gib))
        spilling = copy.deepcopy(model)
        calib = calib_batches(tokenizer)
        engine.quantize_(spilling, config, calib=calib)
        assert calib.spilled_batches == spilled
        for (name, got), (_, want) in zip(spilling.named_parameters(), in_memory.named_parameters()):
            assert torch.equal(got, want), name
        assert _spill_files(tmp_path) == []


def test_spill_folder_is_removed_when_quantization_fails(tmp_path, monkeypatch):

    model, tokenizer = tiny_model("llama")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("QD_CALIB_MEMORY_GB", "0")
    seen = []
    real = methods.QUANTIZERS["gptq"]

    def failing(weight, blocks, valid, config, inputs):
        seen.append(_spill_files(tmp_path))
        if len(seen) == 8:  # block 1's first layer
            raise RuntimeError("boom")
        return real.layer(weight, blocks, valid, config, inputs)

    monkeypatch.setitem(methods.QUANTIZERS, "gptq", methods.Quantizer(failing))
    with pytest.raises(RuntimeError, match="boom"):
        engine.quantize_(model, parse_qd_args({"method": "gptq", "group_size": "16"})[0], calib=calib_batches(tokenizer))
    assert len(seen[0]) == 1  # the folder existed during the walk
    assert _spill_files(tmp_path) == []
    assert not any("forward" in block.__dict__ for block in model.model.layers)  # stubs removed


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e400"])
def test_memory_budget_is_one_line_error_before_the_model_loads(value, tiny_model_dir, monkeypatch):
    import transformers

    from qd_models.qd_hf import QDHFLM

    monkeypatch.setenv("QD_CALIB_MEMORY_GB", value)

    def no_load(*args, **kwargs):
        raise AssertionError("weights loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    with pytest.raises(ValueError) as error:
        QDHFLM(pretrained=str(tiny_model_dir("llama")), method="gptq", group_size=16, device="cpu")
    assert str(error.value) == f"QD_CALIB_MEMORY_GB={value} is not allowed; allowed: a number of GiB >= 0 (default 4)"


def test_memory_budget_default_and_value(monkeypatch):
    from qd_models.calibration import calibration_memory_budget

    monkeypatch.delenv("QD_CALIB_MEMORY_GB", raising=False)
    assert calibration_memory_budget() == 4 * 1024**3
    monkeypatch.setenv("QD_CALIB_MEMORY_GB", "0.5")
    assert calibration_memory_budget() == 512 * 1024**2


WEIGHT_DIGEST = """
import hashlib, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from qd_models.calibration import CalibrationBatches, load_calibration_texts
from qd_models.config import parse_qd_args
from qd_models.engine import quantize_
torch.set_num_threads(int(sys.argv[2]))
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
config = parse_qd_args({"method": "gptq", "group_size": "16", "calib_samples": "3"})[0]
quantize_(model, config, calib=CalibrationBatches.from_texts(tokenizer, load_calibration_texts(config), "bundled"))
digest = hashlib.sha256()
for _, param in model.named_parameters():
    digest.update(param.detach().numpy().tobytes())
print(digest.hexdigest())
"""


@pytest.mark.integration
def test_gptq_weights_are_byte_identical_across_runs_and_processes(tiny_model_dir, capsys, monkeypatch):
    """Same machine, same arguments: the same bytes, twice in this process and in two fresh ones."""
    path, threads = str(tiny_model_dir("llama")), str(torch.get_num_threads())
    children = [subprocess.run([sys.executable, "-c", WEIGHT_DIGEST, path, threads], capture_output=True, text=True, timeout=300)
                for _ in range(2)]
    assert all(child.returncode == 0 for child in children), children[0].stderr[-2000:]
    for _ in range(2):
        monkeypatch.setattr(sys, "argv", ["weight_digest", path, threads])
        exec(WEIGHT_DIGEST, {})
    in_process = capsys.readouterr().out.split()
    digests = [child.stdout.split()[-1] for child in children] + in_process
    assert len(in_process) == 2 and len(set(digests)) == 1 and len(digests[0]) == 64


@pytest.mark.parametrize("tokens,dim", [(10, 24), (24, 24), (200, 24), (40, 64)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rank_and_condition_match_numpy(tokens, dim, dtype):
    rng = np.random.default_rng(tokens * dim)
    x = rng.standard_normal((tokens, dim)) * rng.uniform(0.1, 3.0, dim)  # uneven channel scales
    gram = x.T @ x / tokens  # built here, independently of the calibration pass
    stored = gram.astype(np.float32) if dtype == torch.float32 else gram
    rank, condition = gram_rank_condition(torch.from_numpy(stored))
    assert rank == np.linalg.matrix_rank(stored) == min(tokens, dim)
    if rank == dim:
        assert condition == pytest.approx(np.linalg.cond(stored.astype(np.float64)), rel=1e-6 if dtype == torch.float64 else 1e-3)
    else:
        assert condition == float("inf") and np.linalg.cond(stored.astype(np.float64)) > 1e6


def test_gram_report_per_layer_and_shared_inputs():
    x = torch.randn(30, 16, dtype=torch.float64)
    report = GramReport(tokens=30)
    first = report((x.T @ x).float())
    again = report((x.T @ x).float())  # the same input (e.g. k_proj after q_proj): reused
    assert first == again and first["calib_tokens_per_input_dim"] == 30 / 16 and first["gram_rank"] == 16
    low = report((x[:5].T @ x[:5]).float())
    assert low["gram_rank"] == np.linalg.matrix_rank((x[:5].T @ x[:5]).float().numpy()) == 5 and low["gram_rank_deficient"]
    assert report(torch.full((4, 4), float("nan")))["gram_rank"] == 0  # reported, not raised


@pytest.mark.parametrize("tokens,dim,warned", [(4 * 100 - 1, 100, True), (4 * 100, 100, False), (8 * 100, 100, False), (50, 100, True)])
def test_warning_fires_below_four_tokens_per_input_dim(caplog, tokens, dim, warned):
    with caplog.at_level(logging.WARNING, logger="qd_models.calibration.sufficiency"):
        assert warn_if_few_tokens(tokens, dim) is warned
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert f"{tokens} calibration tokens" in lines[0].getMessage() and f"({dim} inputs)" in lines[0].getMessage()


def test_token_target_selection_is_balanced_and_stops_at_the_target():
    counts = {"en": [5, 5, 5, 5], "he": [12, 12], "sw": [3]}
    # written out: one text each (en 5, he 12, sw 3: 20), sw exhausted; en 10 (25); en 15 (30)
    assert texts_for_token_target(counts, 30) == {"en": 3, "he": 1, "sw": 1}
    # one more token: he (12) now has the fewest of the open languages -> he 24 (42)
    assert texts_for_token_target(counts, 31) == {"en": 3, "he": 2, "sw": 1}
    assert texts_for_token_target(counts, 10**6) == {"en": 4, "he": 2, "sw": 1}  # the source lacks them: all
    assert texts_for_token_target(counts, 0) == {"en": 1, "he": 1, "sw": 1}


def test_default_calibration_meets_eight_times_the_widest_layer_and_leaks_nothing(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qd_models.calibration import DEFAULT_MAX_LENGTH, CalibrationBatches, evaluation_texts, load_calibration_texts
    from qd_models.calibration.sources import calibration_source_name
    from qd_models.calibration.sufficiency import calibration_texts_for_model
    from qd_tasks.corpus import corpus_path, read_corpus_file

    path = tiny_model_dir("llama")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    widest = max(m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head)
    for args in ({"method": "gptq"}, {"method": "awq", "calib_data": "udhr"}):
        config = parse_qd_args(dict(args))[0]
        texts = calibration_texts_for_model(load_calibration_texts(config), config, model, tokenizer)
        # counted as calibration counts them: text tokens after the prefix, sequences cut at DEFAULT_MAX_LENGTH
        tokens = sum(min(len(tokenizer(t, add_special_tokens=False)["input_ids"]), DEFAULT_MAX_LENGTH - 1)
                     for group in texts.values() for t in group)
        assert tokens == sum(CalibrationBatches.from_texts(tokenizer, texts).tokens.values()) >= 8 * widest
        assert len(texts) == 8 and not {t for group in texts.values() for t in group} & evaluation_texts()
        assert calibration_source_name(config) == ("bundled calibration split + udhr" if "calib_data" not in args else "udhr")
    bundled = {r["text"] for r in read_corpus_file(corpus_path("calibration"))}
    assert bundled <= {t for group in load_calibration_texts(parse_qd_args({"method": "gptq"})[0]).values() for t in group}
    # an explicit calib_samples keeps today's meaning: the bundled split's first N texts per language
    explicit = load_calibration_texts(parse_qd_args({"method": "gptq", "calib_samples": "2"})[0])
    assert list(explicit) == ["en", "de", "he", "sw"] and all(len(group) == 2 for group in explicit.values())
    assert calibration_texts_for_model(explicit, parse_qd_args({"method": "gptq", "calib_samples": "2"})[0], model, tokenizer) == explicit


LANGS = ("en", "he")
SAMPLES = 2
PREFIX = 2  # <eos>: not the tokenizer's BOS (1), which is the calibration's default prefix
CALIB = {"calib_langs": "en;he", "calib_samples": str(SAMPLES)}


def _texts() -> dict[str, list[str]]:
    """The first SAMPLES texts per language of the bundled calibration split, read here."""
    return {lang: [record["text"] for record in load_corpus("calibration", langs=[lang])][:SAMPLES] for lang in LANGS}


@pytest.fixture
def tokenized(monkeypatch, tmp_path):
    """Every ``tokenize_texts`` result of the calibration pass (``{lang: [[ids...], ...]}``), in
    call order; the statistics cache goes to a fresh folder."""
    from qd_models.calibration import activations

    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path))
    seen = []
    original = activations.tokenize_texts

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(activations, "tokenize_texts", recording)
    return seen


def _expected_ids(tokenizer) -> dict[str, list[list[int]]]:
    return {lang: [[PREFIX, *tokenizer(text, add_special_tokens=False).input_ids] for text in group] for lang, group in _texts().items()}


@pytest.mark.parametrize("args", [{"method": "laaciq"}, {"method": "gptq", "group_size": "16"}])
def test_sweep_style_call_loads_the_texts_and_tokenizes_them_as_evaluation(args, tiny_model_dir, tokenized, caplog):
    """A method=none model (``quant_report`` None), then ``apply_quantization(config)`` without
    texts, as qd-sweep calls it: the calibration sequences are ``[prefix_token_id] + text bytes``,
    each language's token count is its texts' UTF-8 byte count, and the log names the config."""
    import logging

    from qd_models.qd_hf import QDHFLM

    caplog.set_level(logging.INFO, logger="qd_models.qd_hf")

    lm = QDHFLM(pretrained=str(tiny_model_dir("llama", add_bos=True)), device="cpu", dtype="float32", prefix_token_id=PREFIX)
    assert lm.quant_report is None and lm.quant_config.method == "none"
    config, _ = parse_qd_args({**args, "bits": "3", **CALIB})
    lm.apply_quantization(config)
    assert tokenized == [_expected_ids(lm.tokenizer)]
    calibration = lm.quant_report["calibration"]
    assert calibration["source"] == "bundled calibration split" and calibration["langs"] == list(LANGS)
    for lang, group in _texts().items():
        assert calibration["per_language"][lang]["tokens"] == sum(len(text.encode("utf-8")) for text in group) > 0
    logged = [r.getMessage() for r in caplog.records if r.name == "qd_models.qd_hf" and r.getMessage().startswith("qd-hf quantization: ")]
    assert len(logged) == 1 and f"method={args['method']} bits=3" in logged[0]


def test_calibration_texts_are_read_once_and_a_user_source_is_recorded(tiny_model_dir, tokenized, monkeypatch, tmp_path):
    """``calib_data=FILE``: read once (checked before loading, reused for the pass), recorded as the source."""
    import json

    from qd_models import calibration
    from qd_models.qd_hf import QDHFLM

    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"lang": lang, "text": text}) + "\n" for lang, group in _texts().items() for text in group), encoding="utf-8")
    reads = []
    original = calibration.load_calibration_texts

    def counting(config):
        reads.append(config.calib_data)
        return original(config)

    monkeypatch.setattr(calibration, "load_calibration_texts", counting)
    lm = QDHFLM(pretrained=str(tiny_model_dir("llama", add_bos=True)), device="cpu", dtype="float32", prefix_token_id=PREFIX,
                method="laaciq", bits=3, calib_data=str(data), **CALIB)
    assert reads == [str(data)]
    assert tokenized == [_expected_ids(lm.tokenizer)]
    assert lm.quant_report["calibration"]["source"] == str(data)
