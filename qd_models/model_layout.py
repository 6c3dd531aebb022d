"""What a transformers model's module names and types say about its architecture.

Blocks: a transformer block is a module named ``<...>.layers.N``, ``h.N``, ``blocks.N`` or
``block.N`` (Llama/Gemma ``model.layers.3``, GPT-2 ``transformer.h.3``). Weights: ``nn.Linear``
(``[out, in]``), transformers' ``Conv1D`` (GPT-2, stored ``[in, out]``) and ``nn.Embedding``.
Parts of a block: attention / MLP by a name component (``attn``, ``self_attn``,
``self_attention``, ``attention`` / ``mlp``, ``feed_forward``, ``ffn``). llama.cpp tensor roles
by a module's last name component (Llama/Gemma ``q_proj``..``down_proj``, GPT-2
``c_attn``/``c_fc``/``c_proj``, BLOOM ``query_key_value``/``dense``/``dense_h_to_4h``/
``dense_4h_to_h``). Also: the input/output embeddings and whether they share one weight, why a
parameter is no quantization candidate, and the module tree on the meta device (no weights).
Importing this module does not import torch (the runners' command lines stay light).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor, nn

logger = logging.getLogger(__name__)

BLOCK_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|block)\.(\d+)(?:\.|$)")
"""Transformer block index in a module name: ``model.layers.3.``, ``transformer.h.3.``."""

ATTENTION_PARTS = frozenset({"attn", "self_attn", "self_attention", "attention"})
MLP_PARTS = frozenset({"mlp", "feed_forward", "ffn"})

LLAMA_CPP_ROLES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
    "c_attn": "attn_qkv", "query_key_value": "attn_qkv", "c_fc": "ffn_up", "dense_h_to_4h": "ffn_up",
    "dense_4h_to_h": "ffn_down", "lm_head": "output", "embed_tokens": "token_embd", "wte": "token_embd",
    "word_embeddings": "token_embd",
}
"""Last name component -> llama.cpp tensor role (``c_proj`` and ``dense`` depend on their parent)."""


def block_index(name: str) -> int | None:
    """Transformer block index in a module name, or ``None``."""
    match = BLOCK_INDEX.search(name)
    return int(match.group(1)) if match else None


def block_module_name(name: str) -> str | None:
    """``model.layers.3`` for ``model.layers.3.mlp.down_proj`` (the transformer block holding
    module ``name``), or ``None`` outside the blocks."""
    match = BLOCK_INDEX.search(name)
    return name[: match.end(1)] if match else None


def block_names(model: nn.Module) -> list[str]:
    """Names of the transformer blocks (``model.layers.3``, ``transformer.h.3``), in model order."""
    return [name for name, _ in model.named_modules() if name and block_module_name(name) == name]


def weight_layout(module: nn.Module) -> str | None:
    """``linear`` (``nn.Linear``), ``conv1d`` (transformers' ``Conv1D``), ``embedding`` or ``None``."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, Conv1D):
        return "conv1d"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return None


def oriented_weight(module: nn.Module) -> Tensor:
    """float32 weight ``[out, in]`` of a linear (Conv1D stores ``[in, out]``; a view when the
    weight already is float32 and ``[out, in]``)."""
    weight = module.weight.detach()
    return (weight.t() if weight_layout(module) == "conv1d" else weight).float().contiguous()


def module_type(name: str) -> str | None:
    """``attention`` | ``mlp`` | ``None`` from a module name's components."""
    parts = set(name.split("."))
    if parts & ATTENTION_PARTS:
        return "attention"
    if parts & MLP_PARTS:
        return "mlp"
    return None


def weight_part(name: str, layout: str) -> str:
    """``embedding`` | ``attention`` | ``mlp`` | ``lm_head`` | ``other`` of a weight of
    :func:`weight_layout` ``layout`` in module ``name``."""
    if layout == "embedding":
        return "embedding"
    return module_type(name) or ("lm_head" if name.endswith("lm_head") else "other")


def block_linears(model: nn.Module) -> dict[int, dict[str, list[str]]]:
    """``{block: {"attention": [names], "mlp": [names], "other": [names]}}`` of the linear /
    Conv1D modules inside transformer blocks (``model`` may live on the meta device)."""
    blocks: dict[int, dict[str, list[str]]] = {}
    for name, module in model.named_modules():
        block = block_index(name)
        if block is None or weight_layout(module) not in ("linear", "conv1d"):
            continue
        blocks.setdefault(block, {"attention": [], "mlp": [], "other": []})[module_type(name) or "other"].append(name)
    return blocks


def llama_cpp_role(module_name: str) -> str:
    """llama.cpp tensor category of an HF module name (``other`` when unknown); a fused QKV is
    ``attn_qkv``."""
    parts = module_name.split(".")
    last = parts[-1]
    if last == "c_proj":  # GPT-2: attn.c_proj is the attention output, mlp.c_proj the down projection
        return "ffn_down" if "mlp" in parts else "attn_output"
    if last == "dense":  # BLOOM self_attention.dense
        return "attn_output" if any("attention" in p for p in parts) else "other"
    return LLAMA_CPP_ROLES.get(last, "other")


def input_embedding(model: nn.Module) -> nn.Module | None:
    """The token embedding (``get_input_embeddings``), or ``None``."""
    return model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None


def output_embedding(model: nn.Module) -> nn.Module | None:
    """The output head (``get_output_embeddings``: ``lm_head``), or ``None``."""
    return model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None


def tied_embeddings(model: nn.Module) -> bool:
    """Whether the output head and the token embedding share one weight."""
    embedding, head = input_embedding(model), output_embedding(model)
    return head is not None and embedding is not None and head.weight is embedding.weight


def skip_reason(param_name: str) -> str:
    """Why a parameter is no quantization candidate, by its name: bias | norm | embedding | lm_head | other."""
    lowered = param_name.lower()
    if lowered.endswith("bias"):
        return "bias"
    if "norm" in lowered or "ln_" in lowered:
        return "norm"
    if "embed" in lowered or "wte" in lowered or "wpe" in lowered:
        return "embedding"
    if "lm_head" in lowered:
        return "lm_head"
    return "other"


def meta_model(hf_config, trust_remote_code: bool = False):
    """The model's module tree on the meta device (no weights, no memory), or ``None`` when the
    architecture cannot be built this way (the reason is logged)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - callers fall back to the loaded model or refuse in one line
        logger.info("the module tree cannot be built on the meta device: %s", err)
        return None
