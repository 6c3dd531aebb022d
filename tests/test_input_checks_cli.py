"""Issue 19 through the real command lines: output folders and every quantized layer's input dim
checked before the model loads (``lm_eval --model qd-hf``, ``qd-sweep``), and an error raised in
the middle of an evaluation as the last stderr line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_reliability_cli import last_line, lm_eval

TASK = "qd_multilingual_ppl_en"


@pytest.fixture(scope="module")
def wide_heads_llama(tmp_path_factory) -> Path:
    """A tiny Llama whose attention width heads x head_dim = 4 x 24 = 96 differs from hidden_size 64:
    ``o_proj`` takes 96 inputs, every other layer 64 or 128 (the shapes are checked here, independently)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from qd_models.tiny_models import BYTE_VOCAB_SIZE, build_byte_tokenizer

    config = LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, head_dim=24,
                         num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
                         vocab_size=BYTE_VOCAB_SIZE, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    in_dims = {name.rsplit(".", 1)[-1]: module.weight.shape[1] for name, module in model.model.layers[0].named_modules()
               if isinstance(module, torch.nn.Linear)}
    assert in_dims["o_proj"] == 96 and {dim for name, dim in in_dims.items() if name != "o_proj"} == {64, 128}
    folder = tmp_path_factory.mktemp("wide_heads")
    model.save_pretrained(folder)
    build_byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.integration
def test_output_folders_are_checked_before_loading(tiny_model_dir, tmp_path):
    model = tiny_model_dir("llama")
    existing = tmp_path / "a_file"
    existing.write_text("mine")
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "gone")
    cases = {
        f"method=none,fidelity_out={existing}": ("fidelity_out=", "is an existing file"),
        f"method=rtn,save_to={dangling}": ("save_to=", "symbolic link to nothing"),
        "method=rtn,save_to=": ("save_to= is empty", "allowed"),
        "method=none,fidelity_out=": ("fidelity_out= is empty", "allowed"),
    }
    for args, expected in cases.items():
        out = tmp_path / "results"
        proc = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={model},{args}", "--tasks", TASK, "--limit", "1",
                       "--output_path", str(out))
        assert proc.returncode != 0, args
        assert all(part in last_line(proc) for part in expected), (args, proc.stderr[-2000:])
        assert "Loading weights" not in proc.stderr and not out.exists(), args
    assert existing.read_text() == "mine" and dangling.is_symlink() and not dangling.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "link"]  # nothing written in the working folder either


@pytest.mark.integration
def test_group_size_is_checked_against_every_layer_before_loading(wide_heads_llama, tmp_path):
    proc = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={wide_heads_llama},method=rtn,granularity=group,group_size=64",
                   "--tasks", TASK, "--limit", "1", "--output_path", str(tmp_path / "r"))
    assert proc.returncode != 0
    assert "group_size=64 does not divide the input dim 96 of model.layers.0.self_attn.o_proj" in last_line(proc)
    assert "Loading weights" not in proc.stderr and not (tmp_path / "r").exists()

    out, grid = tmp_path / "sweep", tmp_path / "grid.yaml"  # a sweep refuses before its first config (the baseline) runs
    grid.write_text("configs:\n  - {method: rtn, bits: 4}\n  - {method: rtn, granularity: group, group_size: 64}\n")
    proc = subprocess.run([sys.executable, "-m", "qd_models.sweep", "--grid", str(grid), "--tasks", TASK, "--limit", "1",
                           "--device", "cpu", "--output_path", str(out), "--model_args", f"pretrained={wide_heads_llama}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert last_line(proc).startswith("qd-sweep: error: group_size=64 does not divide the input dim 96 of model.layers.0.self_attn.o_proj")
    assert "Loading weights" not in proc.stderr and not out.exists()


@pytest.mark.integration
def test_an_error_in_the_middle_of_the_evaluation_is_the_last_stderr_line(tiny_model_dir, tmp_path):
    model = tiny_model_dir("llama")
    base = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={model},fidelity_out={tmp_path / 'base'}",
                   "--tasks", TASK, "--limit", "1", "--output_path", str(tmp_path / "r0"))
    assert base.returncode == 0, base.stderr[-2000:]
    # the baseline holds document 0 only: scoring document 1 fails inside lm-eval's progress loop
    proc = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={model},method=rtn,fidelity_baseline={tmp_path / 'base'},"
                   f"fidelity_out={tmp_path / 'cmp'}", "--tasks", TASK, "--limit", "3", "--output_path", str(tmp_path / "r1"))
    assert proc.returncode != 0 and "Running loglikelihood requests" in proc.stderr
    assert last_line(proc).startswith("ValueError: fidelity_baseline=") and f"lacks doc 1 of {TASK}" in last_line(proc)
    assert not os.path.exists(tmp_path / "r1")


@pytest.mark.integration
def test_awq_grid_bound_and_calib_data_case_are_one_line(tiny_model_dir, tmp_path):
    model = tiny_model_dir("llama")
    cases = {"method=awq,awq_grid=100000": "awq_grid=100000 is not allowed; allowed: an integer in 1..1000",
             "method=gptq,group_size=32,calib_data=UDHR": "allowed: udhr (the bundled UDHR articles, lowercase) or a JSONL file"}
    for args, words in cases.items():
        proc = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={model},{args}", "--tasks", TASK, "--limit", "1",
                       "--output_path", str(tmp_path / "r"))
        assert proc.returncode != 0 and words in last_line(proc), (args, proc.stderr[-2000:])
        assert "Loading weights" not in proc.stderr and not (tmp_path / "r").exists()
