"""Benchmark summary figure. Functions return ``(fig, ax)`` built on ``matplotlib.figure.Figure``
(no pyplot, no backend choice, no global state); :func:`save` writes a PNG with nothing cut off."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def benchmark_summary(table: pd.DataFrame, title: str, confidence: float = 0.95, alpha: float = 0.05):
    """Per language, one bar per config: Δ score (percentage points, quantized − baseline) with its
    paired CI; ``*`` marks McNemar p < ``alpha``; flip counts (right→wrong/wrong→right) along the bottom. Languages ordered by baseline score (best first),
    labelled with the baseline score and item count.

    table: rows of one suite and metric — columns label, lang, base, delta, ci_low, ci_high, mcnemar_p,
    n_items, right_to_wrong, wrong_to_right, effective_bits_per_weight (orders the configs).
    """
    base = table.groupby("lang").base.mean().sort_values(ascending=False, kind="stable")
    langs = list(base.index)
    labels = list(dict.fromkeys(table.sort_values("effective_bits_per_weight", na_position="last").label))
    width = 0.8 / max(1, len(labels))
    fig = Figure(figsize=(max(5.0, 0.55 * len(langs) * max(1, len(labels)) ** 0.5 + 2.5), 4.2))
    ax = fig.subplots()
    x = np.arange(len(langs))
    for i, label in enumerate(labels):
        rows = table[table.label == label].set_index("lang").reindex(langs)
        values = 100 * rows.delta.to_numpy(dtype=float)
        low, high = 100 * rows.ci_low.to_numpy(dtype=float), 100 * rows.ci_high.to_numpy(dtype=float)
        pos = x - 0.4 + width * (i + 0.5)
        colour = COLOURS[i % len(COLOURS)]
        ax.bar(pos, np.nan_to_num(values), width, color=colour, label=label)
        ax.scatter(pos, values, s=10, color=colour, edgecolors="black", linewidths=0.5, zorder=3)  # Δ = 0 stays visible
        for xi, b, c in zip(pos, rows.right_to_wrong.to_numpy(dtype=float), rows.wrong_to_right.to_numpy(dtype=float)):
            if math.isfinite(b) and math.isfinite(c):
                ax.annotate(f"{b:.0f}/{c:.0f}", (xi, 0.01), xycoords=ax.get_xaxis_transform(), ha="center", fontsize=6, color="#333")
        has_ci = np.isfinite(low) & np.isfinite(high) & np.isfinite(values)
        if has_ci.any():
            ax.errorbar(pos[has_ci], values[has_ci], yerr=[values[has_ci] - low[has_ci], high[has_ci] - values[has_ci]],
                        fmt="none", ecolor="black", capsize=2, lw=0.8)
        for xi, value, hi, lo, p in zip(pos, values, high, low, rows.mcnemar_p.to_numpy(dtype=float)):
            if math.isfinite(p) and p < alpha:
                y = hi if value >= 0 and math.isfinite(hi) else (lo if math.isfinite(lo) else value)
                ax.annotate("*", (xi, y), textcoords="offset points", xytext=(0, 2 if value >= 0 else -10), ha="center", fontsize=9)
    n_items = table.groupby("lang").n_items.max()
    ticks = [f"{lang}\n{_share(base[lang])}\nn={_count(n_items.get(lang))}" for lang in langs]
    ax.set_xticks(x, ticks, fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("Δ score (percentage points)")
    ax.set_xlabel(f"language (baseline score, items); bars: quantized − baseline, {confidence:.0%} paired-bootstrap CI; "
                  f"* McNemar p < {alpha:g};\nbottom: flips right→wrong/wrong→right", fontsize=8)
    ax.set_title("\n".join(textwrap.wrap(title, width=int(fig.get_figwidth() * 11))), fontsize=9)
    ax.legend(fontsize=7, title="config", title_fontsize=7, loc="best")
    return fig, ax


def _share(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.0f}%"


def _count(value) -> str:
    return "?" if value is None or not math.isfinite(float(value)) else str(int(value))


def save(fig, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG with tight bounds (title and labels never cut off)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
