"""The tree is ruff-clean under the rules in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.integration
def test_ruff_clean():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(root)], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stdout[-4000:]


@pytest.mark.integration
def test_importing_the_plots_keeps_the_users_matplotlib_backend():
    code = "import analysis.plots, qd_models.diagnose, matplotlib; print(matplotlib.get_backend())"
    env = {"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "svg", proc.stderr[-2000:]
