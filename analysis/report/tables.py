"""The report's tables: ``tables/long_table.csv``, ``runs.csv`` and one CSV per analysis table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.loading import RunSet

if TYPE_CHECKING:
    from analysis.report import Analysis


def write_tables(analysis: Analysis, folder: Path) -> None:
    """``folder/long_table.csv``, ``runs.csv`` and one CSV per table of ``analysis``."""
    long = analysis.runset.long_table()
    long.to_csv(folder / "long_table.csv", index=False)
    pd.DataFrame(run_rows(analysis.runset)).to_csv(folder / "runs.csv", index=False)
    named = {
        "degradation": analysis.deg.table,
        "doc_degradation": analysis.deg.docs,
        "disparity": analysis.disparity,
        "fertility": analysis.fertility,
        "parallel_view": analysis.parallel,
        "fidelity": analysis.fidelity,
        "correlations": analysis.correlations,
        "rate_distortion": analysis.rate_distortion,
        "weight_mse": analysis.weight_mse,
        "weight_mse_slopes": analysis.weight_mse_slopes,
        "pareto": analysis.pareto,
        "scan": analysis.scan,
    }
    for name, table in named.items():
        table.to_csv(folder / f"{name}.csv", index=False)


def run_rows(runset: RunSet) -> list[dict]:
    """One summary dict per run, sorted by run id."""
    n_tasks = runset.aggregates.groupby("run_id")["task"].nunique().to_dict()
    with_samples = set(runset.docs.run_id)
    return [
        {
            "run_id": run_id,
            "path": runset.relative(str(run.path)),
            "model": run.model,
            "lm_eval_model": run.lm_eval_model,
            "label": run.label,
            "bits": run.bits,
            "effective_bits_per_weight": run.effective_bits_per_weight,
            "n_tasks": int(n_tasks.get(run_id, 0)),
            "has_samples": run_id in with_samples,
            "quant_report": run.quant_report is not None,
        }
        for run_id, run in sorted(runset.runs.items())
    ]


