"""What the runners need from lm-eval: one ``TaskManager`` for a list of tasks, and results
written as a standalone ``lm_eval --model qd-hf`` run writes them (model args are parsed by
:func:`qd_models.run_record.parse_model_args`)."""

from __future__ import annotations

from pathlib import Path

from qd_models.run_record import LM_EVAL_MODEL, QUANT_CONFIG, SCAN, label_fields, parse_model_args, qd_block


def task_manager(tasks, include_path=None, manager=None):
    """A ``TaskManager`` that knows every task of ``tasks``: ``manager`` if given, else the qd
    tasks only when they cover ``tasks`` (fast), else lm-eval's full index; one-line
    ``ValueError`` naming unknown tasks."""
    from lm_eval.tasks import TaskManager

    manager = manager or TaskManager(include_path=include_path, include_defaults=False)
    if any(task not in manager.all_tasks for task in tasks):
        manager = TaskManager(include_path=include_path)
    missing = [task for task in tasks if task not in manager.all_tasks]
    if missing:
        raise ValueError(f"tasks={missing} are unknown to lm-eval; allowed: names listed by `lm-eval ls tasks`")
    return manager


def save_as_standalone(tracker, results: dict, lm, model_args: str, scan: str | None, log_samples: bool) -> None:
    """Write ``results`` (and samples) with lm-eval's ``tracker`` as ``lm_eval --model qd-hf
    --model_args <model_args>`` records them; a scan's label goes into ``quant_config`` (and the stored
    config label and family are those of the config with it)."""
    results["config"]["model"] = LM_EVAL_MODEL
    general = tracker.general_config_tracker
    general.model_source = LM_EVAL_MODEL
    if "pretrained" not in parse_model_args(model_args):  # lm-eval would pick a random folder name
        from lm_eval.utils import sanitize_model_name

        general.model_name = Path(str(lm.pretrained)).name
        general.model_name_sanitized = sanitize_model_name(general.model_name)
    if scan is not None:
        block = qd_block(results)
        block[QUANT_CONFIG][SCAN] = scan
        block.update(label_fields(block[QUANT_CONFIG]))
    samples = results.pop("samples", None) if log_samples else None
    tracker.save_results_aggregated(results=results, samples=samples)
    if samples is not None:
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
