# Shared settings of the experiment scripts (sourced, not run).
# PY: the Python of the project venv; MODEL_ARGS: hf args shared by every config (default: the
# embedded Gemma-3-270M); RUNS/DOCS: where lm-eval output and the analysis report go.
# bnb configs load the model again each.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PY:-${QD_VENV:-.venv}/bin/python}"
MODEL_ARGS="${MODEL_ARGS:-}"
TASKS="${TASKS:-qd_multilingual_ppl}"
BATCH="${BATCH:-4}"
DEVICE="${DEVICE:-cpu}"

sweep() {  # sweep RUNS_DIR [qd_models.sweep args...]
    local runs="$1"; shift
    "$PY" -m qd_models.sweep --model_args "$MODEL_ARGS" --tasks "$TASKS" --batch_size "$BATCH" \
        --device "$DEVICE" --log_samples --output_path "$runs" "$@"
}

tokenizer_dir() {  # the local tokenizer folder (pretrained=..., else the default model's cache)
    "$PY" - "$MODEL_ARGS" <<'PYEOF'
import sys
from lm_eval.utils import simple_parse_args_string
from qd_models.default_model import default_model_path
print(simple_parse_args_string(sys.argv[1]).get("pretrained") or default_model_path())
PYEOF
}
