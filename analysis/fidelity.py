"""Per-language fidelity to the baseline from the ``qd-hf`` fidelity files (see
:mod:`qd_models.fidelity`): KL per token and per byte, same-top-token rate, Δp of the true token.

A run's ``results_*.json`` lists its files under ``config.quant_disparity.fidelity.files``; they
are looked up next to the results file and one folder up (a ``qd-sweep`` config folder, or the
``--output_path`` given to lm-eval as ``fidelity_out``). Each file's embedded identity is checked
against the results that list it (:func:`file_mismatch`: task, role, weights, quant config, number
of documents); a file of another run, or one that cannot be read, is a flagged problem, not used.
Per language the documents are the
bootstrap unit, as for D_L: each ratio of sums (KL/token = ΣKL/Σtokens, ...) gets a studentized
document-bootstrap CI, clipped to the value's range (KL >= 0, rates in [0, 1]: with few documents
a studentized bound can leave it); Δp percentiles over positions get a percentile CI from documents resampled
(at most ``MAX_PERCENTILE_RESAMPLES`` resamples).
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib

import numpy as np
import pandas as pd

from analysis import stats
from analysis.loading import RunSet
from qd_models import run_record
from qd_tasks.languages import split_task_name

PERCENTILES = (1, 5, 50, 95, 99)
MAX_PERCENTILE_RESAMPLES = 400
RATIOS = {  # column -> (numerator, denominator) per document, range of the value (CI bounds are clipped to it)
    "kl_per_token": ("kl", "n_tokens", (0.0, math.inf)),
    "kl_per_byte": ("kl", "n_bytes", (0.0, math.inf)),
    "same_top_token": ("agree", "n_tokens", (0.0, 1.0)),
    "dp_mean": ("dp", "n_tokens", (-1.0, 1.0)),
}


def weighted_quantiles(sorted_values, weights, qs) -> np.ndarray:
    """Inverted-CDF quantiles of values repeated ``weights`` times. sorted_values, weights: (n,)
    (values ascending, weights >= 0 with a positive sum); qs: (m,) in (0, 1] -> (m,)."""
    cum = np.cumsum(weights, dtype=float)
    index = np.searchsorted(cum, np.asarray(qs, dtype=float) * cum[-1], side="left")
    return np.asarray(sorted_values)[np.minimum(index, len(cum) - 1)]


def read_fidelity_docs(runset: RunSet) -> tuple[dict, list[str]]:
    """{(run_id, suite, lang): per-document arrays} of every compared run, and problems.

    Arrays: kl, agree, dp, base_tail, n_tokens, n_bytes (n_docs,) sums per document; dp_positions
    (n_positions,) and doc_of_position (n_positions,); topk (int)."""
    out, problems = {}, []
    for run in runset.runs.values():
        try:
            results = json.loads(run.path.read_text(encoding="utf-8"))
            block = run_record.qd_block(results).get(run_record.FIDELITY)
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(block, dict) or block.get("role") != "compare" or not isinstance(block.get("files") or {}, dict):
            continue  # a block of another form is reported by loading.checked_results
        for task, name in sorted((block.get("files") or {}).items()):
            path = next((folder / name for folder in (run.path.parent, run.path.parent.parent) if (folder / name).is_file()), None)
            if path is None:
                problems.append(f"{run.run_id}: fidelity file {name} not found next to {run.path.name} or one folder up; fidelity of {task} skipped")
                continue
            try:
                with np.load(path, allow_pickle=False) as data:
                    arrays = {key: data[key] for key in ("kl", "agree", "dp", "base_tail", "offsets", "n_bytes", "langs")}
                    meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                problems.append(f"{runset.relative(str(path))}: unreadable fidelity file ({type(err).__name__}: {str(err)[:120] or 'empty'}); "
                                f"fidelity of {task} skipped — re-run this config")
                continue
            mismatch = file_mismatch(meta, results, task, len(arrays["offsets"]) - 1)
            if mismatch:
                problems.append(f"{runset.relative(str(path))}: belongs to another run than {run.run_id} ({mismatch}); fidelity of {task} "
                                "not used — re-run this config with its own fidelity_out")
                continue
            _add_task(out, run.run_id, task, arrays, int(block.get("topk") or 0))
    return out, problems


def file_mismatch(meta, results: dict, task: str, n_docs: int) -> str | None:
    """The first difference between a compare file's ``meta`` and the results that list it (task,
    role, the weights' fingerprint and quant config of their ``quant_disparity`` block, the number
    of documents scored), else None. A field a file (or results) of an older version lacks is not compared."""
    block = run_record.qd_block(results)
    if not isinstance(meta, dict):
        return "its meta is not a JSON object"
    if meta.get("task", task) != task or meta.get("role", "compare") != "compare":
        return f"task {meta.get('task')} / role {meta.get('role')} in the file"
    weights = (meta.get("identity") or {}).get("weights") if isinstance(meta.get("identity"), dict) else None
    recorded = block.get(run_record.MODEL_FINGERPRINT)
    if weights is not None and recorded is not None and weights != recorded:
        return "other weights (weight fingerprints differ)"
    config, own = meta.get("quant_config"), block.get(run_record.QUANT_CONFIG)
    if isinstance(config, dict) and isinstance(own, dict):
        differing = sorted(k for k, v in config.items() if own.get(k) != v)
        if differing:
            return f"quant config differs in {', '.join(differing)}"
    effective = ((results.get("n-samples") or {}).get(task) or {}).get("effective") if isinstance(results.get("n-samples"), dict) else None
    if isinstance(effective, int) and effective != n_docs:
        return f"{n_docs} documents in the file, {effective} in the results"
    return None


def _add_task(out: dict, run_id: str, task: str, arrays: dict, topk: int) -> None:
    offsets = arrays["offsets"]
    sizes = np.diff(offsets)
    doc_of_position = np.repeat(np.arange(len(sizes)), sizes)
    sums = {name: np.bincount(doc_of_position, weights=arrays[name].astype(float), minlength=len(sizes))
            for name in ("kl", "agree", "dp", "base_tail")}
    for lang_value in np.unique(arrays["langs"]) if len(arrays["langs"]) else []:
        suite, lang = split_task_name(task, {"lang": str(lang_value)} if str(lang_value) else None)
        docs = np.flatnonzero(arrays["langs"] == lang_value)
        keep = np.isin(doc_of_position, docs)
        remap = np.full(len(sizes), -1)
        remap[docs] = np.arange(len(docs))
        entry = {name: values[docs] for name, values in sums.items()}
        entry.update(n_tokens=sizes[docs].astype(float), n_bytes=arrays["n_bytes"][docs].astype(float),
                     dp_positions=arrays["dp"][keep].astype(float), doc_of_position=remap[doc_of_position[keep]], topk=topk)
        key = (run_id, suite, lang)
        if key in out:  # a language spread over several tasks of one suite
            prev, shift = out[key], len(out[key]["n_tokens"])
            entry = {name: (np.concatenate([prev[name], value + (shift if name == "doc_of_position" else 0)]) if name != "topk" else value)
                     for name, value in entry.items()}
        out[key] = entry


def _ratio_interval(num, den, idx, confidence: float) -> stats.Interval:
    """Σnum/Σden over documents with a studentized bootstrap CI; idx: (n_resamples, n_docs)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = float(num.sum() / den.sum())
        draws = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    return stats.studentized_interval(estimate, float(stats.ratio_standard_error(num, den)), draws,
                                      stats.ratio_standard_error(num[idx], den[idx]), confidence)


def fidelity_table(runset: RunSet, deg_table: pd.DataFrame, n_resamples: int = 2000, random_state: int = 0,
                   confidence: float = 0.95) -> tuple[pd.DataFrame, list[str]]:
    """One row per (quant_id, suite, lang): each ratio in :data:`RATIOS` with ci_low/ci_high,
    Δp percentiles (dp_p1 ...) with CIs, mean baseline mass outside the top-k (base_tail), n_docs,
    n_tokens, topk, and D_L next to them (degradation, degradation_ci_low/high, bpb_base)."""
    per_lang, problems = read_fidelity_docs(runset)
    rows = []
    d_cols = ["quant_id", "suite", "lang", "degradation", "ci_low", "ci_high", "bpb_base"]
    d_of = {} if deg_table.empty else {(r[0], r[1], r[2]): r[3:] for r in deg_table[d_cols].itertuples(index=False)}
    for (run_id, suite, lang), docs in sorted(per_lang.items()):
        n_docs = len(docs["n_tokens"])
        if n_docs == 0 or docs["n_tokens"].sum() == 0:
            continue
        run = runset.runs[run_id]
        rng = np.random.default_rng([random_state, zlib.crc32(f"{run_id}|{suite}|{lang}|fidelity".encode())])
        idx = rng.integers(0, n_docs, size=(n_resamples, n_docs))
        row = {"quant_id": run_id, "model": run.model, "label": run.label, "suite": suite, "lang": lang, "n_docs": n_docs,
               "n_tokens": int(docs["n_tokens"].sum()), "topk": docs["topk"]}
        for column, (num, den, (lowest, highest)) in RATIOS.items():
            interval = _ratio_interval(docs[num], docs[den], idx, confidence)
            row.update({column: interval.estimate, f"{column}_ci_low": max(interval.low, lowest) if not math.isnan(interval.low) else math.nan,
                        f"{column}_ci_high": min(interval.high, highest) if not math.isnan(interval.high) else math.nan})
        row["base_tail"] = float(docs["base_tail"].sum() / docs["n_tokens"].sum())
        row.update(_percentiles(docs, idx[:MAX_PERCENTILE_RESAMPLES], confidence))
        row["ci_note"] = stats.too_few_docs_note(n_docs)
        if row["ci_note"]:  # every interval of this row is undefined
            row.update({name: math.nan for name in row if name.endswith(("_ci_low", "_ci_high"))})
        degradation, d_low, d_high, bpb_base = d_of.get((run_id, suite, lang), (math.nan,) * 4)
        row.update(degradation=degradation, degradation_ci_low=d_low, degradation_ci_high=d_high, bpb_base=bpb_base)
        rows.append(row)
    return pd.DataFrame(rows), problems


def _percentiles(docs: dict, idx, confidence: float) -> dict:
    """Δp percentiles over positions (documents weighted by their bootstrap multiplicity)."""
    order = np.argsort(docs["dp_positions"], kind="stable")
    values, owner = docs["dp_positions"][order], docs["doc_of_position"][order]
    qs = np.array(PERCENTILES) / 100.0
    n_docs = len(docs["n_tokens"])
    estimate = weighted_quantiles(values, np.ones(len(values)), qs)
    draws = np.array([weighted_quantiles(values, np.bincount(row, minlength=n_docs)[owner], qs) for row in idx])
    out = {}
    for j, pct in enumerate(PERCENTILES):
        interval = stats.percentile_interval(float(estimate[j]), draws[:, j], confidence)
        out.update({f"dp_p{pct}": interval.estimate, f"dp_p{pct}_ci_low": interval.low, f"dp_p{pct}_ci_high": interval.high})
    return out


def series_names(table: pd.DataFrame) -> dict[str, str]:
    """{quant_id: legend name} of a fidelity table: the label, ``model · label`` when several
    models are present, the run id where names still repeat (same model name, other weights)."""
    runs = table.drop_duplicates("quant_id")
    several = runs.model.nunique() > 1
    names = {r.quant_id: f"{r.model} · {r.label}" if several else str(r.label) for r in runs.itertuples()}
    counts = pd.Series(list(names.values())).value_counts()
    return {run: name if counts[name] == 1 else run for run, name in names.items()}


def languages_by_baseline(table: pd.DataFrame) -> list[str]:
    """Languages of ``table`` ordered by baseline bits/byte (ascending; unknown last, by name)."""
    base = table.groupby("lang")["bpb_base"].first()
    return sorted(base.index, key=lambda lang: (not np.isfinite(base[lang]), base[lang] if np.isfinite(base[lang]) else 0.0, lang))

