"""Plots. Every function returns ``(fig, ax)`` and saves nothing (see :func:`save`); none picks
the matplotlib backend (the command-line tools select ``Agg``; a notebook keeps its own)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.fidelity import series_names

RESOURCE_COLOURS = {"high": "#1f77b4", "low": "#d62728"}
OTHER_COLOUR = "#7f7f7f"
LABEL_INCHES_PER_CHAR = 0.07
"""Approximate width of one tick-label character at matplotlib's default font size."""


def save(fig, path: Path) -> Path:
    """Write ``fig`` as PNG and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Margins from the longest y tick label (bbox_inches="tight" doubles the cost).
    longest = max((len(label.get_text()) for ax in fig.axes for label in ax.get_yticklabels()), default=0)
    left = min(0.7, max(0.2, (0.6 + LABEL_INCHES_PER_CHAR * longest) / fig.get_figwidth()))
    fig.subplots_adjust(left=left, bottom=0.2, right=0.95, top=0.88)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def degradation_by_language(table: pd.DataFrame, groups: dict[str, str], title: str = ""):
    """Bar per language of the relative NLL increase (%) with 95% CI whiskers, coloured by
    resource class. table: rows of one run and suite (columns lang, degradation, ci_low, ci_high, delta_bpb)."""
    table = table.sort_values("degradation", na_position="first")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(table) + 2), 3.6))
    x = np.arange(len(table))
    values = 100 * table.degradation.to_numpy(dtype=float)
    colours = [RESOURCE_COLOURS.get(groups.get(lang), OTHER_COLOUR) for lang in table.lang]
    ax.bar(x, np.where(np.isfinite(values), values, 0.0), color=colours)
    low, high = 100 * table.ci_low.to_numpy(dtype=float), 100 * table.ci_high.to_numpy(dtype=float)
    has_ci = np.isfinite(low) & np.isfinite(high) & np.isfinite(values)
    if has_ci.any():
        ax.errorbar(x[has_ci], values[has_ci], yerr=[values[has_ci] - low[has_ci], high[has_ci] - values[has_ci]],
                    fmt="none", ecolor="black", capsize=3, lw=1)
    for xi, value, delta in zip(x, values, table.delta_bpb.to_numpy(dtype=float)):
        text = "non-finite" if not np.isfinite(value) else f"{delta:+.3f}"
        ax.annotate(text, (xi, 0), textcoords="offset points", xytext=(0, -22), ha="center", fontsize=7, color="#444")
    ax.set_xticks(x, table.lang)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("relative NLL increase D (%)")
    ax.set_title(title or "Degradation by language (95% paired-bootstrap CI; Δbits/byte below)", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in RESOURCE_COLOURS.values()] + [plt.Rectangle((0, 0), 1, 1, color=OTHER_COLOUR)]
    ax.legend(handles, ["high-resource", "low-resource", "ungrouped"], fontsize=7, loc="upper left")
    return fig, ax


def fidelity_by_language(table: pd.DataFrame, languages: list[str], title: str = ""):
    """Two panels per language, the configs side by side with 95% CI whiskers: KL(base ‖ quant)
    per byte (top-k + tail lower bound) and the same-top-token rate. table: rows of one suite
    (columns quant_id, model, label, lang, kl_per_byte, same_top_token and their _ci_low/_ci_high),
    one bar series per run (quant_id), named by its label, with its model when several are present;
    languages: x order."""
    series = series_names(table)
    labels = list(series)
    fig, axes = plt.subplots(2, 1, figsize=(max(5.0, 0.35 * len(languages) * max(1, len(labels)) + 2.5), 6.0), sharex=True)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(languages))
    colours = plt.get_cmap("tab10").colors
    for ax, column, scale, ylabel in ((axes[0], "kl_per_byte", 1.0, "KL per byte (nats)"),
                                      (axes[1], "same_top_token", 100.0, "same top token (%)")):
        for i, run in enumerate(labels):
            block = table[table.quant_id == run].set_index("lang").reindex(languages)
            values = scale * block[column].to_numpy(dtype=float)
            low, high = scale * block[f"{column}_ci_low"].to_numpy(dtype=float), scale * block[f"{column}_ci_high"].to_numpy(dtype=float)
            xs = x - 0.4 + width * (i + 0.5)
            ax.bar(xs, np.where(np.isfinite(values), values, 0.0), width, color=colours[i % len(colours)], label=series[run])
            has_ci = np.isfinite(low) & np.isfinite(high) & np.isfinite(values)
            if has_ci.any():
                ax.errorbar(xs[has_ci], values[has_ci], yerr=[values[has_ci] - low[has_ci], high[has_ci] - values[has_ci]],
                            fmt="none", ecolor="black", capsize=2, lw=0.8)
        ax.set_ylabel(ylabel, fontsize=8)
    rates = 100 * table[["same_top_token", "same_top_token_ci_low"]].to_numpy(dtype=float)
    if np.isfinite(rates).any():  # the rates' range, not 0-100 %
        axes[1].set_ylim(max(0.0, np.nanmin(rates) - 0.1 * (100 - np.nanmin(rates)) - 1), 100.5)
    axes[1].set_xticks(x, languages)
    axes[1].set_xlabel("language (ordered by baseline bits/byte, lowest first)", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left", ncol=min(3, len(labels)))
    axes[0].set_title(title or "Fidelity to the baseline by language (95% document-bootstrap CI)", fontsize=9)
    return fig, axes


def predictor_scatter(table: pd.DataFrame, predictor: str, groups: dict[str, str], correlation: dict | None = None, title: str = ""):
    """Degradation (%) vs a per-language predictor with an OLS line. table: columns lang,
    degradation and ``predictor`` (one row per language)."""
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    x, y = table[predictor].to_numpy(dtype=float), 100 * table.degradation.to_numpy(dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    ax.scatter(x[keep], y[keep], c=[RESOURCE_COLOURS.get(groups.get(lang), OTHER_COLOUR) for lang in table.lang[keep]])
    for xi, yi, lang in zip(x[keep], y[keep], table.lang[keep]):
        ax.annotate(lang, (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=8)
    if keep.sum() >= 2 and np.ptp(x[keep]) > 0:
        slope, intercept = np.polyfit(x[keep], y[keep], 1)
        grid = np.linspace(x[keep].min(), x[keep].max(), 20)
        ax.plot(grid, intercept + slope * grid, color="black", lw=1)
    if correlation:
        ax.set_title(
            (title + "\n" if title else "")
            + f"n={correlation['n']}, Pearson r={correlation['pearson_r']:.2f} (p={correlation['pearson_p']:.2g}), "
            f"Spearman ρ={correlation['spearman_rho']:.2f} (p={correlation['spearman_p']:.2g})",
            fontsize=8,
        )
    ax.set_xlabel(predictor)
    ax.set_ylabel("relative NLL increase D (%)")
    return fig, ax


def rate_distortion_curves(table: pd.DataFrame, groups: dict[str, str], title: str = ""):
    """ln(degradation) vs bits, one line per language (colour = resource class, marker =
    language). table: rows of one family and suite (columns lang, bits, degradation);
    non-positive degradations are not drawn."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    markers = "osD^vP*Xh<>"
    for i, (lang, block) in enumerate(table.sort_values("bits").groupby("lang")):
        block = block[block.degradation > 0]
        if block.empty:
            continue
        ax.plot(block.bits, np.log(block.degradation), marker=markers[i % len(markers)], label=lang,
                color=RESOURCE_COLOURS.get(groups.get(lang), OTHER_COLOUR), alpha=0.85)
    ax.set_xlabel("bits per weight (nominal)")
    ax.set_ylabel("ln D (relative NLL increase)")
    ax.set_title(title or "Rate-distortion per language", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig, ax


def pareto(points: pd.DataFrame, front: pd.Series, y: str = "worst_degradation", title: str = ""):
    """Worst-language degradation (%) vs effective bits/weight per run, every point labelled; the
    Pareto-front runs are joined by a line."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    x_values, y_values = points.effective_bits_per_weight.to_numpy(dtype=float), 100 * points[y].to_numpy(dtype=float)
    ax.scatter(x_values, y_values, color=OTHER_COLOUR)
    middle = (np.nanmin(x_values) + np.nanmax(x_values)) / 2 if len(x_values) else 0.0
    for xi, yi, label in zip(x_values, y_values, points.label):  # labels point inwards: none leaves the axes
        right_half = xi > middle
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(-3, -10) if right_half else (3, 3), fontsize=7,
                    ha="right" if right_half else "left")
    ax.margins(x=0.08)
    on_front = points[front.to_numpy()].sort_values("effective_bits_per_weight")
    ax.plot(on_front.effective_bits_per_weight, 100 * on_front[y], color="#2ca02c", marker="o", label="Pareto front")
    ax.set_xlabel("effective bits per weight")
    ax.set_ylabel(f"{y.replace('_', ' ')} (%)")
    ax.set_title(title or "Method comparison", fontsize=9)
    ax.legend(fontsize=7)
    return fig, ax


def degradation_heatmap(matrix: pd.DataFrame, ylabel: str, title: str = ""):
    """Rows × language heatmap of degradation (%). matrix: (n_rows, n_langs); NaN cells blank."""
    label_inches = LABEL_INCHES_PER_CHAR * max((len(str(label)) for label in matrix.index), default=0)
    fig, ax = plt.subplots(figsize=(1.6 + label_inches + 0.7 * matrix.shape[1], 1.2 + 0.3 * matrix.shape[0]))
    values = 100 * matrix.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns)
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=7 if matrix.shape[0] > 20 else 9)
    ax.set_xlabel("language")
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, label="relative NLL increase D (%)")
    ax.set_title(title, fontsize=9)
    return fig, ax
