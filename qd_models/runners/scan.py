"""``qd-scan`` (``python -m qd_models.scan``): layer-wise sensitivity scan, block × language.

Two modes, each a :mod:`qd_models.runners.sweep` over ordinary qd-hf configs (so every scan config
is reproducible as ``lm_eval --model qd-hf --model_args <model_args in its results>``):

* ``quantize_one``: only block *i* is quantized (``keep_layers`` = every other block);
* ``protect_one``: everything is quantized except block *i* (``keep_layers=i``).

``--modules block,attention,mlp`` narrows the unit to one module type of block *i*: the other
type's modules of that block are listed in ``keep`` (``quantize_one``: kept; ``protect_one``:
only that type is kept). Attention / MLP modules are recognised by a name component
(``attn``, ``self_attn``, ``self_attention``, ``attention`` / ``mlp``, ``feed_forward``, ``ffn``;
:func:`qd_models.model_layout.block_linears`).

Each scan run records ``quant_config["scan"] = "<mode>:<block>[:<module>]"``. Output, besides
the lm-eval folders: ``scan_<mode>_<module>.csv`` with columns
``block,module,lang,bits_per_byte,baseline_bits_per_byte,rel_degradation,abs_degradation,
degradation`` (``degradation`` = ``rel_degradation`` = bpb/bpb_base − 1, the column
``qd-analyze --scan-csv`` reads), one file per module type so each is one heatmap.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
from pathlib import Path
from typing import Any

from qd_models.config import Mechanism, methods_of
from qd_models.model_layout import block_linears, meta_model
from qd_models.run_record import leaf_tasks, parse_model_args
from qd_models.runners.grid import SweepItem, build_items, make_item
from qd_models.runners.sweep import EvalSettings, Sweep, SweepOutcome
from qd_tasks.languages import split_task_name
from qd_tasks.metrics import relative_increase

logger = logging.getLogger(__name__)

MODES = ("quantize_one", "protect_one")
MODULE_TYPES = ("block", "attention", "mlp")
CSV_COLUMNS = ("block", "module", "lang", "bits_per_byte", "baseline_bits_per_byte", "rel_degradation", "abs_degradation", "degradation")


def scan_items(blocks: dict[int, dict[str, list[str]]], mode: str, modules: tuple[str, ...], quant: dict[str, Any]) -> list[SweepItem]:
    """One item per (block, module type); ``quant``: the shared qd args (method, bits, ...)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed; allowed: {', '.join(MODES)}")
    bad = [m for m in modules if m not in MODULE_TYPES]
    if bad or not modules:
        raise ValueError(f"modules={list(modules)} is not allowed; allowed: one or more of {', '.join(MODULE_TYPES)}")
    for key in ("keep_layers", "keep"):
        if key in quant:
            raise ValueError(f"{key} is not allowed in a scan's quant args; allowed: method, bits, granularity, ... (the scan sets {key})")
    all_blocks = sorted(blocks)
    items = []
    for block in all_blocks:
        others = [b for b in all_blocks if b != block]
        for unit in modules:
            args = dict(quant)
            if unit == "block":
                keep_names: list[str] = []
            elif mode == "quantize_one":  # keep the rest of block i
                keep_names = [n for other, names in blocks[block].items() if other != unit for n in names]
            else:  # protect_one: keep only this module type in block i
                keep_names = list(blocks[block][unit])
            if unit != "block" and not blocks[block][unit]:
                raise ValueError(f"modules={unit} matches no module in block {block}; allowed: block (this architecture's names are not recognised)")
            if mode == "quantize_one":
                if others:
                    args["keep_layers"] = others
            else:
                if unit == "block":
                    args["keep_layers"] = [block]
            if keep_names:
                args["keep"] = keep_names
            label = f"{mode}:{block}" + ("" if unit == "block" else f":{unit}")
            items.append(make_item(args, scan=label))
    return items


def degradation_rows(outcomes: list[SweepOutcome]) -> list[dict]:
    """Long rows (block, module, lang, ...) of every scan outcome against the baseline; the
    degradation is the analysis' (:func:`qd_tasks.metrics.relative_increase`), NaN without a finite baseline."""
    baseline = next(o for o in outcomes if o.item.config.mechanism == Mechanism.NONE)
    base = _per_language_bpb(baseline.results)
    rows = []
    for outcome in outcomes:
        if outcome.item.scan is None:
            continue
        _, block, *rest = outcome.item.scan.split(":")
        for lang, bpb in _per_language_bpb(outcome.results).items():
            ref = base.get(lang, math.nan)
            rel = float(relative_increase(bpb, ref)) if ref and math.isfinite(ref) else math.nan
            rows.append({
                "block": int(block), "module": rest[0] if rest else "block", "lang": lang, "bits_per_byte": bpb,
                "baseline_bits_per_byte": ref, "rel_degradation": rel, "abs_degradation": bpb - ref, "degradation": rel,
            })
    return rows


def _per_language_bpb(results: dict) -> dict[str, float]:
    out = {}
    for task in leaf_tasks(results):
        if "bits_per_byte,none" not in results["results"][task]:
            continue
        value = results["results"][task]["bits_per_byte,none"]
        out[split_task_name(task)[1]] = float(value) if isinstance(value, (int, float)) else math.nan
    return out


def write_csvs(rows: list[dict], mode: str, folder: Path) -> list[Path]:
    """``scan_<mode>_<module>.csv`` per module type present in ``rows``."""
    paths = []
    for unit in MODULE_TYPES:
        picked = [r for r in rows if r["module"] == unit]
        if not picked:
            continue
        path = folder / f"scan_{mode}_{unit}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(sorted(picked, key=lambda r: (r["block"], r["lang"])))
        paths.append(path)
    return paths


def run_scan(settings: EvalSettings, mode: str, modules: tuple[str, ...], quant: dict[str, Any]) -> tuple[list[SweepOutcome], list[Path]]:
    """Build the items (meta-device model, no weights), run them as one sweep, write CSVs."""
    make_item(quant)  # validate the shared quant args before anything heavy
    if make_item(quant).config.mechanism != Mechanism.FAKE:
        raise ValueError(f"method={quant.get('method')} is not allowed in a scan; allowed: fake-quant methods "
                         f"({', '.join(methods_of(Mechanism.FAKE)[:3])}, ...)")
    sweep = Sweep(settings)
    skeleton = meta_model(sweep.hf_config(), bool(parse_model_args(settings.model_args).get("trust_remote_code", False)))
    if skeleton is None:
        raise ValueError(f"model_args={settings.model_args}: the model's module tree cannot be built without its weights; "
                         "allowed: a model AutoModelForCausalLM.from_config builds (trust_remote_code=true for custom code)")
    items = scan_items(block_linears(skeleton), mode, modules, quant)
    outcomes = sweep.run(build_items([], baseline=True) + items)
    paths = write_csvs(degradation_rows(outcomes), mode, Path(settings.output_path))
    return outcomes, paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qd-scan", description="Block × language sensitivity scan (see module docstring).")
    parser.add_argument("--mode", choices=MODES, default="quantize_one")
    parser.add_argument("--modules", default="block", help="comma-separated: block,attention,mlp")
    parser.add_argument("--quant_args", default="method=rtn,bits=4", help="shared qd args, e.g. method=rtn,bits=3,granularity=channel")
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--output_path", required=True)
    parser.add_argument("--model_args", default="")
    parser.add_argument("--limit", type=float)
    parser.add_argument("--batch_size", default="1")
    parser.add_argument("--device")
    parser.add_argument("--log_samples", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``qd-scan``: user errors as one line on stderr, exit 2 (``--debug``: traceback)."""
    from qd_tasks.cli_errors import run_cli

    return run_cli("qd-scan", _main, argv)


def _main(argv: list[str]) -> int:
    from lm_eval.utils import simple_parse_args_string

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = EvalSettings(
        tasks=tuple(t for t in args.tasks.split(",") if t), output_path=args.output_path, model_args=args.model_args,
        limit=args.limit, batch_size=int(args.batch_size) if args.batch_size.isdigit() else args.batch_size,
        device=args.device, log_samples=args.log_samples,
    )
    modules = tuple(m.strip() for m in args.modules.split(",") if m.strip())
    _, paths = run_scan(settings, args.mode, modules, simple_parse_args_string(args.quant_args))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
