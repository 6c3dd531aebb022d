"""Per-tensor GGUF types of llama.cpp's mixed presets (``Q4_K_M`` ...).

Follows ``llama_tensor_get_type`` / ``llama_tensor_get_type_impl`` / ``tensor_type_fallback`` of
``src/llama-quant.cpp`` in the llama.cpp vendored by llama-cpp-python 0.3.36 (ggml 0.25.3), for
dense (non-MoE, non-Falcon, non-70B) models. The rules depend only on a tensor's role, so they
apply to every architecture here; HF module names map to llama.cpp roles in
:func:`qd_models.model_layout.llama_cpp_role`; a fused QKV is treated like ``attn_v``, as
llama.cpp does. A plain type (``q4_k``) is pure: every tensor gets it (then the
fallback). Pure functions of names and shapes; no CLI constants.
"""

from __future__ import annotations

from ..model_layout import llama_cpp_role

PRESETS = {"q3_k_s": "q3_k", "q3_k_m": "q3_k", "q3_k_l": "q3_k", "q4_k_s": "q4_k", "q4_k_m": "q4_k",
           "q5_k_s": "q5_k", "q5_k_m": "q5_k"}
"""Mixed presets -> their base type (llama.cpp ``LLAMA_FTYPE_MOSTLY_*``)."""

LLAMA_CPP_SOURCE = "llama.cpp vendored in llama-cpp-python 0.3.36 (ggml 0.25.3), src/llama-quant.cpp"

_FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}
_BLOCK = {"q4_0": 32, "q4_1": 32, "q5_0": 32, "q5_1": 32, "q8_0": 32, "q2_k": 256, "q3_k": 256, "q4_k": 256,
          "q5_k": 256, "q6_k": 256, "f16": 1}


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth and every third layer between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def fallback_type(type_name: str, ncols: int) -> str:
    """``tensor_type_fallback``: a row length (input dim) not divisible by the block size moves a
    K-quant to q4_0/q5_0/q5_1/q8_0 (q2_k, q3_k / q4_k / q5_k / q6_k), and to f16 when that does not fit either."""
    if ncols % _BLOCK[type_name] == 0:
        return type_name
    new = _FALLBACK.get(type_name, type_name)
    return new if ncols % _BLOCK[new] == 0 else "f16"


def _mixed(preset: str, role: str, i_v: int, n_v: int, i_down: int, n_layer: int) -> str | None:
    """``llama_tensor_get_type_impl`` for the K presets (None: keep the base type)."""
    if role in ("attn_v", "attn_qkv"):
        if preset == "q3_k_m":
            return "q5_k" if i_v < 2 else "q4_k"
        if preset == "q3_k_l":
            return "q5_k"
        if preset in ("q4_k_m", "q5_k_m") and use_more_bits(i_v, n_v):
            return "q6_k"
        if preset == "q4_k_s" and i_v < 4:
            return "q5_k"
    elif role == "ffn_down":
        if preset == "q3_k_m":
            return "q5_k" if i_down < n_layer // 16 else "q4_k"
        if preset == "q3_k_l":
            return "q5_k"
        if preset in ("q4_k_m", "q5_k_m") and use_more_bits(i_down, n_layer):
            return "q6_k"
        if preset == "q4_k_s" and i_down < n_layer // 8:
            return "q5_k"
    elif role == "attn_output":
        if preset == "q3_k_m":
            return "q4_k"
        if preset == "q3_k_l":
            return "q5_k"
    return None


def tensor_types(tensors: list[tuple[str, int]], type_name: str, n_layer: int, tied_embeddings: bool = False) -> dict[str, dict]:
    """Type of each ``(module name, input dim)`` (in model order) under ``type_name`` (a type or
    a preset): ``{name: {"role", "type", "rule"}}``; ``rule`` says why (base, preset rule, output
    rule, fallback). ``n_layer``: transformer blocks (llama.cpp's ``n_ffn_down``).
    Output (and a tied token embedding): q6_k, or q8_0 when the input dim is not a multiple of 256
    (llama.cpp's rule for presets); an untied token embedding keeps the base type."""
    preset = type_name if type_name in PRESETS else None
    base = PRESETS.get(type_name, type_name)
    roles = [llama_cpp_role(name) for name, _ in tensors]
    n_v = sum(role in ("attn_v", "attn_qkv") for role in roles)
    i_v = i_down = 0
    out = {}
    for (name, ncols), role in zip(tensors, roles):
        new, rule = base, "base"
        if preset is not None:
            if role == "output" or (tied_embeddings and role == "token_embd"):
                new, rule = ("q8_0", "output: input dim not a multiple of 256") if ncols % 256 else ("q6_k", "output")
            else:
                mixed = _mixed(preset, role, i_v, n_v, i_down, n_layer)
                if mixed is not None:
                    new, rule = mixed, f"{preset} {role} rule"
            i_v += role in ("attn_v", "attn_qkv")
            i_down += role == "ffn_down"
        final = fallback_type(new, ncols)
        if final != new:
            rule = f"{rule}; fallback {new}->{final} (input dim {ncols})"
        out[name] = {"role": role, "type": final, "rule": rule}
    return out
