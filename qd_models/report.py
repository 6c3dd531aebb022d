"""Storage accounting, JSON safety and the log summary of a quantization report."""

from __future__ import annotations

import math

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
