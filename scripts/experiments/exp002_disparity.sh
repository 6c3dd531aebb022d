#!/usr/bin/env bash
# EXP-002 (seed: BLOOM-1B7). H1: the low-resource / high-resource degradation ratio
# D_LR / D_HR > 1.5 at 4 bits; H3: tokenizer fertility predicts degradation (r > 0.7).
# Ours: the default model, per-channel symmetric RTN and ACIQ at 4 bits (embeddings, lm_head and
# norms kept, unlike the seed's per-tensor everything), D = relative bits/byte increase per
# language with paired document bootstrap CIs; fertility = tokens per byte of the same documents.
# Read H1 in report.md "Disparity" (ratio, CI, unstable flag) and H3 in "Correlations".
# Cost: 3 configs.
source "$(dirname "$0")/common.sh"
RUNS="${RUNS:-runs/exp002}"; DOCS="${DOCS:-report/experiments/exp002}"
sweep "$RUNS" --methods rtn,aciq --bits 4 --granularity channel
"$PY" -m analysis "$RUNS" --out "$DOCS" --tokenizer "$(tokenizer_dir)"
echo "EXP-002 report: $DOCS/report.md"
