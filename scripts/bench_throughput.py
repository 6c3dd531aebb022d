"""Benchmark: the main job's scoring throughput against this machine's float32 matmul rate, where
the rest of a config's time goes, and the effect of batching rolling documents longest first.

    python scripts/bench_throughput.py                      # default model, qd_multilingual_ppl, batch 4
    python scripts/bench_throughput.py --calib_samples 0    # skip the GPTQ calibration timing

One process, the embedded Gemma-3-270M loaded once as ``qd-hf`` (float32), torch's default thread
count (printed). Measured, in this order:

* machine: dense float32 ``torch.mm`` of a transformer-layer shape (tokens x 640 @ 640 x 2048) and of
  a slice of the vocabulary head (tokens x 640 @ 640 x 32768), GFLOP/s = 2·m·k·n / s;
* model FLOPs: 2 x parameters per token (all weights incl. the tied 262,144 x 640 embedding, used
  as the output head; attention scores, norms and the softmax are not counted: < 1 % at these lengths);
* plain forward: ``model(ids)`` on batch x ``--forward_tokens`` tokens of the suite's text;
* evaluation: ``simple_evaluate`` of ``--tasks`` in-process, repeated ``--repeats`` times, each repeat
  running lm-eval's request order ("before": ``QDHFLM.sort_rolling_by_length = False``) and
  longest first ("after") in alternating order, then longest first storing a fidelity baseline, so
  that a change in the machine's load falls on all three. Inside each: time in ``_model_call`` (forward), in HFLM's
  full-vocabulary log-softmax, the rest of ``loglikelihood_rolling`` (windows, argmax, gather) and
  the rest of ``simple_evaluate`` (lm-eval: task building, requests, metrics). Medians are printed;
  per-document log-likelihoods of before and after are compared (largest relative difference);
* a config's fixed costs: imports, model load, task building (``TaskManager`` + ``load``), and
  ``apply_quantization`` of GPTQ W4 g128 with ``calib_data=udhr,calib_samples=--calib_samples``
  (the main job's calibrated config uses 4).

Absolute numbers depend on the machine's load (printed: the 1-minute load average before and after).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def matmul_gflops(m: int, k: int, n: int, repeats: int) -> float:
    """Median GFLOP/s of a float32 (m, k) @ (k, n) after one warm-up."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * m * k * n / median(seconds) / 1e9


class Timers:
    """Wraps ``lm``'s ``_model_call``/``loglikelihood_rolling`` and HFLM's log-softmax with timers."""

    def __init__(self, lm) -> None:
        import lm_eval.models.huggingface as hf_module
        import torch.nn.functional

        self.reset()
        model_call, rolling = lm._model_call, lm.loglikelihood_rolling

        def timed_model_call(inps, **kwargs):
            start = time.perf_counter()
            out = model_call(inps, **kwargs)
            self.forward += time.perf_counter() - start
            self.call_tokens += inps.numel()
            return out

        def timed_rolling(requests, disable_tqdm: bool = False):
            start = time.perf_counter()
            out = rolling(requests, disable_tqdm=True)
            self.rolling += time.perf_counter() - start
            self.docs = [req.args[0] for req in requests]
            self.scores = list(out)
            return out

        class TimedFunctional:
            def __getattr__(_, name):
                return getattr(torch.nn.functional, name)

            def log_softmax(_, *args, **kwargs):
                start = time.perf_counter()
                out = torch.nn.functional.log_softmax(*args, **kwargs)
                self.log_softmax += time.perf_counter() - start
                return out

        lm._model_call, lm.loglikelihood_rolling = timed_model_call, timed_rolling
        hf_module.F = TimedFunctional()

    def reset(self) -> None:
        self.forward = self.rolling = self.log_softmax = 0.0
        self.call_tokens = 0
        self.docs: list[str] = []
        self.scores: list[float] = []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="qd_multilingual_ppl")
    parser.add_argument("--batch_size", type=int, default=4, help="as in the main job (default 4)")
    parser.add_argument("--limit", type=int, default=None, help="documents per language (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each timing (median; default 3)")
    parser.add_argument("--forward_tokens", type=int, default=512, help="tokens per row of the plain forward (default 512)")
    parser.add_argument("--calib_samples", type=int, default=4, help="GPTQ calibration articles per language; 0: skip (default 4)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or args.forward_tokens < 2 or args.calib_samples < 0 or (args.limit is not None and args.limit < 1):
        print("bench_throughput: error: --repeats, --batch_size, --limit >= 1, --forward_tokens >= 2, --calib_samples >= 0 are allowed", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    load_before = os.getloadavg()[0]
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from qd_models.config import parse_qd_args
    from qd_models.qd_hf import QDHFLM
    imports = time.perf_counter() - START
    threads = torch.get_num_threads()
    tasks = [task.strip() for task in args.tasks.split(",")]
    tokens = args.batch_size * args.forward_tokens

    layer = [matmul_gflops(tokens, 640, 2048, args.repeats)]
    head = [matmul_gflops(tokens, 640, 32768, args.repeats)]

    start = time.perf_counter()
    lm = QDHFLM(device="cpu", batch_size=args.batch_size)
    load = time.perf_counter() - start
    start = time.perf_counter()
    manager = TaskManager(include_defaults=False)
    manager.load(tasks)
    task_building = time.perf_counter() - start
    flops_per_token = 2 * lm.model.num_parameters()

    timers = Timers(lm)
    tmp = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    runs: dict[str, list[dict]] = {"before": [], "after": [], "fidelity": []}
    scores: dict[str, list[float]] = {}

    def evaluate(name: str) -> None:
        lm.sort_rolling_by_length = name != "before"
        lm.fidelity = lm.fidelity_recorder("store", tmp / f"fid{len(runs[name])}", 32, None, lm.quant_config) if name == "fidelity" else None
        timers.reset()
        start = time.perf_counter()
        simple_evaluate(model=lm, tasks=tasks, limit=args.limit, task_manager=manager, verbosity="ERROR")
        total = time.perf_counter() - start
        lm.fidelity = None
        runs[name].append({"total": total, "rolling": timers.rolling, "forward": timers.forward, "log_softmax": timers.log_softmax,
                           "call_tokens": timers.call_tokens})
        scores[name] = timers.scores

    simple_evaluate(model=lm, tasks=tasks, limit=1, task_manager=manager, verbosity="ERROR")  # warm-up
    doc_tokens = None
    forward = []
    text_ids = None
    for repeat in range(args.repeats):
        for name in (("before", "after") if repeat % 2 == 0 else ("after", "before")) + ("fidelity",):
            evaluate(name)
        if doc_tokens is None:
            lm._rolling = True
            doc_tokens = sum(len(lm.tok_encode(text)) for text in timers.docs)
            lm._rolling = False
            ids = lm.tok_encode("\n".join(timers.docs))
            text_ids = torch.tensor((ids * (tokens // len(ids) + 1))[:tokens]).reshape(args.batch_size, -1)
        start = time.perf_counter()
        with torch.no_grad():
            lm.model(text_ids)
        forward.append(time.perf_counter() - start)
        layer.append(matmul_gflops(tokens, 640, 2048, 1))
        head.append(matmul_gflops(tokens, 640, 32768, 1))

    load_after = os.getloadavg()[0]

    peak = max(median(layer), median(head))
    gflop = flops_per_token / 1e9

    def rate(tokens_: float, seconds: float) -> str:
        return f"{tokens_ / seconds:7.1f} tok/s = {tokens_ * gflop / seconds:6.1f} GFLOP/s ({100 * tokens_ * gflop / seconds / peak:4.1f} % of matmul)"

    plain = median(forward)
    print(f"bench_throughput: {args.tasks}, batch size {args.batch_size}, {threads} torch threads, {os.cpu_count()} CPUs, "
          f"load average {load_before:.1f} before / {load_after:.1f} after, medians of {args.repeats}")
    print(f"machine   float32 matmul {tokens}x640 @ 640x2048: {median(layer):6.1f} GFLOP/s; {tokens}x640 @ 640x32768: {median(head):6.1f} GFLOP/s")
    print(f"model     {lm.model.num_parameters() / 1e6:.1f} M parameters (incl. the tied {lm.model.get_input_embeddings().weight.numel() / 1e6:.1f} M "
          f"embedding = vocabulary head): {gflop:.3f} GFLOP per token (2 x parameters)")
    print(f"plain forward {args.batch_size} x {text_ids.shape[1]} tokens: {rate(tokens, plain)}")
    docs = len(scores["after"])
    print(f"evaluation: {docs} documents, {doc_tokens} scored tokens")
    print(f"{'':34}{'before (lm-eval order)':>24}{'after (longest first)':>24}{'after + fidelity':>20}{'after/before':>14}")
    rows = [("model-call tokens (incl. padding)", "call_tokens"), ("evaluation s", "total"), ("  scoring (loglikelihood_rolling) s", "rolling"),
            ("    forward (_model_call) s", "forward"), ("    log-softmax (full vocabulary) s", "log_softmax")]
    for label, key in rows:
        values = [median([run[key] for run in runs[name]]) for name in runs]
        fmt = "{:>24.0f}" if key == "call_tokens" else "{:>24.2f}"
        print(f"{label:34}" + "".join(fmt.format(v) for v in values[:2]) + f"{values[2]:>20.2f}{values[1] / values[0]:>14.3f}")
    for label, fn in [("    windows, argmax, gather s", lambda r: r["rolling"] - r["forward"] - r["log_softmax"]),
                      ("  lm-eval bookkeeping s", lambda r: r["total"] - r["rolling"])]:
        values = [median([fn(run) for run in runs[name]]) for name in runs]
        print(f"{label:34}{values[0]:>24.2f}{values[1]:>24.2f}{values[2]:>20.2f}{values[1] / values[0]:>14.3f}")
    for name in runs:
        total, fwd = median([r["total"] for r in runs[name]]), median([r["forward"] for r in runs[name]])
        print(f"{name:>8}: evaluation {rate(doc_tokens, total)}; forward only {rate(doc_tokens, fwd)}")
    speedups = [b["total"] / a["total"] for b, a in zip(runs["before"], runs["after"])]
    print(f"speedup of evaluation (before/after, per repeat): {', '.join(f'{s:.2f}' for s in speedups)}; median {median(speedups):.2f}")
    diff = max(abs(a - b) / abs(b) for a, b in zip(scores["after"], scores["before"]))
    print(f"per-document log-likelihoods, after vs before: largest relative difference {diff:.1e}")
    sys.stdout.flush()
    calibration = None
    if args.calib_samples:  # last: quantizes the model in place
        config, _ = parse_qd_args({"method": "gptq", "bits": "4", "group_size": "128", "calib_data": "udhr",
                                   "calib_samples": str(args.calib_samples)})
        start = time.perf_counter()
        lm.apply_quantization(config)
        calibration = time.perf_counter() - start
    fixed = {"imports": imports, "model load": load, "task building": task_building,
             "evaluation (after)": median([r["total"] for r in runs["after"]])}
    if calibration is not None:
        fixed[f"gptq calibration+quantization (calib_samples={args.calib_samples})"] = calibration
    total = sum(fixed.values())
    print("one config's costs: " + "; ".join(f"{name} {seconds:.1f} s ({100 * seconds / total:.0f} %)" for name, seconds in fixed.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
