"""Pair quantized runs with baselines, and compute per-language degradation and disparity.

Degradation of language L: ``D = NLL_quant / NLL_base - 1`` summed over L's documents,
which equals ``bpb_quant / bpb_base - 1`` because both runs score the same bytes.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import stats
from analysis.loading import AnalysisInputError, Run, RunSet

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Pair:
    """A quantized run and the baseline it is compared with."""

    quant_id: str
    base_id: str


@dataclass
class Degradation:
    """Per-language degradation of every paired run.

    table: one row per (quant_id, suite, lang) — bpb_base, bpb_quant, delta_bpb,
        degradation (relative NLL increase) with studentized-bootstrap ci_low/ci_high, byte_ppl_rel_change
        (the seeds' style), n_docs, ci_source, flag.
    docs: one row per paired document — nll_base, nll_quant, doc_degradation.
    draws: {(quant_id, suite, lang): (n_resamples,) bootstrap draws of the degradation}.
    """

    table: pd.DataFrame
    docs: pd.DataFrame
    draws: dict
    pairs: list[Pair]
    problems: list[str] = field(default_factory=list)
    confidence: float = 0.95


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
    forced = _resolve_baseline(runset, baseline) if baseline else None
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
        else:
            same_model = [b for b in runs if b.is_baseline and b.model == run.model]
            candidates = [b for b in same_model if b.rolling_scoring_key == run.rolling_scoring_key]
            if not candidates:
                problems.append(
                    f"{run.run_id} (model {run.model}): no baseline run of the same model and scoring; left out of degradation tables — "
                    + (f"baselines {', '.join(b.run_id for b in same_model)} differ in scoring ({scoring_difference(same_model[0], run)}); "
                       "rerun one with the same dtype/add_bos_token/softmax_dtype/max_length/revision"
                       if same_model else "run it with method=none (or --model hf) or pass --baseline")
                )
                continue
            base = max(candidates, key=lambda b: (len(tasks.get(b.run_id, set()) & tasks.get(run.run_id, set())), b.date or 0.0))
        missing = tasks.get(run.run_id, set()) - tasks.get(base.run_id, set())
        if missing:
            problems.append(f"{run.run_id}: baseline {base.run_id} lacks tasks {sorted(missing)}; those are left out — evaluate the baseline on them")
        pairs.append(Pair(run.run_id, base.run_id))
    return pairs, problems


def scoring_difference(a: Run, b: Run) -> str:
    """The scoring fields in which two runs differ, e.g. ``dtype bfloat16 vs float32``."""
    keys = sorted(set(a.scoring) | set(b.scoring))
    return "; ".join(f"{k} {a.scoring.get(k)} vs {b.scoring.get(k)}" for k in keys if a.scoring.get(k) != b.scoring.get(k) and k != "add_bos_token") or "none"


def _resolve_baseline(runset: RunSet, baseline: str) -> Run:
    target = Path(baseline).resolve() if Path(baseline).exists() else None  # a results file or a folder holding one
    matches = [run for run in runset.runs.values() if run.path == target or target in run.path.parents] if target else [
        run for run in runset.runs.values() if baseline in (run.run_id, str(run.path)) or baseline in str(run.path)]
    if len(matches) != 1:
        allowed = ", ".join(sorted(runset.runs))
        raise AnalysisInputError(f"baseline={baseline!r} matches {len(matches)} runs; allowed: one of {allowed}")
    return matches[0]


def degradation(
    runset: RunSet,
    baseline: str | None = None,
    n_resamples: int = 2000,
    random_state: int = 0,
    confidence: float = 0.95,
) -> Degradation:
    """Per-language degradation of every quantized run against its baseline, with paired
    document-bootstrap (studentized) CIs when both runs have samples (``--log_samples``)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples} is not allowed; allowed: an integer >= 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} is not allowed; allowed: a number in (0, 1)")
    pairs, problems = pair_runs(runset, baseline)
    problems = list(runset.problems) + problems
    rows, doc_frames, draws = [], [], {}
    aggregates: dict[tuple, dict] = {}
    for run_id, suite, lang, metric, value in runset.aggregates[["run_id", "suite", "lang", "metric", "value"]].itertuples(index=False):
        aggregates.setdefault((run_id, suite, lang), {}).setdefault(metric, value)
    languages_of: dict[str, list] = {}
    for run_id, suite, lang in aggregates:
        languages_of.setdefault(run_id, []).append((suite, lang))
    docs = _docs_by_language(runset.docs)
    for pair in pairs:
        quant, base = runset.runs[pair.quant_id], runset.runs[pair.base_id]
        for suite, lang in languages_of.get(quant.run_id, []):
            agg_q, agg_b = aggregates[(quant.run_id, suite, lang)], aggregates.get((base.run_id, suite, lang))
            if agg_b is None:
                continue
            docs_q, docs_b = docs.get((quant.run_id, suite, lang)), docs.get((base.run_id, suite, lang))
            paired = _paired_docs(docs_q, docs_b, f"{quant.run_id} vs {base.run_id} {suite}/{lang}", problems)
            row = {
                "quant_id": quant.run_id,
                "base_id": base.run_id,
                "model": quant.model,
                "method": quant.method,
                "label": quant.label,
                "bits": quant.bits,
                "effective_bits_per_weight": quant.effective_bits_per_weight,
                "suite": suite,
                "lang": lang,
            }
            if paired is not None:
                doc_ids, nll_q, nll_b, n_bytes = paired
                bpb_b, bpb_q = nll_b.sum() / n_bytes.sum() / LN2, nll_q.sum() / n_bytes.sum() / LN2
                rng = np.random.default_rng([random_state, zlib.crc32(f"{quant.run_id}|{suite}|{lang}".encode())])
                lang_draws, draw_se = stats.bootstrap_degradation_draws(nll_q, nll_b, n_resamples, rng, with_se=True)
                draws[(quant.run_id, suite, lang)] = lang_draws
                estimate = float(stats.relative_increase(nll_q.sum(), nll_b.sum()))
                se = float(stats.ratio_standard_error(nll_q, nll_b))
                interval = stats.studentized_interval(estimate, se, lang_draws, draw_se, confidence)
                ci_source = f"studentized paired bootstrap, {len(doc_ids)} docs"
                doc_frames.append((quant.run_id, suite, lang, doc_ids, nll_b, nll_q))
                n_docs = len(doc_ids)
            else:
                bpb_b, bpb_q = agg_b.get("bits_per_byte", math.nan), agg_q.get("bits_per_byte", math.nan)
                estimate = float(stats.relative_increase(bpb_q, bpb_b))
                interval = stats.Interval(estimate, math.nan, math.nan)
                without = [name for name, d in (("quantized run", docs_q), ("baseline", docs_b)) if not d]
                ci_source = (f"aggregates only: no samples in the {' and '.join(without)} (CIs need --log_samples)" if without
                             else "aggregates only: documents could not be paired (see problems)")
                n_docs = 0
            row.update(
                n_docs=n_docs,
                bpb_base=bpb_b,
                bpb_quant=bpb_q,
                delta_bpb=bpb_q - bpb_b,
                degradation=interval.estimate,
                ci_low=interval.low,
                ci_high=interval.high,
                byte_ppl_rel_change=_byte_ppl_rel_change(bpb_q - bpb_b),
                ci_source=ci_source,
                flag=_flag(bpb_b, bpb_q),
            )
            rows.append(row)
    table = pd.DataFrame(rows)
    docs = _docs_frame(doc_frames)
    for row in rows:
        if row["flag"]:
            problems.append(f"{row['quant_id']} {row['suite']}/{row['lang']}: {row['flag']} (kept and flagged)")
    return Degradation(table=table, docs=docs, draws=draws, pairs=pairs, problems=problems, confidence=confidence)


def _docs_frame(blocks: list[tuple]) -> pd.DataFrame:
    """One row per paired document from (quant_id, suite, lang, doc_ids, nll_base, nll_quant) blocks."""
    sizes = [len(block[3]) for block in blocks]
    nll_base = np.concatenate([block[4] for block in blocks]) if blocks else np.array([])
    nll_quant = np.concatenate([block[5] for block in blocks]) if blocks else np.array([])
    return pd.DataFrame(
        {
            "quant_id": np.repeat([block[0] for block in blocks], sizes).astype(object),
            "suite": np.repeat([block[1] for block in blocks], sizes).astype(object),
            "lang": np.repeat([block[2] for block in blocks], sizes).astype(object),
            "doc_id": np.concatenate([block[3] for block in blocks]).astype(object) if blocks else np.array([], dtype=object),
            "nll_base": nll_base,
            "nll_quant": nll_quant,
            "doc_degradation": stats.relative_increase(nll_quant, nll_base),
        }
    )


def _byte_ppl_rel_change(delta_bpb: float) -> float:
    """Relative byte-perplexity change 2**Δbpb − 1 (seeds' definition); overflow gives inf."""
    if not math.isfinite(delta_bpb):
        return delta_bpb
    return math.inf if delta_bpb > 1000 else 2.0**delta_bpb - 1.0


def _flag(bpb_base: float, bpb_quant: float) -> str:
    if not (math.isfinite(bpb_base) and math.isfinite(bpb_quant)):
        return "non-finite bits/byte (degenerate run)"
    if bpb_base <= 0:
        return "baseline bits/byte <= 0: relative degradation undefined"
    return ""


def _docs_by_language(docs: pd.DataFrame) -> dict:
    """{(run_id, suite, lang): {doc_id: (loglikelihood, n_bytes, text_hash)}} from the docs table."""
    out: dict = {}
    for row in docs[["run_id", "suite", "lang", "doc_id", "loglikelihood", "n_bytes", "text_hash"]].itertuples(index=False):
        out.setdefault((row.run_id, row.suite, row.lang), {})[row.doc_id] = (row.loglikelihood, row.n_bytes, row.text_hash)
    return out


def _paired_docs(quant: dict | None, base: dict | None, where: str, problems: list[str]):
    """(doc_ids, nll_quant, nll_base, n_bytes) over the documents both runs scored — each
    (n_common,) — or None when either run lacks samples (then aggregates are used)."""
    if not quant or not base:
        return None
    common = [doc_id for doc_id in base if doc_id in quant]
    if any(quant[doc_id][2] != base[doc_id][2] for doc_id in common):
        problems.append(f"{where}: same doc_id, different text; using aggregates only — compare runs of the same task version")
        return None
    if len(common) < max(len(quant), len(base)):
        problems.append(f"{where}: only {len(common)} of {len(quant)}/{len(base)} docs in common; degradation uses the common docs")
    if not common:
        return None
    nll_q = -np.array([quant[doc_id][0] for doc_id in common])
    nll_b = -np.array([base[doc_id][0] for doc_id in common])
    n_bytes = np.array([base[doc_id][1] for doc_id in common], dtype=float)
    return np.array(common), nll_q, nll_b, n_bytes


def disparity(deg: Degradation, groups: dict[str, str], min_denominator: float = 0.01, random_state: int = 0,
              max_exact: int = 20000) -> pd.DataFrame:
    """Disparity between low- and high-resource languages for each (quant run, suite); the
    unit of every group statistic is the language.

    groups: {lang: "high"|"low"}. D_HR, D_LR are the unweighted means of per-language
    degradation. The ratio D_LR/D_HR is NaN (with a note) when D_HR <= 0 or D_LR <= 0 and
    flagged unstable when D_HR < ``min_denominator``; max/min gets the same guard, and is also
    unstable when the smallest D_L's CI includes 0. CIs of the difference and ratio: hierarchical
    bootstrap (languages resampled within each group, then documents within language).
    perm_p: label-permutation test of D_LR − D_HR over languages (exact when at most ``max_exact``
    relabellings, else seeded Monte Carlo). loo_*: D_LR − D_HR with each language left out;
    loo_flips lists the languages whose removal flips (or zeroes) its sign.
    """
    if min_denominator <= 0:
        raise ValueError(f"min_denominator={min_denominator} is not allowed; allowed: a number > 0")
    rows = []
    if deg.table.empty:
        return pd.DataFrame(rows)
    blocks: dict[tuple, dict] = {}
    for record in deg.table.to_dict("records"):
        blocks.setdefault((record["quant_id"], record["suite"]), {})[record["lang"]] = record
    for (quant_id, suite), by_lang in sorted(blocks.items()):
        first = next(iter(by_lang.values()))
        hr = [lang for lang in by_lang if groups.get(lang) == "high"]
        lr = [lang for lang in by_lang if groups.get(lang) == "low"]
        valid = {lang: r["degradation"] for lang, r in by_lang.items() if not math.isnan(r["degradation"])}
        worst, best = (max(valid, key=valid.get), min(valid, key=valid.get)) if valid else ("", "")
        row = {
            "quant_id": quant_id,
            "suite": suite,
            "model": first["model"],
            "label": first["label"],
            "bits": first["bits"],
            "effective_bits_per_weight": first["effective_bits_per_weight"],
            "hr_langs": ",".join(hr),
            "lr_langs": ",".join(lr),
            "n_langs_HR": len(hr),
            "n_langs_LR": len(lr),
            "worst_lang": worst,
            "worst_degradation": valid.get(worst, math.nan),
            "best_lang": best,
            "best_degradation": valid.get(best, math.nan),
        }
        row["max_over_min"], row["max_over_min_note"] = _max_over_min(row["worst_degradation"], by_lang.get(best), min_denominator)
        d_hr = _mean([by_lang[lang]["degradation"] for lang in hr])
        d_lr = _mean([by_lang[lang]["degradation"] for lang in lr])
        row.update(
            D_HR=d_hr,
            D_LR=d_lr,
            delta_bpb_HR=_mean([by_lang[lang]["delta_bpb"] for lang in hr]),
            delta_bpb_LR=_mean([by_lang[lang]["delta_bpb"] for lang in lr]),
            difference=d_lr - d_hr,
        )
        row["ratio"], row["ratio_note"] = _ratio(d_lr, d_hr, min_denominator)
        row.update(_group_intervals(deg, quant_id, suite, hr, lr, random_state))
        values = {lang: by_lang[lang]["degradation"] for lang in hr + lr}
        perm = stats.permutation_test(list(values.values()), [groups[lang] == "low" for lang in values], max_exact=max_exact,
                                      random_state=random_state)
        row.update(perm_p=perm["p"], perm_n_splits=perm["n_splits"], perm_method=perm["method"])
        row.update(_leave_one_out(values, hr, lr, row["difference"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _max_over_min(worst: float, best: dict | None, min_denominator: float) -> tuple[float, str]:
    """max D_L / min D_L with the ratio's guard: undefined if min <= 0, unstable if min is small or its CI includes 0."""
    smallest = math.nan if best is None else best["degradation"]
    if not (math.isfinite(worst) and math.isfinite(smallest)):
        return math.nan, "undefined: a degradation is missing or non-finite"
    if smallest <= 0:
        return math.nan, "max/min undefined: smallest degradation <= 0"
    if smallest < min_denominator:
        return worst / smallest, f"max/min unstable: min D_L = {smallest:.4g} < {min_denominator:g}"
    if best["ci_low"] <= 0:
        return worst / smallest, f"max/min unstable: CI of min D_L ({best['lang']}) includes 0"
    return worst / smallest, ""


def _leave_one_out(values: dict[str, float], hr: list[str], lr: list[str], difference: float) -> dict:
    """D_LR − D_HR with each language left out (groups must keep >= 1 language)."""
    parts, flips = [], []
    for lang in hr + lr:
        rest_hr, rest_lr = [x for x in hr if x != lang], [x for x in lr if x != lang]
        if not rest_hr or not rest_lr:
            continue
        without = _mean([values[x] for x in rest_lr]) - _mean([values[x] for x in rest_hr])
        parts.append(f"{lang}:{100 * without:+.2f}%")
        if math.isfinite(difference) and math.isfinite(without) and without * difference <= 0:
            flips.append(lang)
    survives = bool(parts) and not flips and math.isfinite(difference) and difference != 0
    return {"loo_differences": "; ".join(parts), "loo_flips": ",".join(flips), "loo_sign_survives": survives if parts else math.nan}


def _mean(values: list[float]) -> float:
    """Mean of a list (NaN propagates); NaN for an empty list."""
    return float(np.mean(values)) if values else math.nan


def _ratio(d_lr: float, d_hr: float, min_denominator: float) -> tuple[float, str]:
    if not (math.isfinite(d_lr) and math.isfinite(d_hr)):
        return math.nan, "undefined: a group degradation is missing or non-finite"
    if d_hr <= 0:
        return math.nan, f"undefined: D_HR = {d_hr:.4g} <= 0 (see the difference instead)"
    if d_lr <= 0:  # LR improved or unchanged: a ratio would read as a negative or zero "disparity"
        return math.nan, f"undefined: D_LR = {d_lr:.4g} <= 0 (see the difference instead)"
    note = f"unstable: D_HR = {d_hr:.4g} < {min_denominator:g}" if d_hr < min_denominator else ""
    return d_lr / d_hr, note


def _group_intervals(deg: Degradation, quant_id: str, suite: str, hr: list[str], lr: list[str], random_state: int) -> dict:
    """Hierarchical-bootstrap percentile CIs of D_LR − D_HR and D_LR / D_HR (see :func:`stats.hierarchical_draws`)."""
    keys_hr = [(quant_id, suite, lang) for lang in hr]
    keys_lr = [(quant_id, suite, lang) for lang in lr]
    out = {"difference_ci_low": math.nan, "difference_ci_high": math.nan, "ratio_ci_low": math.nan, "ratio_ci_high": math.nan}
    if not hr or not lr or not all(key in deg.draws for key in keys_hr + keys_lr):
        out["ci_note"] = "no CIs: needs --log_samples for every language of both groups"
        return out
    rng = np.random.default_rng([random_state, zlib.crc32(f"{quant_id}|{suite}|groups".encode())])
    n_resamples = len(deg.draws[keys_hr[0]])
    draws_hr = stats.hierarchical_draws([deg.draws[key] for key in keys_hr], n_resamples, rng)
    draws_lr = stats.hierarchical_draws([deg.draws[key] for key in keys_lr], n_resamples, rng)
    diff = stats.percentile_interval(math.nan, draws_lr - draws_hr, deg.confidence)
    out.update(difference_ci_low=diff.low, difference_ci_high=diff.high, ci_note="")
    share_nonpositive = float(np.mean(draws_hr <= 0))
    share_lr_nonpositive = float(np.mean(draws_lr <= 0))
    if share_nonpositive > 0:
        out["ci_note"] = f"ratio CI undefined: D_HR <= 0 in {share_nonpositive:.1%} of resamples"
    elif share_lr_nonpositive > 0:
        out["ci_note"] = f"ratio CI undefined: D_LR <= 0 in {share_lr_nonpositive:.1%} of resamples"
    else:
        ratio = stats.percentile_interval(math.nan, draws_lr / draws_hr, deg.confidence)
        out.update(ratio_ci_low=ratio.low, ratio_ci_high=ratio.high)
    return out


def quant_config_family(run: Run) -> str:
    """The run's model + quant config without ``bits`` (runs of one family differ only in bits)."""
    config = {k: v for k, v in run.quant_config.items() if k != "bits"}
    return json.dumps({"model": run.model, "quant": config}, sort_keys=True, default=str)
