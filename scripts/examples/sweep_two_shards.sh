#!/usr/bin/env bash
# One qd-sweep split over two local processes writing one folder (e.g. two GPUs of one node:
# CUDA_VISIBLE_DEVICES per shard when there are two GPUs), then qd-analyze on the union.
# Shard 1 runs the baseline first; with --fidelity, shard 2 loads its model and waits for it.
# Usage: bash scripts/examples/sweep_two_shards.sh [RUNS_DIR] [REPORT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-runs/two_shards}"
REPORT="${2:-report/two_shards}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BIN="${QD_VENV:-.venv}/bin"
mkdir -p "$RUNS"
COMMON=(--grid scripts/demo_grid.yaml --tasks qd_multilingual_ppl --output_path "$RUNS" --log_samples --fidelity --batch_size 4)
pids=()
for k in 1 2; do
    if command -v nvidia-smi >/dev/null && [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then export CUDA_VISIBLE_DEVICES=$((k - 1)); fi
    "$BIN/qd-sweep" "${COMMON[@]}" --shard "$k/2" > "$RUNS/../$(basename "$RUNS").shard$k.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
[ "$status" -eq 0 ] || { echo "a shard failed: see $RUNS/../$(basename "$RUNS").shard*.log" >&2; exit "$status"; }
"$BIN/qd-analyze" "$RUNS" --out "$REPORT"
echo "report: $REPORT/report.md"
