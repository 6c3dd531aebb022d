"""The report's section protocol: ``report.md`` is a header and an ordered list of :class:`Section`
(:data:`analysis.report.SECTIONS`), each with its tables (``tables/<name>.csv``), figures
(``figures/<name>``) and Markdown, computed from one :class:`analysis.report.Analysis`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from qd_models.run_record import slug

if TYPE_CHECKING:
    from analysis.report import Analysis

figure_slug = functools.partial(slug, limit=80, keep="._-", strip=True)
"""``text`` as a part of a figure's file name (characters other than ``A-Za-z0-9_.-`` as ``_``, at most 80)."""


@dataclass(frozen=True)
class FigureFile:
    """A figure (``fig`` of a plot function's ``(fig, ax)``) and its file: ``save(fig, path)`` writes it
    as ``figures/<name>`` and returns the path."""

    name: str
    fig: Any
    save: Callable[[Any, Path], Path]


def save_as_laid_out(fig, path: Path) -> Path:
    """Write ``fig`` as a 90-dpi PNG with the margins its plot function set."""
    fig.savefig(path, dpi=90)
    return path


class Section(Protocol):
    """One part of the report. ``compute`` reads the analysis (its inputs and the results of the
    sections computed before, :data:`analysis.report.COMPUTE_ORDER`) and may append one-line notes to
    ``analysis.notes``; the other methods read only the section's own result."""

    name: str

    def compute(self, analysis: Analysis) -> Any:
        """The section's result (no files written)."""

    def tables(self, result) -> dict[str, pd.DataFrame]:
        """``tables/<key>.csv`` of the result."""

    def figures(self, result) -> Iterator[FigureFile]:
        """The section's figures, one at a time (matplotlib imported only here)."""

    def markdown(self, result, figures: list[Path]) -> list[str]:
        """The section's lines of ``report.md``; ``figures``: the files :meth:`figures` wrote, in order."""
