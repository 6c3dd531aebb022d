"""The torch side of the method registry: method -> quantize-layer function.

:data:`qd_models.config.METHODS` says what a method needs (kind, calibration, options type);
:data:`QUANTIZERS` says how one layer is quantized. :func:`qd_models.engine.quantize_` selects
the layers, runs the calibration the method's ``MethodSpec.calibration`` names and calls
``QUANTIZERS[config.method]`` for every layer; it knows no method names.

A layer function takes ``(weight [out, in] float32, blocks [n_blocks, len] view of weight,
valid [n_blocks, len] 0/1 or None, config, inputs: LayerInputs)`` and returns
``(quantized [out, in], info)``. ``info`` keys the engine reads (all optional): ``alpha`` and
``sigma`` (``[n_blocks, 1]``: the report's alpha/sigma), ``laplace``, ``ratio`` (as
:func:`qd_models.quant.core.clip_range`), ``extra_bits`` (storage beyond codes + scales + zeros,
e.g. a group index per column) and ``report`` (JSON scalars added to the layer's report entry).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from .config import QuantConfig
from .quant.awq import awq_quantize
from .quant.core import aciq_range, fake_quantize, full_range, mse_range
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


LayerFn = Callable[[Tensor, Tensor, Tensor | None, QuantConfig, LayerInputs], tuple[Tensor, dict]]


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
    quantized, info = awq_quantize(weight, inputs.gram, inputs.mean_abs, config.bits, config.symmetric, config.granularity,
                                   config.group_size, config.grid, options.awq_grid, options.awq_clip)
    norm = output_error(weight, inputs.gram)
    report = {
        "awq_alpha": info.pop("alpha"),
        "rel_output_error": _relative(info.pop("output_error"), norm),
        "rtn_rel_output_error": _relative(info.pop("rtn_output_error"), norm),
    }
    info.pop("scales")
    if "clip_ratio" in info:
        ratio = info.pop("clip_ratio")
        report["clip_ratio_mean"] = float(ratio.mean())
    info["extra_bits"] = AWQ_SCALE_BITS * weight.shape[1]
    info["report"] = report
    return quantized, info


QUANTIZERS: dict[str, LayerFn] = {
    "rtn": functools.partial(_range_layer, full_range),
    "aciq": functools.partial(_range_layer, aciq_range),
    "mse": functools.partial(_range_layer, mse_range),
    "laaciq": _laaciq_layer,
    "gptq": _gptq_layer,
    "awq": _awq_layer,
}
"""Method -> quantize-layer function (module doc); every ``fake`` method of
:data:`qd_models.config.METHODS` has one."""
