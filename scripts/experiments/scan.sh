#!/usr/bin/env bash
# Layer sensitivity: protect_one (everything quantized except block i) and quantize_one (only
# block i quantized) at 3-bit per-channel RTN, block x language CSVs + heatmaps via qd-analyze.
# Cost with the default model (18 blocks): 19 configs per mode; set LIMIT=2 (documents per
# language) for a cheaper, noisier first look.
source "$(dirname "$0")/common.sh"
RUNS="${RUNS:-runs/scan}"; DOCS="${DOCS:-report/experiments/scan}"
QUANT="${QUANT:-method=rtn,bits=3}"; MODES="${MODES:-protect_one quantize_one}"
for mode in $MODES; do
    "$PY" -m qd_models.scan --mode "$mode" --modules block --quant_args "$QUANT" --model_args "$MODEL_ARGS" \
        --tasks "$TASKS" --batch_size "$BATCH" --device "$DEVICE" --log_samples \
        --output_path "$RUNS/$mode" ${LIMIT:+--limit "$LIMIT"}
    "$PY" -m analysis "$RUNS/$mode" --out "$DOCS/$mode" --scan-csv "$RUNS/$mode/scan_${mode}_block.csv"
    "$PY" scripts/experiments/best_blocks.py "$RUNS/$mode/scan_${mode}_block.csv" --mode "$mode" --k 3
done
