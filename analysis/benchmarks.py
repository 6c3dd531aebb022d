"""Standard benchmarks (multiple choice, generation) per language, paired against the baseline.

Reads every numeric ``<metric>,<filter>`` result of a leaf task that is not a perplexity task
(acc, acc_norm, exact_match, f1, ...) and, with ``--log_samples``, the per-item values of the
samples files (``"acc": 1.0`` per ``doc_id`` and filter). Tasks are mapped to (suite, language)
by :mod:`analysis.task_languages`; several tasks of one suite and language (global_mmlu subjects)
are pooled item by item.

Per (quantized config, suite, language, metric, filter), on the items both runs scored (paired by
task + ``doc_id``, checked by lm-eval's ``doc_hash``):

* ``delta`` = mean(quant) − mean(base) with a paired bootstrap percentile CI: resample items with
  replacement, ``mean(quant[idx] − base[idx])``; seed ``[random_state, bootstrap_seed]``
  (``bootstrap_seed`` = CRC-32 of the config key, suite, language, metric and filter; in the table).
* 0/1 metrics: flips ``right_to_wrong`` (base 1, quant 0) and ``wrong_to_right``, and McNemar's exact
  test: two-sided binomial test of ``right_to_wrong`` among the discordant items at p = 1/2,
  ``p = min(1, 2 · P(X ≤ min(b, c)))``, X ~ Bin(b + c, 1/2); p = 1 without discordant items.

Without samples for both runs: point deltas from the aggregates (weighted by lm-eval's effective
sample counts when tasks are pooled) and a note.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import stats
from analysis.loading import _RESULTS_RE, AGGREGATE_METRICS, RunSet, checked_results
from analysis.pairing import same_weights
from analysis.task_languages import UserRule, task_language
from qd_models.run_record import leaf_tasks

EXCLUDED_METRICS = frozenset(AGGREGATE_METRICS) | {"perplexity"}
"""Perplexity-style metrics: analysed by the degradation tables, not here."""
PRIMARY_METRICS = ("acc", "exact_match", "f1", "em", "acc_norm", "mcc")
FILTER_PREFERENCE = ("none", "flexible-extract", "strict-match")
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
        stamp = _RESULTS_RE.match(run.path.name).group("stamp")
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
            samples = run.path.with_name(f"samples_{task}_{stamp}.jsonl")
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


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p: ``min(1, 2 · P(X ≤ min(b, c)))``, X ~ Bin(b + c, 1/2), by exact
    integer sums; 1.0 when there is no discordant pair."""
    b, c = int(right_to_wrong), int(wrong_to_right)
    if b < 0 or c < 0:
        raise ValueError(f"flip counts must be >= 0, got {b} and {c}")
    n, k = b + c, min(b, c)
    if n == 0 or 2 * k == n:
        return 1.0
    term, tail = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / (1 << n))


def paired_comparison(base, quant, n_resamples: int, rng: np.random.Generator, confidence: float = 0.95) -> dict:
    """Paired statistics of per-item values. base, quant: (n_items,) in the same item order.

    Returns n_items, base, quant, delta (mean difference) with a paired bootstrap percentile
    interval (ci_low, ci_high; draws ``mean(d[idx])`` with idx ~ rng.integers(0, n, (n_resamples, n))),
    and for 0/1 values right_to_wrong, wrong_to_right and mcnemar_p (NaN otherwise).
    """
    base, quant = np.asarray(base, dtype=float), np.asarray(quant, dtype=float)
    if base.shape != quant.shape or base.ndim != 1 or base.size == 0:
        raise ValueError(f"base/quant must be equal-length non-empty 1-D arrays; got {base.shape} and {quant.shape}")
    diff = quant - base
    idx = rng.integers(0, diff.size, (n_resamples, diff.size))
    interval = stats.percentile_interval(float(diff.mean()), diff[idx].mean(axis=-1), confidence)
    out = {"n_items": int(base.size), "base": float(base.mean()), "quant": float(quant.mean()), "delta": interval.estimate,
           "ci_low": interval.low, "ci_high": interval.high, "right_to_wrong": math.nan, "wrong_to_right": math.nan,
           "mcnemar_p": math.nan}
    if np.isin(base, (0.0, 1.0)).all() and np.isin(quant, (0.0, 1.0)).all():
        b, c = int(np.sum((base == 1) & (quant == 0))), int(np.sum((base == 0) & (quant == 1)))
        out.update(right_to_wrong=b, wrong_to_right=c, mcnemar_p=mcnemar_exact(b, c))
    return out


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
            rng = np.random.default_rng([random_state, seed])
            row.update(paired_comparison(paired[0], paired[1], n_resamples, rng, confidence), paired=True, note=note)
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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:100]


def figure_name(suite: str, metric: str, labels: list[str], model: str | None = None) -> str:
    """``benchmark_<suite>_<metric>_<config labels>.png`` (``<n>-configs`` beyond three; model first when several)."""
    configs = "+".join(labels) if len(labels) <= 3 else f"{len(labels)}-configs"
    return _slug("_".join(part for part in ("benchmark", model, suite, metric, configs) if part)) + ".png"


def write_outputs(bench: BenchmarkAnalysis, out: Path) -> list[Path]:
    """Write ``tables/benchmarks*.csv`` and one summary figure per (model, suite); return the figures."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    bench.table.to_csv(out / "tables" / "benchmarks.csv", index=False)
    bench.measures.to_csv(out / "tables" / "language_measures.csv", index=False)
    bench.agreement.to_csv(out / "tables" / "measure_agreement.csv", index=False)
    if bench.primary.empty:
        return []
    from analysis import benchmark_plots

    figures = []
    several_models = bench.primary.model.nunique() > 1
    for (model, suite), block in bench.primary.groupby(["model", "suite"], sort=True):
        metric, filt = block.metric.iloc[0], block["filter"].iloc[0]
        labels = list(dict.fromkeys(block.sort_values("effective_bits_per_weight", na_position="last").label))
        title = (f"{suite}: {metric}{'' if filt == 'none' else f' ({filt})'}, quantized − baseline per language"
                 f"{f' — {Path(model).name}' if several_models else ''}")
        fig, _ = benchmark_plots.benchmark_summary(block, title, confidence=bench.confidence)
        path = out / "figures" / figure_name(suite, metric, labels, Path(model).name if several_models else None)
        figures.append(benchmark_plots.save(fig, path))
    return figures


def _fmt_pp(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:+.1f}"


def _fmt_share(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _fmt_int(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else str(int(value))


def markdown_section(bench: BenchmarkAnalysis | None, figures: list[Path], md_table) -> list[str]:
    """Report lines: per-language benchmark deltas, then every measure side by side and their agreement."""
    level = f"{bench.confidence:.0%}" if bench else "95%"
    out = ["## Standard benchmarks (multiple choice, generation)", ""]
    if bench is None or bench.data.aggregates.empty:
        return out + ["No multiple-choice or generation task results in the inputs.", ""]
    if bench.table.empty:
        return out + ["Benchmark results found, but no quantized run could be paired with a baseline on the same task (see problems).", ""]
    out += [(f"Per language, quantized − baseline on the same items (paired by task + doc_id, checked by doc_hash). Δ in percentage "
             f"points with a {level} paired bootstrap CI (items resampled); right→wrong / wrong→right: items the quantized model "
             "gets wrong that the baseline got right, and the reverse; McNemar: exact two-sided binomial test on those discordant "
             "items. Languages ordered by baseline score. Headline metric per suite below; every metric is in tables/benchmarks.csv."), ""]
    for (label, suite), block in bench.primary.groupby(["label", "suite"], sort=True):
        metric, filt = block.metric.iloc[0], block["filter"].iloc[0]
        out += [f"### {label} — {suite} — {metric}{'' if filt == 'none' else f' ({filt})'}", ""]
        rows = []
        for r in block.sort_values(["base", "lang"], ascending=[False, True]).itertuples():
            ci = f" [{_fmt_pp(r.ci_low)}, {_fmt_pp(r.ci_high)}]" if math.isfinite(r.ci_low) else ""
            p = "n/a" if not math.isfinite(r.mcnemar_p) else f"{r.mcnemar_p:.3g}"
            rows.append([r.lang, _fmt_int(r.n_items), _fmt_share(r.base), _fmt_share(r.quant), _fmt_pp(r.delta) + ci, p,
                         _fmt_int(r.right_to_wrong), _fmt_int(r.wrong_to_right), r.note or ""])
        out += [md_table(["lang", "items", "baseline", "quantized", f"Δ pp [{level} CI]", "McNemar p", "right→wrong", "wrong→right",
                          "note"], rows), ""]
    out += [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]

    out += ["## Perplexity, fidelity and benchmarks side by side", ""]
    measures = bench.measures
    if measures.empty or measures.measure.nunique() < 1:
        return out + ["No per-language measure to compare.", ""]
    out += [("Per config and language: D (relative increase of bits/byte, perplexity tasks), fidelity measures when present, "
             "and the benchmark deltas (percentage points) of the same config. Agreement: Spearman ρ across languages between the "
             "damage of two measures (D; −Δ for higher-is-better metrics), so ρ > 0 means they rank the languages' damage alike; "
             "n = languages with both (p-values indicative at small n)."), ""]
    for (_, label), block in measures.groupby(["config_key", "label"], sort=True):
        names = sorted(set(block.measure), key=lambda m: (not m.startswith("D "), m))
        wide = {(r.lang, r.measure): r for r in block.itertuples()}
        rows = []
        for lang in sorted(set(block.lang)):
            cells = [lang]
            for name in names:
                r = wide.get((lang, name))
                if r is None:
                    cells.append("—")
                elif name.startswith("D "):
                    cells.append("n/a" if not math.isfinite(r.value) else f"{100 * r.value:+.1f}%")
                elif name.startswith("Δ"):
                    cells.append(_fmt_pp(r.value) + (f" [{_fmt_pp(r.ci_low)}, {_fmt_pp(r.ci_high)}]" if math.isfinite(r.ci_low) else ""))
                else:  # fidelity and other measures, in their own unit
                    cells.append("n/a" if not math.isfinite(r.value) else f"{r.value:.4g}")
            rows.append(cells)
        out += [f"### {label}", "", md_table(["lang", *[n + " (pp)" if n.startswith("Δ") else n for n in names]], rows), ""]
    if not bench.agreement.empty:
        rows = [[r.label, r.measure_a, r.measure_b, r.n, "n/a" if not math.isfinite(r.spearman_rho) else f"{r.spearman_rho:+.2f}",
                 "n/a" if not math.isfinite(r.spearman_p) else f"{r.spearman_p:.3g}"] for r in bench.agreement.itertuples()]
        out += ["Agreement across languages (Spearman ρ of damage; n/a below 3 languages or without variation):", "",
                md_table(["config", "measure A", "measure B", "n", "Spearman ρ", "p"], rows), ""]
    return out
