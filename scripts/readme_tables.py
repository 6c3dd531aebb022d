"""Print the README's result tables (Markdown) from a ``qd-analyze`` output folder.

    python scripts/readme_tables.py report/demo

Per suite: the baseline's bits/byte per language, then per config the relative degradation D
and the absolute Δ bits/byte side by side per language, the group means, D_LR − D_HR with its
hierarchical-bootstrap CI, the language-level permutation p and the worst language; then per
config the fidelity to the baseline (KL per byte, same top token) per language.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

LANGS = ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")


def _pct(value: float, digits: int = 0) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * 100:+.{digits}f}%"


def degradation_tables(tables: Path) -> list[str]:
    deg = pd.read_csv(tables / "degradation.csv")
    disp = pd.read_csv(tables / "disparity.csv").set_index(["label", "suite"])
    out = []
    for suite, block in deg.groupby("suite", sort=False):
        langs = [lang for lang in LANGS if lang in set(block.lang)]
        base = block.drop_duplicates("lang").set_index("lang").bpb_base
        out += [f"**{suite}** — baseline bits/byte: " + ", ".join(f"{lang} {base[lang]:.3f}" for lang in langs), ""]
        out.append("| config | eff. bits/w | " + " | ".join(langs) + " | D_HR | D_LR | D_LR − D_HR [95% CI] | perm. p | worst |")
        out.append("|---" * (len(langs) + 7) + "|")
        for label, rows in block.groupby("label", sort=False):
            rows = rows.set_index("lang")
            cells = [f"{_pct(rows.degradation[lang])} / {rows.delta_bpb[lang]:+.2f}" for lang in langs]
            d = disp.loc[(label, suite)]
            diff = f"{_pct(d.difference, 1)} [{_pct(d.difference_ci_low, 1)}, {_pct(d.difference_ci_high, 1)}]"
            out.append(f"| {label} | {rows.effective_bits_per_weight.iloc[0]:.2f} | " + " | ".join(cells)
                       + f" | {_pct(d.D_HR, 1)} | {_pct(d.D_LR, 1)} | {diff} | {d.perm_p:.2f} | {d.worst_lang} {_pct(d.worst_degradation)} |")
        out.append("")
    return out


def fidelity_tables(tables: Path) -> list[str]:
    path = tables / "fidelity.csv"
    if not path.is_file():
        return []
    fid = pd.read_csv(path)
    out = []
    for suite, block in fid.groupby("suite", sort=False):
        langs = [lang for lang in LANGS if lang in set(block.lang)]
        out += [f"**{suite}** — KL(base ‖ quant) per byte (nats, top-32 + tail lower bound) / same top token:", ""]
        out.append("| config | " + " | ".join(langs) + " |")
        out.append("|---" * (len(langs) + 1) + "|")
        for label, rows in block.groupby("label", sort=False):
            rows = rows.set_index("lang")
            out.append(f"| {label} | " + " | ".join(f"{rows.kl_per_byte[lang]:.3f} / {rows.same_top_token[lang] * 100:.0f}%" for lang in langs) + " |")
        out.append("")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a qd-analyze --out folder")
    args = parser.parse_args()
    print("\n".join(degradation_tables(args.report / "tables") + fidelity_tables(args.report / "tables")))


if __name__ == "__main__":
    main()
