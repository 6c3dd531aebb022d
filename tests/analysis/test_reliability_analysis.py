"""qd-analyze through its real command line on hand-written lm-eval outputs (issue 11):
language codes, saved quantized folders, --baseline, repeated labels, and the problem lines.

Expected numbers are computed here from the documents' log-likelihoods, sharing no code with
the analysis."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

STAMP = "2025-01-01T00-00-00.000000"
TEXTS = ["alpha beta", "gamma delta epsilon", "zeta"]


def write_run(folder: Path, model: str, lls: dict[str, list[float]], method: str = "none", bits: int | None = None,
              samples: bool | set = True, lm_eval_model: str | None = None, extra: dict | None = None) -> Path:
    """One lm-eval output folder: ``lls[task]`` = per-document log-likelihoods (nats) of TEXTS."""
    folder.mkdir(parents=True)
    block = {"model_source": model, "quant_config": {"method": method, **({"bits": bits} if bits else {})}}
    config = {"model": lm_eval_model or ("hf" if method == "none" else "qd-hf"), "model_args": f"pretrained={model}"}
    if config["model"] == "qd-hf":
        config["quant_disparity"] = block
    results = {"results": {}, "group_subtasks": {}, "config": config, "date": 1.0}
    for task, values in lls.items():
        lang = task.removeprefix("mine_")  # the test's tasks are mine_<lang>
        n_bytes = [len(text.encode()) for text in TEXTS[: len(values)]]
        results["results"][task] = {"bits_per_byte,none": -sum(values) / sum(n_bytes) / math.log(2)}
        if samples is True or (isinstance(samples, set) and task in samples):
            lines = [{"doc_id": i, "doc": {"lang": lang, "text": TEXTS[i], "doc_id": f"d{i}"}, "target": TEXTS[i],
                      "bits_per_byte": [ll, n_bytes[i]]} for i, ll in enumerate(values)]
            (folder / f"samples_{task}_{STAMP}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    results["results"].update(extra or {})
    (folder / f"results_{STAMP}.json").write_text(json.dumps(results))
    return folder


def analyze(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "analysis", *args, "--out", str(out),
                           "--n-resamples", "50"], capture_output=True, text=True, timeout=300)
    return proc, out


def table(out: Path, name: str) -> list[dict]:
    with open(out / "tables" / f"{name}.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def degradation(quant: list[float], base: list[float]) -> float:
    return sum(quant) / sum(base) - 1  # both are negative NLL sums over the same bytes


BASE = [-10.0, -20.0, -5.0]
QUANT = [-11.0, -21.0, -6.0]


@pytest.mark.integration
def test_region_and_script_codes_form_one_suite_with_resource_groups(tmp_path):
    tasks = ("mine_en-US", "mine_pt_BR", "mine_he")
    write_run(tmp_path / "base", "m", dict.fromkeys(tasks, BASE))
    write_run(tmp_path / "q", "m", {t: QUANT for t in tasks}, method="rtn", bits=4)
    proc, out = analyze(tmp_path, str(tmp_path / "base"), str(tmp_path / "q"))
    assert proc.returncode == 0, proc.stderr
    rows = table(out, "degradation")
    assert {(r["suite"], r["lang"]) for r in rows} == {("mine", "en-US"), ("mine", "pt_BR"), ("mine", "he")}
    for r in rows:
        assert float(r["degradation"]) == pytest.approx(degradation(QUANT, BASE), rel=1e-9)
        assert int(r["n_docs"]) == 3 and r["ci_low"] != ""
    (disp,) = table(out, "disparity")
    assert disp["hr_langs"].split(",") == ["en-US", "pt_BR"] and disp["lr_langs"] == "he"  # en, pt: Joshi class 5, 4
    assert "High-resource: en-US, pt_BR; low-resource: he" in (out / "report.md").read_text()


@pytest.mark.integration
def test_saved_quantized_folder_is_a_quantized_run_paired_with_its_source(tmp_path):
    saved = tmp_path / "saved_model"
    saved.mkdir()
    report = {"config": {"method": "rtn", "bits": 4, "granularity": "channel"}, "model_source": "orig",
              "totals": {"effective_bits_per_weight": 4.25}}
    (saved / "quant_report.json").write_text(json.dumps(report))
    gptq = tmp_path / "gptq_model"
    gptq.mkdir()
    (gptq / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 3}}))
    write_run(tmp_path / "base", "orig", {"mine_he": BASE})
    write_run(tmp_path / "saved", str(saved), {"mine_he": QUANT})
    write_run(tmp_path / "gptq", str(gptq), {"mine_he": [-12.0, -22.0, -7.0]})
    proc, out = analyze(tmp_path, str(tmp_path / "base"), str(tmp_path / "saved"), str(tmp_path / "gptq"),
                        "--baseline", str(tmp_path / "base"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["label"]: r for r in table(out, "degradation")}
    assert set(rows) == {"rtn-w4", "gptq-w3"}
    assert float(rows["rtn-w4"]["degradation"]) == pytest.approx(degradation(QUANT, BASE), rel=1e-9)
    assert float(rows["rtn-w4"]["effective_bits_per_weight"]) == 4.25
    assert float(rows["gptq-w3"]["degradation"]) == pytest.approx(degradation([-12.0, -22.0, -7.0], BASE), rel=1e-9)
    report_md = (out / "report.md").read_text()
    assert "every other run is compared with" in report_md
    # without --baseline the saved run still finds the baseline of the model it was quantized from
    proc, out = analyze(tmp_path / "x", str(tmp_path / "base"), str(tmp_path / "saved"))
    assert proc.returncode == 0 and [r["label"] for r in table(out, "degradation")] == ["rtn-w4"]


@pytest.mark.integration
def test_baseline_pairs_plain_runs_of_any_model(tmp_path):
    write_run(tmp_path / "base", "a", {"mine_he": BASE})
    write_run(tmp_path / "other", "b", {"mine_he": QUANT})
    proc, out = analyze(tmp_path, str(tmp_path / "base"), str(tmp_path / "other"), "--baseline", str(tmp_path / "base"))
    assert proc.returncode == 0, proc.stderr
    (row,) = table(out, "degradation")
    assert float(row["degradation"]) == pytest.approx(degradation(QUANT, BASE), rel=1e-9)
    proc, out = analyze(tmp_path / "y", str(tmp_path / "base"), str(tmp_path / "other"))  # no pair, no phantom problems
    assert "see problems above" not in (out / "report.md").read_text() and "pass --baseline" in (out / "report.md").read_text()


@pytest.mark.integration
def test_same_label_of_two_models_names_the_model(tmp_path):
    for model in ("modelA", "modelB"):
        write_run(tmp_path / f"{model}-base", model, {"mine_en": BASE, "mine_he": BASE})
        write_run(tmp_path / f"{model}-q", model, {"mine_en": QUANT, "mine_he": QUANT}, method="rtn", bits=4)
    proc, out = analyze(tmp_path.with_name(f"{tmp_path.name}-out"), str(tmp_path))  # --out outside the input folder
    assert proc.returncode == 0, proc.stderr
    text = (out / "report.md").read_text()
    assert "| rtn-w4 (modelA) |" in text and "| rtn-w4 (modelB) |" in text


@pytest.mark.integration
def test_problem_lines(tmp_path):
    inf_doc = [-11.0, -21.0, -math.inf]
    write_run(tmp_path / "base", "m", {"mine_en": BASE, "mine_de": BASE, "mine_he": BASE, "mine_sw": BASE},
              samples={"mine_en", "mine_he", "mine_sw"},
              extra={"arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.1}, "odd_yo": {"bits_per_byte,none": [1.0, 2.0]}})
    (tmp_path / "base" / f"samples_arc_easy_{STAMP}.jsonl").write_text(json.dumps({"doc_id": 0, "acc": 1}) + "\n")
    write_run(tmp_path / "q", "m", {"mine_en": QUANT, "mine_de": QUANT, "mine_he": QUANT, "mine_sw": inf_doc},
              method="rtn", bits=4, samples={"mine_en", "mine_he", "mine_sw"})
    proc, out = analyze(tmp_path, str(tmp_path / "base"), str(tmp_path / "q"), "--hr", "en,xx", "--lr", "he,sw")
    assert proc.returncode == 0, proc.stderr
    text = (out / "report.md").read_text()
    assert "--hr/--lr name xx, not among the runs' languages" in text and "no --hr/--lr" not in text
    assert f"samples_mine_de_{STAMP}.jsonl: missing" in text  # the one language without samples is named
    assert "tasks without a language: arc_easy" in text  # benchmark tasks are read (analysis.benchmark_loading); this one has no language
    assert "unreadable samples" not in text
    assert "odd_yo bits_per_byte = [1.0, 2.0] is not a number" in text
    assert "sw: non-finite bits/byte (degenerate run) (kept and flagged)" in text  # reported, not dropped
    (disp,) = table(out, "disparity")
    assert (int(disp["n_langs_HR"]), int(disp["n_langs_LR"])) == (1, 2)  # language-level: en | he, sw


@pytest.mark.integration
def test_aggregates_only_says_which_run_lacks_samples(tmp_path):
    write_run(tmp_path / "base", "m", {"mine_he": BASE})
    write_run(tmp_path / "q", "m", {"mine_he": QUANT}, method="rtn", bits=4, samples=False)
    proc, out = analyze(tmp_path, str(tmp_path / "base"), str(tmp_path / "q"))
    assert proc.returncode == 0, proc.stderr
    assert "he: aggregates only: no samples in the quantized run" in (out / "report.md").read_text()


@pytest.mark.integration
@pytest.mark.parametrize("args, needle", [
    (["nowhere"], "path=nowhere does not exist"),
    (["HERE", "--hr", "en,", "--lr", "he"], "--hr='en,' has an empty entry"),
])
def test_user_errors_are_one_line(tmp_path, args, needle):
    write_run(tmp_path / "base", "m", {"mine_he": BASE})
    proc, out = analyze(tmp_path, *[str(tmp_path / "base") if a == "HERE" else a for a in args])
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    if args[0] == "nowhere":
        proc = subprocess.run([sys.executable, "-m", "analysis", "nowhere", "--out", str(out), "--debug"], capture_output=True, text=True)
        assert proc.returncode != 0 and "Traceback" in proc.stderr
