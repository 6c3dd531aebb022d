"""Formatting shared by the report's sections: numbers, percentages, Markdown tables, figure links."""

from __future__ import annotations

import math
from pathlib import Path


def pct(value: float, digits: int = 2) -> str:
    """``value`` as a signed percentage (``n/a`` for None/NaN, ``inf``/``-inf``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{100 * value:+.{digits}f}%" if abs(value) >= 0.01 else f"{100 * value:+.{digits}g}%"


def num(value, digits: int = 4) -> str:
    """A float with ``digits`` significant digits (``n/a``, ``inf``); other values as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def config_name(row, several_models: bool) -> str:
    """A run's config label, plus its model when the table holds runs of several models."""
    return f"{row.label} ({row.model})" if several_models else row.label


def figure_links(figures: list[Path]) -> list[str]:
    """One Markdown image line per figure file (alt text: the file's stem)."""
    return [f"![{p.stem}](figures/{p.name})" for p in figures]
