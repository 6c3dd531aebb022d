"""Loading, pairing, degradation/disparity and the qd-analyze CLI on lm-eval-format outputs.

``write_run`` writes files in lm-eval 0.4.13's layout (``<out>/<model>/results_<stamp>.json``
and ``samples_<task>_<stamp>.jsonl``) from chosen per-document log-likelihoods, so every
expected number below is computed independently from those inputs.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analysis
from analysis.cli import main
from analysis.predictors import calibration_kurtosis

LANGS = ("en", "de", "sw", "yo")
GROUPS = {"en": "high", "de": "high", "sw": "low", "yo": "low"}
TEXTS = {lang: [f"{lang} document {i} " + "x" * (10 + 7 * i) for i in range(5)] for lang in LANGS}


def write_run(out: Path, name: str, stamp: str, nll: dict, quant: dict | None = None, samples: bool = True,
              model: str = "tiny", bpb_override: dict | None = None, extra_args: str = "") -> Path:
    """Write one run. nll: {lang: (5,) total NLL (nats) per doc}. quant: qd-hf quant_config or None (plain hf)."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    results, subtasks = {}, []
    for lang, values in nll.items():
        task = f"qd_multilingual_ppl_{lang}"
        subtasks.append(task)
        n_bytes = [len(t.encode()) for t in TEXTS[lang]]
        n_words = [len(t.split()) for t in TEXTS[lang]]
        bpb = sum(values) / sum(n_bytes) / math.log(2)
        bpb = (bpb_override or {}).get(lang, bpb)
        results[task] = {"alias": f" - {lang}", "bits_per_byte,none": bpb, "bits_per_byte_stderr,none": "N/A",
                         "byte_perplexity,none": 2**bpb, "word_perplexity,none": math.exp(sum(values) / sum(n_words))}
        if samples:
            with open(folder / f"samples_{task}_{stamp}.jsonl", "w") as f:
                for i, (text, value) in enumerate(zip(TEXTS[lang], values)):
                    doc = {"lang": lang, "doc_id": f"{lang}-{i}", "text": text, "source": "synthetic"}
                    f.write(json.dumps({"doc_id": i, "doc": doc, "target": text, "bits_per_byte": [-value, n_bytes[i]],
                                        "byte_perplexity": [-value, n_bytes[i]], "word_perplexity": [-value, n_words[i]]}) + "\n")
    config = {"model": "qd-hf" if quant else "hf",
              "model_args": f"pretrained={model},dtype=float32" + (f",method={quant['method']}" if quant else "") + extra_args}
    if quant:
        config["quant_disparity"] = {"version": "0.1.0", "model_source": model, "baseline_note": "synthetic baseline note",
                                     "quant_config": quant,
                                     "quant_totals": {"effective_bits_per_weight": quant.get("bits", 16) + 0.25},
                                     "quant_report": {"totals": {}, "layers": [{"name": "l0", "rel_mse": 4.0 ** -quant.get("bits", 16)}]}}
    payload = {"results": results, "group_subtasks": {"qd_multilingual_ppl": subtasks}, "configs": {}, "n-samples": {},
               "config": config, "date": float(stamp.split("-")[-1]), "lm_eval_version": "0.4.13"}
    path = folder / f"results_{stamp}.json"
    path.write_text(json.dumps(payload))
    return path


def base_nll() -> dict:
    rng = np.random.default_rng(1)
    return {lang: list(rng.uniform(50, 100, size=5)) for lang in LANGS}


def scaled(nll: dict, factors: dict) -> dict:
    return {lang: [v * factors[lang] for v in values] for lang, values in nll.items()}


RTN4 = {"method": "rtn", "bits": 4, "granularity": "channel", "group_size": 128, "symmetric": True}


def test_degradation_equals_relative_bits_per_byte_increase(tmp_path):
    base = base_nll()
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", scaled(base, {"en": 1.02, "de": 1.04, "sw": 1.10, "yo": 1.20}), RTN4)
    runs = analysis.load_runs([tmp_path])
    deg = analysis.degradation(runs, n_resamples=500, random_state=0)
    table = deg.table.set_index("lang")
    assert table.loc[["en", "de", "sw", "yo"], "degradation"].to_numpy() == pytest.approx([0.02, 0.04, 0.10, 0.20])
    # absolute and seeds-style columns from the results' own bits/byte
    bpb_en = sum(base["en"]) / sum(len(t.encode()) for t in TEXTS["en"]) / math.log(2)
    assert table.loc["en", "bpb_base"] == pytest.approx(bpb_en)
    assert table.loc["en", "delta_bpb"] == pytest.approx(0.02 * bpb_en)
    assert table.loc["en", "byte_ppl_rel_change"] == pytest.approx(2 ** (0.02 * bpb_en) - 1)
    # every doc scaled by the same factor: every bootstrap draw equals it, so the CI collapses
    assert table.loc["sw", "ci_low"] == pytest.approx(0.10) and table.loc["sw", "ci_high"] == pytest.approx(0.10)

    disp = analysis.disparity(deg, GROUPS).iloc[0]
    assert disp.D_HR == pytest.approx(0.03) and disp.D_LR == pytest.approx(0.15)
    assert disp.ratio == pytest.approx(5.0) and disp.difference == pytest.approx(0.12)
    assert disp.worst_lang == "yo" and disp.worst_degradation == pytest.approx(0.20)
    assert disp.max_over_min == pytest.approx(10.0)
    # documents add no noise here, so the hierarchical bootstrap is a bootstrap of languages within group: each group
    # mean takes 3 values with probabilities 1/4, 1/2, 1/4 (exact enumeration below); the extremes have mass 1/16 > 2.5 %
    hr_means = [np.mean(c) for c in itertools.product([0.02, 0.04], repeat=2)]
    lr_means = [np.mean(c) for c in itertools.product([0.10, 0.20], repeat=2)]
    exact_diff = sorted(lr - hr for lr in lr_means for hr in hr_means)
    exact_ratio = sorted(lr / hr for lr in lr_means for hr in hr_means)
    assert (disp.difference_ci_low, disp.difference_ci_high) == pytest.approx((exact_diff[0], exact_diff[-1]))
    assert (disp.ratio_ci_low, disp.ratio_ci_high) == pytest.approx((exact_ratio[0], exact_ratio[-1]))
    assert disp.max_over_min_note == ""  # smallest D_L = 2 % with a collapsed CI above 0: stable


def test_ratio_undefined_when_high_resource_degradation_not_positive(tmp_path):
    base = base_nll()
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", scaled(base, {"en": 0.99, "de": 1.0, "sw": 1.1, "yo": 1.1}), RTN4)
    deg = analysis.degradation(analysis.load_runs([tmp_path]), n_resamples=200)
    disp = analysis.disparity(deg, GROUPS).iloc[0]
    assert math.isnan(disp.ratio) and disp.ratio_note.startswith("undefined")
    assert math.isnan(disp.ratio_ci_low) and "ratio CI undefined" in disp.ci_note
    assert disp.difference == pytest.approx(0.105)


def test_ratio_undefined_when_low_resource_degradation_not_positive(tmp_path):
    base = base_nll()
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", scaled(base, {"en": 1.1, "de": 1.1, "sw": 0.98, "yo": 0.99}), RTN4)
    disp = analysis.disparity(analysis.degradation(analysis.load_runs([tmp_path]), n_resamples=200), GROUPS).iloc[0]
    assert math.isnan(disp.ratio) and "D_LR" in disp.ratio_note  # never a negative ratio
    assert math.isnan(disp.ratio_ci_low) and "D_LR <= 0" in disp.ci_note
    assert disp.difference < 0


def test_small_denominator_flagged_unstable(tmp_path):
    base = base_nll()
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", scaled(base, {"en": 1.001, "de": 1.001, "sw": 1.05, "yo": 1.05}), RTN4)
    disp = analysis.disparity(analysis.degradation(analysis.load_runs([tmp_path]), n_resamples=50), GROUPS).iloc[0]
    assert disp.ratio == pytest.approx(50.0) and disp.ratio_note.startswith("unstable")


def test_group_tests_are_over_languages_and_match_scipy(tmp_path):
    from scipy import stats

    base = base_nll()
    rng = np.random.default_rng(7)
    quant = {lang: [v * f for v, f in zip(values, 1 + rng.uniform(0, 0.1 if GROUPS[lang] == "high" else 0.3, 5))] for lang, values in base.items()}
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", quant, RTN4)
    disp = analysis.disparity(analysis.degradation(analysis.load_runs([tmp_path]), n_resamples=50), GROUPS).iloc[0]
    d = {lang: sum(quant[lang]) / sum(base[lang]) - 1 for lang in LANGS}
    hr, lr = np.array([d["en"], d["de"]]), np.array([d["sw"], d["yo"]])
    ref = stats.permutation_test((lr, hr), lambda a, b: abs(a.mean() - b.mean()), permutation_type="independent", n_resamples=np.inf,
                                 alternative="greater")  # two-sided as P(|T| >= |T_obs|)
    assert disp.perm_p == pytest.approx(ref.pvalue) and disp.perm_n_splits == 6 and disp.perm_method == "exact"
    assert "welch_p" not in disp and "cohens_d" not in disp  # no per-document tests over non-independent documents
    # leave-one-out by hand: dropping a language from a 2-language group leaves the other one
    expected = {"en": lr.mean() - d["de"], "de": lr.mean() - d["en"], "sw": d["yo"] - hr.mean(), "yo": d["sw"] - hr.mean()}
    got = dict(part.split(":") for part in disp.loo_differences.split("; "))
    assert {k: float(v.rstrip("%")) / 100 for k, v in got.items()} == pytest.approx(expected, abs=5e-5)
    assert disp.loo_sign_survives == all(v * disp.difference > 0 for v in expected.values())


def test_leave_one_out_names_the_language_that_drives_the_difference(tmp_path):
    base = base_nll()
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", scaled(base, {"en": 1.05, "de": 1.06, "sw": 1.02, "yo": 1.30}), RTN4)
    runs = analysis.load_runs([tmp_path])
    disp = analysis.disparity(analysis.degradation(runs, n_resamples=50), GROUPS).iloc[0]
    # D_LR − D_HR = 0.16 − 0.055 > 0, but without yo it is 0.02 − 0.055 < 0
    assert disp.difference == pytest.approx(0.105) and disp.loo_flips == "yo" and not disp.loo_sign_survives
    report = analysis.report.report_markdown(analysis.analyze([tmp_path], analysis.AnalysisOptions(hr=["en", "de"], lr=["sw", "yo"], n_resamples=50)),
                                             "test")
    assert "its sign flips when yo is left out: this is a statement about yo" in report
    assert "no: flips without yo" in report


def test_max_over_min_unstable_when_smallest_ci_includes_zero(tmp_path):
    base = base_nll()
    en_factors = [1.16, 0.94, 1.08, 0.95, 1.01]  # small positive D_en, documents disagree in sign
    noisy = {lang: [v * f for v, f in zip(values, en_factors if lang == "en" else [1.1] * 5)] for lang, values in base.items()}
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", noisy, RTN4)
    deg = analysis.degradation(analysis.load_runs([tmp_path]), n_resamples=500)
    en = deg.table.set_index("lang").loc["en"]
    assert en.degradation == pytest.approx(sum(b * f for b, f in zip(base["en"], en_factors)) / sum(base["en"]) - 1)
    assert 0.01 < en.degradation and en.ci_low <= 0 < en.ci_high
    disp = analysis.disparity(deg, GROUPS).iloc[0]
    assert disp.best_lang == "en" and disp.max_over_min == pytest.approx(0.1 / en.degradation)
    assert disp.max_over_min_note == "max/min unstable: CI of min D_L (en) includes 0"


def test_aggregates_only_gives_point_estimates_without_ci(tmp_path):
    base = base_nll()
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base, samples=False)
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", scaled(base, dict.fromkeys(LANGS, 1.05)), RTN4, samples=False)
    deg = analysis.degradation(analysis.load_runs([tmp_path]), n_resamples=50)
    assert deg.table.degradation.to_numpy() == pytest.approx([0.05] * 4)
    assert deg.table.ci_low.isna().all() and (deg.table.ci_source.str.contains("--log_samples")).all()
    assert "--log_samples" in analysis.disparity(deg, GROUPS).iloc[0].ci_note


def test_robustness_messages(tmp_path):
    base = base_nll()
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    write_run(tmp_path, "tiny", "2025-01-01T00-00-05", base)  # duplicate baseline
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", scaled(base, dict.fromkeys(LANGS, 1.1)), RTN4,
              bpb_override={"yo": float("nan")}, samples=False)
    write_run(tmp_path, "qd-other", "2025-01-01T00-00-03", base, RTN4, model="other")  # no baseline of its model
    (tmp_path / "tiny" / "results_2025-01-01T00-00-04.json").write_text("{not json")
    runs = analysis.load_runs([tmp_path])
    deg = analysis.degradation(runs, n_resamples=20)
    text = "\n".join(deg.problems)
    assert "results_2025-01-01T00-00-04.json: unreadable results JSON" in text
    assert "duplicate runs" in text and "tiny/results_2025-01-01T00-00-05 (latest)" in text
    assert "qd-other/results_2025-01-01T00-00-03 (model other): no baseline run" in text
    assert "yo bits_per_byte = nan" in text
    yo = deg.table.set_index("lang").loc["yo"]
    assert math.isnan(yo.degradation) and "non-finite" in yo.flag  # kept and flagged, not dropped
    with pytest.raises(analysis.AnalysisInputError, match="baseline='nope' matches 0 runs"):
        analysis.degradation(runs, baseline="nope")


def test_explicit_groups_override_and_validate():
    assert analysis.resource_groups(["en", "de", "sw"], hr=["en"], lr=["sw", "de"]) == {"en": "high", "de": "low", "sw": "low"}
    with pytest.raises(ValueError, match="--hr/--lr share"):
        analysis.resource_groups(["en"], hr=["en"], lr=["en"])
    fallback = {"en": {"resource": "high"}, "yo": {"resource": "low"}, "de": {"resource": "high"}}
    assert analysis.resource_groups(["en", "de", "yo"], hr=["de"], metadata=fallback) == {"de": "high", "yo": "low"}


def test_rate_distortion_slope_recovers_known_exponent(tmp_path):
    base = base_nll()
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    for i, bits in enumerate((3, 4, 5, 6)):
        factor = 1 + 2.0 * math.exp(-0.7 * bits)  # D = 2 e^{-0.7 b}: slope of ln D is -0.7
        write_run(tmp_path, f"qd-{bits}", f"2025-01-01T00-00-1{i}", scaled(base, dict.fromkeys(LANGS, factor)), dict(RTN4, bits=bits))
    runs = analysis.load_runs([tmp_path])
    rd = analysis.rate_distortion(runs, analysis.degradation(runs, n_resamples=20), n_resamples=50)
    assert len(rd) == 4 and rd.slope.to_numpy() == pytest.approx([-0.7] * 4)
    assert (rd.fit_bits == "3,4,5,6").all() and (rd.dropped_bits == "").all()
    assert rd.low.to_numpy() == pytest.approx([-0.7] * 4) and rd.high.to_numpy() == pytest.approx([-0.7] * 4)  # no document noise
    mse = analysis.weight_mse_slopes(analysis.weight_mse(runs)).iloc[0]
    assert mse.slope == pytest.approx(-2 * math.log(2)) and mse.theoretical_slope == pytest.approx(-1.3862944, abs=1e-6)
    # no grid field: midrise, 2^b - 1 steps over the range; reference = OLS slope of -2 ln(2^b - 1) over b = 3..6
    bits = np.array([3.0, 4.0, 5.0, 6.0])
    assert mse.grid == "midrise" and mse.grid_reference_slope == pytest.approx(np.polyfit(bits, -2 * np.log(2**bits - 1), 1)[0])
    assert mse.grid_reference_slope < -2 * math.log(2) - 0.01  # steeper than the asymptote at few bits


def test_weight_mse_reference_slope_for_the_int_grid():
    from analysis.rate_distortion import grid_name, grid_reference_slope

    bits = np.arange(3.0, 9.0)
    # int grid: 2^(b-1) - 1 steps per half-range (3, 7, 15, ... at b = 3, 4, 5, ...)
    steps = np.array([3.0, 7.0, 15.0, 31.0, 63.0, 127.0])
    assert grid_reference_slope("int", bits) == pytest.approx(np.polyfit(bits, np.log(1 / steps**2), 1)[0])
    assert grid_reference_slope("midrise", bits) == pytest.approx(np.polyfit(bits, np.log(1 / (2 * steps + 1) ** 2), 1)[0])
    assert grid_name({"grid": "int"}) == "int" and grid_name({}) == "midrise" and grid_name({"grid": "int", "symmetric": False}) == "asymmetric"
    assert math.isnan(grid_reference_slope("int", [1.0, 2.0]))  # 1 bit on the int grid has no step


def test_rate_distortion_drops_noise_widths_for_every_language_and_bootstraps_slopes(tmp_path):
    from scipy import stats

    base = base_nll()
    rng = np.random.default_rng(5)
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    quant = {}
    for i, bits in enumerate((3, 4, 5, 6)):
        mean = 2.0 * math.exp(-0.7 * bits)  # 0.24, 0.12, 0.06, 0.03
        noise = 0.004 if bits < 6 else 0.2  # at 6 bits the documents disagree in sign for some language
        quant[bits] = {lang: [v * (1 + mean + noise * rng.standard_normal()) for v in values] for lang, values in base.items()}
        write_run(tmp_path, f"qd-{bits}", f"2025-01-01T00-00-1{i}", quant[bits], dict(RTN4, bits=bits))
    runs = analysis.load_runs([tmp_path])
    deg = analysis.degradation(runs, n_resamples=400)
    rd = analysis.rate_distortion(runs, deg, n_resamples=4000, random_state=3).set_index("lang")
    at6 = deg.table[deg.table.bits == 6]
    assert (at6.ci_low <= 0).any()
    assert (rd.fit_bits == "3,4,5").all() and rd.dropped_bits.str.startswith("6 (CI includes 0").all()
    for lang in LANGS:
        q = [np.array(quant[b][lang]) for b in (3, 4, 5)]
        b0 = np.array(base[lang])

        def slope(q3, q4, q5, b, axis=-1):
            d = [qq.sum(axis=-1) / b.sum(axis=-1) - 1 for qq in (q3, q4, q5)]
            return np.polyfit([3.0, 4.0, 5.0], np.log(np.stack(d)), 1)[0]

        assert rd.loc[lang, "slope"] == pytest.approx(slope(*q, b0))
        ref = stats.bootstrap((*q, b0), slope, paired=True, vectorized=True, n_resamples=4000, method="percentile",
                              random_state=1).confidence_interval
        assert rd.loc[lang, "low"] == pytest.approx(ref.low, abs=0.03) and rd.loc[lang, "high"] == pytest.approx(ref.high, abs=0.03)
        assert rd.loc[lang, "low"] < rd.loc[lang, "slope"] < rd.loc[lang, "high"]


def test_pareto_front():
    import pandas as pd

    points = pd.DataFrame({"effective_bits_per_weight": [4.0, 4.5, 8.0, 3.0, 5.0], "worst_degradation": [0.2, 0.1, 0.01, 0.5, 0.3]})
    assert list(analysis.pareto_front(points)) == [True, True, True, True, False]


def test_cli_end_to_end(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "report"
    base = base_nll()
    write_run(runs_dir, "tiny", "2025-01-01T00-00-01", base)
    for i, bits in enumerate((3, 4, 8)):
        factor = {lang: 1 + (0.4 if GROUPS[lang] == "low" else 0.1) * 2.0 ** (3 - bits) for lang in LANGS}
        write_run(runs_dir, f"qd-{bits}", f"2025-01-01T00-00-1{i}", scaled(base, factor), dict(RTN4, bits=bits))
    scan = tmp_path / "scan.csv"
    scan.write_text("block,lang,degradation\n" + "".join(f"block{b},{lang},{0.01 * b}\n" for b in range(3) for lang in LANGS))
    code = main([str(runs_dir), "--out", str(out), "--hr", "en,de", "--lr", "sw,yo", "--n-resamples", "100", "--scan-csv", str(scan)])
    assert code == 0
    report = (out / "report.md").read_text()
    assert "## Disparity (low- vs high-resource)" in report and "synthetic baseline note" in report
    assert "4.00×" in report  # D_LR/D_HR = 0.4/0.1 at every bit width
    assert "lm_eval 0.4.13" in report
    for name in ("long_table", "degradation", "disparity", "rate_distortion", "pareto", "scan", "runs"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert any(p.startswith("degradation_") for p in pngs) and "scan_heatmap.png" in pngs and any(p.startswith("pareto") for p in pngs)
    for png in (out / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{png.name}" in report
    import pandas as pd

    long = pd.read_csv(out / "tables" / "long_table.csv")
    assert {"model", "method", "bits", "effective_bits_per_weight", "lang", "metric", "value", "doc_id"} <= set(long.columns)
    assert len(long[(long.metric == "loglikelihood")]) == 4 * 5 * 4  # 4 runs x 4 langs x 5 docs


def test_cli_bad_input_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    assert main([str(tmp_path), "--out", str(tmp_path / "o"), "--confidence", "1.5"]) == 2
    assert "confidence=1.5" in capsys.readouterr().err


@pytest.mark.integration
def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--hr" in proc.stdout


FIXTURE_RUNS = Path(__file__).parents[1] / "fixtures" / "analysis" / "runs"


def test_real_lm_eval_fixture_bits_per_byte_matches_samples():
    """lm-eval's aggregate bits/byte equals -sum(ll)/sum(bytes)/ln 2 recomputed from its samples;
    a random byte-level model sits near log2(vocab=259) bits per byte."""
    runs = analysis.load_runs([FIXTURE_RUNS])
    assert len(runs.runs) == 3 and runs.problems == []
    for (run_id, lang), docs in runs.docs.groupby(["run_id", "lang"]):
        recomputed = -docs.loglikelihood.sum() / docs.n_bytes.sum() / math.log(2)
        reported = runs.aggregates[(runs.aggregates.run_id == run_id) & (runs.aggregates.lang == lang)
                                   & (runs.aggregates.metric == "bits_per_byte")].value.item()
        assert recomputed == pytest.approx(reported, rel=1e-9)
        assert abs(reported - math.log2(259)) < 0.1
    quantized = [run for run in runs.runs.values() if not run.is_baseline]
    assert sorted(run.bits for run in quantized) == [3.0, 4.0] and all(run.model == "tiny-gpt2" for run in quantized)


def test_cli_on_real_fixture(tmp_path):
    assert main([str(FIXTURE_RUNS), "--out", str(tmp_path), "--n-resamples", "200"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "High-resource: de, en; low-resource: he, sw, yo" in report  # from qd_tasks.languages
    degradation = __import__("pandas").read_csv(tmp_path / "tables" / "degradation.csv")
    assert len(degradation) == 2 * 5 and (degradation.n_docs == 5).all()
    assert ((degradation.ci_low <= degradation.degradation) & (degradation.degradation <= degradation.ci_high)).all()


def test_every_report_file_belongs_to_one_section(tmp_path):
    """The sections' declared tables and figures are exactly the files write_outputs writes besides report.md,
    each written by one section; every section is computed once."""
    import matplotlib.pyplot as plt

    from analysis.report import COMPUTE_ORDER, SECTIONS, write_outputs

    assert sorted(COMPUTE_ORDER) == sorted(section.name for section in SECTIONS) and len(set(COMPUTE_ORDER)) == len(SECTIONS)
    result = analysis.analyze([FIXTURE_RUNS], analysis.AnalysisOptions(n_resamples=50))
    declared = []
    for section in SECTIONS:
        own = result.results[section.name]
        declared += [f"tables/{name}.csv" for name in section.tables(own)] + [f"figures/{file.name}" for file in section.figures(own)]
    plt.close("all")
    write_outputs(result, tmp_path)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert len(set(declared)) == len(declared) and sorted([*declared, "report.md"]) == written
    assert {"figures/rate_distortion_0.png", "tables/degradation.csv", "tables/runs.csv"} <= set(declared)


@pytest.mark.parametrize("text", ["rtn-w4-calib_langs=en (tiny) #2", "gptq+awq/x", "__é__", "a/" * 100])
def test_figure_names_follow_the_report_rules(text):
    """Figure names: the report's rule (A-Za-z0-9_.- kept, stripped, 80 characters), benchmarks' (+ kept too, 100)."""
    from analysis.report.section import figure_slug
    from analysis.report.sections.benchmarks import figure_name

    assert figure_slug(text) == re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]
    expected = re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"benchmark_{text}_acc_a+b").strip("_")[:100] + ".png"
    assert figure_name(text, "acc", ["a", "b"]) == expected


def test_language_metadata_from_package():
    groups = analysis.resource_groups(["en", "zh", "he", "yo", "xx"])
    assert groups == {"en": "high", "zh": "high", "he": "low", "yo": "low"}


def test_activation_kurtosis_correlation_from_calibration_report(tmp_path):
    base = base_nll()
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    factors = {"en": 1.05, "de": 1.10, "sw": 1.20, "yo": 1.40}
    path = write_run(tmp_path, "qd", "2025-01-01T00-00-02", scaled(base, factors), dict(RTN4, method="laaciq"))
    payload = json.loads(path.read_text())
    kurt = {"en": 1.0, "de": 2.0, "sw": 3.0, "yo": 4.0}  # monotone in the degradation
    payload["config"]["quant_disparity"]["quant_report"]["calibration"] = {
        "per_language": {lang: {"tokens": 10, "activation_weighted_kurtosis": k} for lang, k in kurt.items()}}
    path.write_text(json.dumps(payload))
    runs = analysis.load_runs([tmp_path])
    table = analysis.correlations(analysis.degradation(runs, n_resamples=20), GROUPS,
                                  kurtosis=calibration_kurtosis(runs))
    row = table[table.predictor == "activation_weighted_kurtosis"].iloc[0]
    assert row.n == 4 and row.spearman_rho == pytest.approx(1.0)


def test_parallel_view_by_hand(tmp_path):
    from analysis.parallel_text import align_key, parallel_view
    from analysis.tokenizer_fertility import doc_token_counts

    base = base_nll()
    factors = {"en": 1.02, "de": 1.04, "sw": 1.10, "yo": 1.20}
    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base)
    write_run(tmp_path, "qd-tiny", "2025-01-01T00-00-02", scaled(base, factors), RTN4)
    runs = analysis.load_runs([tmp_path])
    deg = analysis.degradation(runs, n_resamples=20)
    tokens = doc_token_counts(runs, lambda text: len(text) // 3 + (5 if text.startswith("yo") else 0))
    view, notes = parallel_view(runs, deg, tokens)
    assert notes == [] and len(view) == 4 and (view.n_aligned == 5).all()
    view = view.set_index("lang")
    en_bytes = sum(len(t.encode()) for t in TEXTS["en"])
    en_tokens = sum(len(t) // 3 for t in TEXTS["en"])
    for lang in LANGS:
        delta_bits = (factors[lang] - 1) * sum(base[lang]) / math.log(2)
        own_bytes = sum(len(t.encode()) for t in TEXTS[lang])
        own_tokens = sum(len(t) // 3 + (5 if lang == "yo" else 0) for t in TEXTS[lang])
        assert view.loc[lang, "delta_bits_per_doc"] == pytest.approx(delta_bits / 5)
        assert view.loc[lang, "delta_bits_per_ref_byte"] == pytest.approx(delta_bits / en_bytes)
        assert view.loc[lang, "delta_bpb"] == pytest.approx(delta_bits / own_bytes)
        assert view.loc[lang, "bytes_rel_ref"] == pytest.approx(own_bytes / en_bytes)
        assert view.loc[lang, "fertility_rel_ref"] == pytest.approx(own_tokens / en_tokens)
        assert view.loc[lang, "degradation"] == pytest.approx(factors[lang] - 1)
    assert view.loc["yo", "fertility_rel_ref"] > view.loc["sw", "fertility_rel_ref"]
    assert align_key("en", "en-3") == "3" and align_key("de", "udhr-a1") == "udhr-a1"
    # without English, nothing to align with: skipped with a note
    no_en = analysis.degradation(analysis.load_runs([tmp_path]), n_resamples=20)
    no_en.docs = no_en.docs[no_en.docs.lang != "en"]
    empty, notes = parallel_view(runs, no_en)
    assert empty.empty and "no en documents" in notes[0]
    # a language missing one document: every language is compared on the 4 shared documents only
    partial = analysis.degradation(analysis.load_runs([tmp_path]), n_resamples=20)
    partial.docs = partial.docs[partial.docs.doc_id != "de-2"]
    view4 = parallel_view(runs, partial)[0].set_index("lang")
    assert (view4.n_aligned == 4).all()
    kept = [0, 1, 3, 4]
    assert view4.loc["sw", "delta_bits_per_doc"] == pytest.approx(0.10 * sum(base["sw"][i] for i in kept) / math.log(2) / 4)
    assert math.isnan(view4.loc["sw", "fertility_rel_ref"])  # no tokenizer given


def test_fertility_table_by_hand(tmp_path):
    """Tokens per byte / per word per language; a task that logged no word counts (no word_perplexity) gets none."""
    from analysis.tokenizer_fertility import fertility

    write_run(tmp_path, "tiny", "2025-01-01T00-00-01", base_nll())
    yo_samples = next(tmp_path.glob("tiny/samples_qd_multilingual_ppl_yo_*.jsonl"))
    lines = [json.loads(line) for line in yo_samples.read_text().splitlines()]
    yo_samples.write_text("".join(json.dumps({k: v for k, v in s.items() if k != "word_perplexity"}) + "\n" for s in lines))
    table = fertility(analysis.load_runs([tmp_path]), lambda text: len(text) // 4).set_index("lang")
    assert list(table.index) == sorted(LANGS)
    for lang in LANGS:
        n_tokens = sum(len(t) // 4 for t in TEXTS[lang])
        n_bytes = sum(len(t.encode()) for t in TEXTS[lang])
        n_words = sum(len(re.findall(r"\S+", t)) for t in TEXTS[lang])
        assert table.loc[lang, "n_docs"] == 5 and table.loc[lang, "n_tokens"] == n_tokens and table.loc[lang, "n_bytes"] == n_bytes
        assert table.loc[lang, "tokens_per_byte"] == pytest.approx(n_tokens / n_bytes)
        if lang == "yo":
            assert math.isnan(table.loc[lang, "n_words"]) and math.isnan(table.loc[lang, "tokens_per_word"])
        else:
            assert table.loc[lang, "n_words"] == n_words == 20 and table.loc[lang, "tokens_per_word"] == pytest.approx(n_tokens / 20)


def test_cli_replaces_its_own_out_and_refuses_foreign_files(tmp_path, capsys):
    """A reused --out holds only the new report (no stale figures); files qd-analyze did not
    write stop it (one line, folder untouched) unless --overwrite; an --out holding an input never."""
    runs_dir, out = tmp_path / "runs", tmp_path / "report"
    base = base_nll()
    write_run(runs_dir, "tiny", "2025-01-01T00-00-01", base)
    write_run(runs_dir, "qd-3", "2025-01-01T00-00-03", scaled(base, {lang: 1.3 for lang in LANGS}), dict(RTN4, bits=3))
    write_run(runs_dir, "qd-4", "2025-01-01T00-00-04", scaled(base, {lang: 1.1 for lang in LANGS}), RTN4)
    args = ["--n-resamples", "20"]
    assert main([str(runs_dir), "--out", str(out), *args]) == 0
    first = {p.name for p in (out / "figures").glob("degradation_rtn-w3*")}
    assert first  # the 3-bit run's figure
    shutil.rmtree(runs_dir / "qd-3")
    assert main([str(runs_dir), "--out", str(out), *args]) == 0
    assert not list((out / "figures").glob("degradation_rtn-w3*"))  # stale figure of the earlier report gone
    listed = json.loads((out / ".qd-analyze-manifest.json").read_text())["files"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != ".qd-analyze-manifest.json") == listed
    capsys.readouterr()
    (out / "notes.txt").write_text("mine")
    assert main([str(runs_dir), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did not write (notes.txt)" in err and "--overwrite" in err
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.md").is_file()
    assert main([str(runs_dir), "--out", str(out), "--overwrite", *args]) == 0
    assert not (out / "notes.txt").exists() and (out / "report.md").is_file()
    assert main([str(runs_dir), "--out", str(tmp_path), "--overwrite", *args]) == 2
    assert "holds the input" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "runs"]  # no staging folders left behind


def test_a_failed_report_leaves_the_earlier_out_as_it_was(tmp_path):
    from analysis.report.output_folder import write_report_folder as replace_folder

    out = tmp_path / "report"
    replace_folder(out, lambda folder: (folder / "report.md").write_text("first"))

    def half_written(folder):
        (folder / "report.md").write_text("second")
        raise RuntimeError("figure failed")

    with pytest.raises(RuntimeError, match="figure failed"):
        replace_folder(out, half_written)
    assert (out / "report.md").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["report"]
