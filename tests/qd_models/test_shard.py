"""``qd-sweep --shard K/N``: two concurrent shard processes (the real CLI) fill one output folder
with the same configs, per-document log-likelihoods, results and fidelity arrays as one sweep;
the shares partition the grid; bad values and a missing baseline fail in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qd_models.runners.grid import build_items
from qd_models.runners.shard import Shard
from qd_models.runners.store import COMPLETE_MARKER, LOCK_DIR
from qd_models.runners.sweep import EvalSettings, Sweep, main
from qd_tasks.cli_errors import UserInputError

GRID = ["--methods", "rtn,aciq", "--bits", "3,4", "--granularity", "channel"]  # baseline + 4 configs


def _sweep(model_dir: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qd_models.sweep", *GRID, "--tasks", "qd_multilingual_ppl", "--limit", "2",
           "--batch_size", "4", "--device", "cpu", "--model_args", f"pretrained={model_dir}", "--log_samples",
           "--fidelity", "--output_path", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})


def _folder_contents(folder: Path) -> dict:
    """Per config folder: {task: {doc id: log-likelihood}}, results' bits_per_byte, fidelity arrays."""
    contents = {}
    for config in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != LOCK_DIR):
        assert (config / COMPLETE_MARKER).is_file(), config
        lls = {}
        for file in config.rglob("samples_*.jsonl"):
            rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
            lls[file.name.rsplit("_", 1)[0]] = {row["doc_id"]: float(row["resps"][0][0]) for row in rows}
        (results,) = config.rglob("results_*.json")
        bpb = {t: v["bits_per_byte,none"] for t, v in json.loads(results.read_text())["results"].items()}
        fidelity = {}
        for file in sorted(config.glob("fidelity_*.npz")):
            with np.load(file) as data:
                fidelity[file.name] = {name: data[name] for name in data.files if name != "meta"}
        contents[config.name] = {"lls": lls, "bpb": bpb, "fidelity": fidelity}
    return contents


@pytest.mark.integration
def test_two_concurrent_shards_fill_one_folder_like_one_sweep(tiny_model_dir, tmp_path, monkeypatch):
    from analysis.loading import load_runs

    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = tiny_model_dir("llama")
    shared, single = tmp_path / "shared", tmp_path / "single"
    procs = [_sweep(model_dir, shared, "--shard", "1/2"), _sweep(model_dir, shared, "--shard", "2/2"), _sweep(model_dir, single)]
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    done = [[Path(line.split()[-1]).name for line in output.splitlines() if line.startswith("done ")] for output in outputs]
    assert len(done[0]) == 3 and done[0][0].startswith("baseline-") and len(done[1]) == 2  # baseline + 2 | 2
    assert sorted(done[0] + done[1]) == sorted(done[2])  # disjoint shares, their union the grid

    union, alone = _folder_contents(shared), _folder_contents(single)
    assert sorted(union) == sorted(alone) and len(alone) == 5
    for name, expected in alone.items():
        got = union[name]
        assert got["bpb"] == expected["bpb"], name
        assert got["lls"] == expected["lls"] and sum(len(v) for v in expected["lls"].values()) == 16, name
        assert got["fidelity"].keys() == expected["fidelity"].keys() and len(expected["fidelity"]) == 8, name
        for file, arrays in expected["fidelity"].items():
            for array, value in arrays.items():
                np.testing.assert_array_equal(got["fidelity"][file][array], value, err_msg=f"{name}/{file}:{array}")
    assert not [p for p in shared.iterdir() if p.name.startswith(".tmp-")]

    # qd-analyze reads the union: the same runs and per-document values as the single sweep
    def docs(folder):
        frame = load_runs([folder]).docs
        frame = frame.assign(config=frame["run_id"].str.split("/").str[0]).drop(columns="run_id")
        return frame.sort_values(["config", "task", "doc_id"]).reset_index(drop=True)

    union_docs, alone_docs = docs(shared), docs(single)
    assert union_docs["config"].nunique() == 5 and len(union_docs) == 5 * 16
    assert union_docs.equals(alone_docs)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_partition_the_grid_with_the_baseline_first_on_shard_1(count):
    items = build_items([{"method": "rtn", "bits": b, "granularity": g} for b in (2, 3, 4) for g in ("tensor", "channel")])
    shares = [Shard(k, count).select(items) for k in range(1, count + 1)]
    labels = [item.label for share in shares for item in share]
    assert sorted(labels) == sorted(item.label for item in items) and len(set(labels)) == len(items)
    assert shares[0][0].label == "baseline"
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # dealt out evenly
    assert shares == [Shard(k, count).select(list(items)) for k in range(1, count + 1)]  # deterministic


@pytest.mark.parametrize("value", ["0/2", "3/2", "2", "a/b", "1/0", "-1/2", ""])
def test_bad_shard_is_one_line_before_any_work(value, tmp_path, capsys):
    code = main(["--methods", "rtn", "--tasks", "qd_multilingual_ppl", "--output_path", str(tmp_path / "out"), f"--shard={value}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"qd-sweep: error: --shard={value} is not allowed; allowed: K/N with integers 1 <= K <= N")
    assert not (tmp_path / "out").exists()


def test_shard_without_the_baseline_fails_naming_it_after_the_timeout(tiny_model_dir, tmp_path):
    settings = EvalSettings(tasks=("qd_multilingual_ppl",), output_path=str(tmp_path), model_args=f"pretrained={tiny_model_dir('llama')}",
                            limit=1, batch_size=4, device="cpu", fidelity=True, baseline_timeout=0)
    sweep = Sweep(settings)
    items = build_items([{"method": "rtn", "bits": 4}])
    with pytest.raises(UserInputError, match=rf"the fidelity baseline {sweep.folder_name(items[0])} is not complete in .* after 0 s; allowed: run shard 1"):
        sweep.run(items, Shard(2, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_DIR]  # no half-written config
