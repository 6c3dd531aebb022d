"""The parallel-text view: damage to the same content across scripts, over documents aligned
across languages (script- and tokenizer-fair)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import stats
from analysis.language_degradation import LN2, Degradation
from analysis.loading import RunSet


def align_key(lang: str, doc_id: str) -> str:
    """Key that aligns a document across languages: ``en-3`` -> ``3`` (bundled corpus), other ids (``udhr-a1``) unchanged."""
    return doc_id.removeprefix(f"{lang}-")


def parallel_view(runset: RunSet, deg: Degradation, tokens: pd.DataFrame | None = None, reference: str = "en") -> tuple[pd.DataFrame, list[str]]:
    """Script- and tokenizer-fair view on parallel text, per (quant run, suite, lang).

    Documents are aligned across languages by :func:`align_key`; only documents present in
    every language of the run/suite (``reference`` included) count. Columns: n_aligned,
    degradation and delta_bpb over them, delta_bits_per_doc (total Δ NLL in bits / n_aligned),
    delta_bits_per_ref_byte (total Δ bits / the reference language's bytes of the same documents),
    bytes_rel_ref (byte premium) and, with ``tokens`` (:func:`analysis.tokenizer_fertility.doc_token_counts`), tokens_per_doc
    and fertility_rel_ref (tokens per aligned document / the reference's). Returns (table, notes).
    """
    columns = ["quant_id", "suite", "lang", "n_aligned", "degradation", "delta_bpb", "delta_bits_per_doc", "delta_bits_per_ref_byte",
               "bytes_rel_ref", "tokens_per_doc", "fertility_rel_ref"]
    if deg.docs.empty:
        return pd.DataFrame(columns=columns), []
    n_bytes = {(r.run_id, r.suite, r.lang, r.doc_id): r.n_bytes for r in runset.docs[["run_id", "suite", "lang", "doc_id", "n_bytes"]].itertuples()}
    n_tokens = {} if tokens is None else {(r.suite, r.lang, r.doc_id): r.n_tokens for r in tokens[["suite", "lang", "doc_id", "n_tokens"]].itertuples()}
    base_of = dict(zip(deg.table.quant_id, deg.table.base_id))
    docs = deg.docs.assign(key=[align_key(lang, doc_id) for lang, doc_id in zip(deg.docs.lang, deg.docs.doc_id)])
    rows, notes = [], []
    for (quant_id, suite), block in docs.groupby(["quant_id", "suite"], sort=True):
        by_lang = dict(tuple(block.groupby("lang")))
        if reference not in by_lang:
            notes.append(f"Parallel-text view skipped for {quant_id} {suite}: no {reference} documents to align with.")
            continue
        common = set.intersection(*(set(own.key) for own in by_lang.values()))
        if not common:
            notes.append(f"Parallel-text view skipped for {quant_id} {suite}: no document id is shared by all languages (not a parallel corpus).")
            continue
        totals = {}
        for lang, own in by_lang.items():
            own = own[own.key.isin(common)]
            doc_bytes = [n_bytes.get((base_of[quant_id], suite, lang, doc_id), math.nan) for doc_id in own.doc_id]
            doc_tokens = [n_tokens.get((suite, lang, doc_id), math.nan) for doc_id in own.doc_id]
            totals[lang] = (own.nll_base.sum(), own.nll_quant.sum(), float(np.sum(doc_bytes)), float(np.sum(doc_tokens)) if n_tokens else math.nan)
        ref_bytes, ref_tokens = totals[reference][2], totals[reference][3]
        for lang, (nll_b, nll_q, own_bytes, own_tokens) in sorted(totals.items()):
            delta_bits = (nll_q - nll_b) / LN2
            rows.append({"quant_id": quant_id, "suite": suite, "lang": lang, "n_aligned": len(common),
                         "degradation": float(stats.relative_increase(nll_q, nll_b)), "delta_bpb": delta_bits / own_bytes,
                         "delta_bits_per_doc": delta_bits / len(common), "delta_bits_per_ref_byte": delta_bits / ref_bytes,
                         "bytes_rel_ref": own_bytes / ref_bytes, "tokens_per_doc": own_tokens / len(common),
                         "fertility_rel_ref": own_tokens / ref_tokens})
    return pd.DataFrame(rows, columns=columns), notes
