"""Per-method quantization time (calibration included) on a tiny random model (default) or on
the Gemma-3-270M default model (``--default-model``), one run per method, weights restored in
between. Prints wall and CPU seconds, effective bits per weight and calibration tokens.

    python scripts/bench_methods.py [--default-model | --model DIR] [--threads N] [--methods rtn,gptq,awq]
        [--group_size 128] [--calib_samples N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from qd_models.calibration import (
    CalibrationBatches,
    collect_activation_stats,
    load_calibration_texts,
)
from qd_models.calibration.sufficiency import calibration_texts_for_model
from qd_models.config import METHODS, STATS, parse_qd_args
from qd_models.engine import quantize_, restore_
from qd_models.targets import quantization_targets


def bench_model_path(default_model: bool, model: str | None) -> str:
    """The benchmarked model folder: the default model, ``model``, or a fresh tiny random Llama."""
    if default_model:
        from qd_models.default_model import default_model_path

        return str(default_model_path())
    if model:
        return model
    from qd_models.tiny_models import save_tiny_model

    return str(save_tiny_model("llama", tempfile.mkdtemp(prefix="qd-bench-")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default-model", action="store_true", help="the Gemma-3-270M default model (minutes)")
    parser.add_argument("--model", help="a local HF model folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default="rtn,mse,laaciq,gptq,awq")
    parser.add_argument("--group_size", type=int, default=None, help="default: 128 (default model) or 16 (tiny)")
    parser.add_argument("--calib_samples", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = bench_model_path(args.default_model, args.model)
    group = args.group_size or (16 if not (args.default_model or args.model) else 128)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    originals: dict = {}
    print(f"model={path if args.model or args.default_model else 'tiny llama'} threads={args.threads} group_size={group}")
    print(f"{'method':8s} {'wall s':>8s} {'cpu s':>8s} {'bits/w':>7s}  calibration tokens")
    for method in args.methods.split(","):
        qd_args = {"method": method, "bits": 4, "granularity": "group", "group_size": group}
        if args.calib_samples and METHODS[method].calibration != "none":
            qd_args["calib_samples"] = args.calib_samples
        config = parse_qd_args(qd_args)[0]
        restore_(model, originals)
        start, start_cpu = time.perf_counter(), time.process_time()
        act_stats = calib = None
        if config.calibration_passes:
            texts = calibration_texts_for_model(load_calibration_texts(config), config, model, tokenizer)
            if STATS in config.calibration_passes:
                act_stats = collect_activation_stats(model, tokenizer, texts, quantization_targets(model, config), progress=False,
                                                     use_cache=False)
            else:
                calib = CalibrationBatches.from_texts(tokenizer, texts)
        saved: dict = {}
        report = quantize_(model, config, originals_for_restore=saved, act_stats=act_stats, calib=calib)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        for name, tensor in saved.items():
            originals.setdefault(name, tensor)
        tokens = calib.tokens if calib is not None else (act_stats.tokens if act_stats is not None else {})
        print(f"{method:8s} {wall:8.2f} {cpu:8.2f} {report['totals']['effective_bits_per_weight']:7.3f}  {tokens}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
