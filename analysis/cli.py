"""``qd-analyze PATH... --out DIR``: lm-eval outputs -> report.md, tables/*.csv, figures/*.png.

DIR is replaced as a whole when the report is complete (:mod:`analysis.report.output_folder`): no
stale files of an earlier report stay; a DIR with files qd-analyze did not write needs ``--overwrite``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.groups import parse_language_list
from analysis.report import AnalysisOptions, analyze, command_line, write_outputs
from analysis.report.output_folder import check_output_folder, write_report_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qd-analyze", description=__doc__)
    parser.add_argument("paths", nargs="+", help="lm-eval --output_path folders or results_*.json files")
    parser.add_argument("--out", required=True, help="output folder for report.md, tables/, figures/ (replaced as a whole)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out even when it holds files qd-analyze did not write")
    parser.add_argument("--baseline", help="run id or results file to compare every quantized run with")
    parser.add_argument("--hr", help="high-resource languages, e.g. en,de (default: qd_tasks language metadata)")
    parser.add_argument("--lr", help="low-resource languages, e.g. he,sw,yo (default: qd_tasks language metadata)")
    parser.add_argument("--tokenizer", help="local tokenizer folder for fertility (default: the runs' model when it is one local folder)")
    parser.add_argument("--scan-csv", help="sensitivity-scan CSV with columns block,lang,degradation")
    parser.add_argument("--n-resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--random-state", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--min-denominator", type=float, default=0.01,
                        help="flag D_LR/D_HR as unstable when D_HR is below this (default 0.01 = 1%%)")
    parser.add_argument("--task-lang-map", help='JSON {"task or re:<regex>": "lang" | {"lang": ..., "suite": ...}} for benchmark tasks '
                        "the built-in table does not map")
    return parser


def input_paths(args: argparse.Namespace) -> list[str]:
    """Every path the report reads (the positional paths and each path option): ``--out`` may hold none of them."""
    options = (args.baseline, args.tokenizer, args.scan_csv, args.task_lang_map)
    return [*args.paths, *(path for path in options if path is not None and Path(path).exists())]


def main(argv: list[str] | None = None) -> int:
    """``qd-analyze``: user errors as one line on stderr, exit 2 (``--debug``: traceback)."""
    from qd_tasks.cli_errors import run_cli

    return run_cli("qd-analyze", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # files only; the library itself never picks a backend
    options = AnalysisOptions(
        baseline=args.baseline,
        hr=parse_language_list(args.hr, "--hr"),
        lr=parse_language_list(args.lr, "--lr"),
        tokenizer=args.tokenizer,
        scan_csv=args.scan_csv,
        n_resamples=args.n_resamples,
        random_state=args.random_state,
        confidence=args.confidence,
        min_denominator=args.min_denominator,
        task_lang_map=args.task_lang_map,
    )
    inputs = input_paths(args)
    check_output_folder(args.out, inputs, args.overwrite)
    analysis = analyze(args.paths, options)
    command = command_line()
    write_report_folder(args.out, lambda folder: write_outputs(analysis, folder, command), inputs)
    report = Path(args.out) / "report.md"
    for line in analysis.deg.problems + analysis.notes:
        print(f"qd-analyze: {line}", file=sys.stderr)
    print(f"qd-analyze: wrote {report}")
    return 0
