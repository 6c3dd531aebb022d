"""What the default calibration size costs: GPTQ/AWQ quantization (the block-by-block Gram
pass, the method, the Gram rank/condition report) on the Gemma-3-270M default model (or a tiny
random model) with the old default (the bundled split: 40 texts), the main job's
``calib_data=udhr,calib_samples=4`` and the new default (``calib_samples`` unset: 8 x the widest
layer's input dim in tokens), in one run, weights restored in between. Prints seconds, the
ratio to the old default, tokens, tokens per input dim of the widest layer and the Gram report.

    python scripts/bench_calibration_size.py [--default-model | --model DIR] [--methods gptq,awq] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_methods import bench_model_path  # scripts/ is on sys.path when run as a script

from qd_models.calibration import CalibrationBatches, load_calibration_texts
from qd_models.calibration.sufficiency import calibration_texts_for_model
from qd_models.config import parse_qd_args
from qd_models.engine import quantize_, restore_

CALIBRATIONS = {
    "old default (bundled split, 40 texts)": {"calib_samples": "10"},
    "main job (udhr, 4 per language)": {"calib_data": "udhr", "calib_samples": "4"},
    "new default (8 x widest input dim)": {},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default-model", action="store_true", help="the Gemma-3-270M default model (minutes on CPU)")
    parser.add_argument("--model", help="a local HF model folder")
    parser.add_argument("--methods", default="gptq,awq")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = bench_model_path(args.default_model, args.model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    group = 128 if args.default_model or args.model else 16
    originals: dict = {}
    print(f"model={'default' if args.default_model else path} device={args.device} group_size={group}")
    for method in args.methods.split(","):
        base = None
        for label, calib_args in CALIBRATIONS.items():
            config = parse_qd_args({"method": method, "group_size": str(group), **calib_args})[0]
            restore_(model, originals)
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            texts = calibration_texts_for_model(load_calibration_texts(config), config, model, tokenizer)
            calib = CalibrationBatches.from_texts(tokenizer, texts)
            saved: dict = {}
            report = quantize_(model, config, originals_for_restore=saved, calib=calib)
            if args.device == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
            for name, tensor in saved.items():
                originals.setdefault(name, tensor)
            base = base or wall
            cal = report["calibration"]
            condition = cal["max_gram_condition"]
            print(f"{method:5s} {label:40s} {wall:8.2f} s  x{wall / base:5.2f}  tokens={cal['tokens']:6d} "
                  f"({cal['tokens_per_largest_input_dim']:.2f} per dim of {cal['largest_input_dim']})  "
                  f"rank-deficient {cal['rank_deficient_layers']}/{cal['gram_layers']}  max cond "
                  + ("inf" if condition is None else f"{condition:.3g}"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
