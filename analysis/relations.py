"""Degradation vs predictors (fertility, resource class, activation kurtosis), rate-distortion
fits, the method Pareto front and the layer × language sensitivity matrix."""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import stats
from analysis.language_degradation import LN2, Degradation
from analysis.loading import RunSet
from analysis.pairing import quant_config_family
from qd_tasks import fertility as fertility_rule

#: Asymptotic slope: uniform quantization noise variance ∝ step² ∝ 4**-bits, so d ln(MSE)/d bits → −2 ln 2
#: (the exact reference for a grid and bit widths is :func:`grid_reference_slope`).
THEORETICAL_MSE_SLOPE = -2.0 * math.log(2.0)


def load_tokenizer(path: str):
    """A ``text -> number of tokens`` function (:func:`qd_tasks.fertility.count_tokens`) from a local tokenizer folder (lazy import)."""
    if not Path(path).is_dir():
        raise ValueError(f"tokenizer={path!r} is not a local folder; allowed: a folder with tokenizer files (e.g. the model's)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    return lambda text: fertility_rule.count_tokens(tokenizer, text)


def doc_token_counts(runset: RunSet, count_tokens) -> pd.DataFrame:
    """Tokens of every logged task document: one row per (suite, lang, doc_id) with n_tokens, n_bytes, n_words, text."""
    docs = runset.docs.drop_duplicates(["suite", "lang", "doc_id"])
    return docs.assign(n_tokens=[count_tokens(text) for text in docs.text])


FERTILITY_COLUMNS = ["suite", "lang", "n_docs", "n_tokens", "n_bytes", "n_words", "tokens_per_byte", "tokens_per_word"]


def fertility(runset: RunSet, count_tokens, tokens: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tokens per byte and per word of every (suite, lang) over the logged task docs, by the
    rule of :mod:`qd_tasks.fertility` (the one ``qd-diagnose`` uses).

    count_tokens: ``text -> int`` (or ``tokens``, the :func:`doc_token_counts` table). A language
    has words when its task scored ``word_perplexity`` for every document (lm-eval logged a word
    count); otherwise (e.g. zh) n_words and tokens_per_word are NaN. One row per (suite, lang).
    """
    docs = doc_token_counts(runset, count_tokens) if tokens is None else tokens
    rows = [{"suite": suite, "lang": lang, **fertility_rule.fertility(block.text, int(block.n_tokens.sum()), bool(block.n_words.notna().all()))}
            for (suite, lang), block in docs.groupby(["suite", "lang"], sort=True)]
    out = pd.DataFrame(rows, columns=FERTILITY_COLUMNS)
    return out.astype({"n_words": float, "tokens_per_word": float})


def align_key(lang: str, doc_id: str) -> str:
    """Key that aligns a document across languages: ``en-3`` -> ``3`` (bundled corpus), other ids (``udhr-a1``) unchanged."""
    return doc_id.removeprefix(f"{lang}-")


def parallel_view(runset: RunSet, deg: Degradation, tokens: pd.DataFrame | None = None, reference: str = "en") -> tuple[pd.DataFrame, list[str]]:
    """Script- and tokenizer-fair view on parallel text, per (quant run, suite, lang).

    Documents are aligned across languages by :func:`align_key`; only documents present in
    every language of the run/suite (``reference`` included) count. Columns: n_aligned,
    degradation and delta_bpb over them, delta_bits_per_doc (total Δ NLL in bits / n_aligned),
    delta_bits_per_ref_byte (total Δ bits / the reference language's bytes of the same documents),
    bytes_rel_ref (byte premium) and, with ``tokens`` (:func:`doc_token_counts`), tokens_per_doc
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


def calibration_kurtosis(runset: RunSet) -> pd.DataFrame:
    """Per-language activation-weighted kurtosis from quant reports that carry calibration.

    Reads ``report["calibration"]["per_language"][lang]["activation_weighted_kurtosis"]``
    (or the same records directly under ``calibration``). Rows: run_id, lang, kurtosis.
    """
    rows = []
    for run in runset.runs.values():
        calibration = (run.quant_report or {}).get("calibration")
        if not isinstance(calibration, dict):
            continue
        per_language = calibration.get("per_language", calibration)
        for lang, record in per_language.items():
            if isinstance(record, dict) and isinstance(record.get("activation_weighted_kurtosis"), (int, float)):
                rows.append((run.run_id, lang, float(record["activation_weighted_kurtosis"])))
    return pd.DataFrame(rows, columns=["run_id", "lang", "kurtosis"])


def correlations(deg: Degradation, groups: dict[str, str], fert: pd.DataFrame | None = None, kurtosis: pd.DataFrame | None = None) -> pd.DataFrame:
    """Across-language Pearson/Spearman of degradation with each available predictor.

    One row per (quant_id, suite, predictor) with n, pearson_r/p, spearman_rho/p.
    Resource class is coded low = 1, high = 0 (point-biserial for Pearson).
    """
    rows = []
    for (quant_id, suite), block in deg.table.groupby(["quant_id", "suite"], sort=True):
        resource_code = block.lang.map(lambda lang: {"low": 1.0, "high": 0.0}.get(groups.get(lang), math.nan))
        predictors = {"low_resource (1=LR, 0=HR)": resource_code}
        if fert is not None and not fert.empty:
            merged = block.merge(fert, on=["suite", "lang"], how="left")
            predictors["tokens_per_byte"] = merged.tokens_per_byte
            predictors["tokens_per_word"] = merged.tokens_per_word
        if kurtosis is not None and not kurtosis.empty:
            own = kurtosis[kurtosis.run_id == quant_id]
            if not own.empty:
                predictors["activation_weighted_kurtosis"] = block.lang.map(dict(zip(own["lang"], own["kurtosis"])))
        for name, values in predictors.items():
            rows.append({"quant_id": quant_id, "suite": suite, "predictor": name, **stats.correlation(values.to_numpy(), block.degradation.to_numpy())})
    return pd.DataFrame(rows)


def rate_distortion(runset: RunSet, deg: Degradation, n_resamples: int = 2000, random_state: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Slope of ln(degradation) vs bits per language within each family of runs that differ
    only in bits (same model and otherwise identical quant config).

    Fitted only over the bit widths at which every language's D_L CI lies above 0 (D_L > 0
    where runs have no CIs): the same widths for every language of a (family, suite); the
    others are listed in dropped_bits. Slope CI: document bootstrap (the same resampled
    documents at every width; ln D refitted per resample), percentile; undefined when a
    resample gives D <= 0 at a fitted width. One row per (family, suite, lang).
    """
    rows = []
    if deg.table.empty:
        return pd.DataFrame(rows)
    table = deg.table.assign(family=deg.table.quant_id.map(lambda run_id: quant_config_family(runset.runs[run_id])))
    docs = {key: block for key, block in deg.docs.groupby(["quant_id", "suite", "lang"], sort=False)} if not deg.docs.empty else {}
    for (family, suite), block in table.groupby(["family", "suite"], sort=True):
        block = block.drop_duplicates(["bits", "lang"])
        widths = sorted(block.bits.dropna().unique())
        if len(widths) < 2:
            continue
        langs = sorted(block.lang.unique())
        kept, dropped = [], []
        for bits in widths:
            at = block[block.bits == bits]
            has_ci = at.ci_low.notna().all()
            above = (at.ci_low > 0) if has_ci else (at.degradation > 0)
            if len(at) == len(langs) and above.all():
                kept.append(bits)
            else:
                reason = "CI includes 0 or lies below" if has_ci else "D <= 0"
                dropped.append(f"{bits:g} ({reason}: {','.join(sorted(at.lang[~above])) or 'language missing'})")
        for lang in langs:
            own = block[(block.lang == lang) & block.bits.isin(kept)].sort_values("bits")
            fit = {"n": len(kept), "slope": math.nan, "low": math.nan, "high": math.nan, "ci_note": ""}
            if len(kept) >= 2:
                fit["slope"] = float(stats.ols_slopes(own.bits.to_numpy(), np.log(own.degradation.to_numpy())[None, :])[0])
                fit.update(_slope_interval(own, docs, n_resamples, random_state, confidence))
            else:
                fit["ci_note"] = "fewer than 2 bit widths with every language's D_L CI above 0"
            rows.append({"family": runset.runs[block.quant_id.iloc[0]].family, "family_key": family, "suite": suite, "lang": lang,
                         "bits": ",".join(f"{b:g}" for b in widths), "fit_bits": ",".join(f"{b:g}" for b in kept),
                         "dropped_bits": "; ".join(dropped), **fit})
    return pd.DataFrame(rows)


def _slope_interval(own: pd.DataFrame, docs: dict, n_resamples: int, random_state: int, confidence: float) -> dict:
    """Document-bootstrap percentile CI of the ln D slope. own: one language's rows at the fitted widths."""
    blocks = [docs.get((quant_id, suite, lang)) for quant_id, suite, lang in own[["quant_id", "suite", "lang"]].itertuples(index=False)]
    if any(b is None for b in blocks):
        return {"ci_note": "no slope CI: needs --log_samples for every fitted run"}
    common = sorted(set.intersection(*(set(b.doc_id) for b in blocks)))
    if not common:
        return {"ci_note": "no slope CI: the fitted runs share no documents"}
    nll_q = np.stack([b.set_index("doc_id").loc[common, "nll_quant"].to_numpy() for b in blocks])  # (n_widths, n_docs)
    nll_b = np.stack([b.set_index("doc_id").loc[common, "nll_base"].to_numpy() for b in blocks])
    key = f"{own.family.iloc[0]}|{own.suite.iloc[0]}|{own.lang.iloc[0]}"
    rng = np.random.default_rng([random_state, zlib.crc32(key.encode())])
    idx = rng.integers(0, len(common), size=(n_resamples, len(common)))
    draws = stats.relative_increase(nll_q[:, idx].sum(axis=2), nll_b[:, idx].sum(axis=2)).T  # (n_resamples, n_widths)
    share = float(np.mean(~(draws > 0).all(axis=1)))
    if share > 0:
        return {"ci_note": f"slope CI undefined: D <= 0 at a fitted width in {share:.1%} of resamples"}
    interval = stats.percentile_interval(math.nan, stats.ols_slopes(own.bits.to_numpy(), np.log(draws)), confidence)
    return {"low": interval.low, "high": interval.high}


def weight_mse(runset: RunSet) -> pd.DataFrame:
    """Mean relative weight MSE over the quantized layers of each run with a quant report."""
    rows = []
    for run in runset.runs.values():
        layers = (run.quant_report or {}).get("layers") or []
        values = [layer.get("rel_mse") for layer in layers if isinstance(layer.get("rel_mse"), (int, float))]
        if values and not run.is_baseline:
            rows.append({"run_id": run.run_id, "family_key": quant_config_family(run), "label": run.label, "family": run.family, "bits": run.bits,
                         "grid": grid_name(run.quant_config), "n_layers": len(values), "mean_rel_mse": float(np.mean(values))})
    return pd.DataFrame(rows)


def grid_name(quant_config: dict) -> str:
    """"asymmetric", "int" or "midrise" (the default of runs without a ``grid`` field)."""
    if quant_config.get("symmetric") is False:
        return "asymmetric"
    return "int" if quant_config.get("grid") == "int" else "midrise"


def grid_steps(grid: str, bits) -> np.ndarray:
    """Quantization steps over the clipping range: (n,) bits -> (n,) step counts.

    int: levels q·s, q in [-2^(b-1), 2^(b-1)-1], s = alpha/(2^(b-1)-1), so 2^(b-1)-1 steps per
    half-range; midrise (2^b levels over [-alpha, alpha]) and asymmetric grids: 2^b - 1 steps.
    """
    bits = np.asarray(bits, dtype=float)
    return 2.0 ** (bits - 1) - 1 if grid == "int" else 2.0**bits - 1


def grid_reference_slope(grid: str, bits) -> float:
    """OLS slope of ln(1/steps(b)^2) over the bit widths used (uniform noise: MSE ∝ (range/steps)²); NaN if a width has no step."""
    bits = np.asarray(sorted(set(bits)), dtype=float)
    steps = grid_steps(grid, bits)
    if bits.size < 2 or np.any(steps <= 0):
        return math.nan
    return float(stats.ols_slopes(bits, -2.0 * np.log(steps)[None, :])[0])


def weight_mse_slopes(mse: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """ln(mean relative weight MSE) vs bits per family, next to the reference slope of the family's
    grid over its bit widths and the asymptotic −2 ln 2."""
    rows = []
    if mse.empty:
        return pd.DataFrame(rows)
    for family, block in mse.groupby("family_key", sort=True):
        if block.bits.nunique() < 2:
            continue
        fit = stats.fit_slope(block.bits, np.log(block.mean_rel_mse), confidence)
        grid = block.grid.iloc[0]
        rows.append({"family_key": family, "label": block.family.iloc[0], "grid": grid,
                     "grid_reference_slope": grid_reference_slope(grid, block.bits), "theoretical_slope": THEORETICAL_MSE_SLOPE, **fit})
    return pd.DataFrame(rows)


def pareto_front(points: pd.DataFrame, x: str = "effective_bits_per_weight", y: str = "worst_degradation") -> pd.Series:
    """Boolean mask: rows not dominated (another row has x <= and y <= with one strict)."""
    xs, ys = points[x].to_numpy(dtype=float), points[y].to_numpy(dtype=float)
    valid = np.isfinite(xs) & np.isfinite(ys)
    mask = np.zeros(len(points), dtype=bool)
    for i in np.flatnonzero(valid):
        dominated = valid & (xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i]))
        mask[i] = not dominated.any()
    return pd.Series(mask, index=points.index)


_SCAN_COLUMNS = ("block", "lang", "degradation")


def scan_matrix_from_runs(runset: RunSet, deg: Degradation) -> pd.DataFrame:
    """Long (block, lang, degradation) rows from runs whose quant config has a ``scan`` field
    (the label of the one block that run quantizes / keeps)."""
    if deg.table.empty:
        return pd.DataFrame(columns=_SCAN_COLUMNS)
    scan = deg.table.quant_id.map(lambda run_id: runset.runs[run_id].quant_config.get("scan"))
    picked = deg.table[scan.notna()].assign(block=scan[scan.notna()].astype(str))
    return picked[list(_SCAN_COLUMNS)].reset_index(drop=True)


def read_scan_csv(path: str) -> pd.DataFrame:
    """A ``block,lang,degradation`` CSV (one row per block and language)."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"scan_csv={path!r} could not be read ({err}); allowed: a CSV with columns block,lang,degradation") from err
    missing = set(_SCAN_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"scan_csv={path!r} lacks columns {sorted(missing)}; allowed: a CSV with columns block,lang,degradation")
    return table[list(_SCAN_COLUMNS)]


def scan_pivot(scan: pd.DataFrame) -> pd.DataFrame:
    """(n_blocks, n_langs) matrix of degradation, blocks in natural (numeric-aware) order."""
    pivot = scan.pivot_table(index="block", columns="lang", values="degradation", aggfunc="mean")
    order = sorted(pivot.index, key=lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))])
    return pivot.loc[order]
