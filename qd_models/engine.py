"""Fake-quantize a transformers model's weights in place, one layer at a time: the orchestration.

:func:`quantize_` selects the targets (:mod:`qd_models.targets`), checks them, runs the method's
``plan`` once (:mod:`qd_models.methods`), then per quantized layer: its keep mask, its calibration
inputs, the method's ``layer``, the written weight and its report entry; kept layers are counted
in the effective bits at ``kept_value_bits`` (default 16). The report is assembled by
:func:`qd_models.report.build_report` (also the bitsandbytes path's).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import torch
from torch import nn

from .config import IDENTITY_BITS, INPUTS, STATS, Mechanism, QuantConfig
from .methods import QUANTIZERS, LayerInputs
from .model_layout import block_module_name, block_names
from .quant.core import to_blocks, weight_stats
from .quant.weighted import normalise_second_moments
from .report import bnb_report, build_report, deployed_bits, info_fields, json_safe, layer_storage_bits, skipped_parameters, stored_bits
from .targets import FilterFn, Target, check_group_sizes, global_threshold, keep_mask, plan_target, select_targets, widest_input

logger = logging.getLogger(__name__)


def bnb_from_pretrained_kwargs(config: QuantConfig) -> dict:
    """``from_pretrained`` kwargs for bitsandbytes methods (``{}`` for the others)."""
    if config.mechanism != Mechanism.BNB:
        return {}
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(**config.spec.load_quantization)}


def _layer_inputs(model: nn.Module, targets: list[Target], target: Target, calib, grams: dict, block_inputs) -> LayerInputs:
    """Gram matrix and mean |x| of ``target``'s input for the ``inputs`` calibration: collected
    for all quantized targets of ``target``'s block at once, when its first target is reached
    (so earlier blocks are already quantized: GPTQ's sequential order), by running the block on
    its cached inputs (``block_inputs``: :class:`qd_models.calibration.BlockInputs`); targets
    outside the blocks (e.g. a quantized head) by a full forward pass."""
    if target.layout == "embedding":
        return LayerInputs()
    if target.name not in grams:
        block = block_module_name(target.name)
        names = [t.name for t in targets
                 if t.status == "quantize" and t.layout != "embedding" and block_module_name(t.name) == block]
        if block is None:
            from .calibration import collect_input_grams

            grams.update(collect_input_grams(model, calib, names, None))
        else:
            grams.update(block_inputs.grams(block, names))
    gram, mean_abs = grams.pop(target.name)
    return LayerInputs(gram=gram.float(), mean_abs=mean_abs.float())


def quantize_(
    model: nn.Module,
    config: QuantConfig,
    filter_fn: FilterFn | None = None,
    originals_for_restore: dict[str, torch.Tensor] | None = None,
    act_stats=None,
    calib=None,
) -> dict:
    """Fake-quantize ``model``'s selected weights in place (quantize -> dequantize, layer by
    layer, no model copy) and return the JSON-serialisable report.

    ``filter_fn(module, name) -> bool``: False keeps the module in original precision.
    ``originals_for_restore``: if a dict, receives CPU copies of every modified weight (by parameter
    name) for :func:`restore_`. ``act_stats``: a :class:`qd_models.calibration.ActivationStats`
    over :func:`qd_models.targets.quantization_targets`, required when ``config.calibration_passes`` has ``stats`` (``method=laaciq``,
    ``keep_by=activation``, a gguf importance matrix; adds ``calibration`` blocks to the report).
    ``calib``: a :class:`qd_models.calibration.CalibrationBatches`, required by methods whose
    calibration is ``inputs`` (GPTQ, AWQ: block by block, see :func:`_layer_inputs`; each block's
    inputs are cached for the walk, :class:`qd_models.calibration.BlockInputs`, and dropped when it
    ends, also on an error).
    Each layer is quantized by ``QUANTIZERS[config.method].layer`` (:mod:`qd_models.methods`),
    after the method's ``plan`` (if any) saw every target once.
    For bitsandbytes methods (already quantized at load) only the report is built.
    """
    if calib is None:
        return _quantize(model, config, filter_fn, originals_for_restore, act_stats, None, None)
    from .calibration import BlockInputs

    with BlockInputs(model, calib, block_names(model)) as block_inputs:
        return _quantize(model, config, filter_fn, originals_for_restore, act_stats, calib, block_inputs)


def _quantize(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None, originals_for_restore: dict | None,
              act_stats, calib, block_inputs) -> dict:
    """:func:`quantize_` with the calibration's block inputs (``None`` without ``calib``)."""
    if config.mechanism == Mechanism.BNB:
        return bnb_report(model, config)
    start = time.perf_counter()
    targets, target_ids = select_targets(model, config, filter_fn)
    if config.mechanism == Mechanism.FAKE and not any(target.status == "quantize" for target in targets):
        logger.warning("qd-hf: method=%s quantizes 0 parameters: every quantizable module is kept (%s); results equal the baseline",
                       config.method, ", ".join(sorted({t.reason for t in targets})) or "no quantizable module")
    check_group_sizes(targets, config)
    active = config.mechanism == Mechanism.FAKE and config.bits != IDENTITY_BITS
    if active and STATS in config.calibration_passes and act_stats is None:
        raise ValueError(f"act_stats is required with method={config.method}, keep_by={config.keep_by}; allowed: qd_models.calibration.collect_activation_stats(...)")
    sequential = active and INPUTS in config.calibration_passes
    if sequential and calib is None:
        raise ValueError(f"calib is required with method={config.method}; allowed: qd_models.calibration.CalibrationBatches.from_texts(...)")
    gram_report = None
    if sequential:
        from .calibration.sufficiency import GramReport, warn_if_few_tokens

        widest = widest_input(targets)
        warn_if_few_tokens(sum(calib.tokens.values()), widest)
        gram_report = GramReport(sum(calib.tokens.values()))
    quantizer = QUANTIZERS[config.method] if active else None
    grams: dict = {}
    plans = {}
    if quantizer is not None and quantizer.plan is not None:
        plans = quantizer.plan(model, [plan_target(target) for target in targets], config, act_stats)
    threshold = None
    if active and config.keep_top > 0 and config.keep_top_scope == "global":
        threshold = global_threshold(targets, config.keep_top)
    layers, storage_bits, counts = [], 0, {"quantized": 0, "kept": 0, "nonfinite": 0}
    for target in targets:
        param = target.module.weight
        value_bits = deployed_bits(param, config.kept_value_bits)
        weight = target.oriented()
        stats = weight_stats(weight)
        layer = {"name": target.name, "kind": target.layout, "shape": list(param.shape), "numel": param.numel(), **stats}
        counts["nonfinite"] += stats["nonfinite"]
        if not active or target.status == "keep":
            layer.update(status="kept" if target.status == "keep" else "unchanged", reason=target.reason or config.method,
                         rel_mse=0.0, kept_fraction=1.0, bits_per_weight=float(value_bits))
            storage_bits += value_bits * param.numel()
            counts["kept"] += param.numel()
            layers.append(layer)
            continue
        blocks = to_blocks(weight, config.granularity, config.group_size) if config.granularity else None
        inputs = degenerate = None
        if act_stats is not None and STATS in config.calibration_passes:
            inputs, degenerate = normalise_second_moments(act_stats.inputs(target.name, config.calib_langs).to(weight.device))
        kept = keep_mask(weight, config, threshold, inputs)
        valid = None if kept is None else (~kept).float().view_as(blocks)
        layer_inputs = _layer_inputs(model, targets, target, calib, grams, block_inputs) if sequential else LayerInputs(stats=inputs)
        layer_inputs = replace(layer_inputs, plan=plans.get(target.name))
        if gram_report is not None and layer_inputs.gram is not None:
            layer.update(gram_report(layer_inputs.gram))
        quantized, info = quantizer.layer(weight, blocks, valid, config, layer_inputs)
        n_kept = 0
        if kept is not None:
            n_kept = int(kept.sum())
            quantized[kept] = weight[kept]
        if param.dtype != quantized.dtype:  # the value the parameter will hold (same rounding as copy_)
            quantized = quantized.to(param.dtype).float()
        norm = float(weight.square().sum())
        error = float((quantized - weight).square_().sum())
        bits = layer_storage_bits(info, param.numel(), None if blocks is None else blocks.shape[0], config.bits, config.symmetric,
                                  n_kept, value_bits)
        layer["status"] = "quantized"
        if blocks is not None:
            layer["n_blocks"] = blocks.shape[0]
        layer.update(
            rel_mse=error / norm if norm > 0 else float("nan"),
            kept_fraction=n_kept / param.numel(),
            bits_per_weight=bits / param.numel(),
        )
        layer.update(info_fields(info))
        if inputs is not None:
            from .calibration import layer_calibration_report

            layer["calibration"] = layer_calibration_report(weight, quantized, inputs, degenerate, act_stats.select_langs(config.calib_langs))
        if originals_for_restore is not None:
            originals_for_restore[target.param_name] = param.detach().to("cpu", copy=True)
        target.write(quantized)
        storage_bits += bits
        counts["quantized"] += param.numel() - n_kept
        counts["kept"] += n_kept
        layers.append(layer)
        del weight, blocks, quantized, valid, kept
    if quantizer is not None and quantizer.finish is not None:
        quantizer.finish(model, plans, originals_for_restore)
    skipped, skipped_bits = skipped_parameters(model, target_ids, lambda param: deployed_bits(param, config.kept_value_bits))
    original_bits = skipped_bits + sum(stored_bits(t.module.weight) * t.module.weight.numel() for t in targets)
    report = build_report(config, layers, skipped, skipped_bits, storage_bits, counts["quantized"], counts["kept"],
                          original_size_bytes=original_bits // 8, kept_value_bits=config.kept_value_bits,
                          nonfinite_weights=counts["nonfinite"])
    if act_stats is not None and STATS in config.calibration_passes:
        from .calibration import calibration_report

        report["calibration"] = calibration_report(act_stats, config, layers)
    elif sequential:
        from .calibration.sufficiency import sufficiency_summary

        report["calibration"] = {**calib.report(), **sufficiency_summary(layers, gram_report.tokens, widest)}
    report["wall_seconds"] = time.perf_counter() - start  # not in totals: totals are equal across identical runs
    return json_safe(report)


def restore_(model: nn.Module, originals: dict[str, torch.Tensor]) -> None:
    """Copy weights saved by ``quantize_(..., originals_for_restore=originals)`` back into ``model``."""
    for param_name, original in originals.items():
        model.get_parameter(param_name).data.copy_(original)


__all__ = ["bnb_from_pretrained_kwargs", "quantize_", "restore_"]
