"""Where quant-disparity caches files (standard library only): the embedded model, calibration
statistics, the ggml reference build."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$QD_CACHE_DIR`` or ``~/.cache/quant-disparity``."""
    return Path(os.environ.get("QD_CACHE_DIR", Path.home() / ".cache" / "quant-disparity"))
