"""End-to-end analysis: load runs, compute every section, write ``report.md``, CSVs and PNGs.

The report is a header and the ordered :data:`SECTIONS` (:mod:`analysis.report.section`): each
section computes its result from the :class:`Analysis` (:func:`analyze`), and :func:`write_outputs`
writes every section's tables (``tables/*.csv``), figures (``figures/*.png``) and Markdown.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import sensitivity_scan, task_languages
from analysis.groups import resource_groups
from analysis.language_degradation import Degradation, degradation
from analysis.loading import RunSet, load_runs
from analysis.report.section import Section
from analysis.report.sections import (
    atlas,
    benchmarks,
    calibration_draws,
    calibration_matrix,
    correlations,
    degradation_by_language,
    disparity,
    fidelity,
    files,
    many_languages,
    method_comparison,
    parallel_text,
    problems,
    rate_distortion,
    runs,
    scan,
)
from analysis.tokenizer_fertility import runs_fertility

PACKAGES = ("quant-disparity", "lm_eval", "torch", "transformers", "bitsandbytes", "numpy", "scipy", "pandas", "matplotlib")

SECTIONS: tuple[Section, ...] = (
    problems.SECTION, runs.SECTION, degradation_by_language.SECTION, fidelity.SECTION, parallel_text.SECTION, disparity.SECTION,
    correlations.SECTION, rate_distortion.SECTION, method_comparison.SECTION, scan.SECTION, many_languages.SECTION,
    benchmarks.SECTION, files.SECTION, calibration_draws.SECTION, calibration_matrix.SECTION, atlas.SECTION,
)
"""The report's sections, in the order of ``report.md``."""
COMPUTE_ORDER = ("runs", "degradation", "disparity", "parallel_view", "correlations", "rate_distortion", "method_comparison", "scan",
                 "fidelity", "benchmarks", "calibration_draws", "calibration_matrix", "many_languages", "atlas", "files", "problems")
"""The order the sections are computed in: a section reads only results computed before it (method
comparison: disparity; benchmarks: fidelity; calibration matrix: calibration draws; problems: every
note), and the problems list follows it."""


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


@dataclass(kw_only=True)
class Analysis:
    """Everything computed from one set of runs: the inputs every section reads (runs, options, user
    files, resource groups, per-language degradation, tokenizer fertility), the notes (one line per
    skipped or degenerate part) and each section's result by section name (``results``, also readable
    as attributes: ``analysis.benchmarks``)."""

    runset: RunSet
    options: AnalysisOptions
    groups: dict[str, str]
    deg: Degradation
    fertility: pd.DataFrame
    tokens: pd.DataFrame | None
    scan_csv: pd.DataFrame | None = None
    task_rules: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str):
        try:
            return self.__dict__["results"][name]
        except KeyError:
            raise AttributeError(f"Analysis has no field or section result {name!r}") from None


def analyze(paths, options: AnalysisOptions | None = None) -> Analysis:
    """Load runs under ``paths`` and compute every section (no files written)."""
    options = options or AnalysisOptions()
    scan_csv = sensitivity_scan.read_scan_csv(options.scan_csv) if options.scan_csv else None  # user files before heavy work
    task_rules = task_languages.load_task_language_map(options.task_lang_map) if options.task_lang_map else []
    runset = load_runs(paths)
    deg = degradation(runset, options.baseline, options.n_resamples, options.random_state, options.confidence)
    languages = sorted(set(runset.aggregates.lang))
    groups = resource_groups(languages, options.hr, options.lr)
    notes: list[str] = []
    given = [*(options.hr or []), *(options.lr or [])]
    absent = [code for code in given if code not in languages]
    if absent:
        notes.append(f"--hr/--lr name {', '.join(absent)}, not among the runs' languages ({', '.join(languages) or 'none'}); ignored.")
    if not groups:
        why = "none of the --hr/--lr languages is in the runs" if given else "no language is in qd_tasks.languages; pass --hr/--lr"
        notes.append(f"No language has a resource class ({why}): group statistics are empty.")
    fert, tokens, fertility_notes = runs_fertility(runset, options.tokenizer)
    analysis = Analysis(runset=runset, options=options, groups=groups, deg=deg, fertility=fert, tokens=tokens, scan_csv=scan_csv,
                        task_rules=task_rules, notes=notes + fertility_notes)
    by_name = {section.name: section for section in SECTIONS}
    for name in COMPUTE_ORDER:
        analysis.results[name] = by_name[name].compute(analysis)
    return analysis


def write_outputs(analysis: Analysis, out: Path, command: str = "") -> Path:
    """Write ``out/report.md``, ``out/tables/*.csv`` and ``out/figures/*.png``; return the report's path."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    lines = header(analysis.options, command)
    for section in SECTIONS:
        lines += write_section(section, analysis.results[section.name], out)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def write_section(section: Section, result, out: Path) -> list[str]:
    """Write one section's tables into ``out/tables`` and figures into ``out/figures`` (both existing);
    return its lines of ``report.md``."""
    for name, table in section.tables(result).items():
        table.to_csv(out / "tables" / f"{name}.csv", index=False)
    figures = [file.save(file.fig, out / "figures" / file.name) for file in section.figures(result)]
    return section.markdown(result, figures)


def report_markdown(analysis: Analysis, command: str = "") -> str:
    """The text of ``report.md`` without writing any file (no figure links)."""
    lines = header(analysis.options, command)
    for section in SECTIONS:
        lines += section.markdown(analysis.results[section.name], [])
    return "\n".join(lines) + "\n"


def header(options: AnalysisOptions, command: str) -> list[str]:
    """Title, command, bootstrap settings, definitions and package versions."""
    level = f"{options.confidence:.0%}"
    return ["# quant-disparity analysis report", "",
            f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `{command or 'qd-analyze'}`.",
            f"Bootstrap: {options.n_resamples} resamples, random_state={options.random_state}; per-language {level} CIs: studentized "
            f"(bootstrap-t) over documents; group CIs: hierarchical (languages, then documents), {level} percentile intervals.",
            "Definitions: see docs/analysis.md of quant-disparity (D = relative increase of total NLL = relative increase of bits/byte).",
            "", "Package versions: " + ", ".join(_versions()), ""]


def _versions() -> list[str]:
    found = [f"python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return found


def command_line() -> str:
    """The current command line for the report header, absolute paths shortened to their last
    two parts (a report never carries the folders of the machine that made it)."""
    return " ".join(["qd-analyze", *(_short_path(arg) for arg in sys.argv[1:])])


def _short_path(arg: str) -> str:
    path = Path(arg)
    return str(Path(*path.parts[-2:])) if path.is_absolute() else arg
