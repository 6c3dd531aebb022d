#!/usr/bin/env bash
# Cross-machine proxy for the main job: rerun its configs (scripts/blas_path_grid.yaml: the same
# configs with their own baseline, GPTQ and AWQ in draws 0..1) under MKL_CBWR=COMPATIBLE, i.e. on MKL's
# SSE2-compatible float32 kernels instead of this CPU's own (other reduction orders, as on another
# machine), then compare with the main job draw by draw (kernel-path SD vs across-draw SD), draw mean
# against the main job's combined CI, and each method difference the main job states.
# Needs the main job's output first (bash scripts/run_demo.sh).
# Usage: bash scripts/run_blas_path_check.sh [MAIN_RUNS] [MAIN_REPORT] [RUNS_DIR] [REPORT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN_RUNS="${1:-runs/demo}"
MAIN_REPORT="${2:-report/demo}"
RUNS="${3:-runs/demo-blas}"
REPORT="${4:-report/demo-blas}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BIN="${QD_VENV:-.venv}/bin"
MKL_CBWR=COMPATIBLE "$BIN/qd-sweep" --grid scripts/blas_path_grid.yaml --tasks qd_multilingual_ppl,qd_udhr8_ppl \
    --output_path "$RUNS" --log_samples --batch_size 4
"$BIN/qd-analyze" "$RUNS" --out "$REPORT"
"$BIN/python" scripts/blas_path_check.py "$MAIN_RUNS" "$MAIN_REPORT" "$RUNS" "$REPORT"
