"""Rate-distortion: slopes of ln D per extra bit within families of runs that differ only in bits,
and of the layers' relative weight MSE next to the uniform-noise reference of the grid."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from analysis import stats
from analysis.language_degradation import Degradation
from analysis.loading import RunSet
from analysis.pairing import quant_config_family

#: Asymptotic slope: uniform quantization noise variance ∝ step² ∝ 4**-bits, so d ln(MSE)/d bits → −2 ln 2
#: (the exact reference for a grid and bit widths is :func:`grid_reference_slope`).
THEORETICAL_MSE_SLOPE = -2.0 * math.log(2.0)


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
