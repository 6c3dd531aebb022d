"""Sequential calibration before/after: the per-block re-run (block k: a forward pass through blocks
0..k on every batch, ``tests/per_block_calibration.py``) against the one-pass block-input cache
(:class:`qd_models.calibration.BlockInputs`), each in its own child process, one after the other.
Prints per path: wall seconds of ``quantize_`` (calibration + GPTQ), block forward calls (counted on
the block class's ``forward``) and per batch, peak RSS, and whether the quantized weights are
byte-identical; then the old/new ratios of this run.

    python scripts/bench_calibration.py [--model DIR] [--threads N] [--method gptq]
        [--model_args calib_data=udhr,calib_samples=4,group_size=128]

Default: the Gemma-3-270M default model with the main job's GPTQ config (scripts/demo_grid.yaml).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

MAIN_JOB_ARGS = "bits=4,group_size=128,calib_data=udhr,calib_samples=4"


def child(path: str, qd_args: str, which: str, threads: int) -> dict:
    """Quantize once along ``which`` (old | new); the measurements as a dict."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qd_models import engine, model_layout
    from qd_models.calibration import CalibrationBatches, load_calibration_texts
    from qd_models.config import parse_qd_args
    from qd_models.run_record import parse_model_args

    torch.set_num_threads(threads)
    config = parse_qd_args(parse_model_args(qd_args))[0]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    calib = CalibrationBatches.from_texts(tokenizer, load_calibration_texts(config), config.calib_data or "bundled")
    blocks = [model.get_submodule(name) for name in model_layout.block_names(model)]
    block_class = type(blocks[0])
    real_forward, calls = block_class.forward, [0]

    def counting_forward(self, *args, **kwargs):
        calls[0] += 1
        return real_forward(self, *args, **kwargs)

    block_class.forward = counting_forward
    if which == "old":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from per_block_calibration import per_block_layer_inputs

        engine._layer_inputs = per_block_layer_inputs
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    report = engine.quantize_(model, config, calib=calib)
    seconds = time.perf_counter() - start
    n_batches = sum(-(-len(seqs) // calib.batch_size) for seqs in calib.token_ids.values())
    digest = hashlib.sha256()
    for _, param in model.named_parameters():
        digest.update(param.detach().cpu().numpy().tobytes())
    return {"seconds": seconds, "block_calls": calls[0], "batches": n_batches, "blocks": len(blocks),
            "rss_loaded_mb": rss_loaded, "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "sha256": digest.hexdigest(), "calibration": report["calibration"], "tokens": sum(calib.tokens.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local HF model folder (default: the Gemma-3-270M default model)")
    parser.add_argument("--method", default="gptq", choices=["gptq", "awq"])
    parser.add_argument("--model_args", default=MAIN_JOB_ARGS, help=f"qd arguments besides method (default: {MAIN_JOB_ARGS})")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    qd_args = f"method={args.method},{args.model_args}"
    if args.model is None:
        from qd_models.default_model import default_model_path

        args.model = str(default_model_path())
    if args.child:
        print(json.dumps(child(args.model, qd_args, args.child, args.threads)))
        return 0
    results = {}
    for which in ("old", "new"):
        cmd = [sys.executable, __file__, "--model", args.model, "--method", args.method, "--model_args", args.model_args,
               "--threads", str(args.threads), "--child", which]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    old, new = results["old"], results["new"]
    print(f"{qd_args}, {args.threads} threads, {new['blocks']} blocks, {new['batches']} batches, {new['tokens']} tokens")
    print(f"{'path':5s} {'wall s':>8s} {'block calls':>12s} {'per batch':>10s} {'RSS loaded MB':>14s} {'peak RSS MB':>12s}")
    for which, row in results.items():
        print(f"{which:5s} {row['seconds']:8.1f} {row['block_calls']:12d} {row['block_calls'] / row['batches']:10.1f} "
              f"{row['rss_loaded_mb']:14.0f} {row['rss_peak_mb']:12.0f}")
    print(f"old/new: wall {old['seconds'] / new['seconds']:.2f}x, block calls {old['block_calls'] / new['block_calls']:.2f}x; "
          f"weights byte-identical: {old['sha256'] == new['sha256']}; new calibration: {new['calibration']['forward_passes']} capture pass, "
          f"{new['calibration']['block_evaluations']} block evaluations, {new['calibration']['spilled_batches']} spilled batches")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
