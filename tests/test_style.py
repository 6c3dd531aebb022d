"""The tree is ruff-clean under the rules in pyproject.toml, and its packages import only downward."""

import ast
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


def test_packages_never_import_upward():
    """qd_tasks imports neither qd_models nor analysis; qd_models never imports analysis (docs/architecture.md)."""
    root = Path(__file__).resolve().parents[1]
    upper = {"qd_tasks": ("qd_models", "analysis"), "qd_models": ("analysis",)}
    found = []
    for package, forbidden in upper.items():
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:
                    continue
                found += [f"{path.relative_to(root)}:{node.lineno} {name}" for name in names if name.split(".")[0] in forbidden]
    assert found == []
