"""Pick the k blocks most worth keeping in full precision from a ``qd_models.scan`` block CSV.

    python scripts/experiments/best_blocks.py runs/scan/protect_one/scan_protect_one_block.csv --mode protect_one --k 3

``protect_one`` rows: degradation with everything quantized *except* block i -> the best blocks
have the lowest mean ``rel_degradation``. ``quantize_one`` rows: degradation with *only* block i
quantized -> the most sensitive blocks have the highest. The mean is over ``--langs`` (default:
every language in the CSV). Prints the blocks as ``keep_layers`` wants them, e.g. ``0;5;11``.
"""

from __future__ import annotations

import argparse
import math

import pandas as pd

MODES = ("protect_one", "quantize_one")


def best_blocks(table: pd.DataFrame, mode: str, k: int, langs: list[str] | None = None) -> list[int]:
    """Block indices, best first. table: rows (block, lang, rel_degradation)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed; allowed: {', '.join(MODES)}")
    if langs:
        unknown = sorted(set(langs) - set(table.lang))
        if unknown:
            raise ValueError(f"langs={unknown} are not in the CSV; allowed: {', '.join(sorted(set(table.lang)))}")
        table = table[table.lang.isin(langs)]
    means = table.groupby("block").rel_degradation.mean()
    if means.isna().any() or not all(math.isfinite(v) for v in means):
        bad = sorted(means[~means.map(math.isfinite)].index.tolist())
        raise ValueError(f"blocks {bad} have non-finite degradation; allowed: a CSV from a complete scan")
    ordered = means.sort_values(ascending=(mode == "protect_one"))
    return [int(b) for b in ordered.index[:k]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--langs", help="comma-separated languages to average over (default: all)")
    args = parser.parse_args(argv)
    table = pd.read_csv(args.csv)
    langs = [lang for lang in (args.langs or "").split(",") if lang]
    print(";".join(str(b) for b in best_blocks(table, args.mode, args.k, langs or None)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
