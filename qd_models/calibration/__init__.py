"""Calibration: per-language activation statistics (``method=laaciq``, ``keep_by=activation``,
GGUF importance matrices) and per-block input Gram matrices (GPTQ, AWQ).

Modules: :mod:`.sources` (which texts, leakage check), :mod:`.activations` (tokenizing, hooks,
the passes, reports), :mod:`.cache` (the disk cache). Their public names are re-exported here.

:func:`load_calibration_texts` reads and checks the calibration JSONL (cheap, no model; call it
before loading weights). :func:`collect_activation_stats` runs each language's texts through
the model once (length-sorted batches, right padding, progress bar) with forward pre-hooks on
the quantization targets and accumulates, over the text tokens of each language, s_l[j] =
E[x_j^2] of every target's input channel j (hooks are removed in ``finally``). Each sequence is
scored as in evaluation: the prefix token (BOS, else EOS) then the text's own tokens
(``add_special_tokens=False``); the prefix position is run but not counted: its activations are
the same in every sequence of every language (causal attention sees only itself there), so it
would only dilute the language differences. When the
output head is not a target, a pre-hook on it stops the forward pass before the logits
(the head is the most expensive matmul of small multilingual models; nothing after it is
needed).

Statistics are cached under ``cache_dir()/calibration/<key>.pt``; ``key`` hashes the model
(class, config, and every parameter's name, shape, dtype, sum and sum of squares), the token
ids of every calibration batch (so the tokenizer, texts, ``calib_samples`` and
``max_length`` are covered), the target module names and :data:`STATS_VERSION`.
"""

from qd_models.calibration.activations import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_LENGTH,
    ActivationStats,
    CalibrationBatches,
    calibration_report,
    collect_activation_stats,
    collect_input_grams,
    default_prefix_id,
    layer_calibration_report,
    tokenize_texts,
)
from qd_models.calibration.block_inputs import MEMORY_ENV, BlockInputs, calibration_memory_budget
from qd_models.calibration.cache import STATS_VERSION, calibration_key, model_key, stats_cache_dir
from qd_models.calibration.sources import (
    UDHR_SOURCE,
    calibration_records,
    evaluation_texts,
    load_calibration_texts,
    udhr_calibration_records,
    udhr_evaluation_texts,
)

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_MAX_LENGTH", "STATS_VERSION", "MEMORY_ENV", "UDHR_SOURCE", "ActivationStats", "BlockInputs", "CalibrationBatches",
    "calibration_key", "calibration_memory_budget", "calibration_records", "calibration_report", "collect_activation_stats", "collect_input_grams",
    "default_prefix_id", "evaluation_texts", "layer_calibration_report", "load_calibration_texts", "model_key",
    "stats_cache_dir", "tokenize_texts", "udhr_calibration_records", "udhr_evaluation_texts",
]
