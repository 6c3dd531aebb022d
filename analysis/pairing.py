"""Which runs are compared: duplicates, each quantized run paired with its baseline (same model,
weights and scoring, or one forced ``--baseline``), and the families of runs that differ only in bits.

Weights: a run is never paired with a baseline whose weight fingerprint
(:attr:`analysis.loading.Run.model_fingerprint`) differs; a pair where either run has none
(results of an older version, ``--model hf``) is paired by model name as before and flagged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from analysis.loading import AnalysisInputError, Run, RunSet


@dataclass(frozen=True)
class Pair:
    """A quantized run and the baseline it is compared with."""

    quant_id: str
    base_id: str


def deduplicate(runset: RunSet) -> tuple[list[str], list[str]]:
    """Run ids to use (the latest of each group of identical runs) and one line per duplicate."""
    by_key: dict[tuple, list[Run]] = {}
    tasks_of = runset.aggregates.groupby("run_id")["task"].agg(lambda tasks: tuple(sorted(set(tasks)))).to_dict()
    for run in runset.runs.values():
        by_key.setdefault((run.config_key, tasks_of.get(run.run_id, ())), []).append(run)
    kept, problems = [], []
    for group in by_key.values():
        group.sort(key=lambda run: (run.date or 0.0, run.run_id), reverse=True)
        kept.append(group[0].run_id)
        if len(group) > 1:
            others = ", ".join(run.run_id for run in group[1:])
            problems.append(
                f"duplicate runs (same model, quant config, scoring and tasks): using {group[0].run_id} (latest), ignoring {others} — remove the extra results files to silence this"
            )
    return sorted(kept), problems


def pair_runs(runset: RunSet, baseline: str | None = None) -> tuple[list[Pair], list[str]]:
    """Pair each quantized run with the baseline of the same model covering most of its tasks.

    ``baseline`` (a run id, results path or unique substring) forces one baseline for all:
    then every other run is paired with it, whatever its model or config.
    """
    kept, problems = deduplicate(runset)
    runs = [runset.runs[run_id] for run_id in kept]
    forced = resolve_baseline(runset, baseline) if baseline else None
    tasks = runset.aggregates.groupby("run_id")["task"].agg(set).to_dict()
    pairs = []
    for run in runs:
        if (run.is_baseline and forced is None) or (forced is not None and run.run_id == forced.run_id):
            continue
        if forced is not None:
            base = forced
            if base.rolling_scoring_key != run.rolling_scoring_key:
                raise AnalysisInputError(
                    f"baseline={base.run_id} is scored differently from {run.run_id} ({scoring_difference(base, run)}); "
                    "allowed: a baseline with the same scoring (e.g. --model hf with add_bos_token=False,softmax_dtype=float32)"
                )
            if base.model != run.model:
                problems.append(f"{run.run_id}: compared with --baseline {base.run_id} as asked, a different model ({base.model} vs {run.model})")
            elif not same_weights(base, run):
                problems.append(f"{run.run_id}: compared with --baseline {base.run_id} as asked, other weights of {run.model} (weight fingerprints differ)")
        else:
            named = [b for b in runs if b.is_baseline and b.model == run.model]
            same_model = [b for b in named if same_weights(b, run)]
            candidates = [b for b in same_model if b.rolling_scoring_key == run.rolling_scoring_key]
            if not candidates and len(same_model) < len(named):
                problems.append(f"{run.run_id} (model {run.model}): no baseline run of the same weights; left out of degradation tables — "
                                f"baselines {', '.join(b.run_id for b in named if b not in same_model)} have other weights (weight fingerprints differ); "
                                "evaluate the baseline of these weights")
                continue
            if not candidates:
                problems.append(
                    f"{run.run_id} (model {run.model}): no baseline run of the same model and scoring; left out of degradation tables — "
                    + (f"baselines {', '.join(b.run_id for b in same_model)} differ in scoring ({scoring_difference(same_model[0], run)}); "
                       "rerun one with the same dtype/add_bos_token/softmax_dtype/max_length/revision"
                       if same_model else "run it with method=none (or --model hf) or pass --baseline")
                )
                continue
            base = max(candidates, key=lambda b: (len(tasks.get(b.run_id, set()) & tasks.get(run.run_id, set())), b.date or 0.0))
        unchecked = [r.run_id for r in (run, base) if r.model_fingerprint is None]
        if unchecked and not (forced is not None and base.model != run.model):
            problems.append(f"{run.run_id} paired with {base.run_id} by model name only: {', '.join(unchecked)} records no weight fingerprint "
                            "(results of an older version or of --model hf); re-run with qd-hf to pair by weights")
        missing = tasks.get(run.run_id, set()) - tasks.get(base.run_id, set())
        if missing:
            problems.append(f"{run.run_id}: baseline {base.run_id} lacks tasks {sorted(missing)}; those are left out — evaluate the baseline on them")
        pairs.append(Pair(run.run_id, base.run_id))
    return pairs, problems


def same_weights(a: Run, b: Run) -> bool:
    """Equal weight fingerprints, or either run records none (paired by name, flagged)."""
    return a.model_fingerprint is None or b.model_fingerprint is None or a.model_fingerprint == b.model_fingerprint


def scoring_difference(a: Run, b: Run) -> str:
    """The scoring fields in which two runs differ, e.g. ``dtype bfloat16 vs float32``."""
    keys = sorted(set(a.scoring) | set(b.scoring))
    return "; ".join(f"{k} {a.scoring.get(k)} vs {b.scoring.get(k)}" for k in keys if a.scoring.get(k) != b.scoring.get(k) and k != "add_bos_token") or "none"


def resolve_baseline(runset: RunSet, baseline: str) -> Run:
    """The one run ``baseline`` names: a results file or a folder holding one, a run id, or a unique substring of a results path."""
    target = Path(baseline).resolve() if Path(baseline).exists() else None  # a results file or a folder holding one
    matches = [run for run in runset.runs.values() if run.path == target or target in run.path.parents] if target else [
        run for run in runset.runs.values() if baseline in (run.run_id, str(run.path)) or baseline in str(run.path)]
    if len(matches) != 1:
        allowed = ", ".join(sorted(runset.runs))
        raise AnalysisInputError(f"baseline={baseline!r} matches {len(matches)} runs; allowed: one of {allowed}")
    return matches[0]


def quant_config_family(run: Run) -> str:
    """The run's model + quant config without ``bits`` (runs of one family differ only in bits)."""
    config = {k: v for k, v in run.quant_config.items() if k != "bits"}
    return json.dumps({"model": run.model, "quant": config}, sort_keys=True, default=str)
