"""Benchmark LA-ACIQ's cost on the default (Gemma-3-270M) model, one run per case.

Baseline = one plain forward pass (full model, logits included) over the calibration texts,
with the same length-sorted batches, + the ``method=mse`` search time. LA-ACIQ = the
calibration pass (hooks; stops before the output head, which is not quantized) + the
``method=laaciq`` search (report figures included). The issue's target: LA-ACIQ / baseline
<= 1.2. Calibration runs with the disk cache off; a cached run only loads the statistics
(its load time is printed too). Weights are restored between cases with ``restore_``.

    python scripts/bench_laaciq.py [--model DIR] [--threads N] [--granularity channel|group]
"""

from __future__ import annotations

import argparse
import time

import torch

from qd_models.calibration import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_LENGTH,
    _batches,
    collect_activation_stats,
    load_calibration_texts,
    tokenize_texts,
)
from qd_models.config import parse_qd_args
from qd_models.engine import quantization_targets, quantize_, restore_


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def plain_forward(model, tokenizer, texts) -> float:
    """Seconds for one full forward pass over ``texts`` (calibration's batching)."""
    token_ids = tokenize_texts(tokenizer, texts, DEFAULT_MAX_LENGTH)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    start = time.perf_counter()
    with torch.inference_mode():
        for seqs in token_ids.values():
            for ids, mask in _batches(seqs, DEFAULT_BATCH_SIZE, pad_id):
                model(input_ids=ids, attention_mask=mask, use_cache=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF model folder (default: the cached Gemma-3-270M)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--granularity", default="channel", choices=["channel", "group"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qd_models.default_model import default_model_path

    path = args.model or str(default_model_path())
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = {"granularity": args.granularity}
    mse_config = parse_qd_args({"method": "mse", **base})[0]
    texts = load_calibration_texts(parse_qd_args({"method": "laaciq"})[0])
    names = quantization_targets(model, mse_config)
    print(f"model {path}: {len(names)} target modules, {sum(map(len, texts.values()))} calibration texts, "
          f"torch threads {torch.get_num_threads()}, granularity {args.granularity}")

    forward_s = plain_forward(model, tokenizer, texts)
    originals: dict = {}
    _, mse_s = timed(lambda: quantize_(model, mse_config, keep_originals=originals))
    restore_(model, originals)
    baseline = forward_s + mse_s
    print(f"baseline: plain forward {forward_s:.2f} s + mse search {mse_s:.2f} s = {baseline:.2f} s")

    stats, calib_s = timed(lambda: collect_activation_stats(model, tokenizer, texts, names, use_cache=False))
    print(f"calibration pass: {calib_s:.2f} s ({stats.tokens} tokens; stopped before {stats.stopped_before})")
    for mode in ("mean", "minimax"):
        config = parse_qd_args({"method": "laaciq", "calib_mode": mode, **base})[0]
        originals = {}
        report, search_s = timed(lambda: quantize_(model, config, keep_originals=originals, act_stats=stats))
        restore_(model, originals)
        total = calib_s + search_s
        worst = max(v["weighted_rel_error"] for v in report["calibration"]["per_language"].values())
        print(f"laaciq {mode}: calibration {calib_s:.2f} s + search {search_s:.2f} s = {total:.2f} s; "
              f"ratio to baseline {total / baseline:.2f} (target <= 1.2); worst-language mean weighted rel. error {worst:.4e}")


if __name__ == "__main__":
    main()
