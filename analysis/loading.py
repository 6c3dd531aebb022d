"""Read lm-eval 0.4.13 output (``results_*.json`` + ``samples_*.jsonl``) into tables.

A *run* is one ``results_<timestamp>.json``. Its identity is the model (``model_source``
of the ``qd-hf`` block, else ``pretrained`` from ``model_args``, else ``config.model``; a local
folder by its name, so tables and reports carry no machine paths: ``model_path`` keeps it),
the resolved quantization config and its scoring (:func:`scoring_identity`: dtype, how a
rolling document is tokenized, log-softmax dtype, max_length, revision, prefix token): runs
that differ in scoring are neither duplicates of each other nor paired. Problems with single files (corrupted JSON,
unreadable samples, non-finite metrics) are collected in ``RunSet.problems`` as one line
each, naming the file and what to do, instead of stopping the whole analysis.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from qd_models import run_record
from qd_models.run_record import ROLLING_PREFIX_TEXT, parse_model_args
from qd_tasks.languages import split_task_name

AGGREGATE_METRICS = ("bits_per_byte", "byte_perplexity", "word_perplexity")
BASELINE_METHODS = ("none",)
RESULTS_RE = re.compile(r"^results_(?P<stamp>.+)\.json$")
"""An lm-eval results file name; ``stamp`` names its samples files (:func:`samples_path`)."""


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
    scoring: dict = field(default_factory=dict)
    model_path: str | None = None
    model_fingerprint: str | None = None
    """The weights' fingerprint (``quant_disparity.model_fingerprint``; a saved model: its source's);
    ``None`` for results written before it was recorded or by other models than ``qd-hf``."""
    labels: tuple[str, str] | None = None
    """``(label, family)`` (:func:`qd_models.run_record.run_labels`: stored with the run, or computed)."""

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
        """Model + resolved quant config + scoring as one canonical string (equal key = same run)."""
        return json.dumps({"model": self.model, "weights": self.model_fingerprint, "quant": self.quant_config, "scoring": self.scoring},
                          sort_keys=True, default=str)

    def scoring_for(self, request: str) -> dict:
        """The scoring fields a score of one request type depends on: ``rolling`` (perplexity:
        ``add_bos_token`` only reaches other request types, the rolling tokenization is in
        ``rolling``) or ``other`` (multiple choice, generation: everything but ``rolling``).
        Runs are paired only when these are equal."""
        ignored = {"rolling": "add_bos_token", "other": "rolling"}[request]
        return {k: v for k, v in self.scoring.items() if k != ignored}

    @property
    def rolling_scoring_key(self) -> str:
        """:meth:`scoring_for` ``rolling`` as one canonical string."""
        return json.dumps(self.scoring_for("rolling"), sort_keys=True, default=str)

    @property
    def label(self) -> str:
        """Short human label, e.g. ``rtn-w4``, ``laaciq-w3-calib_mode=target-calib_langs=he`` (:func:`qd_models.run_record.config_label`)."""
        return (self.labels or run_record.run_labels(self.quant_config))[0]

    @property
    def family(self) -> str:
        """The label without the bits (:func:`qd_models.run_record.config_family`)."""
        return (self.labels or run_record.run_labels(self.quant_config))[1]


@dataclass
class RunSet:
    """All loaded runs. ``aggregates``: one row per (run_id, task, suite, lang, metric, value);
    ``docs``: one row per (run_id, task, suite, lang, doc_id) with ``loglikelihood``,
    ``n_bytes``, ``n_words`` (NaN when the task reports no words) and ``text_hash``."""

    runs: dict[str, Run]
    aggregates: pd.DataFrame
    docs: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    root: Path | None = None

    def relative(self, text: str) -> str:
        """``text`` with the inputs' common folder removed from every path in it (reports carry no machine paths)."""
        return text.replace(f"{self.root}{os.sep}", "") if self.root is not None else text

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


def _dtype_name(value) -> str | None:
    return None if value in (None, "", "auto") else str(value).removeprefix("torch.")


def scoring_identity(config: dict, model_args: dict, qd: dict) -> dict:
    """What a score depends on besides model and weights, from lm-eval's ``results["config"]``.

    ``dtype``: the loaded model's dtype (lm-eval's ``model_dtype``); ``softmax_dtype``: the
    log-softmax / summation dtype (``softmax_dtype`` model arg, else the model dtype, as in HFLM);
    ``rolling``: how a rolling document is tokenized — qd-hf records ``prefix+text``; an ``hf``
    run with ``add_bos_token=False`` does the same, otherwise the tokenizer's default special
    tokens come after lm-eval's prefix token (``prefix+tokenizer-default``: a double BOS on
    BOS-adding tokenizers); ``add_bos_token`` (other request types), ``max_length``,
    ``revision``, ``prefix_token_id`` (a custom one only)."""
    recorded = dict(qd.get("scoring") or {})
    dtype = _dtype_name(config.get("model_dtype")) or _dtype_name(model_args.get("dtype") or model_args.get("torch_dtype"))
    add_bos = model_args.get("add_bos_token")
    if "rolling" in recorded:
        rolling = recorded["rolling"]
    else:
        rolling = ROLLING_PREFIX_TEXT if add_bos is False else "prefix+tokenizer-default"
    softmax = _dtype_name(model_args.get("softmax_dtype")) or _dtype_name(recorded.get("softmax_dtype")) or dtype
    prefix = model_args.get("prefix_token_id")
    return {
        "dtype": dtype,
        "softmax_dtype": softmax,
        "rolling": rolling,
        "add_bos_token": add_bos,
        "max_length": model_args.get("max_length"),
        "revision": str(model_args.get("revision") or config.get("model_revision") or "main"),
        "prefix_token_id": int(prefix) if prefix not in (None, "") else None,
    }


def find_result_files(paths) -> list[Path]:
    """All ``results_*.json`` files under the given files/folders (sorted, deduplicated)."""
    found = set()
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            if not RESULTS_RE.match(path.name):
                raise AnalysisInputError(
                    f"path={path} is not an lm-eval results file; allowed: results_<timestamp>.json or a folder"
                )
            found.add(path.resolve())
        elif path.is_dir():  # a sweep's unfinished ``.tmp-*`` folders are not runs
            found.update(p.resolve() for p in path.rglob("results_*.json")
                         if not any(part.startswith(".tmp-") for part in p.relative_to(path).parts))
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
    root = Path(os.path.commonpath([str(file.parent) for file in files]))
    if any(file.parent == root for file in files):  # run ids keep at least the results file's folder
        root = root.parent
    for file in files:
        try:
            results = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(results, dict) or "results" not in results:
                raise ValueError("no 'results' key")
        except (OSError, ValueError) as err:
            problems.append(f"{file}: unreadable results JSON ({err}); skipped — re-run lm_eval for this model or remove the file")
            continue
        results = checked_results(file, results, problems)
        if results is None:
            continue
        try:
            run = _make_run(file, results, root, problems)
        except (TypeError, ValueError, AttributeError, KeyError) as err:  # a field of a form no lm-eval writes
            problems.append(f"{file}: unreadable results ({err!r}); skipped — re-run lm_eval for this model or remove the file")
            continue
        if run.quant_config.get(run_record.SAVED_MODEL) is None and run.is_baseline and _missing_folder(run.model_args.get("pretrained")):
            problems.append(f"{file}: the model folder {Path(str(run.model_args['pretrained'])).name} is not on this machine; read as a "
                            "baseline — if it was written by qd-hf save_to it is a quantized model: analyse where the folder is, or pass --baseline")
        if run.run_id in runs:  # two model folders with the same name: keep the full relative path
            run = replace(run, run_id=file.relative_to(root).with_suffix("").as_posix())
        runs[run.run_id] = run
        aggregates.extend(_aggregate_rows(run, results, problems))
        docs.extend(_doc_rows(run, results, problems))
    if not runs:
        raise AnalysisInputError("no readable results file; problems:\n" + "\n".join(problems))
    aggregates_df = pd.DataFrame(aggregates, columns=["run_id", "task", "suite", "lang", "metric", "value"])
    docs_df = pd.DataFrame(
        docs, columns=["run_id", "task", "suite", "lang", "doc_id", "loglikelihood", "n_bytes", "n_words", "text_hash", "text"]
    )
    return RunSet(runs=runs, aggregates=aggregates_df, docs=docs_df, problems=problems, root=root)


def checked_results(file: Path, results: dict, problems: list[str]) -> dict | None:
    """``results`` with every field the analysis reads checked for the form lm-eval and qd-hf write
    (hand-edited files): one line in ``problems`` per bad field, naming the file and field. A field
    the run's identity depends on (``results``, ``config``, the ``quant_disparity`` block, its
    ``quant_config``/``scoring``) skips the run (``None``); a bad task result drops that task; a bad
    ``quant_totals``/``quant_report``/``fidelity`` is ignored."""
    skip = "; run skipped — re-run lm_eval for this model or restore the file"
    tasks = results.get("results")
    if not isinstance(tasks, dict) or not tasks:
        problems.append(f"{file}: field results is {_form(tasks)}, not an object of task results{skip}")
        return None
    config = results.get("config")
    if config is not None and not isinstance(config, dict):
        problems.append(f"{file}: field config is {_form(config)}, not an object{skip}")
        return None
    qd = (config or {}).get(run_record.QD_BLOCK)
    if qd is not None and not isinstance(qd, dict):
        problems.append(f"{file}: field config.{run_record.QD_BLOCK} is {_form(qd)}, not an object{skip}")
        return None
    qd = dict(qd or {})
    for name in (run_record.QUANT_CONFIG, run_record.SCORING):
        if qd.get(name) is not None and not isinstance(qd[name], dict):
            problems.append(f"{file}: field config.{run_record.QD_BLOCK}.{name} is {_form(qd[name])}, not an object{skip}")
            return None
    ignored = "; ignored (the rest of the run is used)"
    if qd.get(run_record.QUANT_TOTALS) is not None and not isinstance(qd[run_record.QUANT_TOTALS], dict):
        problems.append(f"{file}: field config.{run_record.QD_BLOCK}.{run_record.QUANT_TOTALS} is {_form(qd[run_record.QUANT_TOTALS])}, not an object{ignored}")
        qd[run_record.QUANT_TOTALS] = None
    if qd.get(run_record.QUANT_REPORT) is not None and (problem := quant_report_problem(qd[run_record.QUANT_REPORT])):
        problems.append(f"{file}: field config.{run_record.QD_BLOCK}.{run_record.QUANT_REPORT} {problem}{ignored}")
        qd[run_record.QUANT_REPORT] = None
    fidelity = qd.get(run_record.FIDELITY)
    if fidelity is not None and not (isinstance(fidelity, dict) and isinstance(fidelity.get("files", {}), dict)):
        field_name, value = ("fidelity.files", fidelity.get("files")) if isinstance(fidelity, dict) else ("fidelity", fidelity)
        problems.append(f"{file}: field config.{run_record.QD_BLOCK}.{field_name} is {_form(value)}, not an object{ignored}")
        qd[run_record.FIDELITY] = None
    groups = results.get("group_subtasks")
    if groups is not None and not (isinstance(groups, dict) and all(isinstance(v, list) for v in groups.values())):
        problems.append(f"{file}: field group_subtasks is not an object of task lists{ignored}")
        groups = None
    good = {task: value for task, value in tasks.items() if isinstance(value, dict)}
    for task in tasks.keys() - good.keys():
        problems.append(f"{file}: field results.{task} is {_form(tasks[task])}, not an object; task {task} skipped")
    if not good:
        return None
    config = {**(config or {}), **({run_record.QD_BLOCK: qd} if qd else {})}
    return {**results, "results": good, "config": config, "group_subtasks": groups or {}}


def quant_report_problem(report) -> str | None:
    """Why ``report`` is not a quant report of the form :mod:`qd_models.engine` writes (``None`` when it is)."""
    if not isinstance(report, dict):
        return f"is {_form(report)}, not an object"
    for name in ("config", "totals", "calibration"):
        if report.get(name) is not None and not isinstance(report[name], dict):
            return f"has {name} = {_form(report[name])}, not an object"
    if isinstance(report.get("calibration"), dict) and not isinstance(report["calibration"].get("per_language", {}), dict):
        return "has calibration.per_language that is not an object"
    layers = report.get("layers")
    if layers is not None and not (isinstance(layers, list) and all(isinstance(layer, dict) for layer in layers)):
        return "has layers that are not a list of objects"
    return None


def _form(value) -> str:
    """A short description of a JSON value for a problem line: ``the string 'x'``, ``null``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (list, dict)):
        return f"an empty {'list' if isinstance(value, list) else 'object'}" if not value else ("a list" if isinstance(value, list) else "an object")
    return f"the {type(value).__name__} {value!r}"


def _missing_folder(pretrained) -> bool:
    """``pretrained`` is written as a local folder path (absolute, ``./``, ``../``, ``~``) that is not on this machine."""
    return (isinstance(pretrained, str) and pretrained.startswith(("/", "./", "../", "~"))
            and not Path(pretrained).expanduser().exists())


def _make_run(file: Path, results: dict, root: Path, problems: list[str]) -> Run:
    config = results.get("config") or {}
    model_args = parse_model_args(config.get("model_args"))
    qd = run_record.qd_block(results)
    lm_eval_model = str(config.get("model", "unknown"))
    if qd.get(run_record.QUANT_CONFIG):
        quant_config = dict(qd[run_record.QUANT_CONFIG])
    elif model_args.get("load_in_4bit") or model_args.get("load_in_8bit"):  # hf with bitsandbytes flags
        quant_config = {"method": "hf-bnb", "bits": 4 if model_args.get("load_in_4bit") else 8}
    else:
        quant_config = {"method": "none"}
    model = str(qd.get(run_record.MODEL_SOURCE) or model_args.get("pretrained") or lm_eval_model)
    report = qd.get(run_record.QUANT_REPORT) if isinstance(qd.get(run_record.QUANT_REPORT), dict) else None
    fingerprint = qd.get(run_record.MODEL_FINGERPRINT)
    saved = _saved_quantization(model_args.get("pretrained")) if quant_config.get("method") == "none" else None
    if saved is not None:  # a folder written by qd-hf save_to (or another quantizer), evaluated as a plain model
        quant_config, report = saved
        if report is not None and (problem := quant_report_problem(report)):
            problems.append(f"{Path(model_args['pretrained']).name}/quant_report.json {problem}; its config is used, the rest ignored")
            report = None
        model = str((report or {}).get(run_record.MODEL_SOURCE) or model)
        fingerprint = (report or {}).get(run_record.MODEL_FINGERPRINT)  # the weights it was quantized from
    totals = dict(qd.get(run_record.QUANT_TOTALS) or (report or {}).get("totals") or {})
    return Run(
        run_id=run_record.run_id(file.relative_to(root).with_suffix("").parts),
        path=file,
        model=Path(model).name if Path(model).is_absolute() else model,  # no machine paths in tables and reports
        model_path=model if Path(model).is_absolute() else None,
        lm_eval_model=lm_eval_model,
        model_args=model_args,
        quant_config=quant_config,
        quant_totals=totals,
        baseline_note=qd.get(run_record.BASELINE_NOTE),
        quant_report=report,
        date=_as_float(results.get("date")),
        lm_eval_version=results.get("lm_eval_version"),
        scoring=scoring_identity(config, model_args, qd),
        model_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        labels=run_record.run_labels(quant_config, qd),
    )


def _saved_quantization(pretrained) -> tuple[dict, dict | None] | None:
    """(quant config, quant report) of a local model folder that holds a quantized model:
    ``quant_report.json`` (qd-hf ``save_to``; its config, and ``model_source`` = the model it
    was quantized from) or a ``quantization_config`` in ``config.json`` (GPTQ, AWQ, bnb...);
    ``None`` for anything else (a hub id, a folder not on this machine, an original model)."""
    if not isinstance(pretrained, str) or not Path(pretrained).is_dir():
        return None
    folder = Path(pretrained)
    try:
        report = json.loads((folder / "quant_report.json").read_text(encoding="utf-8"))
        if isinstance(report, dict) and isinstance(report.get("config"), dict):
            return {**report["config"], run_record.SAVED_MODEL: True}, report
    except (OSError, ValueError):
        pass
    try:
        external = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(external, dict):
        return None
    bits = external.get("bits") or (4 if external.get("load_in_4bit") else 8 if external.get("load_in_8bit") else None)
    config = {"method": str(external.get("quant_method") or "external"), run_record.SAVED_MODEL: True}
    if isinstance(bits, (int, float)):
        config["bits"] = bits
    return config, None


def _as_float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _perplexity_tasks(run: Run, results: dict, problems: list[str]) -> list[str]:
    """Leaf tasks reporting a perplexity metric (the others — multiple choice, generation — are
    read by :mod:`analysis.benchmark_loading`)."""
    return [task for task in run_record.leaf_tasks(results) if any(f"{metric},none" in results["results"][task] for metric in AGGREGATE_METRICS)]


def _aggregate_rows(run: Run, results: dict, problems: list[str]) -> list[tuple]:
    rows = []
    for task in _perplexity_tasks(run, results, problems):
        suite, lang = split_task_name(task)
        for metric in AGGREGATE_METRICS:
            value = results["results"][task].get(f"{metric},none")
            if value is None or isinstance(value, str):  # absent, or "N/A"
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{run.path}: {task} {metric} = {str(value)[:60]} is not a number; skipped")
                continue
            value = float(value)
            if metric == "bits_per_byte" and not math.isfinite(value):
                problems.append(f"{run.path}: {task} {metric} = {value} (degenerate run, kept and flagged)")
            rows.append((run.run_id, task, suite, lang, metric, value))
    return rows


def samples_path(results_file: Path, task: str) -> Path:
    """The ``samples_<task>_<stamp>.jsonl`` lm-eval writes beside ``results_<stamp>.json`` (present or not)."""
    stamp = RESULTS_RE.match(results_file.name).group("stamp")
    return results_file.with_name(f"samples_{task}_{stamp}.jsonl")


def _doc_rows(run: Run, results: dict, problems: list[str]) -> list[tuple]:
    tasks = _perplexity_tasks(run, results, [])
    files = {task: samples_path(run.path, task) for task in tasks}
    has_samples = any(path.is_file() for path in files.values())
    rows = []
    for task, samples in files.items():
        if not samples.is_file():
            if has_samples:  # the run logged samples, but not for this task
                problems.append(f"{samples}: missing (other tasks of this run have samples); {task} uses aggregates only (no CIs)")
            continue
        try:
            lines = samples.read_text(encoding="utf-8").splitlines()
            for line in lines:
                if line.strip():
                    row = _doc_row(run.run_id, task, json.loads(line))
                    if row[5] > 0:  # a log-probability above 0: a probability above 1
                        problems.append(f"{samples}: doc {row[4]} has log-likelihood {row[5]:+g} > 0 (impossible for a probability); "
                                        "that document is excluded — re-run with --log_samples to rewrite the file")
                        continue
                    rows.append(row)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            problems.append(f"{samples}: unreadable samples ({err!r}); {task} uses aggregates only (no CIs) — re-run with --log_samples to rewrite it")
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
