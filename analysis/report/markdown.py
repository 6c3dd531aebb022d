"""The report's text: ``report.md`` (sections, tables, figure links, package versions)."""

from __future__ import annotations

import math
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from analysis import benchmarks, fidelity, many_languages, stats
from analysis.report.figures import MAX_LANGUAGE_FIGURES, MAX_RATE_DISTORTION_FIGURES
from analysis.report.tables import run_rows

if TYPE_CHECKING:
    from analysis.report import Analysis

PACKAGES = ("quant-disparity", "lm_eval", "torch", "transformers", "bitsandbytes", "numpy", "scipy", "pandas", "matplotlib")


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


def report_markdown(analysis: Analysis, figures: dict[str, list[Path]], command: str, many_languages_lines: list[str] = ()) -> str:
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
             "yes" if r["has_samples"] else "no", f"`{r['path']}`"] for r in run_rows(runset)]
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
        for reason in sorted(set(block.ci_source[block.n_docs < stats.MIN_CI_DOCS])):
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
        names = fidelity.series_names(block)
        block = block.assign(order=block.lang.map(order), name=block.quant_id.map(names)).sort_values(["order", "name"])
        rows = [[r.lang, r.name, _pct(r.degradation) + (f" [{_pct(r.degradation_ci_low)}, {_pct(r.degradation_ci_high)}]" if not math.isnan(r.degradation_ci_low) else ""),
                 ci(r, "kl_per_token"), ci(r, "kl_per_byte"), ci(r, "same_top_token", 100, "{:.2f}%"), ci(r, "dp_mean", 1, "{:+.2e}"),
                 " / ".join(f"{getattr(r, f'dp_p{p}'):+.2e}" for p in fidelity.PERCENTILES), f"{r.base_tail:.2e} (k={r.topk})", r.n_docs, r.n_tokens]
                for r in block.itertuples()]
        out += [f"### {suite}", "", _md_table(["lang", "config", f"D [{level} CI]", "KL/token", "KL/byte", "same top token", "Δp mean",
                                               "Δp p" + "/p".join(map(str, fidelity.PERCENTILES)), "tail mass", "docs", "tokens"], rows), ""]
        for note in sorted(set(block.ci_note) - {""}):
            out += [f"{', '.join(sorted(set(block.lang[block.ci_note == note])))}: {note}.", ""]
    out += [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]
    return out


