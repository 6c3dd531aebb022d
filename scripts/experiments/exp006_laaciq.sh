#!/usr/bin/env bash
# EXP-006 LA-ACIQ: does a language-aware clipping threshold reduce disparity by > 20 % vs global
# ACIQ at the same bits? Two protocols:
#  * ours: one quantized model per calibration mode (mean / minimax over the calibration
#    languages en,de,he,sw), evaluated on every language -> compare D_LR - D_HR and D_LR / D_HR
#    of laaciq vs aciq in report.md "Disparity" / "Method comparison".
#  * the seed's: one model per target language (calib_mode=target, calib_langs=L), each scored on
#    its own language L only (a per-language oracle: no single deployable model). Read the
#    diagonal from the per-run degradation tables: run laaciq-...-calib_langs=L, language L
#    (scripts/exp006_seed_protocol.py prints that diagonal as one table).
# Cost: 2 x (aciq, laaciq mean, laaciq minimax) + 4 target configs = 11 configs, ~3-5 min on
# 2 idle CPU cores plus one calibration pass per laaciq config (cached across reruns).
source "$(dirname "$0")/common.sh"
RUNS="${RUNS:-runs/exp006}"; DOCS="${DOCS:-report/experiments/exp006}"
GRID="$(mktemp --suffix .yaml)"; trap 'rm -f "$GRID"' EXIT
cat > "$GRID" <<'YAML'
grid:
  - {method: aciq, bits: [4, 3]}
  - {method: laaciq, bits: [4, 3], calib_mode: [mean, minimax]}
  - {method: laaciq, bits: 4, calib_mode: target, calib_langs: [en, de, he, sw]}
YAML
sweep "$RUNS" --grid "$GRID"
"$PY" -m analysis "$RUNS" --out "$DOCS" --tokenizer "$(tokenizer_dir)"
echo "EXP-006 report: $DOCS/report.md"
