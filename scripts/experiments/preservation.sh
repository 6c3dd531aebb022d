#!/usr/bin/env bash
# Preservation study: keep the top k % largest-|w| weights of each quantized layer in original
# precision (k = 0, 1, 5, 10, 20) under 4-bit per-channel RTN, and layer protection: block 0
# kept; block 0 + every MLP kept; the best 3 blocks of a protect_one scan (BEST3, e.g. "0;5;11",
# from scripts/experiments/scan.sh + best_blocks.py) kept. The report's "Method comparison"
# plots worst-language D and D_LR - D_HR against effective bits per weight (kept weights cost
# their value + index, see qd_models/report.py). Cost: 7-8 configs.
source "$(dirname "$0")/common.sh"
RUNS="${RUNS:-runs/preservation}"; DOCS="${DOCS:-report/experiments/preservation}"
BITS="${BITS:-4}"
GRID="$(mktemp --suffix .yaml)"; trap 'rm -f "$GRID"' EXIT
{
    echo "grid:"
    echo "  - {method: rtn, bits: $BITS, keep_top: [0, 1, 5, 10, 20]}"
    echo "configs:"
    echo "  - {method: rtn, bits: $BITS, keep_layers: [0]}"
    echo "  - {method: rtn, bits: $BITS, keep_layers: [0], keep: ['re:.*\\.mlp\\..*']}"
    if [[ -n "${BEST3:-}" ]]; then echo "  - {method: rtn, bits: $BITS, keep_layers: [${BEST3//;/, }]}"; fi
} > "$GRID"
sweep "$RUNS" --grid "$GRID"
"$PY" -m analysis "$RUNS" --out "$DOCS" --tokenizer "$(tokenizer_dir)"
echo "preservation report: $DOCS/report.md"
