#!/usr/bin/env bash
# Mutation score of the numerical core with mutmut 3.x (`pip install -e .[mutation]`); not part of CI.
#
#   bash scripts/run_mutation.sh [module ...]      # default: every module below, one at a time
#
# Each module is mutated alone, in a scratch copy of the checkout (the checkout stays clean),
# driven only by the fast tests that cover it, with one worker (--max-children 1).
# Results land in mutation-results/<module>.txt (`mutmut results --all true`) and a summary line
# per module in mutation-results/summary.txt. Surviving mutants: see docs/mutation.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${QD_VENV:-$ROOT/.venv}/bin/python
[ -x "$PY" ] || PY=$(command -v python)
OUT=$ROOT/mutation-results
mkdir -p "$OUT"

# the grid tests of test_quant_core.py that also drive aciq.py and engine.py
GRID_TESTS="
    tests/qd_models/test_quant_core.py::test_aciq_constants_match_paper
    tests/qd_models/test_quant_core.py::test_aciq_constant_is_the_minimum_of_the_expression
    tests/qd_models/test_quant_core.py::test_rtn_equals_awq_reference_and_keeps_zeros
    tests/qd_models/test_quant_core.py::test_levels_and_half_step_error
    tests/qd_models/test_quant_core.py::test_int8_group32_codes_equal_gguf_q8_0
    tests/qd_models/test_quant_core.py::test_int4_grid_equals_gguf_q4_0_where_the_format_matches
    tests/qd_models/test_quant_core.py::test_midrise_grid_is_banners_levels
    tests/qd_models/test_quant_core.py::test_empty_range_rows_are_unchanged
    tests/qd_models/test_quant_core.py::test_nonfinite_weights_are_reported_not_raised
    tests/qd_models/test_quant_core.py::test_mse_search_lands_on_analytic_optimum
    tests/qd_models/test_quant_core.py::test_mse_error_is_the_brute_force_minimum
    tests/qd_models/test_quant_core.py::test_aciq_auto_picks_prior_by_kurtosis
    tests/qd_models/test_quant_core.py::test_mask_excludes_kept_weights_from_the_range
    tests/qd_models/test_quant_core.py::test_top_fraction_mask_counts
    tests/qd_models/test_quant_core.py::test_weight_stats_against_numpy_formula
    tests/qd_models/test_quant_core.py::test_group_size_must_divide_input_dim
    tests/qd_models/test_quant_core.py::test_aciq_clip_per_block_is_c_times_sigma_or_b_never_wider_than_data
    tests/qd_models/test_quant_core.py::test_aciq_beats_rtn_on_heavy_tailed_weights_at_3_bits
"
# module -> the fast tests that drive it (in-process only: a test that runs the lm_eval CLI in a
# subprocess imports the installed, unmutated package and cannot kill a mutant)
declare -A TESTS=(
  [qd_models/quant/core.py]="
    tests/qd_models/test_quant_core.py
    tests/qd_models/test_engine.py::test_default_skips_and_counts
    tests/qd_models/test_engine.py::test_identity_cases_are_bit_identical
    tests/qd_models/test_engine.py::test_conv1d_channels_are_output_columns
    tests/qd_models/test_engine.py::test_keep_layers_pattern_and_filter
    tests/qd_models/test_engine.py::test_unmatched_keep_pattern_is_an_error
    tests/qd_models/test_engine.py::test_keep_top_keeps_largest_and_counts_bits
    tests/qd_models/test_engine.py::test_global_keep_top_keeps_the_global_top_fraction
    tests/qd_models/test_engine.py::test_restore_and_determinism
    tests/qd_models/test_engine.py::test_methods_reduce_error_in_theory_order
    tests/qd_models/test_engine.py::test_validate_for_model_checks_layers_and_groups
    tests/qd_models/test_engine.py::test_block_index_names
    tests/qd_models/test_engine.py::test_bnb_kwargs_and_nf4_runs_on_cpu
    tests/qd_models/test_engine.py::test_save_quantized_loads_back_identical
  "
  [qd_models/quant/aciq.py]="tests/qd_models/test_aciq.py $GRID_TESTS"
  [qd_models/quant/weighted.py]="tests/qd_models/test_laaciq.py"
  [qd_models/engine.py]="tests/qd_models/test_engine.py $GRID_TESTS"
  [qd_models/targets.py]="tests/qd_models/test_engine.py $GRID_TESTS"
  [qd_models/qd_hf.py]="
    tests/qd_models/test_scoring.py::test_hf_with_add_bos_token_false_is_the_matching_baseline
    tests/qd_models/test_scoring.py::test_bf16_scores_are_summed_in_float32_and_keep_the_degradation
    tests/qd_models/test_qd_hf.py::test_method_none_equals_plain_hf_in_process
    tests/qd_models/test_qd_hf.py::test_unknown_method_fails_before_loading
    tests/qd_models/test_fidelity.py
    tests/qd_models/test_methods.py::test_qd_hf_scores_equal_a_direct_pass_over_quantize_of_a_fresh_model
    tests/qd_models/test_calibration.py::test_sweep_style_call_loads_the_texts_and_tokenizes_them_as_evaluation
    tests/qd_models/test_calibration.py::test_calibration_texts_are_read_once_and_a_user_source_is_recorded
    tests/qd_models/test_qd_hf.py::test_pretrained_written_as_a_missing_path_is_refused_in_one_line
    tests/qd_models/test_qd_hf.py::test_qd_hf_applies_the_path_rule_before_loading
    tests/qd_models/test_qd_hf.py::test_existing_paths_and_model_objects_pass_the_path_rule
    tests/qd_models/test_qd_hf.py::test_without_pretrained_the_default_model_is_loaded_and_noted
    tests/qd_models/test_qd_hf.py::test_scoring_record_save_overwrite_and_the_saved_report
    tests/qd_models/test_qd_hf.py::test_model_dependent_errors_come_before_loading_weights
    tests/qd_models/test_qd_hf.py::test_a_model_object_as_pretrained_is_quantized_and_saved_without_a_source
    tests/qd_models/test_qd_hf.py::test_fidelity_needs_a_causal_model_and_rolling_state_is_reset
    tests/qd_models/test_qd_hf.py::test_seq2seq_model_calls_pass_the_encoder_mask_and_labels
    tests/qd_models/test_sweep.py::test_restore_gives_back_the_loaded_weights
    tests/qd_models/test_calibration.py::test_qd_hf_checks_calibration_data_before_loading_weights
  "
  [analysis/stats.py]="
    tests/analysis/test_analysis_stats.py tests/analysis/test_stats_reference.py
    tests/analysis/test_benchmark_analysis.py::test_mcnemar_exact_matches_scipy_and_enumeration
    tests/analysis/test_benchmark_analysis.py::test_mcnemar_large_counts_and_bad_input
    tests/analysis/test_benchmark_analysis.py::test_paired_comparison_matches_scipy_bootstrap_and_counts
  "
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
  # the diff of every mutant not killed, for docs/mutation.md
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
