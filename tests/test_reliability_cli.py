"""Issue 11 through the real command lines: save_to safety and the saved-model workflow
(qd-hf save_to -> lm_eval --model hf on the saved folder -> qd-analyze --baseline), list syntax
of lm-eval's own CLI, and one-line errors of qd-sweep, qd-make-tasks, qd-diagnose."""

from __future__ import annotations

import csv
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest

TASKS = "qd_multilingual_ppl_en,qd_multilingual_ppl_he"


def lm_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lm_eval", *args, "--device", "cpu", "--batch_size", "4"],
                          capture_output=True, text=True, timeout=600)


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


def results_of(folder: Path) -> dict:
    (path,) = sorted(folder.rglob("results_*.json"))
    return json.loads(path.read_text())


def samples_of(folder: Path, task: str) -> dict:
    (path,) = sorted(folder.rglob(f"samples_{task}_*.jsonl"))
    return {row["doc"]["doc_id"]: row["bits_per_byte"] for row in map(json.loads, path.read_text().splitlines())}


@pytest.mark.integration
def test_saved_model_workflow_end_to_end(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("llama"))
    saved = tmp_path / "saved"
    common = ["--tasks", TASKS, "--limit", "3", "--log_samples"]
    base = lm_eval("--model", "hf", "--model_args", f"pretrained={model},add_bos_token=False", *common, "--output_path", str(tmp_path / "base"))
    assert base.returncode == 0, base.stderr[-3000:]
    quant = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={model},add_bos_token=False,method=rtn,bits=4,save_to={saved}",
                    *common, "--output_path", str(tmp_path / "inproc"))
    assert quant.returncode == 0, quant.stderr[-3000:]
    assert {"config.json", "model.safetensors", "quant_report.json"} <= {p.name for p in saved.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary sibling left
    hf_saved = lm_eval("--model", "hf", "--model_args", f"pretrained={saved},add_bos_token=False", *common,
                       "--output_path", str(tmp_path / "hf_saved"))
    assert hf_saved.returncode == 0, hf_saved.stderr[-3000:]
    for task in TASKS.split(","):  # the saved folder scores exactly as the in-process quantized model
        assert samples_of(tmp_path / "hf_saved", task) == samples_of(tmp_path / "inproc", task)

    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "base"), str(tmp_path / "hf_saved"),
                           "--baseline", str(tmp_path / "base"), "--out", str(out), "--n-resamples", "20"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(out / "tables" / "degradation.csv", encoding="utf-8") as handle:
        rows = {row["lang"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"en", "he"} and {row["label"] for row in rows.values()} == {"rtn-w4"}
    base_results, quant_results = results_of(tmp_path / "base")["results"], results_of(tmp_path / "inproc")["results"]
    for lang, row in rows.items():
        task = f"qd_multilingual_ppl_{lang}"
        expected = quant_results[task]["bits_per_byte,none"] / base_results[task]["bits_per_byte,none"] - 1
        assert float(row["degradation"]) == pytest.approx(expected, rel=1e-9)

    # save_to safety, all refused before the model loads, as the last stderr line
    again = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={model},method=rtn,save_to={saved}", "--tasks",
                    "qd_multilingual_ppl_en", "--limit", "1", "--output_path", str(tmp_path / "x"))
    assert again.returncode != 0 and "save_to=" in last_line(again) and "non-empty folder" in last_line(again)
    assert "Loading" not in again.stderr and not (tmp_path / "x").exists()
    onto_source = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={model},method=rtn,save_to={model}", "--tasks",
                          "qd_multilingual_ppl_en", "--limit", "1", "--output_path", str(tmp_path / "x"))
    assert onto_source.returncode != 0 and "is the source model folder" in last_line(onto_source)


@pytest.mark.integration
def test_documented_list_forms_work_through_lm_eval_cli(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("llama"))
    proc = lm_eval("--model", "qd-hf", "--model_args",
                   f"pretrained={model},method=laaciq,keep_layers=[0],calib_langs=[en,he],keep=re:.*mlp\\.down_proj,calib_samples=2",
                   "--tasks", "qd_multilingual_ppl_en", "--limit", "1", "--output_path", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = results_of(tmp_path / "a")["config"]["quant_disparity"]["quant_config"]
    assert config["keep_layers"] == [0] and config["calib_langs"] == ["en", "he"] and config["keep"] == [r"re:.*mlp\.down_proj"]
    # ';' is the other documented form (quote it in a shell); ',' inside a value is lm-eval's own parse error
    fails = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={model},method=rtn,keep_layers=0,1",
                    "--tasks", "qd_multilingual_ppl_en", "--output_path", str(tmp_path / "b"))
    assert fails.returncode == 2 and "expected `key=value`, got '1'" in last_line(fails)


def test_cli_typed_values_and_paths_fail_before_loading():
    from lm_eval._cli.utils import key_val_to_dict  # the parser lm_eval's CLI uses for --model_args

    from qd_models.qd_hf import QDHFLM

    assert key_val_to_dict("keep_layers=0;1")["keep_layers"] == "0;1"
    with pytest.raises(ValueError, match=r"keep_layers=\[-1\] is not allowed; allowed: non-negative block indices"):
        QDHFLM(pretrained="/nowhere", **key_val_to_dict("method=rtn,keep_layers=-1"))
    with pytest.raises(ValueError, match="pretrained=/nonexistent/model does not exist"):
        QDHFLM(pretrained="/nonexistent/model", method="rtn")
    with pytest.raises(ValueError, match="save_to=out is not allowed with method=none"):
        QDHFLM(pretrained="/nowhere", save_to="out")


def test_save_target_checks(tmp_path):
    from qd_models.saving import check_save_target

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is an existing file"):
        check_save_target(str(tmp_path / "file"), None)
    full = tmp_path / "full"
    full.mkdir()
    (full / "pytorch_model.bin.index.json").write_text("{}")
    with pytest.raises(ValueError, match="non-empty folder"):
        check_save_target(str(full), None)
    check_save_target(str(full), None, overwrite=True)
    check_save_target(str(tmp_path / "new" / "deeper"), None)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not __import__("os").access(locked, __import__("os").W_OK):  # root can write anyway
        with pytest.raises(ValueError, match="is not writable"):
            check_save_target(str(locked / "out"), None)


def test_save_quantized_replaces_atomically(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from qd_models.saving import save_quantized

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("gpt2"))
    target = tmp_path / "out"
    target.mkdir()
    (target / "pytorch_model.bin.index.json").write_text("{}")  # stale file of an earlier model
    save_quantized(model, None, target, {"config": {}})
    assert not (target / "pytorch_model.bin.index.json").exists() and (target / "quant_report.json").is_file()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(model), "save_pretrained", broken)
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(OSError, match="disk full"):
        save_quantized(model, None, target, {"config": {}})
    assert sorted(p.name for p in target.iterdir()) == before  # the earlier save is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary sibling left


def test_corrupted_calibration_cache_is_a_logged_miss(tiny_model_dir, tmp_path, monkeypatch, caplog):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qd_models.calibration import collect_activation_stats, stats_cache_dir

    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path))
    path = tiny_model_dir("llama")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    texts, names = {"en": ["a b c", "d e"]}, ["model.layers.0.mlp.down_proj"]
    first = collect_activation_stats(model, tokenizer, texts, names, progress=False)
    entry = stats_cache_dir() / f"{first.key}.pt"
    entry.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="qd_models.calibration"):
        second = collect_activation_stats(model, tokenizer, texts, names, progress=False)
    assert not second.from_cache and str(entry) in caplog.text
    assert math.isclose(float(second.second_moments[names[0]].sum()), float(first.second_moments[names[0]].sum()), rel_tol=0)
    assert collect_activation_stats(model, tokenizer, texts, names, progress=False).from_cache  # replaced


def test_keep_everything_warns(tiny_model_dir, caplog):
    from transformers import AutoModelForCausalLM

    from qd_models.config import parse_qd_args
    from qd_models.engine import quantize_

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"))
    with caplog.at_level(logging.WARNING, logger="qd_models.engine"):
        report = quantize_(model, parse_qd_args({"method": "rtn", "keep": "re:.*"})[0])
    assert report["totals"]["params_quantized"] == 0 and "quantizes 0 parameters" in caplog.text


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if "error" in line.lower() or "Traceback" in line]
    assert lines == [lines[-1]] and needle in lines[-1] and "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.integration
def test_sweep_validates_every_config_and_task_before_loading(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("llama"))
    grid = tmp_path / "grid.yaml"
    grid.write_text("configs:\n- {method: rtn, bits: 4}\n- {method: rtn, bits: 3}\n- {method: rtn, keep: nothing_matches}\n")
    out = tmp_path / "sweep"
    proc = run_tool("qd_models.sweep", "--grid", str(grid), "--tasks", "qd_multilingual_ppl_en", "--output_path", str(out),
                    "--model_args", f"pretrained={model}", "--limit", "1", "--device", "cpu")
    one_line_error(proc, "keep=nothing_matches matches no quantizable module")
    assert not out.exists()
    grid.write_text("configs:\n- {method: rtn, bits: 4}\n")
    proc = run_tool("qd_models.sweep", "--grid", str(grid), "--tasks", "no_such_task", "--output_path", str(out),
                    "--model_args", f"pretrained={model}", "--device", "cpu")
    one_line_error(proc, "tasks=['no_such_task'] are unknown")
    assert not out.exists()


@pytest.mark.integration
def test_diagnose_leaves_no_empty_out(tmp_path):
    out = tmp_path / "diag"
    proc = run_tool("qd_models.diagnose", "--model_args", "pretrained=/nonexistent/model", "--out", str(out))
    one_line_error(proc, "pretrained=/nonexistent/model does not exist")
    assert not out.exists()


def _corpus(path: Path, langs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"lang": lang, "text": f"text in {lang}"}) + "\n" for lang in langs), encoding="utf-8")
    return path


@pytest.mark.integration
def test_make_tasks_rules(tmp_path):
    out = tmp_path / "tasks"
    proc = run_tool("qd_tasks.make_tasks", str(_corpus(tmp_path / "a.jsonl", ["en-US", "pt_BR", "fr"])), "--name", "mine", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (out / "mine").iterdir()} >= {"mine_en-US.yaml", "mine_pt_BR.yaml", "mine_fr.yaml"}
    proc = run_tool("qd_tasks.make_tasks", str(_corpus(tmp_path / "b.jsonl", ["de"])), "--name", "mine", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "mine").iterdir()) == ["_mine.yaml", "_mine_template_yaml", "mine.jsonl", "mine_de.yaml"]
    (out / "mine_xx.yaml").write_text("task: mine_xx\n")  # not ours: never overwritten
    one_line_error(run_tool("qd_tasks.make_tasks", str(_corpus(tmp_path / "c.jsonl", ["xx"])), "--name", "mine", "--out", str(out)),
                   "--out already holds mine_xx.yaml")
    one_line_error(run_tool("qd_tasks.make_tasks", str(tmp_path / "b.jsonl"), "--name", "qd_multilingual_ppl_en", "--out", str(tmp_path / "t")),
                   "would shadow the bundled suite qd_multilingual_ppl")
    one_line_error(run_tool("qd_tasks.make_tasks", str(tmp_path / "b.jsonl"), "--name", "other", "--out", str(tmp_path / "b.jsonl")),
                   "is an existing file")
    (tmp_path / "bad.jsonl").write_bytes(b'{"lang": "en", "text": "ok"}\n{"lang": "en", "text": "caf\xe9"}\n')
    one_line_error(run_tool("qd_tasks.make_tasks", str(tmp_path / "bad.jsonl"), "--name", "other", "--out", str(tmp_path / "t")),
                   "bad.jsonl:2: invalid UTF-8")
    one_line_error(run_tool("qd_tasks.make_tasks", str(_corpus(tmp_path / "d.jsonl", ["en-us"])), "--name", "other", "--out", str(tmp_path / "t")),
                   "lang must be a language code")
    assert not (tmp_path / "t").exists()
