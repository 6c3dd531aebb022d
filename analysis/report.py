"""End-to-end analysis: load runs, compute every table, write ``report.md``, CSVs and PNGs."""

from __future__ import annotations

import math
import platform
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from analysis import benchmarks, fidelity, many_languages, relations, task_languages
from analysis.compare import Degradation, degradation, disparity
from analysis.groups import resource_groups
from analysis.loading import RunSet, load_runs

PACKAGES = ("quant-disparity", "lm_eval", "torch", "transformers", "bitsandbytes", "numpy", "scipy", "pandas", "matplotlib")
MAX_LANGUAGE_FIGURES = 3  # per-run bar charts; beyond that one run × language heatmap (keeps 100 runs < 5 s)
MAX_RATE_DISTORTION_FIGURES = 3


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
    return Analysis(runset, options, groups, deg, disp, fert, corr, rd, mse, relations.weight_mse_slopes(mse, options.confidence), pareto_points, scan, notes,
                    parallel, fid, bench)


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
    _write_tables(analysis, out / "tables")
    figures = _write_figures(analysis, out / "figures")
    from analysis.calibration_matrix import write_section

    calibration = write_section(analysis.runset, analysis.deg.table, out / "tables", out / "figures")
    many = many_languages.write_section(analysis.deg, out / "tables", out / "figures", _slug)
    figures["benchmarks"] = benchmarks.write_outputs(analysis.benchmarks, out) if analysis.benchmarks else []
    report = out / "report.md"
    report.write_text(_markdown(analysis, figures, command, many) + calibration, encoding="utf-8")
    return report


def _write_tables(analysis: Analysis, folder: Path) -> None:
    long = analysis.runset.long_table()
    long.to_csv(folder / "long_table.csv", index=False)
    pd.DataFrame(_run_rows(analysis.runset)).to_csv(folder / "runs.csv", index=False)
    named = {
        "degradation": analysis.deg.table,
        "doc_degradation": analysis.deg.docs,
        "disparity": analysis.disparity,
        "fertility": analysis.fertility,
        "parallel_view": analysis.parallel,
        "fidelity": analysis.fidelity,
        "correlations": analysis.correlations,
        "rate_distortion": analysis.rate_distortion,
        "weight_mse": analysis.weight_mse,
        "weight_mse_slopes": analysis.weight_mse_slopes,
        "pareto": analysis.pareto,
        "scan": analysis.scan,
    }
    for name, table in named.items():
        table.to_csv(folder / f"{name}.csv", index=False)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def _write_figures(analysis: Analysis, folder: Path) -> dict[str, list[Path]]:
    from analysis import plots  # matplotlib only when figures are written

    figures: dict[str, list[Path]] = {"degradation": [], "fertility": [], "rate_distortion": [], "pareto": [], "scan": [], "fidelity": []}
    for suite, block in analysis.fidelity.groupby("suite") if not analysis.fidelity.empty else []:
        fig, _ = plots.fidelity_by_language(block, fidelity.languages_by_baseline(block), f"Fidelity to the baseline by language — {suite}")
        figures["fidelity"].append(plots.save(fig, folder / f"fidelity_{_slug(suite)}.png"))
    table = analysis.deg.table
    if not table.empty:
        for i, ((quant_id, suite), block) in enumerate(table.groupby(["quant_id", "suite"], sort=True)):
            if i >= MAX_LANGUAGE_FIGURES:
                break
            if block.lang.nunique() >= many_languages.MIN_LANGUAGES:
                continue  # the many-language views replace unreadable per-language bars
            title = f"{block.label.iloc[0]} ({quant_id}) — {suite}"
            fig, _ = plots.degradation_by_language(block, analysis.groups, title)
            figures["degradation"].append(plots.save(fig, folder / f"degradation_{_slug(quant_id)}_{_slug(suite)}.png"))
            if not analysis.fertility.empty:
                merged = block.merge(analysis.fertility, on=["suite", "lang"], how="left")
                corr = analysis.correlations
                row = corr[(corr.quant_id == quant_id) & (corr.suite == suite) & (corr.predictor == "tokens_per_byte")]
                fig, _ = plots.predictor_scatter(merged, "tokens_per_byte", analysis.groups, row.iloc[0].to_dict() if len(row) else None, title)
                figures["fertility"].append(plots.save(fig, folder / f"fertility_{_slug(quant_id)}_{_slug(suite)}.png"))
    if not table.empty and table.groupby(["quant_id", "suite"]).ngroups > MAX_LANGUAGE_FIGURES:
        for suite, block in table.groupby("suite"):
            if block.lang.nunique() >= many_languages.MIN_LANGUAGES:
                continue
            matrix = block.assign(run=block.label + " " + block.quant_id.str.split("/").str[0]).pivot_table(
                index="run", columns="lang", values="degradation", aggfunc="first")
            fig, _ = plots.degradation_heatmap(matrix, "run", f"Degradation by run and language — {suite}")
            figures["degradation"].append(plots.save(fig, folder / f"degradation_overview_{_slug(suite)}.png"))
    if not analysis.rate_distortion.empty:
        fam = table.assign(family_key=table.quant_id.map(lambda r: relations.quant_config_family(analysis.runset.runs[r])))
        families = analysis.rate_distortion[["family_key", "suite"]].drop_duplicates()
        for family_key, suite in families.head(MAX_RATE_DISTORTION_FIGURES).itertuples(index=False):
            block = fam[(fam.family_key == family_key) & (fam.suite == suite)]
            title = f"{block.model.iloc[0]} {analysis.runset.runs[block.quant_id.iloc[0]].family} — {suite}"
            fig, _ = plots.rate_distortion_curves(block, analysis.groups, title)
            figures["rate_distortion"].append(plots.save(fig, folder / f"rate_distortion_{len(figures['rate_distortion'])}.png"))
    if not analysis.pareto.empty and analysis.pareto.effective_bits_per_weight.notna().any():
        for suite, block in analysis.pareto.groupby("suite"):
            fig, _ = plots.pareto(block, block.on_front, title=f"Worst-language degradation vs size — {suite}")
            figures["pareto"].append(plots.save(fig, folder / f"pareto_{_slug(suite)}.png"))
    if not analysis.scan.empty:
        fig, _ = plots.degradation_heatmap(relations.scan_pivot(analysis.scan), "block", "Sensitivity scan")
        figures["scan"].append(plots.save(fig, folder / "scan_heatmap.png"))
    return figures


def _run_rows(runset: RunSet) -> list[dict]:
    """One summary dict per run, sorted by run id."""
    n_tasks = runset.aggregates.groupby("run_id")["task"].nunique().to_dict()
    with_samples = set(runset.docs.run_id)
    return [
        {
            "run_id": run_id,
            "path": runset.relative(str(run.path)),
            "model": run.model,
            "lm_eval_model": run.lm_eval_model,
            "label": run.label,
            "bits": run.bits,
            "effective_bits_per_weight": run.effective_bits_per_weight,
            "n_tasks": int(n_tasks.get(run_id, 0)),
            "has_samples": run_id in with_samples,
            "quant_report": run.quant_report is not None,
        }
        for run_id, run in sorted(runset.runs.items())
    ]


def _pct(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{100 * value:+.{digits}f}%" if abs(value) >= 0.01 else f"{100 * value:+.{digits}g}%"


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _group_readings(analysis: Analysis) -> list[str]:
    """One sentence per (run, suite) that says what the language-level statistics support."""
    alpha = 1.0 - analysis.options.confidence
    table = analysis.deg.table
    lines = []
    for r in analysis.disparity.itertuples():
        head = f"{r.label} ({r.suite}): D_LR − D_HR = {_pct(r.difference)}"
        if r.loo_flips:
            langs = r.loo_flips.split(",")
            block = table[(table.quant_id == r.quant_id) & (table.suite == r.suite) & table.lang.isin(langs)]
            per_lang = ", ".join(f"{b.lang} D = {_pct(b.degradation)}" + (f" [{_pct(b.ci_low)}, {_pct(b.ci_high)}]" if not math.isnan(b.ci_low) else "")
                                 for b in block.itertuples())
            lines.append(f"{head}, but its sign flips when {' or '.join(langs)} is left out: this is a statement about "
                         f"{', '.join(langs)}, not about the groups ({per_lang}).")
        elif math.isnan(r.perm_p):
            lines.append(f"{head}; no language-level test (needs at least one language with a finite D in each group).")
        elif r.perm_p >= alpha:
            lines.append(f"{head}; no language-level evidence of a group difference (permutation p = {r.perm_p:.3g} over "
                         f"{r.perm_n_splits} splits of {r.n_langs_HR + r.n_langs_LR} languages); compare languages individually.")
        else:
            direction = "more" if r.difference > 0 else "less"
            lines.append(f"{head}; low-resource languages degrade {direction} than high-resource ones at the language level "
                         f"(permutation p = {r.perm_p:.3g}; the sign survives leaving out any one language).")
    return lines


def _config_name(row, several_models: bool) -> str:
    """A run's config label, plus its model when the table holds runs of several models."""
    return f"{row.label} ({row.model})" if several_models else row.label


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _versions() -> list[str]:
    found = [f"python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return found


def _markdown(analysis: Analysis, figures: dict[str, list[Path]], command: str, many_languages_lines: list[str] = ()) -> str:
    runset, deg, options = analysis.runset, analysis.deg, analysis.options
    level = f"{options.confidence:.0%}"
    out = ["# quant-disparity analysis report", ""]
    out.append(f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `{command or 'qd-analyze'}`.")
    out.append(f"Bootstrap: {options.n_resamples} resamples, random_state={options.random_state}; per-language {level} CIs: studentized "
               f"(bootstrap-t) over documents; group CIs: hierarchical (languages, then documents), {level} percentile intervals.")
    out.append("Definitions: see the section Analysis definitions of the quant-disparity README (D = relative increase of total NLL = relative increase of bits/byte).")
    out += ["", "Package versions: " + ", ".join(_versions()), ""]

    notes = sorted({run.baseline_note for run in runset.runs.values() if run.baseline_note})
    if notes:
        out += ["## Baseline notes", ""] + [f"> {note}" for note in notes] + [""]

    problems = deg.problems + analysis.notes
    out += ["## Problems and flags", ""]
    out += [f"- {runset.relative(line)}" for line in problems] if problems else ["None."]
    out.append("")

    out += ["## Runs", ""]
    rows = [[r["run_id"], r["model"], r["lm_eval_model"], r["label"], _num(r["bits"]), _num(r["effective_bits_per_weight"]),
             "yes" if r["has_samples"] else "no", f"`{r['path']}`"] for r in _run_rows(runset)]
    out += [_md_table(["run", "model", "lm-eval model", "config", "bits", "eff. bits/weight", "samples", "file"], rows), ""]
    pairs = [[p.quant_id, p.base_id] for p in deg.pairs]
    if pairs:
        out += ["Pairs compared (quantized → baseline):", "", _md_table(["quantized", "baseline"], pairs), ""]
    if options.baseline and pairs:
        out += [f"`--baseline {runset.relative(str(options.baseline))}`: every other run is compared with `{deg.pairs[0].base_id}`, whatever its model or config.", ""]

    out += ["## Degradation by language", ""]
    if deg.table.empty:
        out += ["No quantized run could be paired with a baseline" + (" (see problems above)." if deg.problems else "; pass --baseline RUN to compare every run with one."), ""]
    for (quant_id, suite), block in deg.table.groupby(["quant_id", "suite"], sort=True) if not deg.table.empty else []:
        out += [f"### {block.label.iloc[0]} — `{quant_id}` — {suite}", ""]
        if block.lang.nunique() >= many_languages.MIN_LANGUAGES:
            out += [f"{block.lang.nunique()} languages: see Many languages below; every row is in tables/degradation.csv.", ""]
            continue
        rows = [[r.lang, analysis.groups.get(r.lang, "—"), _num(r.bpb_base), _num(r.bpb_quant), f"{r.delta_bpb:+.4f}",
                 _pct(r.degradation) + (f" [{_pct(r.ci_low)}, {_pct(r.ci_high)}]" if not math.isnan(r.ci_low) else ""),
                 _pct(r.byte_ppl_rel_change), r.n_docs, r.flag or ""] for r in block.sort_values("lang").itertuples()]
        out += [_md_table(["lang", "group", "bits/byte base", "bits/byte quant", "Δ bits/byte", f"D (rel. NLL) [{level} CI]",
                           "seeds' style: rel. byte-ppl change", "docs", "flag"], rows), ""]
        for reason in sorted(set(block.ci_source[block.n_docs == 0])):
            out += [f"{', '.join(sorted(block.lang[block.ci_source == reason]))}: {reason}.", ""]
    out += [f"![{p.stem}](figures/{p.name})" for p in figures["degradation"]]
    if len(deg.table.groupby(["quant_id", "suite"])) > MAX_LANGUAGE_FIGURES if not deg.table.empty else False:
        out.append(f"(Bar charts for the first {MAX_LANGUAGE_FIGURES} run/suite combinations; the overview heatmap shows all runs; all numbers are in tables/degradation.csv.)")
    out.append("")

    out += _fidelity_markdown(analysis, figures.get("fidelity", []), level)

    out += ["## Parallel-text view (script- and tokenizer-fair)", ""]
    if analysis.parallel.empty:
        out += ["Not computed: needs --log_samples and documents aligned across languages (including en).", ""]
    else:
        out += [("Over the documents present in every language (aligned by id). Δ bits per aligned document (= per English byte "
                 "after dividing by the English bytes of the same documents) compares damage to the same content across scripts; "
                 "Δ bits/byte understates it where a script needs more bytes (byte premium). Fertility: tokens per aligned "
                 "document relative to English (needs a tokenizer)."), ""]
        langs_per_suite = analysis.parallel.groupby("suite").lang.transform("nunique")
        shown = analysis.parallel[langs_per_suite < many_languages.MIN_LANGUAGES]
        if len(shown) < len(analysis.parallel):
            out += ["Suites with many languages: rows in tables/parallel_view.csv only.", ""]
        rows = [[r.quant_id, r.suite, r.lang, r.n_aligned, _pct(r.degradation), f"{r.delta_bpb:+.4f}", f"{r.delta_bits_per_doc:+.4g}",
                 f"{r.delta_bits_per_ref_byte:+.4f}", _num(r.bytes_rel_ref, 3), _num(r.fertility_rel_ref, 3)]
                for r in shown.itertuples()]
        out += [_md_table(["run", "suite", "lang", "aligned docs", "D", "Δ bits/byte", "Δ bits per aligned doc", "Δ bits per English byte",
                           "bytes rel. en (byte premium)", "tokens per aligned doc rel. en (fertility)"], rows), ""]

    out += ["## Disparity (low- vs high-resource)", ""]
    hr = sorted(lang for lang, g in analysis.groups.items() if g == "high")
    lr = sorted(lang for lang, g in analysis.groups.items() if g == "low")
    out += [f"High-resource: {', '.join(hr) or 'none'}; low-resource: {', '.join(lr) or 'none'}. "
            f"Ratios whose denominator D_HR < {options.min_denominator:g} are marked unstable; D_HR ≤ 0 or D_LR ≤ 0 makes the ratio undefined (no zero or negative ratios).", ""]
    out += [("Unit of every group statistic: the language. CIs of D_LR − D_HR and D_LR/D_HR: hierarchical bootstrap (languages "
             "resampled within each group, then documents within language). p: label-permutation test of D_LR − D_HR over languages "
             "(two-sided; exact over all splits when feasible). Leave-one-out: D_LR − D_HR with each language dropped. Per-language "
             "D_L CIs (tables above) resample that language's documents. No per-document group test is reported: the documents "
             "of a parallel corpus are the same topics in every language, not independent units."), ""]
    if not analysis.disparity.empty:
        several_models = analysis.disparity.model.nunique() > 1
        rows = []
        for r in analysis.disparity.itertuples():
            ratio = "undefined" if math.isnan(r.ratio) else f"{r.ratio:.2f}×"
            if not math.isnan(r.ratio_ci_low):
                ratio += f" [{r.ratio_ci_low:.2f}, {r.ratio_ci_high:.2f}]"
            diff = _pct(r.difference) + (f" [{_pct(r.difference_ci_low)}, {_pct(r.difference_ci_high)}]" if not math.isnan(r.difference_ci_low) else "")
            notes_cell = "; ".join(n for n in (r.ratio_note, r.ci_note, r.max_over_min_note) if n)
            perm = "n/a" if math.isnan(r.perm_p) else f"{r.perm_p:.3g} ({r.perm_n_splits} {'splits' if r.perm_method == 'exact' else 'random splits'})"
            loo = "n/a" if not r.loo_differences else ("yes" if r.loo_sign_survives else f"no: flips without {r.loo_flips}")
            rows.append([_config_name(r, several_models), r.suite, f"{r.n_langs_HR}/{r.n_langs_LR}", f"{_pct(r.D_HR)} ({_num(r.delta_bpb_HR, 3)})",
                         f"{_pct(r.D_LR)} ({_num(r.delta_bpb_LR, 3)})", diff, ratio, perm, loo,
                         f"{r.worst_lang} {_pct(r.worst_degradation)}", _num(r.max_over_min, 3), notes_cell])
        out += [_md_table(["config", "suite", "languages HR/LR", "D_HR (Δbpb)", "D_LR (Δbpb)", f"D_LR − D_HR [{level} CI]",
                           f"D_LR/D_HR [{level} CI]", "permutation p", "sign survives leaving out any one language",
                           "worst language", "max/min", "notes"], rows), ""]
        out += ["Reading:", ""] + [f"- {line}" for line in _group_readings(analysis)] + [""]
        rows = [[_config_name(r, several_models), r.suite, r.loo_differences or "n/a"] for r in analysis.disparity.itertuples()]
        out += ["Leave-one-language-out D_LR − D_HR (language dropped: difference without it):", "",
                _md_table(["config", "suite", "without language"], rows), ""]

    out += ["## Correlations across languages", ""]
    if analysis.correlations.empty:
        out += ["None computed.", ""]
    else:
        rows = [[r.quant_id, r.suite, r.predictor, r.n, _num(r.pearson_r, 3), _num(r.pearson_p, 3), _num(r.spearman_rho, 3), _num(r.spearman_p, 3)]
                for r in analysis.correlations.itertuples()]
        out += [_md_table(["run", "suite", "predictor", "n", "Pearson r", "p", "Spearman ρ", "p"], rows), ""]
        out += ["With n languages this small, p-values are indicative only.", ""]
    if not analysis.fertility.empty:
        few = analysis.fertility.groupby("suite").lang.transform("nunique") < many_languages.MIN_LANGUAGES  # others: CSV only
        rows = [[r.suite, r.lang, r.n_tokens, r.n_bytes, _num(r.tokens_per_byte), _num(r.tokens_per_word)] for r in analysis.fertility[few].itertuples()]
        out += ["Tokenizer fertility (suites with many languages: tables/fertility.csv):", "", _md_table(["suite", "lang", "tokens", "bytes", "tokens/byte", "tokens/word"], rows), ""]
    out += [f"![{p.stem}](figures/{p.name})" for p in figures["fertility"]] + [""]

    out += ["## Rate-distortion", ""]
    if analysis.rate_distortion.empty:
        out += ["No family of runs differing only in bits.", ""]
    else:
        rows = [[r.family, r.suite, r.lang, r.bits, r.fit_bits or "none", r.dropped_bits or "none", _num(r.slope, 3),
                 f"[{_num(r.low, 3)}, {_num(r.high, 3)}]" if not math.isnan(r.low) else (r.ci_note or "n/a")]
                for r in analysis.rate_distortion.itertuples()]
        out += [(f"Slope of ln D per extra bit (OLS over the bit widths where every language's D_L CI lies above 0 — the same widths for "
                 f"every language; {level} CI from a document bootstrap refitted per resample):"), "",
                _md_table(["family", "suite", "lang", "bits run", "bits fitted", "bits dropped (why)", "slope", "CI"], rows), ""]
    out += [f"![{p.stem}](figures/{p.name})" for p in figures["rate_distortion"]] + [""]
    if len(figures["rate_distortion"]) < len(analysis.rate_distortion[["family_key", "suite"]].drop_duplicates()) if not analysis.rate_distortion.empty else False:
        out += [f"(Curves for the first {MAX_RATE_DISTORTION_FIGURES} families only; all slopes are in tables/rate_distortion.csv.)", ""]
    if not analysis.weight_mse_slopes.empty:
        rows = [[r.label, r.grid, r.n, _num(r.slope, 3), f"[{_num(r.low, 3)}, {_num(r.high, 3)}]", _num(r.grid_reference_slope, 4),
                 _num(r.theoretical_slope, 4)] for r in analysis.weight_mse_slopes.itertuples()]
        out += [("Weight relative MSE vs bits (mean over layers; OLS t-interval). Reference for uniform quantization noise, MSE ∝ "
                 "(range/steps)²: the OLS slope of ln(1/steps²) over the family's bit widths, with steps = 2^(b−1)−1 per half-range "
                 "for the int grid and 2^b−1 for midrise/asymmetric grids; it tends to −2·ln 2 ≈ −1.386 per bit (shown too)."), "",
                _md_table(["family", "grid", "n", "slope of ln MSE", "CI", "reference for this grid and bits", "asymptotic −2 ln 2"], rows), ""]

    out += ["## Method comparison", ""]
    if analysis.pareto.empty or not analysis.pareto.effective_bits_per_weight.notna().any():
        out += ["No run reports effective bits per weight (needs the qd-hf quant totals).", ""]
    else:
        several_models = analysis.pareto.model.nunique() > 1
        rows = [[_config_name(r, several_models), r.suite, _num(r.effective_bits_per_weight), _pct(r.worst_degradation), _pct(r.difference),
                 "undefined" if math.isnan(r.ratio) else f"{r.ratio:.2f}×", "yes" if r.on_front else ""]
                for r in analysis.pareto.sort_values(["suite", "effective_bits_per_weight"]).itertuples()]
        out += [_md_table(["config", "suite", "eff. bits/weight", "worst-language D", "D_LR − D_HR", "D_LR/D_HR", "Pareto front"], rows), ""]
        out += [f"![{p.stem}](figures/{p.name})" for p in figures["pareto"]] + [""]

    if not analysis.scan.empty:
        out += ["## Sensitivity scan", "", f"![scan](figures/{figures['scan'][0].name})", ""]
    out += list(many_languages_lines)
    out += benchmarks.markdown_section(analysis.benchmarks, figures.get("benchmarks", []), _md_table)
    out += ["## Files", "", "Tables: `tables/*.csv` (long table: `tables/long_table.csv`). Figures: `figures/*.png`.", ""]
    return "\n".join(out)


def _fidelity_markdown(analysis: Analysis, figures: list[Path], level: str) -> list[str]:
    """The fidelity section: per suite, one row per (config, language), D_L next to the fidelity numbers."""
    out = ["## Fidelity to the baseline (per token)", ""]
    if analysis.fidelity.empty:
        return out + ["Not computed: needs runs with fidelity files (`qd-sweep --fidelity`, or qd-hf `fidelity_out`/`fidelity_baseline`).", ""]
    out += [(f"KL(base ‖ quant) over the baseline's top-k tokens + one tail bucket (a lower bound of the exact KL; `tail mass` is the "
             f"baseline's mean probability outside the top-k), per scored token and per UTF-8 byte, in nats; same top token: share of "
             f"positions where both models' argmax agree; Δp = p_quant(true token) − p_base(true token), mean and percentiles over positions. "
             f"{level} CIs: studentized document bootstrap within the language (as D_L); Δp percentiles: percentile interval over at most "
             f"{fidelity.MAX_PERCENTILE_RESAMPLES} document resamples. Languages ordered by baseline bits/byte."), ""]

    def ci(r, column, scale=1.0, fmt="{:.4g}"):
        value, low, high = (getattr(r, name) for name in (column, f"{column}_ci_low", f"{column}_ci_high"))
        text = "n/a" if math.isnan(value) else fmt.format(scale * value)
        return text + (f" [{fmt.format(scale * low)}, {fmt.format(scale * high)}]" if not math.isnan(low) else "")

    for suite, block in analysis.fidelity.groupby("suite"):
        order = {lang: i for i, lang in enumerate(fidelity.languages_by_baseline(block))}
        block = block.assign(order=block.lang.map(order)).sort_values(["order", "label"])
        rows = [[r.lang, r.label, _pct(r.degradation) + (f" [{_pct(r.degradation_ci_low)}, {_pct(r.degradation_ci_high)}]" if not math.isnan(r.degradation_ci_low) else ""),
                 ci(r, "kl_per_token"), ci(r, "kl_per_byte"), ci(r, "same_top_token", 100, "{:.2f}%"), ci(r, "dp_mean", 1, "{:+.2e}"),
                 " / ".join(f"{getattr(r, f'dp_p{p}'):+.2e}" for p in fidelity.PERCENTILES), f"{r.base_tail:.2e} (k={r.topk})", r.n_docs, r.n_tokens]
                for r in block.itertuples()]
        out += [f"### {suite}", "", _md_table(["lang", "config", f"D [{level} CI]", "KL/token", "KL/byte", "same top token", "Δp mean",
                                               "Δp p" + "/p".join(map(str, fidelity.PERCENTILES)), "tail mass", "docs", "tokens"], rows), ""]
    out += [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]
    return out


def command_line() -> str:
    """The current command line for the report header, absolute paths shortened to their last
    two parts (a report never carries the folders of the machine that made it)."""
    return " ".join(["qd-analyze", *(_short_path(arg) for arg in sys.argv[1:])])


def _short_path(arg: str) -> str:
    path = Path(arg)
    return str(Path(*path.parts[-2:])) if path.is_absolute() else arg
