"""The torch side of the method registry: method -> :class:`Quantizer` (layer function, optional plan).

:data:`qd_models.config.METHODS` says what a method needs (mechanism, calibration, options type);
:data:`QUANTIZERS` says how one layer is quantized. :func:`qd_models.engine.quantize_` selects
the layers, runs the calibration passes of ``QuantConfig.calibration_passes``, calls the
method's ``plan`` once per model (when it has one) and its ``layer`` for every layer; it knows
no method names.

A layer function takes ``(weight [out, in] float32, blocks [n_blocks, len] view of weight or
None, valid [n_blocks, len] 0/1 or None, config, inputs: LayerInputs)`` and returns
``(quantized [out, in], info)``. ``blocks`` is ``None`` for a format that fixes its own blocks
(``config.granularity`` unset: gguf). ``info`` keys the engine reads (all optional): ``alpha``
and ``sigma`` (``[n_blocks, 1]``: the report's alpha/sigma), ``laplace``, ``ratio`` (as
:func:`clip_range`), ``extra_bits`` (storage beyond codes + scales + zeros,
e.g. a group index per column), ``storage_bits`` (the layer's whole storage when its format
defines it, in place of codes + scales + zeros + ``extra_bits``) and ``report`` (JSON scalars
added to the layer's report entry).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .awq_scope import InputGroup, fold_into_norm_, input_groups, scale_input_columns_
from .config import METHODS, STATS, QuantConfig, num_blocks
from .model_layout import oriented_weight, tied_embeddings
from .quant.awq import awq_quantize, awq_quantize_shared
from .quant.core import aciq_range, fake_quantize, full_range, mse_range
from .quant.gguf_presets import tensor_types
from .quant.gguf_quants import bits_per_weight, dequantize, quantize_blocks
from .quant.gptq import gptq_quantize, output_error
from .quant.weighted import weighted_clip_range

INDEX_BITS = 32
"""A GPTQ act-order group index is stored as one int32 per input column (``g_idx``)."""
AWQ_SCALE_BITS = 16
"""AWQ's per-input-channel scale, charged as one 16-bit float per input channel (it is free only
when folded into a preceding op shared by the layers that use it; see :mod:`qd_models.quant.awq`)."""


@dataclass(frozen=True)
class LayerInputs:
    """What calibration gave one layer: ``stats`` normalised per-language second moments
    ``[in, L]`` (calibration ``stats``), or ``gram`` E[x x^T] ``[in, in]`` and ``mean_abs``
    E|x| ``[in]`` (calibration ``inputs``); ``None`` when the method needs none or the layer
    has no token inputs (an embedding)."""

    stats: Tensor | None = None
    gram: Tensor | None = None
    mean_abs: Tensor | None = None
    plan: Any = None
    """This layer's entry of the method's per-model plan (:class:`Quantizer`), or ``None``."""


@dataclass(frozen=True)
class PlanTarget:
    """What a method's plan sees of one selected module (model order): its ``name``, the input dim
    ``in_features`` of its ``[out, in]`` weight, its transformer ``block`` index (or ``None``) and
    whether it is ``quantized`` (``False``: kept in original precision)."""

    name: str
    in_features: int
    block: int | None
    quantized: bool


LayerFn = Callable[[Tensor, Tensor | None, Tensor | None, QuantConfig, LayerInputs], tuple[Tensor, dict]]
PlanFn = Callable[[nn.Module, list[PlanTarget], QuantConfig, Any], dict[str, Any]]
FinishFn = Callable[[nn.Module, dict[str, Any], "dict[str, Tensor] | None"], None]


@dataclass(frozen=True)
class Quantizer:
    """One method's torch side: ``layer`` quantizes one layer (module doc); ``plan``, when set, is
    called once per model before the first layer as ``plan(model, targets, config, act_stats)``
    (``act_stats``: the activation statistics or ``None``) and returns ``{module name: plan}``;
    each quantized layer gets its entry as ``LayerInputs.plan``; ``finish``, when set, is called
    once after every layer is written as ``finish(model, plans, originals_for_restore)`` (it may
    change other parameters, recording their originals as :func:`qd_models.engine.quantize_` does)."""

    layer: LayerFn
    plan: PlanFn | None = None
    finish: FinishFn | None = None


RANGE_ESTIMATORS: dict[str, Callable[..., tuple[Tensor, Tensor, dict[str, Tensor]]]] = {
    "rtn": full_range,
    "aciq": aciq_range,
    "mse": mse_range,
}
"""Method -> its per-block range estimator (:mod:`qd_models.quant.core`), each taking
``(blocks, bits, symmetric, clip, valid, grid)``."""


def clip_range(
    blocks: Tensor, method: str, bits: int, symmetric: bool, clip: str = "none", valid: Tensor | None = None,
    grid: str = "int",
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Per-block quantization range ``(low, high, info)`` of ``method`` (rtn | aciq | mse, see
    :data:`RANGE_ESTIMATORS`) for ``blocks`` ``[n_blocks, len]``: ``info`` holds per-block ``alpha``
    (half-width), ``sigma`` (RMS about 0, or about the mean when asymmetric), ``[n_blocks, 1]`` each,
    and, for clip=auto, ``laplace`` (bool), for mse ``ratio``."""
    if method not in RANGE_ESTIMATORS:
        raise ValueError(f"method={method!r} is not allowed; allowed: {', '.join(RANGE_ESTIMATORS)}")
    clips = METHODS[method].clips
    if clips != ("none",) and clip not in clips:
        raise ValueError(f"clip={clip!r} is not allowed for method={method}; allowed: {', '.join(clips)}")
    return RANGE_ESTIMATORS[method](blocks, bits, symmetric, clip, valid, grid)


def _range_layer(estimator, weight, blocks, valid, config: QuantConfig, inputs: LayerInputs):
    low, high, info = estimator(blocks, config.bits, config.symmetric, config.clip, valid, config.grid)
    return fake_quantize(blocks, low, high, config.bits, config.symmetric, config.grid).view_as(weight), info


def _laaciq_layer(weight, blocks, valid, config: QuantConfig, inputs: LayerInputs):
    low, high, info = weighted_clip_range(blocks, weight.shape[0], inputs.stats, config.calib_mode, config.bits,
                                          config.symmetric, config.granularity, config.group_size, valid, config.grid)
    return fake_quantize(blocks, low, high, config.bits, config.symmetric, config.grid).view_as(weight), info


def _without_inputs(weight, blocks, valid, config: QuantConfig):
    """Round-to-nearest for a layer without token inputs (an embedding)."""
    quantized, info = _range_layer(full_range, weight, blocks, valid, config, LayerInputs())
    info["report"] = {"fallback": "rtn (no token inputs)"}
    return quantized, info


def _relative(error: float, norm: float) -> float:
    """``error / norm`` of a layer's output error, NaN for a layer with no output."""
    return error / norm if norm > 0 else float("nan")


def _rtn_output_error(weight, blocks, config: QuantConfig, gram: Tensor) -> float:
    rtn, _ = _range_layer(full_range, weight, blocks, None, config, LayerInputs())
    return output_error(rtn - weight, gram)


def _gptq_layer(weight, blocks, valid, config: QuantConfig, inputs: LayerInputs):
    if inputs.gram is None:
        return _without_inputs(weight, blocks, valid, config)
    options = config.options
    quantized, info = gptq_quantize(weight, inputs.gram, config.bits, config.symmetric, config.granularity, config.group_size,
                                    config.grid, options.damp, options.act_order, options.gptq_block)
    g_idx = info.pop("g_idx")
    info["extra_bits"] = INDEX_BITS * weight.shape[1] if g_idx is not None else 0
    norm = output_error(weight, inputs.gram)
    info["report"] = {
        "damp": info.pop("damp"), "damp_retries": info.pop("damp_retries"), "cholesky_failed": info.pop("cholesky_failed"),
        "dead_columns": info.pop("dead_columns"),
        "rel_output_error": _relative(output_error(quantized - weight, inputs.gram), norm),
        "rtn_rel_output_error": _relative(_rtn_output_error(weight, blocks, config, inputs.gram), norm),
    }
    return quantized, info


def _awq_layer(weight, blocks, valid, config: QuantConfig, inputs: LayerInputs):
    if inputs.gram is None:
        return _without_inputs(weight, blocks, valid, config)
    options = config.options
    if inputs.plan is not None:
        return _awq_shared_layer(weight, config, inputs)
    quantized, info = awq_quantize(weight, inputs.gram, inputs.mean_abs, config.bits, config.symmetric, config.granularity,
                                   config.group_size, config.grid, options.awq_grid, options.awq_clip)
    return quantized, _awq_info(weight, info, inputs.gram, AWQ_SCALE_BITS * weight.shape[1])


def _awq_info(weight, info: dict, gram: Tensor, extra_bits: int, report: dict | None = None) -> dict:
    """The engine's ``info`` of one AWQ layer from :func:`awq_quantize`'s."""
    norm = output_error(weight, gram)
    out = {
        "awq_alpha": info["alpha"],
        "rel_output_error": _relative(info["output_error"], norm),
        "rtn_rel_output_error": _relative(info["rtn_output_error"], norm),
        **(report or {}),
    }
    if "clip_ratio" in info:
        out["clip_ratio_mean"] = float(info["clip_ratio"].mean())
    return {"extra_bits": extra_bits, "report": out}


def _awq_shared_layer(weight, config: QuantConfig, inputs: LayerInputs):
    """``awq_scope=shared``: the group's scale is searched at its first quantized member over all
    of its quantized members (their weights unchanged until then); the scale's 16 bits per input
    channel are charged once per group (to its first member) unless it folds into the norm."""
    name, group = inputs.plan
    if not group.results:
        options = config.options
        members = [member for member in group.members if member in group.quantized]
        weights = [weight if member == name else oriented_weight(group.modules[member]) for member in members]
        quantized, infos = awq_quantize_shared(weights, inputs.gram, inputs.mean_abs, config.bits, config.symmetric,
                                               config.granularity, config.group_size, config.grid, options.awq_grid,
                                               options.awq_clip)
        group.scales = infos[0]["scales"]
        group.results = {member: (q, info, i == 0) for i, (member, q, info) in enumerate(zip(members, quantized, infos))}
    quantized, info, charged = group.results.pop(name)
    extra_bits = AWQ_SCALE_BITS * weight.shape[1] if charged and group.fold is None else 0
    report = {"awq_group": [member for member in group.members if member in group.quantized],
              "awq_scale": f"folded into {group.norm}" if group.fold else "explicit input multiply"}
    return quantized, _awq_info(weight, info, inputs.gram, extra_bits, report)


@dataclass
class _SharedGroup(InputGroup):
    """An :class:`qd_models.awq_scope.InputGroup` with what the layer function needs: the modules
    by name and the names of the quantized targets."""

    modules: dict = None
    quantized: set = None


def _awq_plan(model: nn.Module, targets: list[PlanTarget], config: QuantConfig, act_stats) -> dict[str, Any]:
    """``awq_scope=shared``: ``{name: (name, group)}`` for every quantized linear
    (:func:`qd_models.awq_scope.input_groups`); ``linear``: ``{}`` (each layer on its own)."""
    if config.options.awq_scope != "shared":
        return {}
    quantized = {target.name for target in targets if target.quantized}
    modules = dict(model.named_modules())
    plans = {}
    for group in input_groups(model, quantized):
        shared = _SharedGroup(group.members, group.norm, group.fold, modules=modules, quantized=quantized)
        for member in group.members:
            if member in quantized:
                plans[member] = (member, shared)
    return plans


def _awq_finish(model: nn.Module, plans: dict[str, Any], originals: dict | None) -> None:
    """Fold each foldable group's scale (:mod:`qd_models.awq_scope`): its linears' weights become
    Q(W diag(s)) (the written Q(W diag(s)) diag(s)^-1 times diag(s)) and its norm divides by s."""
    modules = dict(model.named_modules())
    param_names = {id(param): name for name, param in model.named_parameters(remove_duplicate=False)}
    done = set()
    for _, group in plans.values():
        if id(group) in done or group.fold is None or group.scales is None:
            continue
        done.add(id(group))
        norm = modules[group.norm]
        if originals is not None:
            for param in (norm.weight, getattr(norm, "bias", None)):
                if isinstance(param, Tensor):
                    originals.setdefault(param_names[id(param)], param.detach().to("cpu", copy=True))
        fold_into_norm_(norm, group.fold, group.scales)
        for member in group.members:
            scale_input_columns_(modules[member], group.scales)


def gguf_imatrix(act_stats, name: str, langs: tuple[str, ...]) -> Tensor | None:
    """Importance matrix ``[in]`` float64 of module ``name``: mean x^2 over all calibration tokens of ``langs``
    (per-language E[x^2] weighted by token counts); None when there are no tokens."""
    langs = act_stats.select_langs(langs)
    rows = [act_stats.langs.index(lang) for lang in langs]
    tokens = torch.tensor([float(act_stats.tokens[lang]) for lang in langs], dtype=torch.float64)
    if not tokens.sum() > 0:
        return None
    return (act_stats.second_moments[name][rows].double() * tokens[:, None]).sum(0) / tokens.sum()


def _gguf_plan(model: nn.Module, targets: list[PlanTarget], config: QuantConfig, act_stats) -> dict[str, dict]:
    """``{name: {"type", "role", "rule"[, "imatrix"]}}``: the GGUF type of every target (llama.cpp's
    per-tensor rules for presets, input dim fallbacks) and, with calibration, each quantized
    target's importance matrix (:func:`gguf_imatrix`)."""
    n_layer = num_blocks(model.config) if hasattr(model, "config") else None
    n_layer = n_layer or 1 + max((target.block or 0 for target in targets), default=0)
    plans = tensor_types([(target.name, target.in_features) for target in targets], config.options.gguf_type, n_layer, tied_embeddings(model))
    if act_stats is not None and STATS in config.calibration_passes:
        for target in targets:
            if target.quantized:
                plans[target.name]["imatrix"] = gguf_imatrix(act_stats, target.name, config.calib_langs)
    return plans


def _gguf_layer(weight, blocks, valid, config: QuantConfig, inputs: LayerInputs):
    """``weight`` ``[out, in]`` as GGUF blocks of the planned type (rows along the input dim),
    quantized by :mod:`qd_models.quant.gguf_quants` and dequantized by gguf's dequantizer."""
    plan = inputs.plan
    imatrix = plan.get("imatrix")
    data = quantize_blocks(weight.cpu().numpy(), plan["type"], None if imatrix is None else imatrix.float().numpy())
    quantized = torch.from_numpy(dequantize(data, plan["type"])).to(weight.device)
    report = {"gguf_type": plan["type"], "gguf_role": plan["role"], "gguf_rule": plan["rule"], "imatrix": imatrix is not None}
    return quantized, {"storage_bits": bits_per_weight(plan["type"]) * weight.numel(), "report": report}


QUANTIZERS: dict[str, Quantizer] = {
    **{method: Quantizer(functools.partial(_range_layer, estimator)) for method, estimator in RANGE_ESTIMATORS.items()},
    "laaciq": Quantizer(_laaciq_layer),
    "gptq": Quantizer(_gptq_layer),
    "awq": Quantizer(_awq_layer, plan=_awq_plan, finish=_awq_finish),
    "gguf": Quantizer(_gguf_layer, plan=_gguf_plan),
}
"""Method -> :class:`Quantizer` (module doc); every ``fake`` method of
:data:`qd_models.config.METHODS` has one."""
