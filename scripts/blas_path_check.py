"""Compare the main job's calibration draw 0 with the same draw computed on other float32 kernels
(``scripts/run_blas_path_check.sh``: MKL_CBWR=COMPATIBLE, as on another machine) against the
across-draw spread of the main job.

    python scripts/blas_path_check.py runs/demo report/demo runs/demo-blas report/demo-blas

Per config (label), suite and language: D of draw 0 here, D of draw 0 on the other kernels, their
difference ("machine"), and the across-draw SD of the main job (``tables/calibration_spread.csv``);
then per config and suite the largest and mean |machine difference| next to the median draw SD, and
how many languages have |machine difference| below the draw SD. Reads only the two reports' CSV tables
and the results files' ``config.model_args`` (for ``calib_seed``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def _seeds(runs_dir: Path, report_dir: Path) -> dict[str, int | None]:
    """``run_id`` → its ``calib_seed`` (None: none) from the results file ``runs.csv`` names."""
    runs = pd.read_csv(report_dir / "tables" / "runs.csv")
    seeds = {}
    for run_id, path in zip(runs.run_id, runs.path):
        args = json.loads((runs_dir / path).read_text())["config"]["model_args"]
        pairs = dict(part.split("=", 1) for part in str(args).split(",") if "=" in part)
        seeds[run_id] = int(pairs["calib_seed"]) if "calib_seed" in pairs else None
    return seeds


def _draw_rows(runs_dir: Path, report_dir: Path, seed: int) -> pd.DataFrame:
    """``tables/degradation.csv`` rows of the runs with ``calib_seed`` = ``seed``."""
    table = pd.read_csv(report_dir / "tables" / "degradation.csv")
    seeds = _seeds(runs_dir, report_dir)
    return table[table.quant_id.map(seeds) == seed][["label", "suite", "lang", "degradation"]]


def comparison(main_runs: Path, main_report: Path, other_runs: Path, other_report: Path, seed: int = 0) -> pd.DataFrame:
    """One row per label, suite and language: ``d_here``, ``d_other``, ``machine`` (other − here), ``draw_sd``."""
    here = _draw_rows(main_runs, main_report, seed).rename(columns={"degradation": "d_here"})
    other = _draw_rows(other_runs, other_report, seed).rename(columns={"degradation": "d_other"})
    spread = pd.read_csv(main_report / "tables" / "calibration_spread.csv")[["label", "suite", "lang", "n_draws", "d_sd"]]
    table = here.merge(other, on=["label", "suite", "lang"]).merge(spread, on=["label", "suite", "lang"])
    table["machine"] = table.d_other - table.d_here
    return table.rename(columns={"d_sd": "draw_sd"})


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per label and suite: max and mean |machine|, median draw SD, languages with |machine| < draw SD."""
    table = table.assign(abs_machine=table.machine.abs(), below=table.machine.abs() < table.draw_sd)
    return table.groupby(["label", "suite"]).agg(
        n_langs=("lang", "size"), n_draws=("n_draws", "first"), max_abs_machine=("abs_machine", "max"),
        mean_abs_machine=("abs_machine", "mean"), median_draw_sd=("draw_sd", "median"), langs_below_draw_sd=("below", "sum"),
    ).reset_index()


def _points(value: float) -> str:
    return f"{value * 100:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("main_runs", type=Path)
    parser.add_argument("main_report", type=Path)
    parser.add_argument("other_runs", type=Path)
    parser.add_argument("other_report", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="the calibration draw compared (default 0)")
    args = parser.parse_args()
    table = comparison(args.main_runs, args.main_report, args.other_runs, args.other_report, args.seed)
    if table.empty:
        raise SystemExit(f"blas_path_check: no config has draw {args.seed} in both reports")
    print("| config | suite | lang | D here | D other kernels | machine (pp) | draw SD (pp) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in table.itertuples():
        print(f"| {row.label} | {row.suite} | {row.lang} | {_points(row.d_here)} | {_points(row.d_other)} | "
              f"{row.machine * 100:+.2f} | {_points(row.draw_sd)} |")
    print()
    print("| config | suite | draws | max abs machine (pp) | mean abs machine (pp) | median draw SD (pp) | languages with abs machine < draw SD |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in summary(table).itertuples():
        print(f"| {row.label} | {row.suite} | {row.n_draws} | {_points(row.max_abs_machine)} | {_points(row.mean_abs_machine)} | "
              f"{_points(row.median_draw_sd)} | {row.langs_below_draw_sd}/{row.n_langs} |")


if __name__ == "__main__":
    main()
