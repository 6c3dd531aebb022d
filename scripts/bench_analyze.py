"""Benchmark: ``qd-analyze`` over N lm-eval result folders (default 100) must take <= 5 s.

Writes N runs in lm-eval 0.4.13's layout (results JSON + one samples JSONL per language,
8 languages x 5 documents) into a temporary folder: one baseline plus N-1 quantized runs
(RTN at 2-8 bits with varied granularity/clip), then times ``analysis.cli.main`` on it.

Usage: python scripts/bench_analyze.py [--runs 100] [--budget 5.0]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from analysis.cli import main as qd_analyze

LANGS = ("en", "de", "fr", "zh", "ar", "he", "sw", "yo")
N_DOCS = 5


def write_run(folder: Path, stamp: str, nll: np.ndarray, n_bytes: np.ndarray, quant: dict | None) -> None:
    """One run. nll, n_bytes: (n_langs, n_docs)."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for li, lang in enumerate(LANGS):
        task = f"qd_multilingual_ppl_{lang}"
        bpb = nll[li].sum() / n_bytes[li].sum() / math.log(2)
        results[task] = {"bits_per_byte,none": bpb, "byte_perplexity,none": 2**bpb}
        with open(folder / f"samples_{task}_{stamp}.jsonl", "w") as f:
            for d in range(N_DOCS):
                doc = {"lang": lang, "doc_id": f"{lang}-{d}", "text": f"{lang} text {d}", "source": "bench"}
                f.write(json.dumps({"doc_id": d, "doc": doc, "bits_per_byte": [-nll[li, d], int(n_bytes[li, d])],
                                    "byte_perplexity": [-nll[li, d], int(n_bytes[li, d])]}) + "\n")
    config = {"model": "qd-hf", "model_args": {"pretrained": "bench-model"}}
    config["quant_disparity"] = {"model_source": "bench-model", "quant_config": quant or {"method": "none"},
                                 "quant_totals": {"effective_bits_per_weight": quant["bits"] + 0.25} if quant else {}}
    payload = {"results": results, "group_subtasks": {"qd_multilingual_ppl": [f"qd_multilingual_ppl_{x}" for x in LANGS]},
               "config": config, "date": time.time()}
    (folder / f"results_{stamp}.json").write_text(json.dumps(payload))


def make_runs(root: Path, n_runs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_bytes = rng.integers(150, 400, size=(len(LANGS), N_DOCS))
    base = n_bytes * rng.uniform(1.0, 2.5, size=(len(LANGS), 1))
    write_run(root / "baseline", "2025-01-01T00-00-00", base, n_bytes, None)
    for i in range(n_runs - 1):
        bits = 2 + i % 7
        quant = {"method": "rtn", "bits": bits, "granularity": ("channel", "group")[i // 7 % 2], "clip": [None, 0.9, 0.8][i // 14 % 3],
                 "run": i // 42}
        factor = 1 + rng.uniform(0.5, 3.0, size=(len(LANGS), 1)) * 2.0 ** (-bits) * rng.uniform(0.8, 1.2, size=(len(LANGS), N_DOCS))
        write_run(root / f"run{i:03d}", f"2025-01-01T00-00-{i:03d}", base * factor, n_bytes, quant)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds allowed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_runs(Path(tmp) / "runs", args.runs)
        start, cpu_start = time.perf_counter(), time.process_time()
        code = qd_analyze([str(Path(tmp) / "runs"), "--out", str(Path(tmp) / "report"), "--hr", "en,de,fr", "--lr", "he,sw,yo"])
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        n_figures = len(list((Path(tmp) / "report" / "figures").glob("*.png")))
    print(f"qd-analyze over {args.runs} result files: {elapsed:.2f} s wall, {cpu:.2f} s CPU (budget {args.budget:.1f} s wall), "
          f"exit code {code}, {n_figures} figures")
    return 0 if code == 0 and elapsed <= args.budget else 1


if __name__ == "__main__":
    raise SystemExit(main())
