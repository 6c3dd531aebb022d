"""Standard benchmarks per language, paired against the baseline (data: :mod:`analysis.benchmark_loading`);
several tasks of one suite and language (global_mmlu subjects) are pooled item by item.

Per (quantized config, suite, language, metric, filter), on the items both runs scored (paired by
task + ``doc_id``, checked by lm-eval's ``doc_hash``):

* ``delta`` = mean(quant) − mean(base) with a paired bootstrap percentile CI: resample items with
  replacement, ``mean(quant[idx] − base[idx])``; seed ``[random_state, bootstrap_seed]``
  (``bootstrap_seed`` = CRC-32 of the config key, suite, language, metric and filter; in the table).
* 0/1 metrics: flips ``right_to_wrong`` (base 1, quant 0) and ``wrong_to_right``, and McNemar's exact
  test: two-sided binomial test of ``right_to_wrong`` among the discordant items at p = 1/2,
  ``p = min(1, 2 · P(X ≤ min(b, c)))``, X ~ Bin(b + c, 1/2); p = 1 without discordant items
  (:func:`analysis.stats.paired_comparison`, :func:`analysis.stats.mcnemar_exact`).

Without samples for both runs: point deltas from the aggregates (weighted by lm-eval's effective
sample counts when tasks are pooled) and a note.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import stats
from analysis.benchmark_loading import UNMAPPED, BenchmarkData, load_benchmarks
from analysis.loading import RunSet
from analysis.pairing import same_weights
from analysis.task_languages import UserRule

PRIMARY_METRICS = ("acc", "exact_match", "f1", "em", "acc_norm", "mcc")
FILTER_PREFERENCE = ("none", "flexible-extract", "strict-match")


@dataclass
class BenchmarkAnalysis:
    """table: every compared (config, suite, lang, metric, filter); primary: the headline metric
    of each suite; measures: long per-language table of every measure (D_L, Δ metric, ...) with
    ``damage`` oriented so that larger = worse; agreement: Spearman ρ of damage across languages
    between every two measures of one config."""

    data: BenchmarkData
    table: pd.DataFrame
    primary: pd.DataFrame
    measures: pd.DataFrame
    agreement: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    confidence: float = 0.95


def _latest_by_config_task(runset: RunSet, aggregates: pd.DataFrame, problems: list[str]) -> dict:
    """{(config_key, task): run_id} keeping the latest run when one config ran a task twice."""
    chosen: dict = {}
    for run_id, task in aggregates[["run_id", "task"]].drop_duplicates().itertuples(index=False):
        run = runset.runs[run_id]
        key = (run.config_key, task)
        if key in chosen:
            other = runset.runs[chosen[key]]
            newer, older = (run, other) if (run.date or 0.0, run.run_id) > (other.date or 0.0, other.run_id) else (other, run)
            problems.append(f"{task}: {older.run_id} and {newer.run_id} ran the same config; using {newer.run_id} (latest)")
            chosen[key] = newer.run_id
        else:
            chosen[key] = run_id
    return chosen


def _baseline_for(runset: RunSet, quant_id: str, task: str, chosen: dict, forced: str | None) -> str | None:
    """The baseline run for one quantized run's task: ``forced``, else a baseline of the same model
    and scoring (dtype, softmax dtype, add_bos_token, ...) that ran the task, preferring the same lm-eval
    model (qd-hf method=none for qd-hf), then the latest."""
    if forced is not None:
        return forced if any(run_id == forced for (_, t), run_id in chosen.items() if t == task) else None
    quant = runset.runs[quant_id]
    candidates = [runset.runs[run_id] for (_, t), run_id in chosen.items() if t == task]
    candidates = [run for run in candidates if run.is_baseline and run.model == quant.model and same_weights(run, quant)
                  and run.scoring_for("other") == quant.scoring_for("other")]
    if not candidates:
        return None
    return max(candidates, key=lambda run: (run.lm_eval_model == quant.lm_eval_model, run.date or 0.0, run.run_id)).run_id


def compare_benchmarks(runset: RunSet, data: BenchmarkData, baseline: str | None = None, n_resamples: int = 2000,
                       random_state: int = 0, confidence: float = 0.95) -> tuple[pd.DataFrame, list[str]]:
    """One row per (quantized config, suite, lang, metric, filter); see the module doc."""
    from analysis.pairing import resolve_baseline

    problems: list[str] = []
    agg = data.aggregates
    if agg.empty:
        return pd.DataFrame(), problems
    forced = resolve_baseline(runset, baseline).run_id if baseline else None
    chosen = _latest_by_config_task(runset, agg, problems)
    used = set(chosen.values())
    agg = agg[agg.run_id.isin(used)]
    items = {key: block for key, block in data.items[data.items.run_id.isin(used)].groupby(["run_id", "task", "metric", "filter"])}
    by_key = {(r.run_id, r.task, r.metric, r.filter): r for r in agg.itertuples(index=False)}
    groups: dict[tuple, list] = {}
    for row in agg.itertuples(index=False):
        run = runset.runs[row.run_id]
        if run.is_baseline or row.run_id == forced:
            continue
        base_id = _baseline_for(runset, row.run_id, row.task, chosen, forced)
        if base_id is None:
            problems.append(f"{row.run_id}: no baseline run of model {run.model} with the same scoring has {row.task}; left out — run it "
                            "with method=none (or --model hf, same dtype/add_bos_token) on the same task, or pass --baseline")
            continue
        base = by_key.get((base_id, row.task, row.metric, row.filter))
        if base is None:
            problems.append(f"{row.run_id}: baseline {base_id} has no {row.metric},{row.filter} for {row.task}; left out")
            continue
        groups.setdefault((run.config_key, row.suite, row.lang, row.metric, row.filter), []).append((row, base))
    rows = []
    for (config_key, suite, lang, metric, filt), members in sorted(groups.items(), key=lambda kv: kv[0][1:] + (kv[0][0],)):
        first_quant = runset.runs[members[0][0].run_id]
        seed = zlib.crc32(f"{config_key}|{suite}|{lang}|{metric},{filt}".encode())
        row = {
            "quant_id": ",".join(sorted({q.run_id for q, _ in members})),
            "base_id": ",".join(sorted({b.run_id for _, b in members})),
            "model": first_quant.model,
            "label": first_quant.label,
            "config_key": config_key,
            "effective_bits_per_weight": first_quant.effective_bits_per_weight,
            "suite": suite,
            "lang": lang,
            "tasks": ",".join(sorted(q.task for q, _ in members)),
            "metric": metric,
            "filter": filt,
            "higher_is_better": bool(members[0][0].higher_is_better),
            "bootstrap_seed": seed,
        }
        paired, note = _paired_items(members, items, problems)
        if paired is not None:
            row.update(stats.paired_comparison(paired[0], paired[1], n_resamples, [random_state, seed], confidence), paired=True, note=note)
        else:
            n = np.array([q.n for q, _ in members], dtype=float)
            weights = n if np.all(np.isfinite(n)) and n.sum() > 0 else np.ones(len(members))
            base_value = float(np.average([b.value for _, b in members], weights=weights))
            quant_value = float(np.average([q.value for q, _ in members], weights=weights))
            row.update(n_items=int(n.sum()) if np.all(np.isfinite(n)) else math.nan, base=base_value, quant=quant_value,
                       delta=quant_value - base_value, ci_low=math.nan, ci_high=math.nan, right_to_wrong=math.nan,
                       wrong_to_right=math.nan, mcnemar_p=math.nan, paired=False, note=note)
        rows.append(row)
    return pd.DataFrame(rows), problems


def _paired_items(members: list, items: dict, problems: list[str]):
    """((base values, quant values), note) over the items of every task of a group, or (None, note)
    when a task lacks samples on either side or its documents differ."""
    base_values, quant_values, notes = [], [], []
    for quant, base in members:
        q = items.get((quant.run_id, quant.task, quant.metric, quant.filter))
        b = items.get((base.run_id, base.task, base.metric, base.filter))
        if q is None or b is None:
            return None, "aggregates only: paired CI, McNemar and flips need --log_samples for both runs"
        merged = b.merge(q, on="doc_id", suffixes=("_b", "_q"))
        if (merged.doc_hash_b != merged.doc_hash_q).any():
            problems.append(f"{quant.task}: {quant.run_id} and {base.run_id} have different documents under the same doc_id; "
                            "point delta only — compare runs of the same task version")
            return None, "different documents under the same doc_id: point delta only"
        if len(merged) < max(len(b), len(q)):
            notes.append(f"{quant.task}: {len(merged)} of {len(b)}/{len(q)} items in common")
        for block, run_id, aggregate in ((b, base.run_id, base.value), (q, quant.run_id, quant.value)):
            mean = float(block.value.mean())
            if not math.isclose(mean, aggregate, rel_tol=1e-6, abs_tol=1e-9):
                problems.append(f"{quant.task} {quant.metric},{quant.filter}: samples of {run_id} average {mean:.6g} but its "
                                f"results say {aggregate:.6g} — stale or partial samples file?")
        base_values.append(merged.value_b.to_numpy(dtype=float))
        quant_values.append(merged.value_q.to_numpy(dtype=float))
    if notes:
        problems.extend(notes)
    base_all, quant_all = np.concatenate(base_values), np.concatenate(quant_values)
    if base_all.size == 0:
        return None, "no items in common: point delta only"
    return (base_all, quant_all), "; ".join(notes)


def primary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The headline metric of each (model, suite): the first of :data:`PRIMARY_METRICS` present (else
    the first alphabetically), with the preferred filter (:data:`FILTER_PREFERENCE`)."""
    if table.empty:
        return table
    keep = []
    for _, block in table.groupby(["model", "suite"], sort=True):
        metrics = sorted(set(block.metric), key=lambda m: (PRIMARY_METRICS.index(m) if m in PRIMARY_METRICS else len(PRIMARY_METRICS), m))
        chosen = block[block.metric == metrics[0]]
        filters = sorted(set(chosen["filter"]), key=lambda f: (FILTER_PREFERENCE.index(f) if f in FILTER_PREFERENCE else len(FILTER_PREFERENCE), f))
        keep.append(chosen[chosen["filter"] == filters[0]])
    return pd.concat(keep, ignore_index=True)


def measure_name(metric: str, filt: str, suite: str) -> str:
    return f"Δ{metric}{'' if filt == 'none' else f' ({filt})'} {suite}"


def language_measures(runset: RunSet, degradation_table: pd.DataFrame, primary: pd.DataFrame) -> pd.DataFrame:
    """Long table of every per-language measure of every config: model, config_key, label, lang,
    measure, value, ci_low, ci_high, damage (larger = worse: D_L itself; −Δ for higher-is-better metrics).

    Fidelity measures (KL per byte, ...) join through ``analyze_benchmarks(extra_measures=...)``.
    """
    rows = []
    for r in degradation_table.itertuples() if not degradation_table.empty else []:
        run = runset.runs[r.quant_id]
        rows.append((run.model, run.config_key, run.label, r.lang, f"D {r.suite}", r.degradation, r.ci_low, r.ci_high, r.degradation))
    for r in primary.itertuples() if not primary.empty else []:
        if r.lang == UNMAPPED:
            continue
        damage = -r.delta if r.higher_is_better else r.delta
        rows.append((r.model, r.config_key, r.label, r.lang, measure_name(r.metric, r.filter, r.suite), r.delta, r.ci_low, r.ci_high, damage))
    return pd.DataFrame(rows, columns=MEASURE_COLUMNS)


FIDELITY_MEASURES = {"kl_per_byte": ("KL/byte", 1.0), "same_top_token": ("same top token", -1.0)}
"""Fidelity columns shown side by side: name and damage sign (more KL = worse; less agreement = worse)."""


def fidelity_measures(runset: RunSet, fidelity_table: pd.DataFrame) -> pd.DataFrame:
    """Rows of :data:`MEASURE_COLUMNS` from :func:`analysis.fidelity.fidelity_table` (one per run, suite,
    language and :data:`FIDELITY_MEASURES` column)."""
    rows = []
    for r in fidelity_table.to_dict("records") if not fidelity_table.empty else []:
        run = runset.runs[r["quant_id"]]
        for column, (name, sign) in FIDELITY_MEASURES.items():
            if column in r:
                rows.append((run.model, run.config_key, run.label, r["lang"], f"{name} {r['suite']}", r[column],
                             r.get(f"{column}_ci_low", math.nan), r.get(f"{column}_ci_high", math.nan), sign * r[column]))
    return pd.DataFrame(rows, columns=MEASURE_COLUMNS)


def agreement(measures: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation across languages of the damage of every two measures of one
    config (n = languages with both; ρ > 0: the measures rank languages' damage alike)."""
    rows = []
    if measures.empty:
        return pd.DataFrame(rows)
    for (model, config_key), block in measures.groupby(["model", "config_key"], sort=True):
        wide = block.pivot_table(index="lang", columns="measure", values="damage", aggfunc="first")
        names = sorted(wide.columns)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                corr = stats.correlation(wide[first].to_numpy(dtype=float), wide[second].to_numpy(dtype=float))
                rows.append({"model": model, "config_key": config_key, "label": block.label.iloc[0], "measure_a": first,
                             "measure_b": second, "n": corr["n"], "spearman_rho": corr["spearman_rho"], "spearman_p": corr["spearman_p"]})
    return pd.DataFrame(rows)


MEASURE_COLUMNS = ["model", "config_key", "label", "lang", "measure", "value", "ci_low", "ci_high", "damage"]


def analyze_benchmarks(runset: RunSet, degradation_table: pd.DataFrame, baseline: str | None = None, n_resamples: int = 2000,
                       random_state: int = 0, confidence: float = 0.95, task_rules: list[UserRule] | tuple = (),
                       extra_measures: pd.DataFrame | None = None) -> BenchmarkAnalysis:
    """Load, pair and compare every benchmark task; join with the per-language degradation and
    ``extra_measures`` (rows with :data:`MEASURE_COLUMNS`, e.g. fidelity: measure "KL/byte <suite>",
    damage = KL) into the side-by-side table and the agreement."""
    data = load_benchmarks(runset, task_rules)
    table, problems = compare_benchmarks(runset, data, baseline, n_resamples, random_state, confidence)
    problems = list(dict.fromkeys(data.problems + problems))  # one line per (run, task), not per metric
    if data.unmapped:
        problems.append(f"tasks without a language: {', '.join(data.unmapped)} — reported as '{UNMAPPED}'; map them with "
                        "--task-lang-map FILE.json ({\"task\": \"sw\"}) or analysis.task_languages.register_task_language")
    primary = primary_rows(table)
    measures = language_measures(runset, degradation_table, primary)
    if extra_measures is not None and not extra_measures.empty:
        measures = pd.concat([measures, extra_measures[MEASURE_COLUMNS]], ignore_index=True)
    return BenchmarkAnalysis(data, table, primary, measures, agreement(measures), problems, confidence)
