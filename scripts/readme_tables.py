"""Print the README's result tables (Markdown) from a ``qd-analyze`` output folder.

    python scripts/readme_tables.py report/demo

Per suite: the baseline's bits/byte per language, then per config the relative degradation D
and the absolute Δ bits/byte side by side per language (a config with calibration draws: D as
the mean over its draws ± the across-draw SD, Δ as the mean), the group means, D_LR − D_HR with
its hierarchical-bootstrap CI (a config with draws: the mean over draws and each draw's value),
the language-level permutation p (range over draws) and the worst language; then the per-language
method comparisons whose combined (draws + documents) CI excludes 0; then per config the fidelity
to the baseline (KL per byte, same top token; mean over draws) per language.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

LANGS = ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")


def _pct(value: float, digits: int = 0) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 100:+.{digits}f}%"


def _language_cell(rows: pd.DataFrame, spread: pd.DataFrame | None, lang: str) -> str:
    """``D / Δ`` of one config and language; with draws ``D mean ±SD / Δ mean``."""
    mine = rows[rows.lang == lang]
    if len(mine) == 1:
        return f"{_pct(mine.degradation.iloc[0])} / {mine.delta_bpb.iloc[0]:+.2f}"
    sd = spread.loc[lang, "d_sd"] * 100
    return f"{_pct(spread.loc[lang, 'd_mean'])} ±{sd:.1f} / {mine.delta_bpb.mean():+.2f}"


def _group_cells(disp: pd.DataFrame) -> str:
    """D_HR, D_LR, D_LR − D_HR [CI] (draws: mean and each draw), perm. p, worst language."""
    if len(disp) == 1:
        d = disp.iloc[0]
        diff = f"{_pct(d.difference, 1)} [{_pct(d.difference_ci_low, 1)}, {_pct(d.difference_ci_high, 1)}]"
        return f"{_pct(d.D_HR, 1)} | {_pct(d.D_LR, 1)} | {diff} | {d.perm_p:.2f} | {d.worst_lang} {_pct(d.worst_degradation)}"
    draws = ", ".join(_pct(v, 1) for v in disp.difference)
    worst = disp.worst_lang.value_counts()
    return (f"{_pct(disp.D_HR.mean(), 1)} | {_pct(disp.D_LR.mean(), 1)} | {_pct(disp.difference.mean(), 1)} (draws: {draws})"
            f" | {disp.perm_p.min():.2f}–{disp.perm_p.max():.2f} | {worst.index[0]} ({worst.iloc[0]}/{len(disp)} draws)")


def degradation_tables(tables: Path) -> list[str]:
    deg = pd.read_csv(tables / "degradation.csv")
    disp = pd.read_csv(tables / "disparity.csv")
    spread_path = tables / "calibration_spread.csv"  # absent from reports written before calibration draws
    spread = pd.read_csv(spread_path) if spread_path.is_file() else None
    out = []
    for suite, block in deg.groupby("suite", sort=False):
        langs = [lang for lang in LANGS if lang in set(block.lang)]
        base = block.drop_duplicates("lang").set_index("lang").bpb_base
        out += [f"**{suite}** — baseline bits/byte: " + ", ".join(f"{lang} {base[lang]:.3f}" for lang in langs), ""]
        out.append("| config | draws | eff. bits/w | " + " | ".join(langs) + " | D_HR | D_LR | D_LR − D_HR [95% CI] | perm. p | worst |")
        out.append("|---" * (len(langs) + 8) + "|")
        for label, rows in block.groupby("label", sort=False):
            n_draws = rows.quant_id.nunique() if spread is not None else 1
            config_spread = spread[(spread.suite == suite) & (spread.label == label)].set_index("lang") if n_draws > 1 else None
            cells = [_language_cell(rows, config_spread, lang) for lang in langs]
            group = _group_cells(disp[(disp.suite == suite) & (disp.label == label)])
            out.append(f"| {label} | {n_draws} | {rows.effective_bits_per_weight.mean():.2f} | " + " | ".join(cells) + f" | {group} |")
        out.append("")
    return out


def comparison_tables(tables: Path) -> list[str]:
    """Per suite, the method comparisons whose CI over draws and documents excludes 0."""
    path = tables / "method_comparisons.csv"
    if not path.is_file():
        return []
    comp = pd.read_csv(path)
    out = ["Method differences D(a) − D(b) whose 95 % CI over calibration draws and documents excludes 0 "
           "(`tables/method_comparisons.csv`; every other pair and language is within method noise):", ""]
    out += ["| suite | a | b | languages: difference [95% CI] (pp) |", "|---|---|---|---|"]
    for (suite, a, b), rows in comp.groupby(["suite", "label_a", "label_b"], sort=False):
        stated = rows[(rows.ci_low > 0) | (rows.ci_high < 0)]
        cells = ", ".join(f"{r.lang} {r.difference * 100:+.1f} [{r.ci_low * 100:+.1f}, {r.ci_high * 100:+.1f}]" for r in stated.itertuples())
        unmeasured = rows[rows.ci_low.isna() | rows.ci_high.isna()]
        if not cells:
            cells = "— (draw noise not measured: a calibrated config with one draw)" if len(unmeasured) == len(rows) else "— (all within method noise)"
        out.append(f"| {suite} | {a} | {b} | {cells} |")
    return out + [""]


def fidelity_tables(tables: Path) -> list[str]:
    path = tables / "fidelity.csv"
    if not path.is_file():
        return []
    fid = pd.read_csv(path)
    out = []
    for suite, block in fid.groupby("suite", sort=False):
        langs = [lang for lang in LANGS if lang in set(block.lang)]
        out += [f"**{suite}** — KL(base ‖ quant) per byte (nats, top-32 + tail lower bound) / same top token (mean over draws):", ""]
        out.append("| config | " + " | ".join(langs) + " |")
        out.append("|---" * (len(langs) + 1) + "|")
        for label, rows in block.groupby("label", sort=False):
            means = rows.groupby("lang")[["kl_per_byte", "same_top_token"]].mean()
            out.append(f"| {label} | " + " | ".join(f"{means.kl_per_byte[lang]:.3f} / {means.same_top_token[lang] * 100:.0f}%" for lang in langs) + " |")
        out.append("")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a qd-analyze --out folder")
    args = parser.parse_args()
    tables = args.report / "tables"
    print("\n".join(degradation_tables(tables) + comparison_tables(tables) + fidelity_tables(tables)))


if __name__ == "__main__":
    main()
