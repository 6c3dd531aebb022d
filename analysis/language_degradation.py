"""Per-language degradation of every paired run, with paired document-bootstrap CIs.

Degradation of language L: ``D = NLL_quant / NLL_base - 1`` summed over L's documents,
which equals ``bpb_quant / bpb_base - 1`` because both runs score the same bytes.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import stats
from analysis.loading import RunSet
from analysis.pairing import Pair, pair_runs

LN2 = math.log(2.0)


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
                if stats.too_few_docs_note(len(doc_ids)):
                    interval, ci_source = stats.Interval(estimate, math.nan, math.nan), stats.too_few_docs_note(len(doc_ids))
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
