#!/usr/bin/env bash
# The atlas: set up .venv, evaluate the embedded default model (Gemma-3-270M) unquantized and in
# four deployed 4-bit configs (scripts/atlas_grid.yaml: RTN g128, GPTQ, NF4, GGUF Q4_K_S) on
# qd_udhr_atlas_ppl (120 UDHR languages in 35 scripts, 5 short articles each, chosen by the rule
# of qd_tasks/atlas.py) in one qd-sweep process, then write the report, whose "Atlas" section is
# the language-level regression (analysis/atlas.py). No --fidelity: the atlas is about D.
# Outputs: runs/atlas/ and report/atlas/. Rerunning skips configs already complete.
# Usage: bash scripts/run_atlas.sh [RUNS_DIR] [REPORT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-runs/atlas}"
REPORT="${2:-report/atlas}"
bash scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BIN="${QD_VENV:-.venv}/bin"
"$BIN/qd-sweep" --grid scripts/atlas_grid.yaml --tasks qd_udhr_atlas_ppl \
    --output_path "$RUNS" --log_samples --batch_size 4
"$BIN/qd-analyze" "$RUNS" --out "$REPORT"
echo "report: $REPORT/report.md"
