"""``save_to`` through the real ``lm_eval`` command (issue 19): the folder is replaced by
``qd_tasks.folder_swap.replace_folder`` — a link stays a link, a failed swap leaves the folder as it
was, and a folder holding the source model is refused before loading."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMON = ["--tasks", "qd_multilingual_ppl_en", "--limit", "1", "--device", "cpu"]

# lm_eval with os.rename failing once, for the move of the staged folder onto the save target (the
# second rename of the swap: the old folder is already aside)
FAILING_SECOND_RENAME = """
import os, runpy, sys
target, real_rename, failed = sys.argv.pop(1), os.rename, []
def rename(src, dst):
    if not failed and os.path.basename(os.fspath(src)).startswith(".") and os.fspath(dst) == target:
        failed.append(src)
        raise OSError("injected: the second rename fails")
    real_rename(src, dst)
os.rename = rename
sys.argv[0] = "lm_eval"
runpy.run_module("lm_eval", run_name="__main__", alter_sys=True)
"""


def lm_eval(*args: str, prefix: tuple[str, ...] = ("-m", "lm_eval")) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *prefix, *args, *COMMON], capture_output=True, text=True, timeout=600)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.integration
def test_save_to_parent_of_the_source_is_refused_before_loading(tiny_model_dir, tmp_path):
    source = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_model_dir("llama"), source)  # the source folder lies inside save_to's folder
    before = files(source)
    proc = lm_eval("--model", "qd-hf", "--model_args", f"pretrained={source},method=rtn,save_to={tmp_path / 'models'},save_overwrite=true",
                   "--output_path", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].endswith(
        f"save_to={tmp_path / 'models'} holds the input {source}; allowed: a folder outside the inputs")
    assert "Loading" not in proc.stderr and not (tmp_path / "out").exists()
    assert files(source) == before and sorted(p.name for p in tmp_path.iterdir()) == ["models"]


@pytest.mark.integration
def test_save_to_through_a_link_and_a_failed_swap(tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("llama"))
    real = tmp_path / "store" / "saved"
    real.mkdir(parents=True)
    (real / "old.txt").write_text("an earlier save")
    links = tmp_path / "links"
    links.mkdir()
    (links / "saved").symlink_to(real)
    args = f"pretrained={model},method=rtn,bits=4,save_to={links / 'saved'},save_overwrite=true"
    # the second rename fails: the old folder is put back, nothing hidden is left
    failed = lm_eval("--model", "qd-hf", "--model_args", args, "--output_path", str(tmp_path / "out1"),
                     prefix=("-c", FAILING_SECOND_RENAME, str(real)))
    assert failed.returncode != 0 and "injected: the second rename fails" in failed.stderr
    assert files(real) == {"old.txt": b"an earlier save"}
    assert sorted(p.name for p in real.parent.iterdir()) == ["saved"] and sorted(p.name for p in links.iterdir()) == ["saved"]
    # through the link: the link stays a link to the same folder, which now holds the quantized model only
    saved = lm_eval("--model", "qd-hf", "--model_args", args, "--output_path", str(tmp_path / "out2"))
    assert saved.returncode == 0, saved.stderr[-3000:]
    assert (links / "saved").is_symlink() and os.readlink(links / "saved") == str(real)
    assert {"config.json", "model.safetensors", "quant_report.json"} <= set(files(real)) and "old.txt" not in files(real)
    assert sorted(p.name for p in real.parent.iterdir()) == ["saved"] and sorted(p.name for p in links.iterdir()) == ["saved"]
