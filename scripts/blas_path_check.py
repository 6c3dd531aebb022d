"""Compare the main job with the same configs and calibration draws computed on other float32 kernels
(``scripts/run_blas_path_check.sh``: MKL_CBWR=COMPATIBLE, as on another machine).

    python scripts/blas_path_check.py runs/demo report/demo runs/demo-blas report/demo-blas

Four tables, read only from the two reports' CSV tables and the results files' ``config.model_args``
(for ``calib_seed``):

0. per config without calibration draws (RTN, NF4, GGUF ...) and suite: the largest and mean absolute
   difference of D between the two reports over the languages;
1. per config, suite, language and draw both reports have: D here, D on the other kernels and their
   difference ("machine"), beside the main job's across-draw SD (``tables/calibration_spread.csv``);
2. per config and suite: the kernel-path SD, sqrt(mean(machine²) / 2) over languages and draws (two
   runs of one draw differ by sqrt(2) of it), beside the pooled across-draw SD, sqrt(mean(SD²)), and how
   many languages' draw mean on the other kernels lies inside the main job's combined (draws +
   documents) CI;
3. every method difference the main job states (``tables/method_comparisons.csv``: its CI excludes 0)
   beside the other kernels' difference of the same two configs and what their report says of it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

KEYS = ["label", "suite", "lang"]
NOT_STATED = ("within method noise", "draw noise not measured")


def _seeds(runs_dir: Path, report_dir: Path) -> dict[str, int | None]:
    """``run_id`` → its ``calib_seed`` (None: none) from the results file ``runs.csv`` names."""
    runs = pd.read_csv(report_dir / "tables" / "runs.csv")
    seeds = {}
    for run_id, path in zip(runs.run_id, runs.path):
        args = json.loads((runs_dir / path).read_text())["config"]["model_args"]
        pairs = dict(part.split("=", 1) for part in str(args).split(",") if "=" in part)
        seeds[run_id] = int(pairs["calib_seed"]) if "calib_seed" in pairs else None
    return seeds


def _seeded_rows(runs_dir: Path, report_dir: Path) -> pd.DataFrame:
    """``tables/degradation.csv`` rows with their ``seed`` (NaN: a run without calibration draws)."""
    table = pd.read_csv(report_dir / "tables" / "degradation.csv")
    table["seed"] = table.quant_id.map(_seeds(runs_dir, report_dir))
    return table[[*KEYS, "seed", "degradation"]]


def _draw_rows(runs_dir: Path, report_dir: Path) -> pd.DataFrame:
    """``tables/degradation.csv`` rows of the seeded runs, with their ``seed``."""
    table = _seeded_rows(runs_dir, report_dir)
    return table[table.seed.notna()]


def single_run_differences(main_runs: Path, main_report: Path, other_runs: Path, other_report: Path) -> pd.DataFrame:
    """Table 0: per label and suite of the runs without a draw, ``max_abs`` and ``mean_abs`` of
    D(other) − D(here) over the languages both reports have, and ``n_langs``."""
    here, other = (_seeded_rows(runs, report) for runs, report in ((main_runs, main_report), (other_runs, other_report)))
    table = here[here.seed.isna()].merge(other[other.seed.isna()], on=KEYS, suffixes=("_here", "_other"))
    table["abs_machine"] = (table.degradation_other - table.degradation_here).abs()
    return (table.groupby(["label", "suite"]).abs_machine.agg(max_abs="max", mean_abs="mean", n_langs="size")
            .reset_index())


def _spread(report_dir: Path) -> pd.DataFrame:
    return pd.read_csv(report_dir / "tables" / "calibration_spread.csv")


def draw_differences(main_runs: Path, main_report: Path, other_runs: Path, other_report: Path) -> pd.DataFrame:
    """Table 1: one row per label, suite, language and common draw: ``d_here``, ``d_other``, ``machine``
    (other − here), ``draw_sd`` (the main job's across-draw SD)."""
    here = _draw_rows(main_runs, main_report).rename(columns={"degradation": "d_here"})
    other = _draw_rows(other_runs, other_report).rename(columns={"degradation": "d_other"})
    spread = _spread(main_report)[[*KEYS, "n_draws", "d_sd"]]
    table = here.merge(other, on=[*KEYS, "seed"]).merge(spread, on=KEYS)
    table["machine"] = table.d_other - table.d_here
    return table.rename(columns={"d_sd": "draw_sd"}).sort_values([*KEYS, "seed"]).reset_index(drop=True)


def summary(table: pd.DataFrame, main_report: Path, other_report: Path) -> pd.DataFrame:
    """Table 2: per label and suite, ``kernel_sd`` = sqrt(mean(machine²)/2), ``draw_sd`` = sqrt(mean(SD²))
    over the languages, and ``inside`` = languages whose other-kernel draw mean is inside the main CI."""
    main = _spread(main_report)[[*KEYS, "n_draws", "d_mean", "d_sd", "d_ci_low", "d_ci_high"]]
    other = _spread(other_report)[[*KEYS, "n_draws", "d_mean"]].rename(columns={"n_draws": "n_draws_other", "d_mean": "d_mean_other"})
    means = main.merge(other, on=KEYS)
    means = means[means.label.isin(set(table.label))]
    means = means.assign(inside=(means.d_mean_other >= means.d_ci_low) & (means.d_mean_other <= means.d_ci_high))
    rows = []
    for (label, suite), block in means.groupby(["label", "suite"]):
        machine = table[(table.label == label) & (table.suite == suite)].machine
        rows.append({"label": label, "suite": suite, "n_draws": int(block.n_draws.iloc[0]), "n_draws_other": int(block.n_draws_other.iloc[0]),
                     "n_pairs": machine.size, "kernel_sd": math.sqrt((machine**2).mean() / 2), "draw_sd": math.sqrt((block.d_sd**2).mean()),
                     "inside": int(block.inside.sum()), "n_langs": len(block)})
    return pd.DataFrame(rows)


def claims(main_report: Path, other_report: Path) -> pd.DataFrame:
    """Table 3: the main job's stated method differences beside the other kernels' (``difference_other``,
    ``reading_other``, ``same_sign``)."""
    columns = ["suite", "lang", "label_a", "label_b"]
    main = pd.read_csv(main_report / "tables" / "method_comparisons.csv")
    main = main[~main.reading.isin(NOT_STATED) & main.ci_low.notna()]
    other = pd.read_csv(other_report / "tables" / "method_comparisons.csv")[[*columns, "difference", "reading"]]
    table = main.merge(other.rename(columns={"difference": "difference_other", "reading": "reading_other"}), on=columns)
    return table.assign(same_sign=(table.difference > 0) == (table.difference_other > 0)).reset_index(drop=True)


def _points(value: float, sign: str = "") -> str:
    return f"{value * 100:{sign}.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("main_runs", type=Path)
    parser.add_argument("main_report", type=Path)
    parser.add_argument("other_runs", type=Path)
    parser.add_argument("other_report", type=Path)
    args = parser.parse_args()
    table = draw_differences(args.main_runs, args.main_report, args.other_runs, args.other_report)
    if table.empty:
        raise SystemExit("blas_path_check: no config has a calibration draw in both reports")
    print("| config (no draws) | suite | languages | max abs machine (pp) | mean abs machine (pp) |")
    print("|---|---|---:|---:|---:|")
    for row in single_run_differences(args.main_runs, args.main_report, args.other_runs, args.other_report).itertuples():
        print(f"| {row.label} | {row.suite} | {row.n_langs} | {_points(row.max_abs)} | {_points(row.mean_abs)} |")
    print()
    print("| config | suite | lang | draw | D here | D other kernels | machine (pp) | draw SD (pp) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for row in table.itertuples():
        print(f"| {row.label} | {row.suite} | {row.lang} | {int(row.seed)} | {_points(row.d_here)} | {_points(row.d_other)} | "
              f"{_points(row.machine, '+')} | {_points(row.draw_sd)} |")
    print()
    print("| config | suite | draws here / other | same-draw pairs | kernel-path SD (pp) | across-draw SD (pp) | "
          "other kernels' draw mean inside the main CI |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in summary(table, args.main_report, args.other_report).itertuples():
        print(f"| {row.label} | {row.suite} | {row.n_draws} / {row.n_draws_other} | {row.n_pairs} | {_points(row.kernel_sd)} | "
              f"{_points(row.draw_sd)} | {row.inside}/{row.n_langs} |")
    stated = claims(args.main_report, args.other_report)
    print()
    print(f"Method differences the main job states: {len(stated)}; same sign on the other kernels: {int(stated.same_sign.sum())}; "
          f"also stated there: {int((stated.reading_other == stated.reading).sum())}.")
    print()
    print("| suite | lang | a | b | a − b here (pp) [CI] | a − b other kernels (pp) | other kernels' reading |")
    print("|---|---|---|---|---|---:|---|")
    for row in stated.itertuples():
        print(f"| {row.suite} | {row.lang} | {row.label_a} | {row.label_b} | {_points(row.difference, '+')} "
              f"[{_points(row.ci_low, '+')}, {_points(row.ci_high, '+')}] | {_points(row.difference_other, '+')} | {row.reading_other} |")


if __name__ == "__main__":
    main()
