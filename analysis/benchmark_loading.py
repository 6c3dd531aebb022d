"""Standard benchmark results (multiple choice, generation) read from lm-eval's files.

Reads every numeric ``<metric>,<filter>`` result of a leaf task that is not a perplexity task
(acc, acc_norm, exact_match, f1, ...) and, with ``--log_samples``, the per-item values of the
samples files (``"acc": 1.0`` per ``doc_id`` and filter). Tasks are mapped to (suite, language)
by :mod:`analysis.task_languages` (``unmapped`` when no rule knows them).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.loading import AGGREGATE_METRICS, RunSet, checked_results, samples_path
from analysis.task_languages import UserRule, task_language
from qd_models.run_record import leaf_tasks

EXCLUDED_METRICS = frozenset(AGGREGATE_METRICS) | {"perplexity"}
"""Perplexity-style metrics: analysed by the degradation tables, not here."""
UNMAPPED = "unmapped"

_AGG_COLUMNS = ["run_id", "task", "suite", "lang", "metric", "filter", "value", "n", "higher_is_better"]
_ITEM_COLUMNS = ["run_id", "task", "metric", "filter", "doc_id", "doc_hash", "value"]


@dataclass
class BenchmarkData:
    """aggregates: one row per (run_id, task, metric, filter) with suite, lang, value, n (effective
    items), higher_is_better. items: one row per (run_id, task, metric, filter, doc_id) with the
    per-item value and doc_hash. unmapped: task names without a language."""

    aggregates: pd.DataFrame
    items: pd.DataFrame
    unmapped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _number(value) -> float | None:
    """A JSON metric value as float; None for strings ("N/A"), lists (corpus-level metrics), None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def load_benchmarks(runset: RunSet, task_rules: list[UserRule] | tuple = ()) -> BenchmarkData:
    """Benchmark aggregates and per-item values of every run in ``runset`` (re-reads its files)."""
    aggregates, items, problems, unmapped = [], [], [], set()
    for run in runset.runs.values():
        try:
            results = checked_results(run.path, json.loads(run.path.read_text(encoding="utf-8")), [])
        except (OSError, ValueError):
            continue  # already reported by load_runs
        if results is None:
            continue  # already reported by load_runs
        higher = results.get("higher_is_better") or {}
        n_samples = results.get("n-samples") or {}
        for task in leaf_tasks(results):
            values = results["results"].get(task) or {}
            if any(f"{metric},none" in values for metric in AGGREGATE_METRICS):
                continue  # a perplexity task
            keys = {}
            for key, value in values.items():
                metric, _, filt = key.partition(",")
                if not filt or metric.endswith("_stderr") or metric in EXCLUDED_METRICS:
                    continue
                number = _number(value)
                if number is None:
                    continue
                if not math.isfinite(number):
                    problems.append(f"{run.path}: {task} {key} = {number} (non-finite; kept and flagged)")
                keys[(metric, filt)] = number
            if not keys:
                continue
            mapped = task_language(task, task_rules)
            if mapped is None:
                unmapped.add(task)
                mapped = (task, UNMAPPED)
            n = (n_samples.get(task) or {}).get("effective", math.nan)
            for (metric, filt), number in keys.items():
                hib = (higher.get(task) or {}).get(metric, True)
                aggregates.append((run.run_id, task, *mapped, metric, filt, number, float(n), bool(hib)))
            samples = samples_path(run.path, task)
            if samples.is_file():
                items.extend(_item_rows(run.run_id, task, samples, keys, problems))
    return BenchmarkData(
        aggregates=pd.DataFrame(aggregates, columns=_AGG_COLUMNS),
        items=pd.DataFrame(items, columns=_ITEM_COLUMNS),
        unmapped=sorted(unmapped),
        problems=problems,
    )


def _doc_hash(sample: dict) -> str:
    """lm-eval's ``doc_hash`` (sha256 of the document JSON), or our own when the file has none."""
    if isinstance(sample.get("doc_hash"), str):
        return sample["doc_hash"]
    return hashlib.sha256(json.dumps(sample.get("doc"), sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


def _item_rows(run_id: str, task: str, path: Path, keys: dict, problems: list[str]) -> list[tuple]:
    rows, not_per_item = [], set()
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            sample = json.loads(line)
            filt = str(sample.get("filter", "none"))
            doc_id, doc_hash = str(sample["doc_id"]), _doc_hash(sample)
            for metric, key_filter in keys:
                if key_filter != filt or metric not in sample:
                    continue
                value = _number(sample[metric])
                if value is None:
                    not_per_item.add(metric)
                    continue
                rows.append((run_id, task, metric, filt, doc_id, doc_hash, value))
    except (OSError, ValueError, KeyError, TypeError) as err:
        problems.append(f"{path}: unreadable samples ({err!r}); {task} uses aggregates only (no paired statistics)")
        return []
    for metric in sorted(not_per_item):
        problems.append(f"{path}: {metric} has no per-item number (corpus-level metric); point deltas only")
    return [row for row in rows if row[2] not in not_per_item]
