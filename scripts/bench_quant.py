"""Benchmark the quantization engine on the default (Gemma-3-270M) model, one run.

Prints, per method: quantization wall time, its target, and peak RSS while quantizing divided
by the RSS after a plain load (target <= 1.15; RSS sampled every 2 ms from /proc). Weights are
restored between methods with ``restore_`` (their CPU copies are made during the run, so the
RSS peak includes them; the lm-eval path does not keep originals). The model is loaded in its
checkpoint dtype (float32 for the default model), as ``qd-hf`` loads it.

With ``--eval``: one ``lm_eval --model hf`` and one ``lm_eval --model qd-hf ... method=rtn``
process over ``qd_multilingual_ppl``, each timed (wall) with its peak RSS (ru_maxrss), and the
ratios qd-hf / hf (targets: wall <= 1.05 + quantization time / hf time; RSS <= 1.15).

    python scripts/bench_quant.py [--model DIR] [--threads N] [--eval]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import torch

from qd_models.config import parse_qd_args
from qd_models.engine import quantize_, restore_

CASES = [
    ("rtn W4 channel", {"method": "rtn"}, 1.0),
    ("aciq W4 channel", {"method": "aciq"}, 2.0),
    ("mse W4 channel", {"method": "mse"}, 10.0),
    ("rtn W4 g128", {"method": "rtn", "granularity": "group"}, None),
    ("aciq W4 g128", {"method": "aciq", "granularity": "group"}, None),
    ("mse W4 g128", {"method": "mse", "granularity": "group"}, None),
    ("rtn W4 keep_top=1", {"method": "rtn", "keep_top": 1}, None),
]


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


class PeakRSS:
    """Context manager sampling this process's RSS every ``interval`` seconds."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF model folder (default: the cached default model)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--eval", action="store_true", help="also time hf vs qd-hf(method=rtn) evaluations")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    if args.model is None:
        from qd_models.default_model import default_model_path

        args.model = str(default_model_path())
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
    # safetensors weights in the checkpoint dtype stay memory-mapped and count towards RSS only
    # once read: read them all first, or the ratio compares against a half-loaded model.
    with torch.no_grad():
        for param in model.parameters():
            param.sum()
    loaded_rss = rss_bytes()
    print(f"model={args.model} threads={torch.get_num_threads()} rss_after_load={loaded_rss / 2**20:.0f} MiB")
    warm_up: dict = {}
    quantize_(model, parse_qd_args({"method": "rtn"})[0], originals_for_restore=warm_up)  # first-touch costs
    restore_(model, warm_up)
    del warm_up
    print("| case | quantize s | target s | peak RSS / load RSS | eff. bits/weight | mean rel. weight MSE |")
    print("|---|---|---|---|---|---|")
    for label, kwargs, target in CASES:
        config = parse_qd_args(kwargs)[0]
        originals: dict = {}
        with PeakRSS() as peak:
            start = time.perf_counter()
            report = quantize_(model, config, originals_for_restore=originals)
            seconds = time.perf_counter() - start
        originals_bytes = sum(t.numel() * t.element_size() for t in originals.values())
        restore_(model, originals)
        del originals
        ratio = (peak.peak - originals_bytes) / loaded_rss
        errors = [layer["rel_mse"] for layer in report["layers"] if layer["status"] == "quantized"]
        print(
            f"| {label} | {seconds:.2f} | {target if target else '-'} | {ratio:.3f} | "
            f"{report['totals']['effective_bits_per_weight']:.3f} | {sum(errors) / len(errors):.4f} |"
        )
    if args.eval:
        del model
        compare_evaluations(args.model)


def timed_lm_eval(model: str, model_args: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one ``lm_eval`` process over qd_multilingual_ppl."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", model_args,
             "--tasks", "qd_multilingual_ppl", "--batch_size", "4", "--output_path", out],
            check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def compare_evaluations(model_dir: str) -> None:
    hf_seconds, hf_rss = timed_lm_eval("hf", f"pretrained={model_dir}")
    qd_seconds, qd_rss = timed_lm_eval("qd-hf", f"pretrained={model_dir},method=rtn,bits=4")
    # ru_maxrss over children is a running maximum: qd-hf's figure is exact when it exceeds
    # hf's and an upper bound otherwise, hence "<=".
    print(f"eval wall: hf {hf_seconds:.1f} s, qd-hf rtn {qd_seconds:.1f} s, ratio {qd_seconds / hf_seconds:.3f}")
    print(f"peak RSS: hf {hf_rss / 2**20:.0f} MiB, qd-hf rtn <= {qd_rss / 2**20:.0f} MiB, ratio <= {qd_rss / hf_rss:.3f}")


if __name__ == "__main__":
    main()
