"""Disparity between low- and high-resource languages: group means of the per-language
degradation, their difference and ratio with hierarchical-bootstrap CIs, a language-level
permutation test and leave-one-language-out checks."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from analysis import stats
from analysis.language_degradation import Degradation


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
