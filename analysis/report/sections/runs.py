"""The runs: one row per results file (``tables/runs.csv``), the long table of every value
(``tables/long_table.csv``) and the pairs compared."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.loading import RunSet
from analysis.pairing import Pair
from analysis.report.text import md_table, num


@dataclass(frozen=True)
class Runs:
    runset: RunSet
    pairs: list[Pair]
    baseline: str | None
    """``--baseline`` as given."""


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


class RunsSection:
    name = "runs"

    def compute(self, analysis) -> Runs:
        return Runs(analysis.runset, analysis.deg.pairs, analysis.options.baseline)

    def tables(self, result: Runs) -> dict[str, pd.DataFrame]:
        return {"long_table": result.runset.long_table(), "runs": pd.DataFrame(run_rows(result.runset))}

    def figures(self, result: Runs):
        return iter(())

    def markdown(self, result: Runs, figures) -> list[str]:
        runset = result.runset
        out = ["## Runs", ""]
        rows = [[r["run_id"], r["model"], r["lm_eval_model"], r["label"], num(r["bits"]), num(r["effective_bits_per_weight"]),
                 "yes" if r["has_samples"] else "no", f"`{r['path']}`"] for r in run_rows(runset)]
        out += [md_table(["run", "model", "lm-eval model", "config", "bits", "eff. bits/weight", "samples", "file"], rows), ""]
        pairs = [[p.quant_id, p.base_id] for p in result.pairs]
        if pairs:
            out += ["Pairs compared (quantized → baseline):", "", md_table(["quantized", "baseline"], pairs), ""]
        if result.baseline and pairs:
            out += [f"`--baseline {runset.relative(str(result.baseline))}`: every other run is compared with `{result.pairs[0].base_id}`, "
                    "whatever its model or config.", ""]
        return out


SECTION = RunsSection()
