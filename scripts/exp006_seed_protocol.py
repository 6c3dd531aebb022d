"""The seed EXP-006 protocol next to deployable LA-ACIQ, on ``qd_multilingual_ppl``.

Seed protocol ("per-language models"): for every calibration language l, a model quantized
with clipping calibrated on l only (``method=laaciq,calib_mode=target,calib_langs=l``) is
evaluated on language l only. That is an oracle nobody can deploy (a server does not know
the language before it picks the weights). The seed notebook also used one scalar alpha for
every tensor from a made-up kurtosis formula, which collapsed its models; here the clipping
is the sound per-channel/group search, so only the *protocol* is the seed's.

Deployable: ONE model per ``calib_mode`` in ``--modes`` (default mean, minimax) and per
``--methods`` baseline method (default mse), evaluated on every language.

Writes ``<output>/results_<run>.json`` (lm-eval results, one file per run) and
``<output>/exp006_table.csv`` (one long table: run, protocol, lang, bits_per_byte, the
unquantized baseline's, and the relative increase), and prints it.

    python scripts/exp006_seed_protocol.py --output runs/exp006 [--pretrained DIR] [--bits 4]
        [--granularity channel|group] [--langs en;de;he;sw] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

TASK = "qd_multilingual_ppl_{lang}"
METRIC = "bits_per_byte,none"


def evaluate(model_args: str, langs: list[str], limit: int | None, batch_size: int) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(model="qd-hf", model_args=model_args, tasks=[TASK.format(lang=lang) for lang in langs],
                           task_manager=TaskManager(include_defaults=False), device="cpu", batch_size=batch_size,
                           limit=limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--pretrained", default=None, help="HF model folder (default: qd-hf's default model)")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--granularity", default="channel", choices=["channel", "group"])
    parser.add_argument("--langs", default="en;de;he;sw", help="';'-separated calibration languages")
    parser.add_argument("--modes", default="mean;minimax", help="';'-separated deployable calib_mode values")
    parser.add_argument("--methods", default="mse", help="';'-separated deployable non-LA-ACIQ methods")
    parser.add_argument("--limit", type=int, default=None, help="documents per language (smoke runs)")
    parser.add_argument("--batch_size", type=int, default=4)
    args = parser.parse_args()
    langs = [lang for lang in args.langs.split(";") if lang]
    common = f"bits={args.bits},granularity={args.granularity}"
    if args.pretrained:
        common = f"pretrained={args.pretrained},{common}"
    base_args = f"pretrained={args.pretrained},method=none" if args.pretrained else "method=none"
    runs: list[tuple[str, str, str, list[str]]] = [("baseline", "none", base_args, langs)]
    runs += [(f"seed-target-{lang}", "seed per-language model", f"{common},method=laaciq,calib_mode=target,calib_langs={lang}", [lang])
             for lang in langs]
    runs += [(f"laaciq-{mode}", "deployable", f"{common},method=laaciq,calib_mode={mode},calib_langs={';'.join(langs)}", langs)
             for mode in args.modes.split(";") if mode]
    runs += [(method, "deployable", f"{common},method={method}", langs) for method in args.methods.split(";") if method]

    from lm_eval.utils import handle_non_serializable

    args.output.mkdir(parents=True, exist_ok=True)
    scores: dict[str, dict[str, float]] = {}
    for name, _protocol, model_args, run_langs in runs:
        results = evaluate(model_args, run_langs, args.limit, args.batch_size)
        (args.output / f"results_{name}.json").write_text(json.dumps(results, default=handle_non_serializable, indent=1))
        scores[name] = {lang: results["results"][TASK.format(lang=lang)][METRIC] for lang in run_langs}

    rows = []
    for name, protocol, _, run_langs in runs[1:]:
        for lang in run_langs:
            base, value = scores["baseline"][lang], scores[name][lang]
            rows.append({"run": name, "protocol": protocol, "lang": lang, "bits_per_byte": value,
                         "baseline_bits_per_byte": base, "relative_increase": value / base - 1.0})
    with open(args.output / "exp006_table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{'run':<22}{'protocol':<26}{'lang':<6}{'bpb':>9}{'base bpb':>10}{'rel. increase':>15}")
    for row in rows:
        print(f"{row['run']:<22}{row['protocol']:<26}{row['lang']:<6}{row['bits_per_byte']:>9.4f}"
              f"{row['baseline_bits_per_byte']:>10.4f}{row['relative_increase']:>15.2%}")
    print(f"table: {args.output / 'exp006_table.csv'}")


if __name__ == "__main__":
    main()
