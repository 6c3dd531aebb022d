"""Read lm-eval 0.4.13 output (``results_*.json`` + ``samples_*.jsonl``) into tables.

A *run* is one ``results_<timestamp>.json``. Its identity is the model (``model_source``
of the ``qd-hf`` block, else ``pretrained`` from ``model_args``, else ``config.model``)
plus the resolved quantization config. Problems with single files (corrupted JSON,
unreadable samples, non-finite metrics) are collected in ``RunSet.problems`` as one line
each, naming the file and what to do, instead of stopping the whole analysis.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from qd_tasks.languages import split_task_name

AGGREGATE_METRICS = ("bits_per_byte", "byte_perplexity", "word_perplexity")
BASELINE_METHODS = ("none",)
_RESULTS_RE = re.compile(r"^results_(?P<stamp>.+)\.json$")


class AnalysisInputError(ValueError):
    """Raised when the inputs cannot be analysed at all (message names file and fix)."""


@dataclass(frozen=True)
class Run:
    """Metadata of one lm-eval results file."""

    run_id: str
    path: Path
    model: str
    lm_eval_model: str
    model_args: dict
    quant_config: dict
    quant_totals: dict
    baseline_note: str | None
    quant_report: dict | None
    date: float | None
    lm_eval_version: str | None

    @property
    def method(self) -> str:
        return str(self.quant_config.get("method", "none"))

    @property
    def is_baseline(self) -> bool:
        return self.method in BASELINE_METHODS

    @property
    def bits(self) -> float:
        bits = self.quant_config.get("bits")
        return float(bits) if isinstance(bits, (int, float)) and not self.is_baseline else math.nan

    @property
    def effective_bits_per_weight(self) -> float:
        value = self.quant_totals.get("effective_bits_per_weight")
        return float(value) if isinstance(value, (int, float)) else math.nan

    @property
    def config_key(self) -> str:
        """Model + resolved quant config as one canonical string (equal key = same run)."""
        return json.dumps({"model": self.model, "quant": self.quant_config}, sort_keys=True, default=str)

    @property
    def label(self) -> str:
        """Short human label, e.g. ``rtn-w4``, ``laaciq-w3-group-g128-calib_mode=target-calib_langs=he``."""
        if self.is_baseline:
            return "baseline"
        parts = [self.method]
        if not math.isnan(self.bits):
            parts.append(f"w{self.bits:g}")
        config = self.quant_config
        for key in LABEL_KEYS:
            value = config.get(key)
            if isinstance(value, (list, tuple)):
                value = ";".join(str(v) for v in value)
            if value in (None, "", 0, 0.0, "channel", "none", "magnitude", "layer") or (key == "symmetric" and value is True):
                continue
            parts.append(str(value) if key == "granularity" else f"{key}={value}")
            if key == "granularity" and value == "group" and config.get("group_size"):
                parts.append(f"g{config['group_size']}")
        return "-".join(parts)


LABEL_KEYS = ("granularity", "symmetric", "clip", "keep_top", "keep_top_scope", "keep_by", "keep_layers", "keep",
              "quantize_embeddings", "quantize_lm_head", "calib_mode", "calib_langs", "calib_samples", "scan")
"""Quant-config fields shown in run labels when they differ from their defaults."""


@dataclass
class RunSet:
    """All loaded runs. ``aggregates``: one row per (run_id, task, suite, lang, metric, value);
    ``docs``: one row per (run_id, task, suite, lang, doc_id) with ``loglikelihood``,
    ``n_bytes``, ``n_words`` (NaN when the task reports no words) and ``text_hash``."""

    runs: dict[str, Run]
    aggregates: pd.DataFrame
    docs: pd.DataFrame
    problems: list[str] = field(default_factory=list)

    def long_table(self) -> pd.DataFrame:
        """The long table: run metadata joined to every aggregate and per-doc value.

        Columns: run_id, model, method, label, bits, effective_bits_per_weight, the
        quant-config fields (``cfg_<name>``), task, suite, lang, doc_id (empty for
        aggregates), metric, value.
        """
        meta = pd.DataFrame([_run_meta(run) for run in self.runs.values()])
        per_doc = self.docs.melt(
            id_vars=["run_id", "task", "suite", "lang", "doc_id"],
            value_vars=["loglikelihood", "n_bytes", "n_words"],
            var_name="metric",
            value_name="value",
        )
        agg = self.aggregates.assign(doc_id="")
        columns = ["run_id", "task", "suite", "lang", "doc_id", "metric", "value"]
        long = pd.concat([agg[columns], per_doc[columns]], ignore_index=True)
        return meta.merge(long, on="run_id", how="right")


def _run_meta(run: Run) -> dict:
    meta = {
        "run_id": run.run_id,
        "model": run.model,
        "lm_eval_model": run.lm_eval_model,
        "method": run.method,
        "label": run.label,
        "bits": run.bits,
        "effective_bits_per_weight": run.effective_bits_per_weight,
    }
    for key, value in sorted(run.quant_config.items()):
        meta[f"cfg_{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return meta


def parse_model_args(model_args) -> dict:
    """``"pretrained=x,method=rtn,bits=4"`` or a dict -> dict, typed as lm-eval typed it."""
    if isinstance(model_args, dict):
        return dict(model_args)
    if not model_args:
        return {}
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(str(model_args))


def find_result_files(paths) -> list[Path]:
    """All ``results_*.json`` files under the given files/folders (sorted, deduplicated)."""
    found = set()
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            if not _RESULTS_RE.match(path.name):
                raise AnalysisInputError(
                    f"path={path} is not an lm-eval results file; allowed: results_<timestamp>.json or a folder"
                )
            found.add(path.resolve())
        elif path.is_dir():
            found.update(p.resolve() for p in path.rglob("results_*.json"))
        else:
            raise AnalysisInputError(f"path={path} does not exist; pass lm-eval --output_path folders or results_*.json files")
    return sorted(found)


def load_runs(paths) -> RunSet:
    """Load every results file (and its samples) found under ``paths``.

    Raises ``AnalysisInputError`` when no file could be read at all.
    """
    files = find_result_files(paths)
    if not files:
        raise AnalysisInputError(f"paths={list(map(str, paths))} contain no results_*.json; run lm_eval with --output_path")
    runs: dict[str, Run] = {}
    aggregates, docs, problems = [], [], []
    for file in files:
        try:
            results = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(results, dict) or "results" not in results:
                raise ValueError("no 'results' key")
        except (OSError, ValueError) as err:
            problems.append(f"{file}: unreadable results JSON ({err}); skipped — re-run lm_eval for this model or remove the file")
            continue
        run = _make_run(file, results, problems)
        if run.run_id in runs:  # the same file reached through two paths
            continue
        runs[run.run_id] = run
        aggregates.extend(_aggregate_rows(run, results, problems))
        docs.extend(_doc_rows(run, results, problems))
    if not runs:
        raise AnalysisInputError("no readable results file; problems:\n" + "\n".join(problems))
    aggregates_df = pd.DataFrame(aggregates, columns=["run_id", "task", "suite", "lang", "metric", "value"])
    docs_df = pd.DataFrame(
        docs, columns=["run_id", "task", "suite", "lang", "doc_id", "loglikelihood", "n_bytes", "n_words", "text_hash", "text"]
    )
    return RunSet(runs=runs, aggregates=aggregates_df, docs=docs_df, problems=problems)


def _make_run(file: Path, results: dict, problems: list[str]) -> Run:
    config = results.get("config") or {}
    model_args = parse_model_args(config.get("model_args"))
    qd = config.get("quant_disparity") or {}
    lm_eval_model = str(config.get("model", "unknown"))
    if qd.get("quant_config"):
        quant_config = dict(qd["quant_config"])
    elif lm_eval_model == "hf" and not any(model_args.get(k) for k in ("load_in_4bit", "load_in_8bit")):
        quant_config = {"method": "none"}
    else:  # qd-hf without its block (older run) or hf with bnb flags: best effort from model_args
        quant_config = {k: model_args[k] for k in ("method", "bits", "granularity", "group_size") if k in model_args}
        if model_args.get("load_in_4bit") or model_args.get("load_in_8bit"):
            quant_config = {"method": "hf-bnb", "bits": 4 if model_args.get("load_in_4bit") else 8}
        quant_config.setdefault("method", "none")
    model = str(qd.get("model_source") or model_args.get("pretrained") or lm_eval_model)
    stamp = _RESULTS_RE.match(file.name).group("stamp")
    report = qd.get("quant_report") if isinstance(qd.get("quant_report"), dict) else None
    report = report or _load_quant_report(file, stamp, qd.get("quant_report_path"), problems)
    totals = dict(qd.get("quant_totals") or (report or {}).get("totals") or {})
    return Run(
        run_id=f"{file.parent.name}/{file.stem}",
        path=file,
        model=model,
        lm_eval_model=lm_eval_model,
        model_args=model_args,
        quant_config=quant_config,
        quant_totals=totals,
        baseline_note=qd.get("baseline_note"),
        quant_report=report,
        date=_as_float(results.get("date")),
        lm_eval_version=results.get("lm_eval_version"),
    )


def _as_float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _load_quant_report(file: Path, stamp: str, report_path, problems: list[str]) -> dict | None:
    candidates = [file.with_name(f"quant_report_{stamp}.json")]
    if report_path:
        candidates.insert(0, Path(report_path) if Path(report_path).is_absolute() else file.parent / report_path)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                problems.append(f"{candidate}: unreadable quant report ({err}); weight-MSE and kurtosis analyses skip this run")
                return None
    return None


def _leaf_tasks(results: dict) -> list[str]:
    groups = {name for name, subtasks in (results.get("group_subtasks") or {}).items() if subtasks}
    return [task for task in results["results"] if task not in groups]


def _aggregate_rows(run: Run, results: dict, problems: list[str]) -> list[tuple]:
    rows = []
    for task in _leaf_tasks(results):
        suite, lang = split_task_name(task)
        for metric in AGGREGATE_METRICS:
            value = results["results"][task].get(f"{metric},none")
            if value is None or isinstance(value, str):  # absent, or "N/A"
                continue
            value = float(value)
            if metric == "bits_per_byte" and not math.isfinite(value):
                problems.append(f"{run.path}: {task} {metric} = {value} (degenerate run, kept and flagged)")
            rows.append((run.run_id, task, suite, lang, metric, value))
    return rows


def _doc_rows(run: Run, results: dict, problems: list[str]) -> list[tuple]:
    stamp = _RESULTS_RE.match(run.path.name).group("stamp")
    rows = []
    for task in _leaf_tasks(results):
        samples = run.path.with_name(f"samples_{task}_{stamp}.jsonl")
        if not samples.is_file() or not any(f"{metric},none" in results["results"][task] for metric in AGGREGATE_METRICS):
            continue
        try:
            lines = samples.read_text(encoding="utf-8").splitlines()
            for line in lines:
                if line.strip():
                    rows.append(_doc_row(run.run_id, task, json.loads(line)))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            problems.append(f"{samples}: unreadable samples ({err!r}); {task} uses aggregates only (no CIs) — re-run with --log_samples")
            rows = [row for row in rows if row[1] != task]
    return rows


def _doc_row(run_id: str, task: str, sample: dict) -> tuple:
    doc = sample.get("doc") or {}
    suite, lang = split_task_name(task, doc)
    loglikelihood, n_bytes = sample["bits_per_byte"]
    words = sample.get("word_perplexity")
    text = doc.get("text", sample.get("target", ""))
    return (
        run_id,
        task,
        suite,
        lang,
        str(doc.get("doc_id", sample["doc_id"])),
        float(loglikelihood),
        int(n_bytes),
        float(words[1]) if words else math.nan,
        hashlib.sha1(str(text).encode("utf-8")).hexdigest()[:16],
        str(text),
    )
