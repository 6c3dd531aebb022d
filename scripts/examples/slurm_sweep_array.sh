#!/usr/bin/env bash
# One qd-sweep split over a Slurm job array: array task i (from the first index) runs shard i+1 of N into one folder on a
# shared filesystem (the per-config locks are flock(2) locks, which Linux NFS clients take on the
# server). Shard 1 runs the baseline; with --fidelity the others wait for it (--baseline_timeout).
# Submit:   sbatch --array=0-3 scripts/examples/slurm_sweep_array.sh runs/big_sweep
# Analyze:  sbatch --dependency=afterok:<array job id> --wrap "qd-analyze runs/big_sweep --out report/big_sweep"
#SBATCH --job-name=qd-sweep
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=qd-sweep-%A_%a.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/../..}"
RUNS="${1:-runs/slurm_sweep}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BIN="${QD_VENV:-.venv}/bin"
"$BIN/qd-sweep" --grid scripts/demo_grid.yaml --tasks qd_multilingual_ppl,qd_udhr8_ppl \
    --output_path "$RUNS" --log_samples --fidelity --batch_size 4 --baseline_timeout 7200 \
    --shard "$((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1))/${SLURM_ARRAY_TASK_COUNT}"
