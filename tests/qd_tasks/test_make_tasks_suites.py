"""``python -m qd_tasks.make_tasks`` (issue 19): a failed rerun never touches the good suite, every
record and the name are checked first, and names whose tasks or group another suite defines are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qd_tasks.make_tasks import MAX_NAME_LENGTH


def make_tasks(corpus: Path, name: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qd_tasks.make_tasks", str(corpus), "--name", name, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    return line


def corpus(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every entry under ``folder`` (hidden ones too) -> its bytes (folders: b"")."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else b"") for p in sorted(folder.rglob("*"))}


@pytest.mark.integration
def test_a_failed_rerun_leaves_the_good_suite_as_it_was(tmp_path):
    out = tmp_path / "tasks"
    good = corpus(tmp_path / "good.jsonl", ['{"lang": "en", "text": "hello"}', '{"lang": "de", "text": "hallo"}'])
    assert make_tasks(good, "t", out).returncode == 0
    before = snapshot(out)
    assert set(before) == {"t", "t/t.jsonl", "t/_t.yaml", "t/_t_template_yaml", "t/t_en.yaml", "t/t_de.yaml"}
    # a lone surrogate as a JSON escape: valid JSON, but no UTF-8 form
    bad = corpus(tmp_path / "bad.jsonl", ['{"lang": "en", "text": "fine"}', '{"lang": "fr", "text": "x \\ud800 y"}'])
    assert one_line_error(make_tasks(bad, "t", out)) == (
        f"qd-make-tasks: error: {bad}:2: text is not valid UTF-8 (lone surrogate); "
        "allowed: text without \\ud800-\\udfff escapes (--debug shows the traceback)")
    assert snapshot(out) == before
    too_long = "a" * 245
    assert f"name must be at most {MAX_NAME_LENGTH} characters" in one_line_error(make_tasks(good, too_long, out))
    assert snapshot(out) == before
    longest = "a" * MAX_NAME_LENGTH  # the bound itself works, every file name within the limit
    assert make_tasks(good, longest, out).returncode == 0 and (out / longest / f"_{longest}_template_yaml").is_file()
    # the good corpus again, then another one: each rerun replaces the whole suite (no stale subtask)
    assert make_tasks(good, "t", out).returncode == 0
    other = corpus(tmp_path / "other.jsonl", ['{"lang": "sw", "text": "habari"}'])
    assert make_tasks(other, "t", out).returncode == 0
    assert sorted(p.name for p in (out / "t").iterdir()) == ["_t.yaml", "_t_template_yaml", "t.jsonl", "t_sw.yaml"]
    assert [json.loads(line)["text"] for line in (out / "t" / "t.jsonl").read_text().splitlines()] == ["habari"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.integration
def test_names_whose_tasks_or_group_collide_are_refused(tmp_path):
    out = tmp_path / "tasks"
    en_de = corpus(tmp_path / "a.jsonl", ['{"lang": "en", "text": "hello"}', '{"lang": "de", "text": "hallo"}'])
    xx = corpus(tmp_path / "b.jsonl", ['{"lang": "xx", "text": "other"}'])
    assert make_tasks(en_de, "t", out).returncode == 0
    before = snapshot(out)
    assert one_line_error(make_tasks(xx, "t_en", out)).startswith(
        "qd-make-tasks: error: --out already holds t/t_en.yaml, which defines the task t_en "
        "(--name t_en would define the group t_en too)")
    assert snapshot(out) == before
    # the other way round: a group t_en first, then a suite t whose task t_en it would shadow
    out2 = tmp_path / "tasks2"
    assert make_tasks(xx, "t_en", out2).returncode == 0
    assert "--out already holds t_en/_t_en.yaml, which defines the group t_en (--name t would define the task t_en too)" in \
        one_line_error(make_tasks(en_de, "t", out2))
    assert sorted(p.name for p in out2.iterdir()) == ["t_en"]
    # a YAML of the user's own in --out, at any depth, counts too; a rerun of the same name does not collide with itself
    (out / "mine").mkdir()
    (out / "mine" / "u.yaml").write_text("task: u_de\ndataset_path: x\n")
    assert "--out already holds mine/u.yaml, which defines the task u_de" in one_line_error(make_tasks(en_de, "u", out))
    assert make_tasks(en_de, "t", out).returncode == 0
    # a folder <name>/ holding other files is not replaced
    (out / "v").mkdir()
    (out / "v" / "notes.txt").write_text("mine")
    assert "--out already holds v/notes.txt, not written by this command for --name v" in one_line_error(make_tasks(en_de, "v", out))
    assert (out / "v" / "notes.txt").read_text() == "mine"
    assert "would shadow the bundled suite qd_flores_ppl" in one_line_error(make_tasks(en_de, "qd_flores_ppl_x", out))
