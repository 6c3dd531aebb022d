"""The quantization targets of a model: which weights are quantized, which kept, and which of a
quantized layer's weights are kept.

Selection (:func:`select_targets`): the weights of ``nn.Linear`` and transformers' ``Conv1D``
modules (GPT-2 stores Conv1D weights as ``[in, out]``; they are transposed to ``[out, in]`` so
that "channel" always means an output channel). Skipped: embeddings, ``lm_head``, a weight tied
between them (selected only when both ``quantize_embeddings`` and ``quantize_lm_head`` are on),
norms, biases and every other parameter. Kept in original precision: modules in ``keep_layers``
blocks, modules matching ``keep`` (exact names or ``re:<regex>`` matched with ``re.fullmatch``)
and modules ``filter_fn(module, name)`` rejects. Within a quantized layer (:func:`keep_mask`):
the ``keep_top`` % largest-|w| weights (``keep_top_scope=global``: one |w| threshold over all
quantized layers, from a 65536-bin histogram, so at least ``keep_top`` % is kept, over by less
than one bin; ``keep_by=activation``: by activation-weighted salience).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .config import Mechanism, QuantConfig
from .methods import PlanTarget
from .model_layout import block_index, oriented_weight, output_embedding, tied_embeddings, weight_layout
from .quant.core import check_group_size, top_fraction_mask
from .quant.weighted import activation_keep_scores, mode_weights

GLOBAL_HISTOGRAM_BINS = 65536

FilterFn = Callable[[nn.Module, str], bool]


@dataclass
class Target:
    """One selected weight: its module ``name``, parameter name, ``layout`` (linear | conv1d |
    embedding), ``status`` (quantize | keep) and the keep ``reason``."""

    name: str
    param_name: str
    module: nn.Module
    layout: str
    status: str
    reason: str = ""

    def oriented(self) -> torch.Tensor:
        """float32 weight ``[out, in]`` (a view when the weight already is float32)."""
        return oriented_weight(self.module)

    def write(self, oriented: torch.Tensor) -> None:
        self.module.weight.data.copy_(oriented.t() if self.layout == "conv1d" else oriented)

    @property
    def in_features(self) -> int:
        """The input dim of the ``[out, in]`` weight."""
        shape = self.module.weight.shape
        return shape[0] if self.layout == "conv1d" else shape[1]


def plan_target(target: Target) -> PlanTarget:
    """What a method's plan sees of ``target``."""
    return PlanTarget(target.name, target.in_features, block_index(target.name), target.status == "quantize")


def matches(name: str, patterns: tuple[str, ...]) -> str | None:
    """The first ``keep`` pattern (exact name or ``re:<regex>``, fullmatch) matching ``name``."""
    for pattern in patterns:
        if (pattern[3:] and re.fullmatch(pattern[3:], name)) if pattern.startswith("re:") else name == pattern:
            return pattern
    return None


def select_targets(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None) -> tuple[list[Target], set[int]]:
    """Quantization candidates (status quantize | keep, model order) and the ids of their weights."""
    head = output_embedding(model)
    tied_id = id(head.weight) if tied_embeddings(model) else None
    targets, seen, used_patterns = [], set(), set()
    for name, module in model.named_modules():
        layout = weight_layout(module)
        if layout is None or id(module.weight) in seen:
            continue
        if id(module.weight) == tied_id:
            if not (config.quantize_embeddings and config.quantize_lm_head):
                continue
        elif module is head or name.split(".")[-1] == "lm_head":
            if not config.quantize_lm_head:
                continue
        elif layout == "embedding" and not config.quantize_embeddings:
            continue
        seen.add(id(module.weight))
        target = Target(name, f"{name}.weight" if name else "weight", module, layout, "quantize")
        block = block_index(name)
        pattern = matches(name, config.keep)
        if block is not None and block in config.keep_layers:
            target.status, target.reason = "keep", f"keep_layers:{block}"
        elif pattern is not None:
            used_patterns.add(pattern)
            target.status, target.reason = "keep", f"keep:{pattern}"
        elif filter_fn is not None and not filter_fn(module, name):
            target.status, target.reason = "keep", "filter_fn"
        targets.append(target)
    unused = [p for p in config.keep if p not in used_patterns]
    if unused:
        raise ValueError(f"keep={';'.join(unused)} matches no quantizable module; allowed: exact module names or re:<regex> (fullmatch)")
    return targets, seen


def check_group_sizes(targets: list[Target], config: QuantConfig) -> None:
    """``group_size`` divides the input dim of every target that is quantized (one-line ``ValueError``)."""
    if config.mechanism == Mechanism.FAKE and config.granularity == "group":
        for target in targets:
            if target.status == "quantize":
                check_group_size(config.group_size, target.in_features, target.name)


def check_module_tree(model: nn.Module, config: QuantConfig) -> None:
    """The checks that need only ``model``'s module tree and weight shapes (a weightless
    :func:`qd_models.model_layout.meta_model` will do): every ``keep`` pattern matches a module
    and ``group_size`` divides every quantized layer's real input dim (e.g. ``o_proj``'s heads x head_dim)."""
    check_group_sizes(select_targets(model, config, None)[0], config)


def quantization_targets(model: nn.Module, config: QuantConfig) -> list[str]:
    """Names of the modules :func:`qd_models.engine.quantize_` considers (quantized or kept), in
    model order: the modules whose inputs a calibration pass must observe (a ``filter_fn`` would
    only turn some of them from quantized to kept, so it takes none)."""
    return [target.name for target in select_targets(model, config, None)[0]]


def widest_input(targets: list[Target]) -> int:
    """The largest input dim of the quantized token-wise targets (0: none)."""
    return max((t.in_features for t in targets if t.status == "quantize" and t.layout != "embedding"), default=0)


def largest_input_dim(model: nn.Module, config: QuantConfig) -> int:
    """The largest input dim of the token-wise layers :func:`qd_models.engine.quantize_` would quantize (0: none)."""
    return widest_input(select_targets(model, config, None)[0])


def global_threshold(targets: list[Target], percent: float) -> float:
    """|w| threshold keeping at least ``percent`` % of all quantized weights."""
    quantized = [t for t in targets if t.status == "quantize"]
    total = sum(t.module.weight.numel() for t in quantized)
    wanted = round(percent / 100.0 * total)
    if wanted == 0:
        return float("inf")
    top = max(float(t.module.weight.detach().abs().max()) for t in quantized)
    counts = torch.zeros(GLOBAL_HISTOGRAM_BINS, dtype=torch.float64)
    for target in quantized:
        counts += torch.histc(target.module.weight.detach().float().abs(), GLOBAL_HISTOGRAM_BINS, 0.0, top).double()
    from_top = counts.flip(0).cumsum(0)
    bins_from_top = int(torch.searchsorted(from_top, torch.tensor(float(wanted), dtype=torch.float64)))
    return top * (GLOBAL_HISTOGRAM_BINS - 1 - bins_from_top) / GLOBAL_HISTOGRAM_BINS


def keep_mask(weight: torch.Tensor, config: QuantConfig, threshold: float | None, inputs: torch.Tensor | None) -> torch.Tensor | None:
    """Bool ``[out, in]``: the weights of a quantized layer ``weight`` ``[out, in]`` kept in
    original precision (``None``: none). ``threshold``: the global |w| threshold
    (:func:`global_threshold`) or ``None``; ``inputs``: the normalised per-language second
    moments ``[in, L]`` for ``keep_by=activation``."""
    if threshold is not None:
        return weight.abs() >= threshold
    if config.keep_top > 0 and config.keep_by == "activation":
        return top_fraction_mask(activation_keep_scores(weight, mode_weights(inputs, config.calib_mode)), config.keep_top)
    if config.keep_top > 0:
        return top_fraction_mask(weight.abs(), config.keep_top)
    return None
