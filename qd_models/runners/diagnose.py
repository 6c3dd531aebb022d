"""``qd-diagnose`` (``python -m qd_models.diagnose``): per-layer weight statistics and per-language tokenizer
fertility of a model on a task group, as CSV + plots.

    python -m qd_models.diagnose --model_args pretrained=PATH --tasks qd_multilingual_ppl --out DIR

``weight_stats.csv``: one row per linear / Conv1D / embedding weight: ``name, block, module,
shape, numel, sigma, kurtosis`` (excess, m4/m2² − 3, Gaussian = 0), ``max_over_sigma``
(max |w − mean| / σ), ``outlier_ratio_6sigma`` (fraction with |w − mean| > 6σ; a Gaussian gives
about 2e-9) and ``nonfinite``. ``fertility.csv``: one row per language over the task's
documents (the target text each loglikelihood_rolling request scores): ``n_docs, n_bytes
(UTF-8), n_tokens (no special tokens), n_words, tokens_per_byte, tokens_per_word`` by the rule
of :mod:`qd_tasks.fertility` (the one ``qd-analyze`` uses): ``tokens_per_word`` is empty for
languages whose task does not score ``word_perplexity`` (scripts without spaces between words).
``--quant_args method=rtn,bits=4`` diagnoses the weights after that quantization instead.
``weights_sha256`` in ``summary.json`` hashes every parameter (names, dtypes, shapes, bytes):
equal hashes across processes/ranks mean bit-identical weights.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

from qd_tasks.fertility import FERTILITY_FIELDS, count_tokens, fertility

logger = logging.getLogger(__name__)

OUTLIER_SIGMAS = 6.0
WEIGHT_COLUMNS = ("name", "block", "module", "shape", "numel", "sigma", "kurtosis", "max_over_sigma", "outlier_ratio_6sigma", "nonfinite")
FERTILITY_COLUMNS = ("lang", *FERTILITY_FIELDS)


def layer_weight_stats(model) -> list[dict]:
    """Stats of every ``nn.Linear`` / ``Conv1D`` / ``nn.Embedding`` weight (tied weights once)."""
    from qd_models.model_layout import block_index, weight_layout, weight_part
    from qd_models.quant import weight_stats

    rows, seen = [], set()
    for name, module in model.named_modules():
        layout = weight_layout(module)
        if layout is None or id(module.weight) in seen:
            continue
        seen.add(id(module.weight))
        weight = module.weight.detach().float()
        stats = weight_stats(weight)
        dev = (weight - weight.mean()).abs_()
        outliers = float((dev > OUTLIER_SIGMAS * stats["sigma"]).sum()) / weight.numel() if stats["sigma"] > 0 else math.nan
        rows.append({
            "name": name, "block": block_index(name), "module": weight_part(name, layout), "shape": "x".join(map(str, weight.shape)),
            "numel": weight.numel(), "sigma": stats["sigma"], "kurtosis": stats["kurtosis"],
            "max_over_sigma": stats["max_over_sigma"], "outlier_ratio_6sigma": outliers, "nonfinite": stats["nonfinite"],
        })
        del weight, dev
    return rows


def weights_sha256(model) -> str:
    """SHA-256 over every parameter's name, dtype, shape and raw bytes (in named order)."""
    import torch

    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        tensor = param.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def task_documents(tasks: list[str], task_manager=None) -> tuple[dict[str, list[str]], set[str]]:
    """``({lang: [target text of each document]}, languages with words)`` over the leaf tasks of
    ``tasks``; a language has words when every task of it scores ``word_perplexity``."""
    from lm_eval.tasks import get_task_dict

    from qd_models.runners.lm_eval_glue import task_manager as known_tasks
    from qd_tasks.languages import split_task_name

    manager = known_tasks(tasks, manager=task_manager)
    texts: dict[str, list[str]] = {}
    without_words: set[str] = set()

    def walk(node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value)
            else:
                name = getattr(key, "group_name", key) if not isinstance(key, str) else key
                scores_words = any(metric.get("metric") == "word_perplexity" for metric in value.config.metric_list or [])
                for doc in value.eval_docs:
                    lang = split_task_name(value.config.task or str(name), doc)[1]
                    texts.setdefault(lang, []).append(str(value.doc_to_target(doc)))
                    if not scores_words:
                        without_words.add(lang)

    walk(get_task_dict(tasks, manager))
    return texts, set(texts) - without_words


def fertility_rows(texts: dict[str, list[str]], word_languages: set[str], tokenizer) -> list[dict]:
    """One :func:`qd_tasks.fertility.fertility` row per language of ``texts`` (columns: :data:`FERTILITY_COLUMNS`)."""
    return [{"lang": lang, **fertility(texts[lang], sum(count_tokens(tokenizer, text) for text in texts[lang]), lang in word_languages)}
            for lang in sorted(texts)]


def plot_weight_stats(rows: list[dict]):
    """Kurtosis and max/σ per block-layer (log y: values below 1e-3, incl. negative excess
    kurtosis, are drawn at 1e-3), one marker per module type; -> (fig, axes)."""
    import matplotlib.pyplot as plt

    layered = [r for r in rows if r["block"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, column, label in ((axes[0], "kurtosis", "excess kurtosis"), (axes[1], "max_over_sigma", "max |w−mean| / σ")):
        for role, marker in (("attention", "o"), ("mlp", "s"), ("other", "^")):
            picked = [r for r in layered if r["module"] == role and math.isfinite(r[column])]
            if picked:
                ax.scatter([r["block"] for r in picked], [max(r[column], 1e-3) for r in picked], marker=marker, s=14, label=role, alpha=0.7)
        ax.set_yscale("log")
        ax.set_xlabel("transformer block")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    axes[0].axhline(3.0, color="grey", lw=0.7, ls="--")  # Laplace excess kurtosis
    fig.suptitle("Per-layer weight statistics (dashed: Laplace, excess kurtosis 3)", fontsize=9)
    fig.tight_layout()
    return fig, axes


def plot_fertility(rows: list[dict]):
    """Tokens per byte by language; -> (fig, ax)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * len(rows), 3.2))
    ax.bar([r["lang"] for r in rows], [r["tokens_per_byte"] for r in rows], color="#4c72b0")
    ax.set_ylabel("tokens per UTF-8 byte")
    ax.set_xlabel("language")
    ax.set_title("Tokenizer fertility", fontsize=9)
    fig.tight_layout()
    return fig, ax


def _write_csv(path: Path, columns, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def diagnose(model_args: str, tasks: list[str], out: str | Path, quant_args: str = "", device: str | None = None) -> dict:
    """Load the model once (``qd-hf``, all hf args; ``device`` default: cuda if available,
    else cpu), write CSVs, plots and ``summary.json`` (a folder it created is removed on failure)."""
    from lm_eval.utils import simple_parse_args_string

    from qd_models.config import Mechanism, parse_qd_args

    model_kwargs = simple_parse_args_string(model_args)
    quant = simple_parse_args_string(quant_args)
    if parse_qd_args(model_kwargs)[0].mechanism != Mechanism.NONE:  # validates before loading
        raise ValueError("model_args method is not allowed in diagnose; allowed: hf args only (use --quant_args)")
    config, rest = parse_qd_args(quant)
    if rest:
        raise ValueError(f"quant_args keys {sorted(rest)} are not quantization args; allowed: method, bits, granularity, ...")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out={out} is an existing file; allowed: a folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _diagnose_into(folder, model_kwargs, quant, config, model_args, tasks, device)
    except BaseException:
        if created:  # leave nothing behind on failure
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _diagnose_into(folder: Path, model_kwargs: dict, quant: dict, config, model_args: str, tasks: list[str], device: str | None) -> dict:
    import torch

    texts, word_languages = task_documents(tasks) if tasks else ({}, set())
    from qd_models.qd_hf import QDHFLM

    lm = QDHFLM(**model_kwargs, **quant, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = layer_weight_stats(lm.model)
    fert = fertility_rows(texts, word_languages, lm.tokenizer)
    paths = [_write_csv(folder / "weight_stats.csv", WEIGHT_COLUMNS, weights)]
    fig, _ = plot_weight_stats(weights)
    fig.savefig(folder / "weight_stats.png", dpi=120)
    if fert:
        paths.append(_write_csv(folder / "fertility.csv", FERTILITY_COLUMNS, fert))
        fig, _ = plot_fertility(fert)
        fig.savefig(folder / "fertility.png", dpi=120)
    summary = {
        "model_args": model_args, "quant_config": config.to_dict(), "tasks": tasks,
        "weights_sha256": weights_sha256(lm.model), "n_layers": len(weights), "files": [p.name for p in paths],
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    """``qd-diagnose``: user errors as one line on stderr, exit 2 (``--debug``: traceback)."""
    from qd_tasks.cli_errors import run_cli

    return run_cli("qd-diagnose", _main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="qd-diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("--model_args", default="", help="hf args, e.g. pretrained=PATH (default: the embedded Gemma)")
    parser.add_argument("--tasks", default="", help="comma-separated task/group names for fertility (empty: weights only)")
    parser.add_argument("--quant_args", default="", help="diagnose the weights after this quantization, e.g. method=rtn,bits=4")
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # files only; the plotting functions never pick a backend
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = diagnose(args.model_args, [t for t in args.tasks.split(",") if t], args.out, args.quant_args, args.device)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
