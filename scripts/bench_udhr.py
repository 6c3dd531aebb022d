"""Time UDHR evaluation of one model in one process (model loaded once), to extrapolate the full run.

Prints wall seconds and bytes scored for: qd_multilingual_ppl (reference), qd_udhr8_ppl, and
whole declarations (``--langs``, all 31 documents each); then seconds per full declaration
and per byte, and the extrapolation to all of qd_udhr_ppl (from its byte count).

    python scripts/bench_udhr.py [--model_args pretrained=...] [--langs en,sw,zh,007] [--batch_size 4]
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_args", default="method=none", help="qd-hf model arguments (default: the default model, unquantized)")
    parser.add_argument("--langs", default="en,sw,zh,007", help="UDHR declaration keys evaluated in full")
    parser.add_argument("--batch_size", type=int, default=4)
    args = parser.parse_args(argv)
    from qd_tasks.udhr import load_udhr, udhr_languages

    langs = args.langs.split(",")
    known = udhr_languages()
    unknown = [lang for lang in langs if lang not in known]
    if unknown:
        parser.error(f"--langs must be UDHR declaration keys (e.g. en, sw, deu_1901), got {', '.join(unknown)}")

    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    lm = get_model("qd-hf").create_from_arg_string(args.model_args, {"batch_size": args.batch_size, "device": "cpu"})
    print(f"model load: {time.perf_counter() - start:.1f} s")
    manager = TaskManager(include_defaults=False)
    timings = {}
    for name, tasks in (("qd_multilingual_ppl", ["qd_multilingual_ppl"]), ("qd_udhr8_ppl", ["qd_udhr8_ppl"]),
                        ("full declarations", [f"qd_udhr_ppl_{lang}" for lang in langs])):
        start = time.perf_counter()
        simple_evaluate(model=lm, tasks=tasks, task_manager=manager, batch_size=args.batch_size)
        timings[name] = time.perf_counter() - start
        print(f"{name}: {timings[name]:.1f} s")
    full_bytes = sum(len(record["text"].encode("utf-8")) for record in load_udhr(langs))
    all_bytes = sum(len(record["text"].encode("utf-8")) for record in load_udhr())
    per_byte = timings["full declarations"] / full_bytes
    print(f"full declarations: {len(langs)} ({full_bytes} bytes): {timings['full declarations'] / len(langs):.1f} s each, "
          f"{1e3 * per_byte:.2f} ms/byte")
    print(f"qd_udhr_ppl extrapolated: {len(known)} declarations, {all_bytes} bytes -> {per_byte * all_bytes / 3600:.2f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
