"""Benchmark: a config's evaluation time with vs without fidelity metrics, measured in one run.

    python scripts/bench_fidelity.py                  # tiny random Llama (built in a temp dir)
    python scripts/bench_fidelity.py --default-model  # the embedded Gemma-3-270M (vocabulary 262,144)

One model is loaded once as ``qd-hf``. The baseline is evaluated without fidelity and while
storing its top-k (``fidelity_out``); then the config (default ``method=rtn,bits=4``) is applied
in place and evaluated without fidelity and compared with the stored baseline. Each timing is the
median of ``--repeats`` evaluations after one untimed warm-up, with and without fidelity
alternating; bits/byte with and without fidelity are checked to be identical. Prints both ratios (target for the config: <= 1.30).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def bits_per_byte(results: dict) -> dict[str, float]:
    return {task: v["bits_per_byte,none"] for task, v in results["results"].items() if "bits_per_byte,none" in v}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--default-model", action="store_true", help="the embedded Gemma-3-270M instead of a tiny random Llama")
    parser.add_argument("--tasks", default="qd_multilingual_ppl")
    parser.add_argument("--limit", type=int, default=4, help="documents per language (default 4)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--topk", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="method=rtn,bits=4", help="qd args of the timed config")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.limit < 1 or args.topk < 1:
        print("bench_fidelity: error: --repeats, --limit and --topk must be integers >= 1", file=sys.stderr)
        return 2
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from qd_models.config import parse_qd_args
    from qd_models.qd_hf import QDHFLM
    from qd_models.tiny_models import save_tiny_model

    config, _ = parse_qd_args(dict(part.split("=", 1) for part in args.config.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="bench_fidelity_"))
    kwargs = {"device": "cuda:0" if torch.cuda.is_available() else "cpu", "batch_size": args.batch_size}
    if not args.default_model:
        kwargs["pretrained"] = str(save_tiny_model("llama", tmp / "tiny"))
    lm = QDHFLM(**kwargs)
    manager = TaskManager(include_defaults=False)
    tasks = [task.strip() for task in args.tasks.split(",")]

    def evaluate(recorder) -> tuple[float, dict]:
        lm.fidelity = recorder
        start = time.perf_counter()
        results = simple_evaluate(model=lm, tasks=tasks, limit=args.limit, task_manager=manager, verbosity="ERROR")
        lm.fidelity = None
        return time.perf_counter() - start, bits_per_byte(results)

    def paired(recorder) -> tuple[float, float]:
        """Median seconds without and with fidelity; the two alternate (off, on, off, on, ...) so
        that a change in the machine's load falls on both; bits/byte must be identical."""
        off, on = [], []
        for _ in range(args.repeats):
            seconds, bpb_off = evaluate(None)
            off.append(seconds)
            seconds, bpb_on = evaluate(recorder())
            on.append(seconds)
            assert bpb_on == bpb_off, (bpb_on, bpb_off)
        return statistics.median(off), statistics.median(on)

    simple_evaluate(model=lm, tasks=tasks, limit=1, task_manager=manager, verbosity="ERROR")  # warm-up
    base_off, base_on = paired(lambda: lm.fidelity_recorder("store", tmp / "base", args.topk, None, lm.quant_config))
    lm.apply_quantization(config)
    quant_off, quant_on = paired(lambda: lm.fidelity_recorder("compare", tmp / "quant", args.topk, tmp / "base", config))
    model = "Gemma-3-270M (default)" if args.default_model else "tiny random Llama (vocabulary 259)"
    print(f"model: {model}; device: {kwargs['device']}; tasks: {args.tasks}, limit {args.limit}, batch {args.batch_size}, "
          f"top-k {args.topk}; median of {args.repeats}")
    print(f"baseline: {base_off:.2f} s without, {base_on:.2f} s storing top-k: ratio {base_on / base_off:.3f}")
    print(f"{args.config}: {quant_off:.2f} s without, {quant_on:.2f} s with fidelity: ratio {quant_on / quant_off:.3f} (target <= 1.30)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
