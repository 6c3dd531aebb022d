"""``awq_scope=shared``: which linears read the same input, and the norm their AWQ scale folds into.

One probe forward pass (3 tokens, hooks removed in ``finally``) records the input tensor of every
linear (``nn.Linear``, transformers' ``Conv1D``) and the output tensor of every other module: the
linears that receive the same tensor object form one group (q/k/v and gate/up on Llama/Gemma;
GPT-2's ``c_attn`` and BLOOM's ``query_key_value`` are one fused linear each), and the module that
produced it (innermost first) is the group's preceding op.

Folding (llm-awq ``scale_ln_fcs``): the quantized weights become Q(W diag(s)) and the norm's
output is divided by s, so the model computes the same function with the scale stored nowhere:
``nn.LayerNorm`` (GPT-2, BLOOM): weight and bias / s; an RMSNorm applied as x * w (Llama):
w / s; Gemma's RMSNorm applied as x * (1 + w): w <- (1 + w) / s - 1. Each candidate fold is
checked numerically on a copy of the norm before it is accepted. A group is foldable only when
its preceding op is such a norm and every linear reading its output is quantized (a kept linear
would need the scaled weight too); any other group (o_proj, down_proj, GPT-2/BLOOM output
projections, groups with a kept member) keeps its scale as an explicit input multiply, charged
16 bits per input channel once per group. (llm-awq folds o_proj's and down_proj's scales into
the rows of v_proj/up_proj where the shapes allow; that is not done here.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .model_layout import weight_layout

FOLD_KINDS = ("layernorm", "rmsnorm", "rmsnorm_one_plus")
"""How a norm applies its weight: LayerNorm (weight, bias), x * w, x * (1 + w) (Gemma)."""


@dataclass
class InputGroup:
    """Linears (module names, model order) that read the same input tensor; ``norm`` the module
    that produced it (``None``: not a module output, e.g. a functional activation), ``fold`` its
    :data:`FOLD_KINDS` entry when the scale can be folded into it (else ``None``). ``results``:
    filled by the layer function at the group's first quantized member, ``scales`` ``[in]``."""

    members: list[str]
    norm: str | None = None
    fold: str | None = None
    scales: Tensor | None = None
    results: dict = field(default_factory=dict)


def fold_kind(norm: nn.Module) -> str | None:
    """The :data:`FOLD_KINDS` entry of a norm module, checked on a copy of it, or ``None``."""
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 1:
        return None
    if isinstance(norm, nn.LayerNorm):
        kind = "layernorm"
    elif type(norm).__name__.endswith("RMSNorm"):
        kind = "rmsnorm_one_plus" if type(norm).__name__.startswith("Gemma") else "rmsnorm"
    else:
        return None
    probe = copy.deepcopy(norm).float().eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, weight.shape[0], generator=generator).to(weight.device)
    scales = (torch.rand(weight.shape[0], generator=generator) + 0.5).to(weight.device)
    with torch.no_grad():
        expected = probe(x) / scales
        fold_into_norm_(probe, kind, scales)
        folded = probe(x)
    return kind if torch.allclose(folded, expected, rtol=1e-4, atol=1e-5) else None


def fold_into_norm_(norm: nn.Module, kind: str, scales: Tensor) -> None:
    """Divide ``norm``'s output by ``scales`` ``[in]`` through its parameters (module doc)."""
    scales = scales.to(device=norm.weight.device, dtype=torch.float64)
    with torch.no_grad():
        weight = norm.weight.double()
        new = (1.0 + weight) / scales - 1.0 if kind == "rmsnorm_one_plus" else weight / scales
        norm.weight.copy_(new.to(norm.weight.dtype))
        if kind == "layernorm" and getattr(norm, "bias", None) is not None:
            norm.bias.copy_((norm.bias.double() / scales).to(norm.bias.dtype))


def scale_input_columns_(module: nn.Module, scales: Tensor) -> None:
    """Multiply a linear's weight by diag(``scales``) on its input side."""
    with torch.no_grad():
        scales = scales.to(device=module.weight.device, dtype=module.weight.dtype)
        if weight_layout(module) == "conv1d":
            module.weight.mul_(scales.unsqueeze(1))
        else:
            module.weight.mul_(scales.unsqueeze(0))


def input_groups(model: nn.Module, quantized: set[str]) -> list[InputGroup]:
    """Groups of the model's linears by shared input (module doc), in model order; ``quantized``:
    the names of the linears that will be quantized (foldable groups hold only those)."""
    named = list(model.named_modules())
    inputs: dict[str, Tensor] = {}
    producers: list[tuple[str, Tensor]] = []
    keep_alive: list = []  # no tensor is freed during the probe, so object identity is unique

    def pre_hook(name):
        def hook(module, args):
            if args and isinstance(args[0], Tensor):
                inputs.setdefault(name, args[0])
        return hook

    def out_hook(name):
        def hook(module, args, output):
            keep_alive.append(output)
            if isinstance(output, Tensor):
                producers.append((name, output))
        return hook

    handles = []
    device = next(model.parameters()).device
    vocab = getattr(getattr(model, "config", None), "vocab_size", 3) or 3
    was_training = model.training
    model.eval()
    try:
        for name, module in named:
            if weight_layout(module) in ("linear", "conv1d"):
                handles.append(module.register_forward_pre_hook(pre_hook(name)))
            elif name:
                handles.append(module.register_forward_hook(out_hook(name)))
        with torch.no_grad():
            model(input_ids=torch.arange(3, device=device).remainder(vocab).unsqueeze(0), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    modules = dict(named)
    groups: dict[int, InputGroup] = {}
    for name, _ in named:
        if name in inputs:
            groups.setdefault(id(inputs[name]), InputGroup([])).members.append(name)
    for key, group in groups.items():
        group.norm = next((name for name, output in producers if id(output) == key), None)
        if group.norm is not None and all(member in quantized for member in group.members):
            group.fold = fold_kind(modules[group.norm])
    return list(groups.values())
