#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in $QD_VENV (default: .venv) and
# install the project editable with the demo model and test extras.
# torch is pinned first so that the dependency resolver never replaces an installed CPU
# build with the registry's multi-GB CUDA wheels (torch>=2.3 is then already satisfied).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${QD_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${QD_TORCH_SPEC:-torch==2.13.0}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
fi
"$VENV/bin/python" -m pip install -q -e ".[demo,test]"
echo "environment ready: $VENV"
