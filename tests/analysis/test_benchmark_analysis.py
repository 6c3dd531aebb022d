"""Paired benchmark statistics on hand-written lm-eval 0.4.13 outputs: McNemar against scipy /
statsmodels / exact enumeration, bootstrap CIs against scipy, flips, pooling, fallbacks, agreement."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import analysis
from analysis.cli import main
from analysis.stats import mcnemar_exact, paired_comparison


def _enumerated_mcnemar(b: int, c: int) -> float:
    """Two-sided exact p by enumerating all 2^(b+c) sign patterns of the discordant pairs:
    the share of patterns at least as unbalanced as the observed one."""
    n = b + c
    if n == 0:
        return 1.0
    observed = abs(b - c)
    hits = sum(1 for signs in itertools.product((0, 1), repeat=n) if abs(2 * sum(signs) - n) >= observed)
    return hits / 2**n


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 0), (3, 2), (5, 5), (0, 12), (7, 1), (2, 13), (9, 10)])
def test_mcnemar_exact_matches_scipy_and_enumeration(b, c):
    p = mcnemar_exact(b, c)
    expected = 1.0 if b + c == 0 else sps.binomtest(b, b + c, 0.5).pvalue
    assert p == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert p == pytest.approx(_enumerated_mcnemar(b, c), rel=1e-12, abs=1e-15)
    try:
        from statsmodels.stats.contingency_tables import mcnemar
    except ImportError:
        return
    assert p == pytest.approx(mcnemar([[10, b], [c, 10]], exact=True).pvalue, rel=1e-12)


def test_mcnemar_large_counts_and_bad_input():
    assert mcnemar_exact(400, 520) == pytest.approx(sps.binomtest(400, 920, 0.5).pvalue, rel=1e-9)
    assert mcnemar_exact(0, 3000) == pytest.approx(2 * 0.5**3000, rel=1e-9, abs=0)  # underflows to 0.0 without crashing
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_paired_comparison_matches_scipy_bootstrap_and_counts():
    rng = np.random.default_rng(5)
    base = (rng.random(60) < 0.6).astype(float)
    quant = np.where(rng.random(60) < 0.25, 1 - base, base)
    out = paired_comparison(base, quant, 999, np.random.default_rng([0, 42]), 0.9)
    ref = sps.bootstrap((quant - base,), np.mean, n_resamples=999, method="percentile", confidence_level=0.9,
                        rng=np.random.default_rng([0, 42]))
    assert out["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert out["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=1e-12)
    b, c = int(((base == 1) & (quant == 0)).sum()), int(((base == 0) & (quant == 1)).sum())
    assert (out["right_to_wrong"], out["wrong_to_right"]) == (b, c) and b + c > 0
    assert out["delta"] == pytest.approx((c - b) / 60)
    assert out["mcnemar_p"] == pytest.approx(sps.binomtest(b, b + c).pvalue)
    graded = paired_comparison([0.5, 1.0, 0.2], [0.4, 1.0, 0.2], 50, np.random.default_rng(0))
    assert math.isnan(graded["mcnemar_p"]) and math.isnan(graded["right_to_wrong"])  # f1-like values: no McNemar


# ---- hand-written lm-eval outputs -------------------------------------------------------------------

def _doc_hash(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, indent=2, ensure_ascii=False).encode()).hexdigest()


def write_run(out: Path, name: str, stamp: str, per_task: dict, quant: dict | None = None, samples: bool = True,
              model: str = "tiny", extra_results: dict | None = None, docs: dict | None = None) -> Path:
    """per_task: {task: {(metric, filter): [0/1 per doc]}}. quant: qd-hf quant_config or None (plain hf)."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    results, higher, n_samples = {}, {}, {}
    for task, metrics in per_task.items():
        n = len(next(iter(metrics.values())))
        results[task] = {"alias": task}
        for (metric, filt), values in metrics.items():
            results[task][f"{metric},{filt}"] = float(np.mean(values))
            results[task][f"{metric}_stderr,{filt}"] = 0.1
        higher[task] = {metric: True for metric, _ in metrics}
        n_samples[task] = {"original": n, "effective": n}
        if samples:
            filters = sorted({f for _, f in metrics})
            with open(folder / f"samples_{task}_{stamp}.jsonl", "w") as f:
                for filt in filters:
                    for i in range(n):
                        doc = (docs or {}).get((task, i), {"question": f"{task} q{i}", "answer": i % 4})
                        row = {"doc_id": i, "doc": doc, "target": "x", "filter": filt, "doc_hash": _doc_hash(doc),
                               "metrics": [m for m, fl in metrics if fl == filt]}
                        row.update({m: values[i] for (m, fl), values in metrics.items() if fl == filt})
                        f.write(json.dumps(row) + "\n")
    results.update(extra_results or {})
    config = {"model": "qd-hf" if quant else "hf", "model_args": f"pretrained={model},dtype=float32"}
    if quant:
        config["quant_disparity"] = {"model_source": model, "quant_config": quant,
                                     "quant_totals": {"effective_bits_per_weight": quant.get("bits", 16) + 0.25}}
    payload = {"results": results, "group_subtasks": {}, "higher_is_better": higher, "n-samples": n_samples, "config": config,
               "date": float(stamp.split("-")[-1]), "lm_eval_version": "0.4.13"}
    path = folder / f"results_{stamp}.json"
    path.write_text(json.dumps(payload))
    return path


RNG = np.random.default_rng(1)
BASE = {lang: (RNG.random(30) < p).astype(int).tolist() for lang, p in {"he": 0.7, "sw": 0.5, "de": 0.8, "en": 0.9}.items()}


def _flip(values: list[int], where: list[int]) -> list[int]:
    return [1 - v if i in where else v for i, v in enumerate(values)]


QUANT = {"he": _flip(BASE["he"], [0, 1, 2, 3, 4, 5, 6, 7]), "sw": _flip(BASE["sw"], [3, 9]), "de": BASE["de"], "en": _flip(BASE["en"], [1])}
FLORES = {"he": "heb_Hebr", "sw": "swh_Latn", "de": "deu_Latn", "en": "eng_Latn"}


def _belebele(values: dict) -> dict:
    return {f"belebele_{FLORES[lang]}": {("acc", "none"): v, ("acc_norm", "none"): v[::-1]} for lang, v in values.items()}


def test_paired_table_from_samples(tmp_path):
    write_run(tmp_path, "base", "2026-01-01T00-00-00.1", _belebele(BASE))
    write_run(tmp_path, "rtn", "2026-01-01T00-00-00.2", _belebele(QUANT), quant={"method": "rtn", "bits": 3})
    result = analysis.analyze([tmp_path], analysis.AnalysisOptions(n_resamples=500, random_state=3))
    table = result.benchmarks.table
    assert set(table.metric) == {"acc", "acc_norm"} and set(result.benchmarks.primary.metric) == {"acc"}
    for lang in FLORES:
        row = table[(table.lang == lang) & (table.metric == "acc")].iloc[0]
        base, quant = np.array(BASE[lang], float), np.array(QUANT[lang], float)
        b, c = int(((base == 1) & (quant == 0)).sum()), int(((base == 0) & (quant == 1)).sum())
        assert row.suite == "belebele" and row.paired and row.n_items == 30
        assert (row.right_to_wrong, row.wrong_to_right) == (b, c)
        assert row.delta == pytest.approx(quant.mean() - base.mean())
        assert row.mcnemar_p == pytest.approx(1.0 if b + c == 0 else sps.binomtest(b, b + c).pvalue)
        ref = sps.bootstrap((quant - base,), np.mean, n_resamples=500, method="percentile",
                            rng=np.random.default_rng([3, int(row.bootstrap_seed)]))
        assert (row.ci_low, row.ci_high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
    assert table[(table.lang == "he") & (table.metric == "acc")].right_to_wrong.iloc[0] > 0


def test_without_samples_point_delta_and_note(tmp_path):
    write_run(tmp_path, "base", "2026-01-01T00-00-00.1", _belebele(BASE), samples=False)
    write_run(tmp_path, "rtn", "2026-01-01T00-00-00.2", _belebele(QUANT), quant={"method": "rtn", "bits": 3})
    table = analysis.analyze([tmp_path], analysis.AnalysisOptions(n_resamples=50)).benchmarks.table
    row = table[(table.lang == "he") & (table.metric == "acc")].iloc[0]
    assert not row.paired and math.isnan(row.ci_low) and math.isnan(row.mcnemar_p)
    assert row.delta == pytest.approx(np.mean(QUANT["he"]) - np.mean(BASE["he"]))
    assert "--log_samples" in row.note


def test_pooled_subjects_generation_filters_and_mismatched_docs(tmp_path):
    subjects = {"global_mmlu_full_sw_anatomy": [1, 0, 1, 1], "global_mmlu_full_sw_virology": [0, 0, 1]}
    quant_subjects = {"global_mmlu_full_sw_anatomy": [0, 0, 1, 1], "global_mmlu_full_sw_virology": [0, 1, 0]}
    gen_base = {"mgsm_direct_sw": {("exact_match", "strict-match"): [1, 0, 0, 1], ("exact_match", "flexible-extract"): [1, 1, 0, 1]}}
    gen_quant = {"mgsm_direct_sw": {("exact_match", "strict-match"): [0, 0, 0, 1], ("exact_match", "flexible-extract"): [1, 1, 0, 0]}}
    base = {**{t: {("acc", "none"): v} for t, v in subjects.items()}, **gen_base, "xnli_sw": {("acc", "none"): [1, 1, 0]}}
    quant = {**{t: {("acc", "none"): v} for t, v in quant_subjects.items()}, **gen_quant, "xnli_sw": {("acc", "none"): [1, 0, 0]}}
    write_run(tmp_path, "base", "2026-01-01T00-00-00.1", base)
    write_run(tmp_path, "rtn", "2026-01-01T00-00-00.2", quant, quant={"method": "rtn", "bits": 3},
              docs={("xnli_sw", 1): {"premise": "another document"}})
    result = analysis.analyze([tmp_path], analysis.AnalysisOptions(n_resamples=50))
    table = result.benchmarks.table
    pooled = table[table.suite == "global_mmlu_full"].iloc[0]
    assert pooled.n_items == 7 and pooled.base == pytest.approx(4 / 7) and pooled.quant == pytest.approx(3 / 7)
    assert (pooled.right_to_wrong, pooled.wrong_to_right) == (2, 1)
    strict = table[(table.suite == "mgsm_direct") & (table["filter"] == "strict-match")].iloc[0]
    flexible = table[(table.suite == "mgsm_direct") & (table["filter"] == "flexible-extract")].iloc[0]
    assert (strict.right_to_wrong, strict.wrong_to_right, flexible.right_to_wrong) == (1, 0, 1)
    primary = result.benchmarks.primary
    assert primary[primary.suite == "mgsm_direct"]["filter"].tolist() == ["flexible-extract"]
    xnli = table[table.suite == "xnli"].iloc[0]
    assert not xnli.paired and "different documents" in xnli.note
    assert any("different documents under the same doc_id" in line for line in result.notes)


def test_side_by_side_agreement_with_perplexity_runs(tmp_path):
    from test_analysis_pipeline import TEXTS
    from test_analysis_pipeline import write_run as write_ppl_run

    nll = {lang: [10.0 + i for i in range(5)] for lang in TEXTS}
    factors = {"en": 1.1, "de": 1.3, "sw": 1.6, "yo": 1.2}
    write_ppl_run(tmp_path, "ppl-base", "2026-01-01T00-00-00.1", nll)
    write_ppl_run(tmp_path, "ppl-rtn", "2026-01-01T00-00-00.2", {k: [x * factors[k] for x in v] for k, v in nll.items()},
                  quant={"method": "rtn", "bits": 3})
    langs = {"en": "eng_Latn", "de": "deu_Latn", "sw": "swh_Latn", "yo": "yor_Latn"}
    base = {lang: [1] * 20 for lang in langs}
    quant = {"en": [0] * 1 + [1] * 19, "de": [0] * 6 + [1] * 14, "sw": [0] * 9 + [1] * 11, "yo": [0] * 3 + [1] * 17}
    write_run(tmp_path, "b-base", "2026-01-01T00-00-00.3", {f"belebele_{c}": {("acc", "none"): base[lg]} for lg, c in langs.items()})
    write_run(tmp_path, "b-rtn", "2026-01-01T00-00-00.4", {f"belebele_{c}": {("acc", "none"): quant[lg]} for lg, c in langs.items()},
              quant={"method": "rtn", "bits": 3})
    out = tmp_path.with_name(f"{tmp_path.name}-report")  # outside the input folder (an --out inside an input is refused)
    assert main([str(tmp_path), "--out", str(out), "--n-resamples", "100"]) == 0
    agreement = pd.read_csv(out / "tables" / "measure_agreement.csv")
    row = agreement[(agreement.measure_a == "D qd_multilingual_ppl") & (agreement.measure_b == "Δacc belebele")].iloc[0]
    order = list(langs)
    rho = sps.spearmanr([factors[lg] - 1 for lg in order], [-(np.mean(quant[lg]) - 1) for lg in order])
    assert row.n == 4 and row.spearman_rho == pytest.approx(rho.statistic) and row.spearman_rho == pytest.approx(1.0)
    report = (out / "report.md").read_text()
    assert "## Standard benchmarks" in report and "## Perplexity, fidelity and benchmarks side by side" in report
    assert "| D qd_multilingual_ppl | Δacc belebele (pp) |" in report
    figures = sorted(p.name for p in (out / "figures").glob("benchmark_*.png"))
    assert figures == ["benchmark_belebele_acc_rtn-w3.png"]


def test_unmapped_task_is_named_and_user_map_fixes_it(tmp_path):
    write_run(tmp_path, "base", "2026-01-01T00-00-00.1", {"my_quiz": {("acc", "none"): [1, 0, 1]}})
    write_run(tmp_path, "rtn", "2026-01-01T00-00-00.2", {"my_quiz": {("acc", "none"): [0, 0, 1]}}, quant={"method": "rtn", "bits": 3})
    result = analysis.analyze([tmp_path], analysis.AnalysisOptions(n_resamples=20))
    assert result.benchmarks.table.lang.tolist() == ["unmapped"]
    assert any("my_quiz" in line and "--task-lang-map" in line for line in result.notes)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"my_quiz": {"lang": "yo", "suite": "quiz"}}))
    result = analysis.analyze([tmp_path], analysis.AnalysisOptions(n_resamples=20, task_lang_map=str(mapping)))
    assert result.benchmarks.table[["suite", "lang"]].values.tolist() == [["quiz", "yo"]]


def test_extra_measures_join_side_by_side_and_agreement(tmp_path):
    """The place where fidelity measures (KL per byte ...) plug in: rows appended to the measures."""
    from analysis.benchmark_stats import MEASURE_COLUMNS, analyze_benchmarks

    langs = {"en": "eng_Latn", "de": "deu_Latn", "sw": "swh_Latn", "he": "heb_Hebr"}
    quant = {"en": [0] + [1] * 9, "de": [0] * 3 + [1] * 7, "sw": [0] * 2 + [1] * 8, "he": [0] * 5 + [1] * 5}
    write_run(tmp_path, "base", "2026-01-01T00-00-00.1", {f"belebele_{c}": {("acc", "none"): [1] * 10} for c in langs.values()})
    path = write_run(tmp_path, "rtn", "2026-01-01T00-00-00.2", {f"belebele_{c}": {("acc", "none"): quant[lg]} for lg, c in langs.items()},
                     quant={"method": "rtn", "bits": 3})
    runset = analysis.load_runs([tmp_path])
    run = next(r for r in runset.runs.values() if r.path == path.resolve())
    kl = {"en": 0.01, "de": 0.05, "sw": 0.02, "he": 0.03}
    extra = pd.DataFrame([(run.model, run.config_key, run.label, lang, "KL/byte qd_multilingual_ppl", v, math.nan, math.nan, v)
                          for lang, v in kl.items()], columns=MEASURE_COLUMNS)
    bench = analyze_benchmarks(runset, pd.DataFrame(), n_resamples=20, extra_measures=extra)
    row = bench.agreement.iloc[0]
    order = list(langs)
    expected = sps.spearmanr([kl[lg] for lg in order], [1 - np.mean(quant[lg]) for lg in order]).statistic
    assert {row.measure_a, row.measure_b} == {"KL/byte qd_multilingual_ppl", "Δacc belebele"}
    assert row.n == 4 and row.spearman_rho == pytest.approx(expected) and 0 < expected < 1


def test_summary_figure_returns_fig_ax_orders_languages_and_keeps_backend(tmp_path):
    import matplotlib

    from analysis import benchmark_plots

    backend = matplotlib.get_backend()
    table = pd.DataFrame({"label": ["rtn-w3"] * 3 + ["rtn-w4"] * 3, "lang": ["sw", "en", "he"] * 2, "base": [0.4, 0.9, 0.6] * 2,
                          "delta": [-0.1, -0.02, 0.0, -0.05, 0.0, 0.01], "ci_low": [-0.2, -0.05, -0.1, -0.1, -0.02, -0.05],
                          "ci_high": [0.0, 0.0, 0.1, 0.0, 0.02, 0.06], "mcnemar_p": [0.01, 0.5, 1.0, 0.2, 1.0, 1.0],
                          "n_items": [50] * 6, "right_to_wrong": [6, 1, 2, 3, 0, 1], "wrong_to_right": [1, 0, 2, 1, 0, 1],
                          "effective_bits_per_weight": [3.1] * 3 + [4.1] * 3})
    title = "a long title that must wrap rather than be cut off by the edge of the figure, " * 2
    fig, ax = benchmark_plots.benchmark_summary(table, title)
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["en", "he", "sw"]  # baseline 90 %, 60 %, 40 %
    assert ax.get_title().replace("\n", " ").split() == title.split()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["rtn-w3", "rtn-w4"]
    assert "*" in [t.get_text() for t in ax.texts] and "6/1" in [t.get_text() for t in ax.texts]
    assert benchmark_plots.save(fig, tmp_path / "f.png").stat().st_size > 5000
    assert matplotlib.get_backend() == backend


def test_baseline_must_match_scoring(tmp_path):
    """A bfloat16 baseline is not the baseline of a float32 quantized run."""
    path = write_run(tmp_path, "base", "2026-01-01T00-00-00.1", _belebele(BASE))
    payload = json.loads(path.read_text())
    payload["config"]["model_args"] = "pretrained=tiny,dtype=bfloat16"
    path.write_text(json.dumps(payload))
    write_run(tmp_path, "rtn", "2026-01-01T00-00-00.2", _belebele(QUANT), quant={"method": "rtn", "bits": 3})
    result = analysis.analyze([tmp_path], analysis.AnalysisOptions(n_resamples=20))
    assert result.benchmarks.table.empty
    assert any("no baseline run of model tiny with the same scoring has belebele_heb_Hebr" in line for line in result.notes)
