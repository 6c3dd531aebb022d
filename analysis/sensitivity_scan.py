"""The layer × language sensitivity matrix: from runs whose quant config has a ``scan`` field
(``qd-scan``) or from a ``block,lang,degradation`` CSV."""

from __future__ import annotations

import re

import pandas as pd

from analysis.language_degradation import Degradation
from analysis.loading import RunSet

_SCAN_COLUMNS = ("block", "lang", "degradation")


def scan_matrix_from_runs(runset: RunSet, deg: Degradation) -> pd.DataFrame:
    """Long (block, lang, degradation) rows from runs whose quant config has a ``scan`` field
    (the label of the one block that run quantizes / keeps)."""
    if deg.table.empty:
        return pd.DataFrame(columns=_SCAN_COLUMNS)
    scan = deg.table.quant_id.map(lambda run_id: runset.runs[run_id].quant_config.get("scan"))
    picked = deg.table[scan.notna()].assign(block=scan[scan.notna()].astype(str))
    return picked[list(_SCAN_COLUMNS)].reset_index(drop=True)


def read_scan_csv(path: str) -> pd.DataFrame:
    """A ``block,lang,degradation`` CSV (one row per block and language)."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"scan_csv={path!r} could not be read ({err}); allowed: a CSV with columns block,lang,degradation") from err
    missing = set(_SCAN_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"scan_csv={path!r} lacks columns {sorted(missing)}; allowed: a CSV with columns block,lang,degradation")
    return table[list(_SCAN_COLUMNS)]


def scan_pivot(scan: pd.DataFrame) -> pd.DataFrame:
    """(n_blocks, n_langs) matrix of degradation, blocks in natural (numeric-aware) order."""
    pivot = scan.pivot_table(index="block", columns="lang", values="degradation", aggfunc="mean")
    order = sorted(pivot.index, key=lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))])
    return pivot.loc[order]
