"""Issue 19, "nothing reused unless it is the same", through the real commands: the weights'
fingerprint in every identity (qd-sweep reruns a changed model, qd-analyze never pairs other
weights, a fidelity baseline of other weights is refused), fidelity files that never overwrite
each other, several models' fidelity in one report, and truncated ``.npz`` files."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TASKS = ["qd_multilingual_ppl_en", "qd_multilingual_ppl_he"]


def lm_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lm_eval", *args, "--device", "cpu", "--batch_size", "4"],
                          capture_output=True, text=True, timeout=600)


def qd_analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", *args, "--n-resamples", "20"], capture_output=True, text=True, timeout=600)


def results_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("results_*.json"))


def bits_per_byte(path: Path) -> dict[str, float]:
    results = json.loads(path.read_text())["results"]
    return {task.rsplit("_", 1)[1]: results[task]["bits_per_byte,none"] for task in TASKS}


def other_weights_into(folder: Path, scratch: Path, seed: int) -> None:
    """Replace ``folder``'s weights by those of a tiny llama of the same config and another seed."""
    from qd_models.tiny_models import save_tiny_model

    save_tiny_model("llama", scratch, seed=seed)
    shutil.copy2(scratch / "model.safetensors", folder / "model.safetensors")


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_hashes_the_weight_files_and_caches_by_path_size_and_mtime(tmp_path, monkeypatch):
    from qd_models.model_identity import model_fingerprint

    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "m"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "a.safetensors").write_bytes(b"first shard")
    (model / "sub" / "b.bin").write_bytes(b"second")

    def expected() -> str:  # the documented rule, computed here
        digest = hashlib.sha256()
        for name in ("a.safetensors", "sub/b.bin"):
            digest.update(f"{name}\0{hashlib.sha256((model / name).read_bytes()).hexdigest()}\n".encode())
        return "sha256:" + digest.hexdigest()

    first = model_fingerprint(str(model))
    assert first == expected()
    (model / "config.json").write_text('{"other": 1}')  # not a weight file
    assert model_fingerprint(str(model)) == first
    stat = (model / "a.safetensors").stat()
    (model / "a.safetensors").write_bytes(b"other shard")  # same size; mtime restored: the cached hash is used
    os.utime(model / "a.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model_fingerprint(str(model)) == first
    os.utime(model / "a.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))  # a new mtime: rehashed
    assert model_fingerprint(str(model)) == expected() != first
    for entry in (tmp_path / "cache" / "weights").glob("*.json"):  # a corrupt entry is a miss
        entry.write_text("{not json")
    assert model_fingerprint(str(model)) == expected()
    assert model_fingerprint("org/some-model", "v2") == "name:org/some-model@v2"


def test_calibration_statistics_key_changes_with_the_weight_files(tmp_path, monkeypatch):
    """The calibration cache's model key uses the same weight fingerprint as every other identity:
    other weight files in the folder the model was loaded from give another key."""
    from transformers import AutoModelForCausalLM

    from qd_models.calibration import model_key
    from qd_models.model_identity import model_fingerprint
    from qd_models.tiny_models import save_tiny_model

    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))
    folder = save_tiny_model("llama", tmp_path / "m", seed=0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    first = model_key(model)
    assert first.startswith(model_fingerprint(str(folder)) + "|")
    assert model_key(AutoModelForCausalLM.from_pretrained(folder)) == first  # a reload: the same key
    other_weights_into(folder, tmp_path / "other", seed=1)
    changed = model_key(model)
    assert changed.startswith(model_fingerprint(str(folder)) + "|") and changed.split("|")[0] != first.split("|")[0]


# ----------------------------------------------------------------------------- qd-sweep


@pytest.fixture(scope="module")
def changed_model_sweeps(tiny_model_dir, tmp_path_factory):
    """qd-sweep (baseline + rtn w4, --fidelity) on a model folder; other weights of the same
    config copied into it; qd-sweep again with rtn w3 added. Returns paths and stdout lines."""
    root = tmp_path_factory.mktemp("changed")
    model = root / "model"
    shutil.copytree(tiny_model_dir("llama"), model)
    runs = root / "runs"
    common = ["--tasks", ",".join(TASKS), "--output_path", str(runs), "--model_args", f"pretrained={model},dtype=float32",
              "--limit", "2", "--device", "cpu", "--batch_size", "4", "--log_samples", "--fidelity", "--methods", "rtn"]
    first = subprocess.run([sys.executable, "-m", "qd_models.sweep", *common, "--bits", "4"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    old_results = {path.relative_to(runs).parts[0]: path for path in results_files(runs)}
    other_weights_into(model, root / "scratch", seed=1)
    second = subprocess.run([sys.executable, "-m", "qd_models.sweep", *common, "--bits", "4,3"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"root": root, "model": model, "runs": runs, "old": old_results, "common": common, "second": second.stdout.splitlines()}


@pytest.mark.integration
def test_changed_weights_rerun_every_config_and_are_never_paired_with_the_old_baseline(changed_model_sweeps):
    from analysis.loading import load_runs
    from analysis.pairing import pair_runs

    runs, old = changed_model_sweeps["runs"], changed_model_sweeps["old"]
    statuses = [line.split()[0] for line in changed_model_sweeps["second"] if line.split() and line.split()[0] in ("done", "skipped")]
    assert statuses == ["done", "done", "done"]  # baseline, rtn-w4 and rtn-w3: nothing reused
    folders = {path.relative_to(runs).parts[0]: path for path in results_files(runs)}
    assert set(old) < set(folders) and len(folders) == 5
    new = {name: path for name, path in folders.items() if name not in old}
    fingerprint = {name: json.loads(path.read_text())["config"]["quant_disparity"]["model_fingerprint"] for name, path in folders.items()}
    assert len({fingerprint[name] for name in old}) == 1 and len({fingerprint[name] for name in new}) == 1
    assert {fingerprint[name] for name in old} != {fingerprint[name] for name in new}
    runset = load_runs([runs])
    pairs, problems = pair_runs(runset)
    by_folder = {run_id.split("/")[0]: run_id for run_id in runset.runs}
    folder_of = {run_id: folder for folder, run_id in by_folder.items()}
    assert len(pairs) == 3
    for pair in pairs:
        assert fingerprint[folder_of[pair.quant_id]] == fingerprint[folder_of[pair.base_id]]
    (w3,) = [name for name in new if name.startswith("rtn-w3-")]
    (new_base,) = [name for name in new if name.startswith("baseline-")]
    assert {pair.quant_id: pair.base_id for pair in pairs}[by_folder[w3]] == by_folder[new_base]
    assert not [p for p in problems if "weight fingerprint" in p]


@pytest.mark.integration
def test_several_models_fidelity_in_one_report(changed_model_sweeps, tmp_path):
    """Two models' --fidelity sweeps in one folder (same model name and labels, other weights):
    python -m analysis writes the report, one fidelity row per run and language, each equal to the
    sums over its own file."""
    runs = changed_model_sweeps["runs"]
    proc = qd_analyze(str(runs), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "report" / "tables" / "fidelity.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    expected = {}
    for folder in runs.iterdir():
        for task in TASKS:
            for path in folder.glob(f"fidelity_{task}__*.npz"):
                data = np.load(path)
                expected[folder.name, task.rsplit("_", 1)[1]] = data["kl"].sum() / data["offsets"][-1]
    assert len(expected) == 3 * len(TASKS) and len(rows) == len(expected)
    for row in rows:
        assert float(row["kl_per_token"]) == pytest.approx(expected[row["quant_id"].split("/")[0], row["lang"]], rel=1e-9)
    assert (tmp_path / "report" / "figures" / "fidelity_qd_multilingual_ppl.png").is_file()


@pytest.mark.integration
def test_truncated_fidelity_baseline_is_one_line_in_qd_sweep_before_loading(changed_model_sweeps, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(changed_model_sweeps["runs"], runs)
    (new_base,) = [p for p in runs.glob("baseline-*") if p.name not in changed_model_sweeps["old"]]
    (target,) = new_base.glob(f"fidelity_base_{TASKS[0]}__*.npz")
    target.write_bytes(target.read_bytes()[:100])
    common = [arg if arg != str(changed_model_sweeps["runs"]) else str(runs) for arg in changed_model_sweeps["common"]]
    proc = subprocess.run([sys.executable, "-m", "qd_models.sweep", *common, "--bits", "4,3,2"], capture_output=True, text=True, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert target.name in lines[-1] and "not a readable fidelity file" in lines[-1]
    assert not list(runs.glob("rtn-w2-*")) and not list(runs.glob(".tmp-*"))


@pytest.mark.integration
def test_truncated_and_empty_fidelity_files_are_flagged_by_qd_analyze(changed_model_sweeps, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(changed_model_sweeps["runs"], runs)
    (w3,) = runs.glob("rtn-w3-*")
    truncated, emptied = sorted(w3.glob("fidelity_*__*.npz"))
    truncated.write_bytes(truncated.read_bytes()[:200])
    emptied.write_bytes(b"")
    proc = qd_analyze(str(runs), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    flags = text.split("## Problems and flags", 1)[1]
    for path in (truncated, emptied):
        assert f"{path.name}: unreadable fidelity file" in flags


# ----------------------------------------------------------------------------- qd-hf fidelity


def test_baseline_of_other_weights_with_the_same_folder_name_and_config_is_refused(tiny_model_dir, evaluate_in_process, tmp_path):
    from qd_models.qd_hf import QDHFLM

    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"
    shutil.copytree(tiny_model_dir("llama"), first)
    shutil.copytree(tiny_model_dir("llama"), second)
    other_weights_into(second, tmp_path / "scratch", seed=2)
    evaluate_in_process("qd-hf", f"pretrained={first},dtype=float32,fidelity_out={tmp_path / 'base'}", TASKS[:1], limit=1)
    with pytest.raises(ValueError, match=r"fidelity_baseline=.* does not match this run \(weights=") as err:
        QDHFLM(pretrained=str(second), dtype="float32", device="cpu", method="rtn", bits=4,
               fidelity_out=str(tmp_path / "x"), fidelity_baseline=str(tmp_path / "base"))
    assert "\n" not in str(err.value)


@pytest.mark.integration
def test_truncated_fidelity_baseline_is_one_line_in_qd_hf_before_loading(tmp_path, tiny_model_dir):
    base = tmp_path / "base"
    base.mkdir()
    (base / f"fidelity_base_{TASKS[0]}__0123456789.npz").write_bytes(b"")
    proc = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={tiny_model_dir('llama')},method=rtn,fidelity_out={tmp_path / 'x'},"
                   f"fidelity_baseline={base}", "--tasks", TASKS[0], "--limit", "1", "--output_path", str(tmp_path / "out"))
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and f"fidelity_base_{TASKS[0]}__0123456789.npz is not a readable fidelity file" in last
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_two_limits_sharing_fidelity_out_keep_their_own_files(tiny_model_dir, evaluate_in_process, tmp_path):
    """Two --limit runs of one config with the same fidelity_out (= lm-eval's --output_path, as
    docs/fidelity.md's commands do): analysing the first reports the first's KL — the sums over its 2
    documents, read here from the 3-document run's file (same model, config, documents; batched
    differently, so equal up to float32 round-off)."""
    from analysis.fidelity import fidelity_table
    from analysis.loading import load_runs

    model = tiny_model_dir("llama")
    shared = tmp_path / "shared"
    evaluate_in_process("qd-hf", f"pretrained={model},fidelity_out={tmp_path / 'base'}", TASKS, limit=3)
    results: list[Path] = []
    for limit in ("2", "3"):
        proc = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={model},method=rtn,bits=3,fidelity_out={shared},"
                       f"fidelity_baseline={tmp_path / 'base'}", "--tasks", ",".join(TASKS), "--limit", limit, "--output_path", str(shared))
        assert proc.returncode == 0, proc.stderr[-3000:]
        (latest,) = set(results_files(shared)) - set(results)
        results.append(latest)
    table, problems = fidelity_table(load_runs([results[0]]), pd.DataFrame(), n_resamples=20)
    assert not problems and len(table) == len(TASKS)
    listed = json.loads(results[1].read_text())["config"]["quant_disparity"]["fidelity"]["files"]
    for row in table.itertuples():
        task = f"qd_multilingual_ppl_{row.lang}"
        with np.load(shared / listed[task]) as data:  # the 3-document file; documents 0 and 1 as in the first run
            assert list(data["doc_ids"]) == [0, 1, 2]
            stop = data["offsets"][2]
            first_two, all_three = data["kl"][:stop].sum() / stop, data["kl"].sum() / data["offsets"][-1]
            assert row.kl_per_token == pytest.approx(first_two, rel=1e-4)  # other batches of rows: float32 round-off only
            assert abs(all_three / first_two - 1) > 1e-2  # what an overwritten file would give
            assert row.n_docs == 2

    # a file of another run under the name this run writes: refused, nothing replaced; qd-analyze flags it
    first_files = json.loads(results[0].read_text())["config"]["quant_disparity"]["fidelity"]["files"]
    shutil.copy2(shared / listed[TASKS[0]], shared / first_files[TASKS[0]])
    before = (shared / first_files[TASKS[0]]).read_bytes()
    with pytest.raises(ValueError, match=f"{first_files[TASKS[0]]} belongs to another run"):
        evaluate_in_process("qd-hf", f"pretrained={model},method=rtn,bits=3,fidelity_out={shared},fidelity_baseline={tmp_path / 'base'}",
                            TASKS, limit=2)
    assert (shared / first_files[TASKS[0]]).read_bytes() == before
    table, problems = fidelity_table(load_runs([results[0]]), pd.DataFrame(), n_resamples=20)
    assert set(table.lang) == {"he"}
    assert any(first_files[TASKS[0]] in p and "belongs to another run" in p and "3 documents in the file, 2 in the results" in p for p in problems)
