#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite (slow Gemma tests included).
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${QD_VENV:-.venv}/bin/python" -m pytest "$@"
