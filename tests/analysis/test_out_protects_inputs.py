"""``python -m analysis`` (issue 19): ``--out`` never holds or lies inside any input, positional or
option, not even with ``--overwrite`` (it used to delete a ``--scan-csv`` or ``--task-lang-map`` inside it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE_RUNS = Path(__file__).parents[1] / "fixtures" / "analysis" / "runs"


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", *args, "--n-resamples", "20"], capture_output=True, text=True, timeout=300)


@pytest.mark.integration
@pytest.mark.parametrize("option", ["--scan-csv", "--task-lang-map", "--tokenizer", "--baseline"])
def test_overwrite_never_deletes_an_input_inside_out(tmp_path, option):
    runs, out = tmp_path / "runs", tmp_path / "report"
    shutil.copytree(FIXTURE_RUNS, runs)
    out.mkdir()
    inputs = {
        "--scan-csv": ("scan.csv", "block,lang,degradation\nblock0,en,0.1\nblock1,en,0.2\n"),
        "--task-lang-map": ("map.json", json.dumps({"my_task": "en"})),
        "--baseline": ("results_2025-01-01T00-00-00.json", (next(runs.rglob("results_*.json"))).read_text()),
    }
    if option == "--tokenizer":
        path = out / "tokenizer"
        path.mkdir()
        (path / "tokenizer.json").write_text("{}")
    else:
        name, text = inputs[option]
        path = out / name
        path.write_text(text)
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    proc = analyze(str(runs), "--out", str(out), "--overwrite", option, str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"out={out} holds the input {path}; allowed: a folder outside the inputs" in line
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "runs"]


@pytest.mark.integration
def test_out_inside_an_input_folder_is_refused(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURE_RUNS, runs)
    proc = analyze(str(runs), "--out", str(runs / "report"))
    assert proc.returncode == 2 and f"out={runs / 'report'} is inside the input {runs}" in proc.stderr.strip().splitlines()[-1]
    assert not (runs / "report").exists()
