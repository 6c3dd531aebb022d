#!/usr/bin/env bash
# The main job: set up .venv, evaluate the embedded default model (Gemma-3-270M, a dequantized
# Q4_K_M GGUF) unquantized and quantized over qd_multilingual_ppl and qd_udhr8_ppl (UDHR, 5 short
# articles in the same 8 languages) in one process (qd-sweep:
# one model load, original weights restored between configs, resumable), then write the
# disparity report. Outputs: runs/demo/ (lm-eval results + samples per config) and
# report/demo/ (report.md, tables/, figures/). Rerunning skips configs already complete.
# Usage: bash scripts/run_demo.sh [RUNS_DIR] [REPORT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-runs/demo}"
REPORT="${2:-report/demo}"
bash scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BIN="${QD_VENV:-.venv}/bin"
"$BIN/qd-sweep" --grid scripts/demo_grid.yaml --tasks qd_multilingual_ppl,qd_udhr8_ppl \
    --output_path "$RUNS" --log_samples --fidelity --batch_size 4
"$BIN/qd-analyze" "$RUNS" --out "$REPORT"
echo "report: $REPORT/report.md"
