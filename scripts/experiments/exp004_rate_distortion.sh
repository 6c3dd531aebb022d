#!/usr/bin/env bash
# EXP-004 rate-distortion: per-language slope of ln D vs bits. Fake-quant RTN per channel at
# 8/6/5/4/3 bits plus bitsandbytes int8/nf4/fp4 (placed by their effective bits per weight).
# The seed compared with a "Shannon slope" of -ln(2)/2 per bit; that derivation is wrong for D
# defined on NLL. The analysis reports the per-language OLS slope with a t-interval, and on the
# weight side the slope of ln(relative weight MSE) against the uniform-noise reference
# -2 ln 2 = -1.386 per bit. Cost: 9 configs (bnb on CPU is slower).
source "$(dirname "$0")/common.sh"
RUNS="${RUNS:-runs/exp004}"; DOCS="${DOCS:-report/experiments/exp004}"
sweep "$RUNS" --methods rtn,int8,nf4,fp4 --bits 8,6,5,4,3 --granularity channel
"$PY" -m analysis "$RUNS" --out "$DOCS" --tokenizer "$(tokenizer_dir)"
echo "EXP-004 report: $DOCS/report.md"
