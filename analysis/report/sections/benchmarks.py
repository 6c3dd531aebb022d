"""Standard benchmarks per language (``tables/benchmarks.csv``, one summary figure per model and suite)
and every per-language measure side by side with their agreement (``tables/language_measures.csv``,
``tables/measure_agreement.csv``); statistics: :mod:`analysis.benchmark_stats`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.benchmark_stats import BenchmarkAnalysis, analyze_benchmarks, fidelity_measures
from analysis.report.section import FigureFile
from analysis.report.text import figure_links, md_table
from qd_models.run_record import slug


def figure_name(suite: str, metric: str, labels: list[str], model: str | None = None) -> str:
    """``benchmark_<suite>_<metric>_<config labels>.png`` (``<n>-configs`` beyond three; model first when several)."""
    configs = "+".join(labels) if len(labels) <= 3 else f"{len(labels)}-configs"
    return slug("_".join(part for part in ("benchmark", model, suite, metric, configs) if part), limit=100, keep="._+-", strip=True) + ".png"


class BenchmarksSection:
    name = "benchmarks"

    def compute(self, analysis) -> BenchmarkAnalysis:
        options, runset = analysis.options, analysis.runset
        bench = analyze_benchmarks(runset, analysis.deg.table, options.baseline, options.n_resamples, options.random_state,
                                   options.confidence, analysis.task_rules, fidelity_measures(runset, analysis.results["fidelity"].table))
        analysis.notes.extend(bench.problems)
        return bench

    def tables(self, bench: BenchmarkAnalysis) -> dict[str, pd.DataFrame]:
        return {"benchmarks": bench.table, "language_measures": bench.measures, "measure_agreement": bench.agreement}

    def figures(self, bench: BenchmarkAnalysis):
        if bench.primary.empty:
            return
        from analysis import benchmark_plots

        several_models = bench.primary.model.nunique() > 1
        for (model, suite), block in bench.primary.groupby(["model", "suite"], sort=True):
            metric, filt = block.metric.iloc[0], block["filter"].iloc[0]
            labels = list(dict.fromkeys(block.sort_values("effective_bits_per_weight", na_position="last").label))
            title = (f"{suite}: {metric}{'' if filt == 'none' else f' ({filt})'}, quantized − baseline per language"
                     f"{f' — {Path(model).name}' if several_models else ''}")
            fig, _ = benchmark_plots.benchmark_summary(block, title, confidence=bench.confidence)
            yield FigureFile(figure_name(suite, metric, labels, Path(model).name if several_models else None), fig, benchmark_plots.save)

    def markdown(self, bench: BenchmarkAnalysis, figures) -> list[str]:
        """Report lines: per-language benchmark deltas, then every measure side by side and their agreement."""
        level = f"{bench.confidence:.0%}"
        out = ["## Standard benchmarks (multiple choice, generation)", ""]
        if bench.data.aggregates.empty:
            return out + ["No multiple-choice or generation task results in the inputs.", ""]
        if bench.table.empty:
            return out + ["Benchmark results found, but no quantized run could be paired with a baseline on the same task (see problems).", ""]
        out += [(f"Per language, quantized − baseline on the same items (paired by task + doc_id, checked by doc_hash). Δ in percentage "
                 f"points with a {level} paired bootstrap CI (items resampled); right→wrong / wrong→right: items the quantized model "
                 "gets wrong that the baseline got right, and the reverse; McNemar: exact two-sided binomial test on those discordant "
                 "items. Languages ordered by baseline score. Headline metric per suite below; every metric is in tables/benchmarks.csv."), ""]
        for (label, suite), block in bench.primary.groupby(["label", "suite"], sort=True):
            metric, filt = block.metric.iloc[0], block["filter"].iloc[0]
            out += [f"### {label} — {suite} — {metric}{'' if filt == 'none' else f' ({filt})'}", ""]
            rows = []
            for r in block.sort_values(["base", "lang"], ascending=[False, True]).itertuples():
                ci = f" [{_fmt_pp(r.ci_low)}, {_fmt_pp(r.ci_high)}]" if math.isfinite(r.ci_low) else ""
                p = "n/a" if not math.isfinite(r.mcnemar_p) else f"{r.mcnemar_p:.3g}"
                rows.append([r.lang, _fmt_int(r.n_items), _fmt_share(r.base), _fmt_share(r.quant), _fmt_pp(r.delta) + ci, p,
                             _fmt_int(r.right_to_wrong), _fmt_int(r.wrong_to_right), r.note or ""])
            out += [md_table(["lang", "items", "baseline", "quantized", f"Δ pp [{level} CI]", "McNemar p", "right→wrong", "wrong→right",
                              "note"], rows), ""]
        out += figure_links(figures) + [""]

        out += ["## Perplexity, fidelity and benchmarks side by side", ""]
        measures = bench.measures
        if measures.empty or measures.measure.nunique() < 1:
            return out + ["No per-language measure to compare.", ""]
        out += [("Per config and language: D (relative increase of bits/byte, perplexity tasks), fidelity measures when present, "
                 "and the benchmark deltas (percentage points) of the same config. Agreement: Spearman ρ across languages between the "
                 "damage of two measures (D; −Δ for higher-is-better metrics), so ρ > 0 means they rank the languages' damage alike; "
                 "n = languages with both (p-values indicative at small n)."), ""]
        for (_, label), block in measures.groupby(["config_key", "label"], sort=True):
            names = sorted(set(block.measure), key=lambda m: (not m.startswith("D "), m))
            wide = {(r.lang, r.measure): r for r in block.itertuples()}
            rows = []
            for lang in sorted(set(block.lang)):
                cells = [lang]
                for name in names:
                    r = wide.get((lang, name))
                    if r is None:
                        cells.append("—")
                    elif name.startswith("D "):
                        cells.append("n/a" if not math.isfinite(r.value) else f"{100 * r.value:+.1f}%")
                    elif name.startswith("Δ"):
                        cells.append(_fmt_pp(r.value) + (f" [{_fmt_pp(r.ci_low)}, {_fmt_pp(r.ci_high)}]" if math.isfinite(r.ci_low) else ""))
                    else:  # fidelity and other measures, in their own unit
                        cells.append("n/a" if not math.isfinite(r.value) else f"{r.value:.4g}")
                rows.append(cells)
            out += [f"### {label}", "", md_table(["lang", *[n + " (pp)" if n.startswith("Δ") else n for n in names]], rows), ""]
        if not bench.agreement.empty:
            rows = [[r.label, r.measure_a, r.measure_b, r.n, "n/a" if not math.isfinite(r.spearman_rho) else f"{r.spearman_rho:+.2f}",
                     "n/a" if not math.isfinite(r.spearman_p) else f"{r.spearman_p:.3g}"] for r in bench.agreement.itertuples()]
            out += ["Agreement across languages (Spearman ρ of damage; n/a below 3 languages or without variation):", "",
                    md_table(["config", "measure A", "measure B", "n", "Spearman ρ", "p"], rows), ""]
        return out


def _fmt_pp(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:+.1f}"


def _fmt_share(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _fmt_int(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else str(int(value))


SECTION = BenchmarksSection()
