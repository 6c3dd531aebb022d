"""Tiny random HF models with a byte-level tokenizer, built offline: a public helper of the
package, used by the benchmarks (``scripts/bench_*.py``), the tests (``tests/conftest.py``'s
``tiny_model_dir``) and the analysis fixtures. Random weights (2 blocks, hidden 64): they exercise
code paths and say nothing about quantization of real models.

    save_tiny_model("llama", folder)  # -> folder, loadable as ``pretrained=folder``

Importing this module is cheap; torch/transformers/tokenizers load inside the functions.
"""

from __future__ import annotations

from pathlib import Path

BYTE_VOCAB_SIZE = 256 + 3  # 256 byte symbols + <pad>, <bos>, <eos>
ARCHES = ("gpt2", "llama", "bloom")


def build_byte_tokenizer(add_bos: bool = False):
    """A byte-level BPE tokenizer with no merges: one token per UTF-8 byte. ``add_bos``: a
    post-processor prepends ``<bos>`` to every encoding, as Gemma's and Llama's tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    if add_bos:
        core.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def tiny_config(arch: str):
    """2 blocks, hidden 64: GPT-2 (Conv1D layers), Llama (GQA, untied head) or BLOOM."""
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
    raise ValueError(f"arch={arch!r} is not allowed; allowed: {', '.join(ARCHES)}")


def save_tiny_model(arch: str, directory: Path, seed: int = 0, add_bos: bool = False) -> Path:
    """Build a tiny random ``arch`` model + byte tokenizer (``add_bos``: see
    :func:`build_byte_tokenizer`) and save both to ``directory``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch))
    model.save_pretrained(directory)
    build_byte_tokenizer(add_bos).save_pretrained(directory)
    return Path(directory)
