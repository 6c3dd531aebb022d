#!/usr/bin/env bash
# Mutation score of the numerical core with mutmut 3.x (`pip install -e .[mutation]`); not part of CI.
#
#   bash scripts/run_mutation.sh [module ...]      # default: every module below, one at a time
#
# Each module is mutated alone, in a scratch copy of the checkout (the checkout stays clean),
# driven only by the fast tests that cover it, with one worker (--max-children 1).
# Results land in mutation-results/<module>.txt (`mutmut results --all true`) and a summary line
# per module in mutation-results/summary.txt. Surviving mutants: see docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${QD_VENV:-$ROOT/.venv}/bin/python
[ -x "$PY" ] || PY=$(command -v python)
OUT=$ROOT/mutation-results
mkdir -p "$OUT"

# module -> the fast tests that drive it (in-process only: a test that runs the lm_eval CLI in a
# subprocess imports the installed, unmutated package and cannot kill a mutant)
declare -A TESTS=(
  [qd_models/quant/core.py]="tests/qd_models/test_quant_math.py tests/qd_models/test_quant_engine.py tests/qd_models/test_quant_properties.py tests/qd_models/test_quant_core_reference.py"
  [qd_models/quant/aciq.py]="tests/qd_models/test_aciq_reference.py tests/qd_models/test_quant_math.py"
  [qd_models/quant/weighted.py]="tests/qd_models/test_laaciq_weighted.py tests/qd_models/test_weighted_reference.py"
  [qd_models/engine.py]="tests/qd_models/test_quant_engine.py tests/qd_models/test_quant_math.py tests/qd_models/test_engine_reference.py"
  [qd_models/qd_hf.py]="tests/qd_models/test_scoring.py::test_hf_with_add_bos_token_false_is_the_matching_baseline tests/qd_models/test_scoring.py::test_bf16_scores_are_summed_in_float32_and_keep_the_degradation tests/qd_models/test_qd_hf_model.py::test_method_none_equals_plain_hf_in_process tests/qd_models/test_qd_hf_model.py::test_unknown_method_fails_before_loading tests/qd_models/test_fidelity.py tests/qd_models/test_methods_reference.py::test_qd_hf_scores_equal_a_direct_pass_over_quantize_of_a_fresh_model tests/qd_models/test_qd_hf_calibration.py tests/qd_models/test_qd_hf_record.py tests/qd_models/test_sweep_runner.py::test_restore_gives_back_the_loaded_weights tests/qd_models/test_laaciq_calibration.py::test_qd_hf_checks_calibration_data_before_loading_weights"
  [analysis/stats.py]="tests/analysis/test_analysis_stats.py tests/analysis/test_stats_reference.py"
)
ORDER=(qd_models/quant/core.py qd_models/quant/aciq.py qd_models/quant/weighted.py qd_models/engine.py qd_models/qd_hf.py analysis/stats.py)
[ $# -gt 0 ] && ORDER=("$@")

export QD_HYPOTHESIS_EXAMPLES=15 OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
unset PYTHONPATH
for module in "${ORDER[@]}"; do
  tests=${TESTS[$module]:?"module=$module is not allowed; allowed: ${!TESTS[*]}"}
  work=$(mktemp -d)
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work"
  "$PY" scripts/mutation_setup.py "$work" "$module"  # mutmut-only rewrites, in the scratch copy only
  {
    echo "[mutmut]"
    echo "source_paths="; for p in qd_models qd_tasks analysis; do echo "    $p"; done
    echo "only_mutate=$module"
    echo "pytest_add_cli_args_test_selection="; for t in $tests; do echo "    $t"; done
    echo "pytest_add_cli_args="; echo "    -x"; echo "    -q"; echo "    -p"; echo "    no:cacheprovider"; echo "    -m"; echo "    not slow"
  } > "$work/setup.cfg"
  start=$(date +%s)
  # qd_models is imported at start-up by quant_disparity.pth: drop it so the mutated copy under
  # mutants/ (first on sys.path once mutmut starts) is the one the tests import.
  (cd "$work" && "$PY" -c "
import sys
for name in [m for m in sys.modules if m.split('.')[0] == 'qd_models']:
    del sys.modules[name]
from mutmut.__main__ import cli
sys.argv = ['mutmut', 'run', '--max-children', '1']
cli()
" > "$OUT/$(basename "$module" .py).log" 2>&1 || true)
  (cd "$work" && "$PY" -m mutmut results --all true > "$OUT/$(basename "$module" .py).txt" 2>&1 || true)
  # the diff of every mutant not killed, for docs/testing.md
  (cd "$work" && grep -E ': (survived|no tests|suspicious)$' "$OUT/$(basename "$module" .py).txt" | sed 's/:[^:]*$//' \
     | while read -r name; do "$PY" -m mutmut show "$name"; echo; done > "$OUT/$(basename "$module" .py).survivors.diff" 2>&1 || true)
  seconds=$(( $(date +%s) - start ))
  "$PY" - "$module" "$OUT/$(basename "$module" .py).txt" "$seconds" >> "$OUT/summary.txt" <<'EOF'
import collections, sys
module, path, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
states = collections.Counter(line.rsplit(":", 1)[1].strip() for line in open(path) if line.startswith("    ") and ":" in line)
killed = states.get("killed", 0) + states.get("timeout", 0)
total = sum(states.values())
score = f"{100 * killed / total:.1f} %" if total else "n/a"
print(f"{module}: {killed}/{total} killed ({score}), {dict(states)}, {seconds} s")
EOF
  tail -1 "$OUT/summary.txt"
  rm -rf "$work"
done
