"""Benchmark LA-ACIQ's cost on the default (Gemma-3-270M) model, one run per case.

Baseline = one plain forward pass (full model, logits included) over the calibration texts,
with the same length-sorted batches, + the ``method=mse`` search time. LA-ACIQ = the
calibration pass (hooks; stops before the output head, which is not quantized) + the
``method=laaciq`` search (report figures included). The issue's target: LA-ACIQ / baseline
<= 1.2. Calibration runs with the disk cache off; a cached run only loads the statistics
(its load time is printed too). Weights are restored between cases with ``restore_``. Every
time is the minimum over ``--repeats`` runs, as wall time and as this process's CPU time
(user + system, all threads; less sensitive to other processes on shared cores).

    python scripts/bench_laaciq.py [--model DIR] [--threads N] [--granularity channel|group] [--repeats N]
"""

from __future__ import annotations

import argparse
import time

import torch

from qd_models.calibration import DEFAULT_BATCH_SIZE, DEFAULT_MAX_LENGTH, collect_activation_stats, load_calibration_texts, tokenize_texts
from qd_models.calibration.activations import _batches
from qd_models.config import parse_qd_args
from qd_models.engine import quantize_, restore_
from qd_models.targets import quantization_targets


def timed(fn, repeats: int):
    """(last result, (minimum wall seconds, minimum CPU seconds) over ``repeats`` calls)."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return result, (wall, cpu)


def seconds(pair) -> str:
    return f"{pair[0]:.2f} s wall / {pair[1]:.2f} s CPU"


def plain_forward(model, tokenizer, texts) -> None:
    """One full forward pass over ``texts`` (calibration's tokenization and batching)."""
    token_ids = tokenize_texts(tokenizer, texts, DEFAULT_MAX_LENGTH)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for seqs in token_ids.values():
            for ids, mask, _ in _batches(seqs, DEFAULT_BATCH_SIZE, pad_id):
                model(input_ids=ids, attention_mask=mask, use_cache=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF model folder (default: the cached Gemma-3-270M)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--granularity", default="channel", choices=["channel", "group"])
    parser.add_argument("--repeats", type=int, default=2)
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

    _, forward_s = timed(lambda: plain_forward(model, tokenizer, texts), args.repeats)

    def quantize_restore(config, stats=None):
        originals: dict = {}
        report = quantize_(model, config, originals_for_restore=originals, act_stats=stats)
        restore_(model, originals)
        return report

    _, mse_s = timed(lambda: quantize_restore(mse_config), args.repeats)
    baseline = (forward_s[0] + mse_s[0], forward_s[1] + mse_s[1])
    print(f"baseline: plain forward {seconds(forward_s)} + mse search {seconds(mse_s)} = {seconds(baseline)}")

    stats, calib_s = timed(lambda: collect_activation_stats(model, tokenizer, texts, names, use_cache=False, progress=False), args.repeats)
    print(f"calibration pass: {seconds(calib_s)} ({stats.tokens} tokens; stopped before {stats.stopped_before})")
    for mode in ("mean", "minimax"):
        config = parse_qd_args({"method": "laaciq", "calib_mode": mode, **base})[0]
        report, search_s = timed(lambda config=config: quantize_restore(config, stats), args.repeats)
        total = (calib_s[0] + search_s[0], calib_s[1] + search_s[1])
        worst = max(v["weighted_rel_error"] for v in report["calibration"]["per_language"].values())
        print(f"laaciq {mode}: calibration + search {seconds(search_s)} = {seconds(total)}; ratio to baseline "
              f"{total[0] / baseline[0]:.2f} wall, {total[1] / baseline[1]:.2f} CPU (target <= 1.2); "
              f"worst-language weighted rel. error (mean over layers) {worst:.4e}")


if __name__ == "__main__":
    main()
