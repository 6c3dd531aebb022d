"""Registration without flags: the .pth autoload, `lm-eval ls tasks`, light start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qd_models import _autoload


def _python(code: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**os.environ, **env},
    )


@pytest.mark.integration
def test_startup_imports_no_torch_and_installs_hook():
    proc = _python(
        "import sys; import qd_models._autoload as a;"
        "print('torch' in sys.modules, 'lm_eval' in sys.modules,"
        " any(isinstance(f, a._PostImportFinder) for f in sys.meta_path))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True"]


def test_pth_file_is_installed_next_to_the_package():
    import site

    paths = [Path(p) for p in site.getsitepackages()]
    pth = [p / "quant_disparity.pth" for p in paths if (p / "quant_disparity.pth").exists()]
    assert pth, f"quant_disparity.pth not found in {paths}; reinstall with pip install -e ."
    assert pth[0].read_text().strip() == "import qd_models._autoload"


@pytest.mark.integration
def test_model_registry_resolves_qd_hf_lazily():
    proc = _python(
        "import sys; from lm_eval.api.registry import get_model, model_registry;"
        "print('hf' in model_registry, 'torch' in sys.modules);"
        "cls = get_model('qd-hf'); print(cls.__name__, cls.__mro__[1].__name__)"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0] == "False False"  # nothing registered or imported before first use
    assert lines[1] == "QDHFLM HFLM"


@pytest.mark.integration
def test_autoload_can_be_disabled():
    proc = _python(
        "import lm_eval.models; from lm_eval.api.registry import model_registry;"
        "print('hf' in model_registry, 'qd-hf' in model_registry)",
        QD_DISABLE_AUTOLOAD="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True False"


def test_task_manager_sees_qd_tasks_and_keeps_user_include_path(tmp_path):
    from lm_eval.tasks import TaskManager

    (tmp_path / "mytask.yaml").write_text(
        "task: my_local_task\ndataset_path: json\noutput_type: loglikelihood_rolling\n"
        "test_split: test\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
    )
    manager = TaskManager(include_path=str(tmp_path))
    assert "qd_multilingual_ppl" in manager.all_groups
    assert "qd_multilingual_ppl_sw" in manager.all_subtasks
    assert "my_local_task" in manager.all_subtasks
    assert "arc_easy" in manager.all_subtasks  # lm-eval's own tasks are still there


def test_with_qd_tasks_is_idempotent():
    once = _autoload._with_qd_tasks(None)
    assert _autoload._with_qd_tasks(once) == once
    assert _autoload._with_qd_tasks(("a", "b"))[-2:] == ["a", "b"]


@pytest.mark.integration
def test_ls_tasks_lists_qd_groups():
    exe = Path(sys.executable).parent / "lm-eval"
    proc = subprocess.run([str(exe), "ls", "tasks"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("qd_multilingual_ppl", "qd_multilingual_ppl_yo", "qd_flores_ppl"):
        assert name in proc.stdout
