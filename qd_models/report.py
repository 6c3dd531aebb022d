"""The quantization report: storage accounting (bits per weight), the one report builder (fake
quantization and bitsandbytes), JSON safety and the log summary."""

from __future__ import annotations

import math

from . import __version__
from .model_layout import skip_reason

SCALE_BITS = 16
"""Each block's scale is counted as one 16-bit float."""

INDEX_BITS = 32
"""A kept (salient) weight costs its original-precision value plus the cheaper of a 32-bit
index per kept weight or a 1-bit-per-weight bitmap of the layer."""


def quantized_layer_bits(numel: int, n_blocks: int, bits: int, symmetric: bool, n_kept: int, value_bits: int) -> int:
    """Bits to store one fake-quantized layer: dense ``bits``-bit codes for every weight,
    a 16-bit scale per block, a ``bits``-bit zero point per block when asymmetric, and the kept
    weights (value + index, see ``INDEX_BITS``)."""
    total = bits * numel + SCALE_BITS * n_blocks
    if not symmetric:
        total += bits * n_blocks
    if n_kept:
        total += n_kept * value_bits + min(INDEX_BITS * n_kept, numel)
    return total


def layer_storage_bits(info: dict, numel: int, n_blocks: int | None, bits: int, symmetric: bool, n_kept: int, value_bits: int) -> int:
    """Bits to store one quantized layer: its format's whole storage (``info["storage_bits"]``)
    when the method gives it, else :func:`quantized_layer_bits` plus ``info["extra_bits"]``."""
    if "storage_bits" in info:
        return info["storage_bits"]
    return quantized_layer_bits(numel, n_blocks, bits, symmetric, n_kept, value_bits) + info.get("extra_bits", 0)


def info_fields(info: dict) -> dict:
    """The report fields of a method's layer ``info`` (:mod:`qd_models.methods`): alpha/sigma,
    its own ``report`` scalars, the Laplace fraction and the MSE clip ratio."""
    fields = {}
    if "alpha" in info and "sigma" in info:
        alpha_over_sigma = info["alpha"] / info["sigma"]
        fields["alpha_over_sigma"] = {k: float(getattr(alpha_over_sigma, k)()) for k in ("mean", "min", "max")}
    fields.update(info.get("report", {}))
    if "laplace" in info:
        fields["laplace_fraction"] = float(info["laplace"].float().mean())
    if "ratio" in info:
        fields["clip_ratio"] = {k: float(getattr(info["ratio"], k)()) for k in ("mean", "min", "max")}
    return fields


def stored_bits(param) -> int:
    """Width of ``param``'s dtype in bits."""
    return param.element_size() * 8


def deployed_bits(param, kept_value_bits: int | None) -> int:
    """Width charged for a weight left unquantized: ``kept_value_bits`` (a deployment dtype,
    default 16) rather than the load dtype (32 for the float32 default model)."""
    return kept_value_bits or stored_bits(param)


def skipped_parameters(model, handled: set[int], width) -> tuple[list[dict], int]:
    """``({"name", "numel", "reason"} per parameter of ``model`` whose id is not in ``handled``,
    their bits at ``width(param)``)``; a tied parameter once."""
    skipped, bits = [], 0
    for param_name, param in model.named_parameters(remove_duplicate=True):
        if id(param) in handled:
            continue
        skipped.append({"name": param_name, "numel": param.numel(), "reason": skip_reason(param_name)})
        bits += width(param) * param.numel()
    return skipped, bits


def build_report(config, layers: list[dict], skipped: list[dict], skipped_bits: int, storage_bits: int,
                 params_quantized: int, params_kept: int, **more_totals) -> dict:
    """The report (not yet :func:`json_safe`): ``config`` (a ``QuantConfig``), ``layers`` (one entry
    per candidate weight, ``status`` quantized | kept | unchanged), ``skipped`` and ``totals``;
    ``storage_bits``: the candidates' storage; ``more_totals`` end the totals in their order."""
    candidates = params_quantized + params_kept
    return {
        "config": config.to_dict(),
        "package_version": __version__,
        "totals": {
            "params_quantized": params_quantized,
            "params_kept": params_kept,
            "params_skipped": sum(s["numel"] for s in skipped),
            "layers_quantized": sum(layer["status"] == "quantized" for layer in layers),
            "layers_kept": sum(layer["status"] == "kept" for layer in layers),
            "effective_bits_per_weight": storage_bits / candidates if candidates else float("nan"),
            "estimated_size_bytes": (storage_bits + skipped_bits) // 8,
            **more_totals,
        },
        "layers": layers,
        "skipped": skipped,
    }


def bnb_report(model, config) -> dict:
    """Report for a model bitsandbytes quantized at load: 4-bit codes plus one fp32 absmax per
    block (nf4/fp4), or 8-bit codes plus one fp32 scale per output row (int8); everything else
    skipped at its load width."""
    import bitsandbytes as bnb

    layers, storage_bits, quantized_params, seen = [], 0, 0, set()
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            numel = module.in_features * module.out_features
            block = module.weight.quant_state.blocksize if module.weight.quant_state is not None else 64
            bits = numel * 4 + (numel // block) * 32
        elif isinstance(module, bnb.nn.Linear8bitLt):
            numel = module.in_features * module.out_features
            bits = numel * 8 + module.out_features * 32
        else:
            continue
        seen.add(id(module.weight))
        layers.append({"name": name, "kind": type(module).__name__, "shape": [module.out_features, module.in_features],
                       "numel": numel, "status": "quantized", "bits_per_weight": bits / numel})
        storage_bits += bits
        quantized_params += numel
    skipped, skipped_bits = skipped_parameters(model, seen, stored_bits)
    return json_safe(build_report(config, layers, skipped, skipped_bits, storage_bits, quantized_params, 0,
                                  original_size_bytes=None, nonfinite_weights=None))


def json_safe(value):
    """Copy of ``value`` with non-finite floats replaced by ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def summarize_report(report: dict) -> str:
    """A few human-readable lines for the log."""
    cfg, tot = report["config"], report["totals"]
    head = f"qd quantization: method={cfg['method']} bits={cfg['bits']}"
    if cfg.get("granularity"):
        head += f" granularity={cfg['granularity']}" + (f"/{cfg['group_size']}" if cfg.get("group_size") else "")
    lines = [
        head,
        f"  params quantized={tot['params_quantized']:,} kept={tot['params_kept']:,} skipped={tot['params_skipped']:,}",
        f"  effective bits/weight={tot['effective_bits_per_weight']:.3f}  estimated size={tot['estimated_size_bytes'] / 2**20:.1f} MiB"
        + (f" (original {tot['original_size_bytes'] / 2**20:.1f} MiB)" if tot.get("original_size_bytes") else ""),
    ]
    rel = [layer["rel_mse"] for layer in report["layers"] if layer.get("status") == "quantized" and layer.get("rel_mse") is not None]
    if rel:
        lines.append(f"  relative weight MSE over {len(rel)} layers: mean={sum(rel) / len(rel):.3e} max={max(rel):.3e}")
    calibration = report.get("calibration") or {}
    if calibration.get("tokens_per_largest_input_dim") is not None:
        condition = calibration.get("max_gram_condition")
        lines.append(f"  calibration tokens={calibration['tokens']:,} = {calibration['tokens_per_largest_input_dim']:.2f} per input dim "
                     f"of the widest layer ({calibration['largest_input_dim']}); rank-deficient Gram matrices: "
                     f"{calibration['rank_deficient_layers']} of {calibration['gram_layers']} layers; max condition "
                     + ("inf/none" if condition is None else f"{condition:.3g}"))
    if tot.get("nonfinite_weights"):
        lines.append(f"  WARNING: {tot['nonfinite_weights']} non-finite weights")
    return "\n".join(lines)
