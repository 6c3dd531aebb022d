"""End-to-end analysis: load runs, compute every table, write ``report.md``, CSVs and PNGs.

The report is written by three modules: :mod:`analysis.report.tables` (``tables/*.csv``),
:mod:`analysis.report.figures` (``figures/*.png``) and :mod:`analysis.report.markdown` (``report.md``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import atlas, benchmarks, calibration_draws, fidelity, many_languages, relations, task_languages
from analysis.group_disparity import disparity
from analysis.groups import resource_groups
from analysis.language_degradation import Degradation, degradation
from analysis.loading import RunSet, load_runs
from analysis.report.figures import slug, write_figures
from analysis.report.markdown import report_markdown
from analysis.report.tables import write_tables


@dataclass(frozen=True)
class AnalysisOptions:
    """Options of one analysis (validated; mirrors the ``qd-analyze`` flags)."""

    baseline: str | None = None
    hr: list[str] | None = None
    lr: list[str] | None = None
    tokenizer: str | None = None
    scan_csv: str | None = None
    n_resamples: int = 2000
    random_state: int = 0
    confidence: float = 0.95
    min_denominator: float = 0.01
    task_lang_map: str | None = None

    def __post_init__(self):
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples={self.n_resamples} is not allowed; allowed: an integer >= 1")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence={self.confidence} is not allowed; allowed: a number in (0, 1)")
        if self.min_denominator <= 0:
            raise ValueError(f"min_denominator={self.min_denominator} is not allowed; allowed: a number > 0")


@dataclass
class Analysis:
    """Everything computed from one set of runs (all tables are pandas DataFrames)."""

    runset: RunSet
    options: AnalysisOptions
    groups: dict[str, str]
    deg: Degradation
    disparity: pd.DataFrame
    fertility: pd.DataFrame
    correlations: pd.DataFrame
    rate_distortion: pd.DataFrame
    weight_mse: pd.DataFrame
    weight_mse_slopes: pd.DataFrame
    pareto: pd.DataFrame
    scan: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    parallel: pd.DataFrame = field(default_factory=pd.DataFrame)
    fidelity: pd.DataFrame = field(default_factory=pd.DataFrame)
    benchmarks: benchmarks.BenchmarkAnalysis | None = None
    draws: calibration_draws.DrawAnalysis | None = None


def analyze(paths, options: AnalysisOptions | None = None) -> Analysis:
    """Load runs under ``paths`` and compute all tables (no files written)."""
    options = options or AnalysisOptions()
    scan_from_csv = relations.read_scan_csv(options.scan_csv) if options.scan_csv else None  # validate before heavy work
    task_rules = task_languages.load_task_language_map(options.task_lang_map) if options.task_lang_map else []
    runset = load_runs(paths)
    notes: list[str] = []
    deg = degradation(runset, options.baseline, options.n_resamples, options.random_state, options.confidence)
    languages = sorted(set(runset.aggregates.lang))
    groups = resource_groups(languages, options.hr, options.lr)
    given = [*(options.hr or []), *(options.lr or [])]
    absent = [code for code in given if code not in languages]
    if absent:
        notes.append(f"--hr/--lr name {', '.join(absent)}, not among the runs' languages ({', '.join(languages) or 'none'}); ignored.")
    if not groups:
        why = "none of the --hr/--lr languages is in the runs" if given else "no language is in qd_tasks.languages; pass --hr/--lr"
        notes.append(f"No language has a resource class ({why}): group statistics are empty.")
    disp = disparity(deg, groups, options.min_denominator, options.random_state)
    fert, tokens = _fertility(runset, options.tokenizer, notes)
    parallel, parallel_notes = relations.parallel_view(runset, deg, tokens)
    notes += parallel_notes
    kurtosis = relations.calibration_kurtosis(runset)
    if kurtosis.empty:
        notes.append("No quant report has per-language calibration kurtosis: that correlation is skipped.")
    corr = relations.correlations(deg, groups, fert, kurtosis) if not deg.table.empty else pd.DataFrame()
    rd = relations.rate_distortion(runset, deg, options.n_resamples, options.random_state, options.confidence)
    mse = relations.weight_mse(runset)
    if not disp.empty:
        pareto_points = disp.copy()
        pareto_points["on_front"] = relations.pareto_front(pareto_points).to_numpy()
    else:
        pareto_points = disp
    scan = scan_from_csv if scan_from_csv is not None else relations.scan_matrix_from_runs(runset, deg)
    fid, fid_problems = fidelity.fidelity_table(runset, deg.table, options.n_resamples, options.random_state, options.confidence)
    notes += fid_problems
    bench = benchmarks.analyze_benchmarks(runset, deg.table, options.baseline, options.n_resamples, options.random_state,
                                          options.confidence, task_rules, benchmarks.fidelity_measures(runset, fid))
    notes += bench.problems
    draws = calibration_draws.draw_analysis(runset, deg, options.confidence)
    return Analysis(runset, options, groups, deg, disp, fert, corr, rd, mse, relations.weight_mse_slopes(mse, options.confidence), pareto_points, scan, notes,
                    parallel, fid, bench, draws)


def _fertility(runset: RunSet, tokenizer: str | None, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(fertility per language, per-document token counts) — empty / None when skipped."""
    if runset.docs.empty:
        notes.append("No samples files: fertility needs the task documents from --log_samples; skipped.")
        return pd.DataFrame(), None
    if tokenizer is None:
        local = sorted({run.model_path for run in runset.runs.values() if run.model_path and Path(run.model_path).is_dir()})
        if len(local) != 1:
            notes.append("Fertility skipped: pass --tokenizer PATH (the runs' models are not one local folder).")
            return pd.DataFrame(), None
        tokenizer = local[0]
    try:
        count = relations.load_tokenizer(tokenizer)
    except (OSError, ValueError) as err:
        notes.append(f"Fertility skipped: tokenizer {tokenizer!r} could not be loaded ({err}).")
        return pd.DataFrame(), None
    notes.append(f"Fertility computed with the tokenizer {Path(tokenizer).name}.")
    tokens = relations.doc_token_counts(runset, count)
    return relations.fertility(runset, count, tokens), tokens


def write_outputs(analysis: Analysis, out: Path, command: str = "") -> Path:
    """Write ``out/report.md``, ``out/tables/*.csv`` and ``out/figures/*.png``; return report path."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    write_tables(analysis, out / "tables")
    figures = write_figures(analysis, out / "figures")
    from analysis.calibration_matrix import write_section

    draws = analysis.draws or calibration_draws.draw_analysis(analysis.runset, analysis.deg, analysis.options.confidence)
    draw_lines = calibration_draws.write_section(draws, out / "tables", many_languages.MIN_LANGUAGES)
    calibration = write_section(analysis.runset, draws.config_table, out / "tables", out / "figures", draws.comparisons)
    many = many_languages.write_section(analysis.deg, out / "tables", out / "figures", slug)
    options = analysis.options
    atlas_lines = atlas.write_section(analysis.deg, out / "tables", out / "figures", slug, options.n_resamples, options.random_state,
                                      options.confidence)
    figures["benchmarks"] = benchmarks.write_outputs(analysis.benchmarks, out) if analysis.benchmarks else []
    report = out / "report.md"
    report.write_text(report_markdown(analysis, figures, command, many) + "\n".join(draw_lines) + "\n" + calibration
                      + "".join(f"{line}\n" for line in atlas_lines), encoding="utf-8")
    return report


def command_line() -> str:
    """The current command line for the report header, absolute paths shortened to their last
    two parts (a report never carries the folders of the machine that made it)."""
    return " ".join(["qd-analyze", *(_short_path(arg) for arg in sys.argv[1:])])


def _short_path(arg: str) -> str:
    path = Path(arg)
    return str(Path(*path.parts[-2:])) if path.is_absolute() else arg
