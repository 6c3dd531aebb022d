"""One-pass sequential calibration (:class:`qd_models.calibration.BlockInputs`): the Gram matrices
equal an independent per-block re-run written here (GPT-2/Conv1D, Llama, BLOOM/ALiBi, Gemma-3 with
sliding-window and global layers), the weights equal the old per-block re-run path byte for byte,
block forward calls are counted, the memory budget spills to disk without changing a weight, and
GPTQ is byte-identical across runs and processes."""

from __future__ import annotations

import copy
import subprocess
import sys
import tempfile

import pytest
import torch

from qd_models import calibration, engine, methods, model_layout
from qd_models.calibration import CalibrationBatches, collect_input_grams, load_calibration_texts
from qd_models.config import parse_qd_args

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


def old_layer_inputs(model, targets, target, calib, grams, block_inputs):
    """The path this replaces (the reference): block k's Gram matrices from full-model passes
    through blocks 0..k, stopped after block k."""
    if target.layout == "embedding":
        return methods.LayerInputs()
    if target.name not in grams:
        block = model_layout.block_module_name(target.name)
        names = [t.name for t in targets
                 if t.status == "quantize" and t.layout != "embedding" and model_layout.block_module_name(t.name) == block]
        grams.update(collect_input_grams(model, calib, names, block))
    gram, mean_abs = grams.pop(target.name)
    return methods.LayerInputs(gram=gram.float(), mean_abs=mean_abs.float())


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
    monkeypatch.setattr(engine, "_layer_inputs", old_layer_inputs)
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
    monkeypatch.setattr(engine, "_layer_inputs", old_layer_inputs)
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
    from qd_models import methods

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
