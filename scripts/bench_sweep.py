"""Benchmark: a K-config ``qd_models.sweep`` run vs K separate ``qd-hf`` evaluations.

    python scripts/bench_sweep.py                       # tiny random Llama (built in a temp dir)
    python scripts/bench_sweep.py --model_args pretrained=PATH --k 4 --separate cli

``--separate inprocess``: K ``simple_evaluate(model="qd-hf", ...)`` calls in this process
(each loads the model; the task index is shared) — isolates the cost of reloading.
``--separate cli``: K ``python -m lm_eval --model qd-hf`` subprocesses — what a shell loop
costs (interpreter start, lm-eval's task index, load). Both sides run the same K configs
(the baseline + K-1 RTN/ACIQ configs) with the same tasks, limit and batch size, and the
per-task bits/byte of both sides are checked to agree (1e-6) before timings are printed.
One untimed baseline evaluation (limit 1) runs first so that neither side pays the imports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = [
    {"method": "rtn", "bits": 4},
    {"method": "rtn", "bits": 3},
    {"method": "aciq", "bits": 4},
    {"method": "aciq", "bits": 3},
    {"method": "rtn", "bits": 8},
    {"method": "mse", "bits": 4},
    {"method": "rtn", "bits": 4, "granularity": "tensor"},
]


def tiny_llama(directory: Path) -> str:
    """Save a 2-block random Llama (hidden 64) with a byte tokenizer; return model_args."""
    from qd_models.tiny_models import save_tiny_model

    save_tiny_model("llama", directory)
    return f"pretrained={directory}"


def bits_per_byte(results: dict) -> dict[str, float]:
    return {task: v["bits_per_byte,none"] for task, v in results["results"].items() if "bits_per_byte,none" in v}


def run_separate_inprocess(items, model_args, args) -> tuple[float, list[dict]]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False)
    start, out = time.perf_counter(), []
    for item in items:
        results = simple_evaluate(
            model="qd-hf", model_args=item.model_args(model_args), tasks=args.tasks, limit=args.limit,
            batch_size=args.batch_size, device="cpu", task_manager=manager,
        )
        out.append(bits_per_byte(results))
    return time.perf_counter() - start, out


def run_separate_cli(items, model_args, args, workdir: Path) -> tuple[float, list[dict]]:
    start, out = time.perf_counter(), []
    for index, item in enumerate(items):
        folder = workdir / f"cli-{index}"
        cmd = [
            sys.executable, "-m", "lm_eval", "--model", "qd-hf", "--model_args", item.model_args(model_args),
            "--tasks", ",".join(args.tasks), "--batch_size", str(args.batch_size), "--device", "cpu",
            "--output_path", str(folder),
        ] + (["--limit", str(args.limit)] if args.limit is not None else [])
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        out.append(bits_per_byte(json.loads(sorted(folder.rglob("results_*.json"))[-1].read_text())))
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4, help=f"number of configs incl. the baseline (2..{len(CONFIGS) + 1})")
    parser.add_argument("--model_args", help="default: a tiny random Llama built in a temp dir")
    parser.add_argument("--tasks", default="qd_multilingual_ppl")
    parser.add_argument("--limit", type=float, help="documents per task (default: all)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--separate", choices=("inprocess", "cli"), default="inprocess")
    args = parser.parse_args(argv)
    if not 2 <= args.k <= len(CONFIGS) + 1:
        raise ValueError(f"k={args.k} is not allowed; allowed: 2..{len(CONFIGS) + 1}")
    args.tasks = args.tasks.split(",")

    from qd_models.runners.grid import build_items
    from qd_models.runners.sweep import EvalSettings, Sweep

    items = build_items(CONFIGS[: args.k - 1])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_args = args.model_args or tiny_llama(workdir / "tiny-llama")
        settings = EvalSettings(tasks=tuple(args.tasks), output_path=str(workdir / "sweep"), model_args=model_args,
                                limit=args.limit, batch_size=args.batch_size, device="cpu")
        warm_up = EvalSettings(tasks=tuple(args.tasks), output_path=str(workdir / "warm-up"), model_args=model_args,
                               limit=1, batch_size=args.batch_size, device="cpu")
        Sweep(warm_up).run(items[:1])  # imports, first-call overheads and OS file cache: not timed
        start = time.perf_counter()
        outcomes = Sweep(settings).run(items)
        sweep_seconds = time.perf_counter() - start
        swept = [bits_per_byte(o.results) for o in outcomes]
        if args.separate == "cli":
            separate_seconds, separate = run_separate_cli(items, model_args, args, workdir)
        else:
            separate_seconds, separate = run_separate_inprocess(items, model_args, args)
    worst = max(abs(a[t] - b[t]) / abs(b[t]) for a, b in zip(swept, separate) for t in b)
    if worst > 1e-6:
        raise SystemExit(f"sweep and separate runs disagree: max relative bits/byte difference {worst:.3e}")
    print(f"model_args: {model_args if args.model_args else 'tiny random Llama'}  tasks: {','.join(args.tasks)}  limit: {args.limit}")
    print(f"K={args.k} configs: sweep {sweep_seconds:.1f} s ({sweep_seconds / args.k:.2f} s/config)  "
          f"separate ({args.separate}) {separate_seconds:.1f} s ({separate_seconds / args.k:.2f} s/config)")
    print(f"ratio separate / sweep = {separate_seconds / sweep_seconds:.2f}x  (max rel. bits/byte difference {worst:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
