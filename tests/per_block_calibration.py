"""The sequential-calibration path the one-pass block-input cache replaced, kept as the reference that
``tests/qd_models/test_calibration.py`` and ``scripts/bench_calibration.py`` compare it with: block k's
Gram matrices from full-model passes through blocks 0..k, stopped after block k (n(n + 1)/2 block
evaluations per batch). Patched in for ``qd_models.engine._layer_inputs``."""

from __future__ import annotations

from qd_models import model_layout
from qd_models.calibration import collect_input_grams
from qd_models.methods import LayerInputs


def per_block_layer_inputs(model, targets, target, calib, grams, block_inputs):
    """``engine._layer_inputs`` of the per-block re-run: all quantized targets of ``target``'s block at
    once (``grams`` holds the block's matrices until each target pops its own; ``block_inputs`` unused)."""
    if target.layout == "embedding":
        return LayerInputs()
    if target.name not in grams:
        block = model_layout.block_module_name(target.name)
        names = [t.name for t in targets
                 if t.status == "quantize" and t.layout != "embedding" and model_layout.block_module_name(t.name) == block]
        grams.update(collect_input_grams(model, calib, names, block))
    gram, mean_abs = grams.pop(target.name)
    return LayerInputs(gram=gram.float(), mean_abs=mean_abs.float())
