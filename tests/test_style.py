"""The tree is ruff-clean under the rules in pyproject.toml."""

import subprocess
import sys
from pathlib import Path


def test_ruff_clean():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(root)], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stdout[-4000:]
