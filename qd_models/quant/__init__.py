"""Pure tensor functions for weight-only quantization (no model walking here)."""

from .aciq import aciq_constant, expected_mse, grid_expected_mse, grid_optimal_alpha
from .core import (
    AUTO_LAPLACE_KURTOSIS,
    block_moments,
    fake_quantize,
    grid_steps,
    min_max,
    mse_clip_ratio,
    to_blocks,
    top_fraction_mask,
    weight_stats,
)

__all__ = [
    "AUTO_LAPLACE_KURTOSIS",
    "aciq_constant",
    "block_moments",
    "expected_mse",
    "fake_quantize",
    "grid_expected_mse",
    "grid_optimal_alpha",
    "grid_steps",
    "min_max",
    "mse_clip_ratio",
    "to_blocks",
    "top_fraction_mask",
    "weight_stats",
]
