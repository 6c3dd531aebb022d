"""The method Pareto front: worst-language degradation vs effective bits per weight."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_front(points: pd.DataFrame, x: str = "effective_bits_per_weight", y: str = "worst_degradation") -> pd.Series:
    """Boolean mask: rows not dominated (another row has x <= and y <= with one strict)."""
    xs, ys = points[x].to_numpy(dtype=float), points[y].to_numpy(dtype=float)
    valid = np.isfinite(xs) & np.isfinite(ys)
    mask = np.zeros(len(points), dtype=bool)
    for i in np.flatnonzero(valid):
        dominated = valid & (xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i]))
        mask[i] = not dominated.any()
    return pd.Series(mask, index=points.index)
