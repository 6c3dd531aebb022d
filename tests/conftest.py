"""Shared fixtures: tiny random HF models (GPT-2/Conv1D, Llama, BLOOM) with a byte tokenizer.

Every model is built from a config with a fixed seed and saved to a session temp folder, so
tests can pass its path to ``lm_eval`` exactly as a user passes a hub id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BYTE_VOCAB_SIZE = 256 + 3  # 256 byte symbols + <pad>, <bos>, <eos>


def build_byte_tokenizer():
    """A byte-level BPE tokenizer with no merges: one token per UTF-8 byte (built offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def _tiny_config(arch: str):
    from transformers import BloomConfig, GPT2Config, LlamaConfig

    common = dict(vocab_size=BYTE_VOCAB_SIZE, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "gpt2":
        return GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=512, **common)
    if arch == "llama":
        return LlamaConfig(
            num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, **common,
        )
    if arch == "bloom":
        return BloomConfig(n_layer=2, hidden_size=64, n_head=4, **common)
    raise ValueError(f"unknown arch {arch}")


def save_tiny_model(arch: str, directory: Path, seed: int = 0) -> Path:
    """Build a tiny random ``arch`` model + byte tokenizer and save both to ``directory``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_tiny_config(arch))
    model.save_pretrained(directory)
    build_byte_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``tiny_model_dir(arch)`` -> path of a saved tiny random model (gpt2 | llama | bloom)."""
    made: dict[str, Path] = {}

    def get(arch: str = "llama") -> Path:
        if arch not in made:
            made[arch] = save_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return made[arch]

    return get


def run_lm_eval(args: list[str], output_path: Path, timeout: int = 600) -> dict:
    """Run the real ``lm_eval`` CLI in a subprocess; return the parsed results JSON."""
    cmd = [sys.executable, "-m", "lm_eval", *args, "--output_path", str(output_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"lm_eval failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    results = sorted(Path(output_path).rglob("results_*.json"))
    assert results, f"no results JSON under {output_path}:\n{proc.stderr[-2000:]}"
    return json.loads(results[-1].read_text())


@pytest.fixture(scope="session")
def lm_eval_cli():
    return run_lm_eval


@pytest.fixture(scope="session")
def qd_task_manager():
    """A TaskManager over the qd tasks only (indexing lm-eval's 14k YAMLs costs ~20 s)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False)


@pytest.fixture
def evaluate_in_process(qd_task_manager):
    """``evaluate_in_process(model, model_args, tasks, **kw)`` -> lm-eval results dict."""
    from lm_eval import simple_evaluate

    def run(model: str, model_args: str, tasks: list[str], **kwargs) -> dict:
        kwargs.setdefault("device", "cpu")
        kwargs.setdefault("batch_size", 4)
        return simple_evaluate(
            model=model, model_args=model_args, tasks=tasks, task_manager=qd_task_manager, **kwargs
        )

    return run
