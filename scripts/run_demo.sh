#!/usr/bin/env bash
# The main job: set up .venv, evaluate the embedded default model (Gemma-3-270M, a dequantized
# Q4_K_M GGUF) unquantized and quantized over qd_multilingual_ppl, then write the disparity
# report. Outputs: runs/ (lm-eval results + samples) and report/ (report.md, tables, figures).
# Usage: bash scripts/run_demo.sh [RUNS_DIR] [REPORT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-runs/demo}"
REPORT="${2:-report/demo}"
bash scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BIN="${QD_VENV:-.venv}/bin"
for args in "method=none" "method=rtn,bits=4" "method=aciq,bits=4" "method=mse,bits=4" \
            "method=rtn,bits=4,granularity=group,group_size=128" "method=nf4"; do
    echo "== qd-hf $args"
    "$BIN/lm_eval" --model qd-hf --model_args "$args" --tasks qd_multilingual_ppl \
        --batch_size 4 --output_path "$RUNS" --log_samples
done
"$BIN/qd-analyze" "$RUNS" --out "$REPORT"
echo "report: $REPORT/report.md"
