"""Render perplexity task suites (template + per-language subtasks + group) as YAML text.

Shared by ``scripts/generate_tasks.py`` (the bundled suites) and ``qd_tasks.make_tasks``
(user corpora). A suite is a folder holding ``_<group>_template_yaml`` (common keys),
``<group>_<suffix>.yaml`` per language (``include:`` of the template) and ``_<group>.yaml``
(the group, averaging ``bits_per_byte`` over languages with equal weight).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

TASK_VERSION = 1.0
AGGREGATE_PERPLEXITY = "qd_tasks.metrics.weighted_perplexity"
LOAD_TASK_DATASET = "qd_tasks.corpus.load_task_dataset"
LOAD_UDHR_DATASET = "qd_tasks.udhr.load_udhr_dataset"
FLORES_DATASET = "openlanguagedata/flores_plus"
FLORES_SPLIT = "devtest"


class FunctionRef(str):
    """A ``!function module.name`` reference, written as a tagged YAML scalar."""


class _TaskDumper(yaml.SafeDumper):
    pass


_TaskDumper.add_representer(FunctionRef, lambda dumper, ref: dumper.represent_scalar("!function", str(ref)))


def dump_yaml(config: dict, comment: str) -> str:
    """YAML text of ``config`` (key order kept) under a ``#`` comment header."""
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return header + yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True, width=100)


def ppl_metric_list(word_perplexity: bool) -> list[dict]:
    """``bits_per_byte`` and ``byte_perplexity``, plus ``word_perplexity`` if asked; perplexities use the inf-safe aggregation."""
    metrics = [{"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False}]
    names = ["byte_perplexity", "word_perplexity"] if word_perplexity else ["byte_perplexity"]
    metrics += [
        {"metric": name, "aggregation": FunctionRef(AGGREGATE_PERPLEXITY), "higher_is_better": False}
        for name in names
    ]
    return metrics


@dataclass(frozen=True)
class Subtask:
    """One language of a suite: task-name ``suffix``, a human ``alias``, data selection, metric choice."""

    suffix: str
    alias: str
    data: dict  # keys merged into the subtask YAML (dataset_kwargs or dataset_name)
    word_perplexity: bool


def corpus_template() -> dict:
    """Template keys for a JSONL corpus (each subtask selects its data with ``corpus_dataset_kwargs``)."""
    return {
        "output_type": "loglikelihood_rolling",
        "custom_dataset": FunctionRef(LOAD_TASK_DATASET),
        "test_split": "test",
        "doc_to_text": "",
        "doc_to_target": "text",
        "metadata": {"version": TASK_VERSION},
    }


def corpus_dataset_kwargs(corpus: dict, lang: str) -> dict:
    """Subtask keys selecting language ``lang`` of ``corpus`` (``{"corpus_split": s}`` or ``{"corpus_file": path}``)."""
    return {"dataset_kwargs": {**corpus, "corpus_lang": lang}}


def udhr_template() -> dict:
    """Template keys for the bundled UDHR corpus (each subtask selects a declaration with ``dataset_kwargs``)."""
    return {**corpus_template(), "custom_dataset": FunctionRef(LOAD_UDHR_DATASET)}


def flores_template() -> dict:
    """Template keys for FLORES+ (gated on the HF hub: accept its terms and log in first)."""
    return {
        "output_type": "loglikelihood_rolling",
        "dataset_path": FLORES_DATASET,
        "test_split": FLORES_SPLIT,
        "doc_to_text": "",
        "doc_to_target": "text",
        "metadata": {"version": TASK_VERSION},
    }


def render_suite(group: str, template: dict, subtasks: list[Subtask], comment: str) -> dict[str, str]:
    """File name -> YAML text for a whole suite."""
    template_name = f"_{group}_template_yaml"
    files = {template_name: dump_yaml(template, comment)}
    for subtask in subtasks:
        config = {
            "include": template_name,
            "task": f"{group}_{subtask.suffix}",
            "task_alias": subtask.alias,
            **subtask.data,
            "metric_list": ppl_metric_list(subtask.word_perplexity),
        }
        files[f"{group}_{subtask.suffix}.yaml"] = dump_yaml(config, comment)
    group_config = {
        "group": group,
        "task": [f"{group}_{subtask.suffix}" for subtask in subtasks],
        "aggregate_metric_list": [{"metric": "bits_per_byte", "aggregation": "mean", "weight_by_size": False}],
        "metadata": {"version": TASK_VERSION},
    }
    files[f"_{group}.yaml"] = dump_yaml(group_config, comment)
    return files


def write_suite(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """Write ``files`` into ``out_dir`` (created if needed); return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
