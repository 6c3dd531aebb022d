"""qd-analyze through its real command line on hand-edited lm-eval outputs (issue 19): every field
of a form lm-eval/qd-hf never write is one line under "Problems and flags" naming the file and the
field, and the rest of the report is written; impossible log-likelihoods, a saved model folder that
is gone and intervals from fewer than 3 documents are flagged; bad --task-lang-map entries are one
line. Expected numbers are computed here from the documents' log-likelihoods."""

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
BASE = [-10.0, -20.0, -5.0]
QUANT = [-11.0, -21.0, -6.0]
TASKS = ("mine_en", "mine_he")


def write_run(folder: Path, lls: dict, method: str = "rtn", model: str = "m", edit=None, pretrained: str | None = None) -> Path:
    """One lm-eval output folder (qd-hf unless method=none); ``edit(results)`` hand-edits the results dict."""
    folder.mkdir(parents=True)
    config = {"model": "qd-hf" if method != "none" else "hf", "model_args": f"pretrained={pretrained or model}"}
    if method != "none":
        config["quant_disparity"] = {"model_source": model, "quant_config": {"method": method, "bits": 4},
                                     "quant_totals": {"effective_bits_per_weight": 4.5}}
    results = {"results": {}, "group_subtasks": {}, "config": config, "date": 1.0}
    for task, values in lls.items():
        n_bytes = [len(text.encode()) for text in TEXTS]
        results["results"][task] = {"bits_per_byte,none": -sum(values) / sum(n_bytes) / math.log(2)}
        lines = [{"doc_id": i, "doc": {"lang": task.removeprefix("mine_"), "text": TEXTS[i], "doc_id": f"d{i}"}, "target": TEXTS[i],
                  "bits_per_byte": [ll, n_bytes[i]]} for i, ll in enumerate(values)]
        (folder / f"samples_{task}_{STAMP}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if edit is not None:
        edit(results)
    (folder / f"results_{STAMP}.json").write_text(json.dumps(results))
    return folder


def analyze(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "analysis", *args, "--out", str(out), "--n-resamples", "50"],
                          capture_output=True, text=True, timeout=300)
    return proc, out


def degradation_rows(out: Path) -> dict:
    with open(out / "tables" / "degradation.csv", encoding="utf-8") as handle:
        return {(row["quant_id"].split("/")[0], row["lang"]): row for row in csv.DictReader(handle)}


def problems_section(out: Path) -> str:
    text = (out / "report.md").read_text(encoding="utf-8")
    return text[text.index("## Problems and flags"):]


def _set_qd(name, value):
    return lambda results: results["config"]["quant_disparity"].__setitem__(name, value)


EDITS = {  # folder: (hand edit, words the problem line must hold)
    "config_string": (lambda r: r.__setitem__("config", "x"), "field config is the string 'x'"),
    "block_string": (lambda r: r["config"].__setitem__("quant_disparity", "x"), "field config.quant_disparity is the string 'x'"),
    "results_list": (lambda r: r.__setitem__("results", []), "field results is an empty list"),
    "totals_string": (_set_qd("quant_totals", "x"), "field config.quant_disparity.quant_totals is the string 'x'"),
    "report_string": (_set_qd("quant_report", "x"), "field config.quant_disparity.quant_report is the string 'x'"),
    "report_layers": (_set_qd("quant_report", {"layers": "x"}), "field config.quant_disparity.quant_report has layers that are not a list"),
    "fidelity_list": (_set_qd("fidelity", {"role": "compare", "files": ["a.npz"]}), "field config.quant_disparity.fidelity.files is a list"),
    "task_null": (lambda r: r["results"].__setitem__("mine_he", None), "field results.mine_he is null"),
}


@pytest.mark.integration
def test_hand_edited_fields_are_flagged_and_the_rest_is_reported(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "base", dict.fromkeys(TASKS, BASE), method="none")
    write_run(runs / "good", dict.fromkeys(TASKS, QUANT), model="m")
    for name, (edit, _) in EDITS.items():
        write_run(runs / name, dict.fromkeys(TASKS, QUANT), model=f"m_{name}" if name != "task_null" else "m", edit=edit)
    proc, out = analyze(tmp_path, str(runs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    problems = problems_section(out)
    for name, (_, words) in EDITS.items():
        line = next((line for line in problems.splitlines() if f"{name}/results_{STAMP}.json" in line), "")
        assert words in line, (name, problems)
    expected = sum(QUANT) / sum(BASE) - 1
    rows = degradation_rows(out)
    for key in (("good", "en"), ("good", "he"), ("task_null", "en")):
        assert float(rows[key]["degradation"]) == pytest.approx(expected, rel=1e-12)
    assert ("task_null", "he") not in rows and not any(key[0] in ("config_string", "block_string", "results_list") for key in rows)


@pytest.mark.integration
def test_positive_log_likelihood_is_excluded_and_too_few_documents_give_no_interval(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "base", {"mine_en": BASE}, method="none")
    write_run(runs / "q", {"mine_en": [QUANT[0], QUANT[1], 5.0]})  # doc 2: log p = +5, p > 1
    proc, out = analyze(tmp_path, str(runs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "doc d2 has log-likelihood +5 > 0 (impossible for a probability); that document is excluded" in problems_section(out)
    row = degradation_rows(out)[("q", "en")]
    assert float(row["degradation"]) == pytest.approx((QUANT[0] + QUANT[1]) / (BASE[0] + BASE[1]) - 1, rel=1e-12)
    assert int(row["n_docs"]) == 2 and row["ci_low"] == "" and row["ci_high"] == ""
    assert row["ci_source"] == "no CI: 2 docs (an interval needs at least 3)"
    assert "en: no CI: 2 docs (an interval needs at least 3)." in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.integration
def test_a_saved_model_folder_that_is_gone_is_flagged(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "base", {"mine_en": BASE}, method="none")
    write_run(runs / "saved", {"mine_en": QUANT}, method="none", model="m-rtn-w4", pretrained=str(tmp_path / "gone" / "m-rtn-w4"))
    proc, out = analyze(tmp_path, str(runs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the model folder m-rtn-w4 is not on this machine; read as a baseline" in problems_section(out)
    assert str(tmp_path) not in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.integration
@pytest.mark.parametrize("mapping, words", [
    ({"re:mybench_(.*)": "\\2"}, "language '\\\\2' for 're:mybench_(.*)' is not allowed (invalid group reference 2"),
    ({"re:mybench_(.*)": {"lang": "\\1", "suite": "s\\g<x>"}}, "suite 's\\\\g<x>' for 're:mybench_(.*)' is not allowed"),
    ({"mybench": "../x"}, "language '../x' for 'mybench' is not a language code"),
])
def test_bad_task_language_maps_are_one_line(tmp_path, mapping, words):
    runs = tmp_path / "runs"
    write_run(runs / "base", {"mine_en": BASE}, method="none")
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    proc, out = analyze(tmp_path, str(runs), "--task-lang-map", str(tmp_path / "map.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("qd-analyze: error: --task-lang-map: ") and words in proc.stderr
    assert not out.exists()
