#!/usr/bin/env bash
# Calibration language as a factor (issue 13): GPTQ W4 g128 calibrated on one language at a time
# (the 8 evaluated languages' UDHR articles outside qd_udhr8_ppl, CALIB_SAMPLES per language),
# on all of them ("all"), evaluated on every language of $TASKS (default qd_multilingual_ppl:
# the seed texts, none of them UDHR).
# qd-analyze writes the calibration x evaluation-language matrix of D (with CIs) and its figure.
# Cost on the default model, 2 CPU cores: see docs/experiments/README.md.
source "$(dirname "$0")/common.sh"
RUNS="${RUNS:-runs/calibration_language}"; DOCS="${DOCS:-report/experiments/calibration_language}"
METHOD="${METHOD:-gptq}"; CALIB_LANGS="${CALIB_LANGS:-en, de, fr, zh, ar, he, sw, yo, all}"; CALIB_SAMPLES="${CALIB_SAMPLES:-4}"
GRID="$(mktemp --suffix .yaml)"; trap 'rm -f "$GRID"' EXIT
cat > "$GRID" <<YAML
grid:
  - {method: $METHOD, bits: 4, group_size: 128, calib_data: udhr, calib_samples: $CALIB_SAMPLES, calib_langs: [$CALIB_LANGS]}
YAML
sweep "$RUNS" --grid "$GRID"
"$PY" -m analysis "$RUNS" --out "$DOCS" --tokenizer "$(tokenizer_dir)"
echo "calibration-language report: $DOCS/report.md"
