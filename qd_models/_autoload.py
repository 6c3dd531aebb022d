"""Make ``--model qd-hf`` and ``--tasks qd_*`` work in lm-eval 0.4.13 without flags.

lm-eval 0.4.13 reads no plugin entry points, so the wheel ships ``quant_disparity.pth``
whose single line imports this module at interpreter start-up. This module imports
nothing heavy (no torch, no lm_eval): it installs a post-import hook that acts only
when lm-eval itself is imported:

* after ``lm_eval.models`` loads (it fills the model registry with lazy placeholders),
  ``qd-hf`` is added the same way (``qd_models.qd_hf:QDHFLM``), so torch/transformers load
  only when the model is used. Registering earlier would make the registry non-empty and
  stop ``get_model`` from importing ``lm_eval.models`` at all;
* after ``lm_eval.tasks.manager`` loads, ``TaskManager`` gets the ``qd_tasks`` folder
  appended to its include paths, so ``lm-eval ls tasks`` and ``--tasks qd_*`` see it;
* after ``lm_eval.loggers.evaluation_tracker`` loads, saving results also writes the quant
  report that ``qd-hf`` embedded in ``results["config"]["quant_disparity"]["quant_report"]``
  next to them, as ``quant_report_<same timestamp>.json``.

Set ``QD_DISABLE_AUTOLOAD=1`` to switch this off; :func:`register` does the same work by
hand (for interpreters started with ``-S``, where ``.pth`` files are not read).
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

MODEL_NAME = "qd-hf"
MODEL_TARGET = "qd_models.qd_hf:QDHFLM"
TASKS_DIR = Path(__file__).resolve().parent.parent / "qd_tasks"


def _register_model(models_module: ModuleType) -> None:
    from lm_eval.api.registry import model_registry as registry

    if MODEL_NAME not in registry:
        registry.register(MODEL_NAME, target=MODEL_TARGET)


def _with_qd_tasks(include_path):
    """Return ``include_path`` (None, a path or a list of paths) with ``TASKS_DIR`` added."""
    if include_path is None:
        return [str(TASKS_DIR)]
    paths = list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
    if any(Path(p).resolve() == TASKS_DIR for p in paths):
        return paths
    return [str(TASKS_DIR), *paths]  # later paths override earlier ones: the user's win


def _patch_task_manager(manager_module: ModuleType) -> None:
    task_manager = manager_module.TaskManager
    if getattr(task_manager.__init__, "_qd_patched", False):
        return
    original_init = task_manager.__init__

    def __init__(self, *args, **kwargs):
        if len(args) >= 2:  # include_path given positionally after verbosity
            args = (args[0], _with_qd_tasks(args[1]), *args[2:])
        else:
            kwargs["include_path"] = _with_qd_tasks(kwargs.get("include_path"))
        original_init(self, *args, **kwargs)

    __init__._qd_patched = True
    __init__.__doc__ = original_init.__doc__
    task_manager.__init__ = __init__


def _patch_evaluation_tracker(tracker_module: ModuleType) -> None:
    tracker = tracker_module.EvaluationTracker
    if getattr(tracker.save_results_aggregated, "_qd_patched", False):
        return
    original_save = tracker.save_results_aggregated

    def save_results_aggregated(self, results: dict, samples: dict | None = None) -> None:
        original_save(self, results, samples)
        report = ((results.get("config") or {}).get("quant_disparity") or {}).get("quant_report")
        if not report or not self.output_path or not getattr(self, "date_id", None):
            return
        path = Path(self.output_path)
        if path.suffix == ".json":  # lm-eval then writes <stem>_<date>.json beside it
            target = path.with_name(f"{path.stem}_quant_report_{self.date_id}.json")
        else:
            target = path / str(self.general_config_tracker.model_name_sanitized)
            target = target / f"quant_report_{self.date_id}.json"
        from qd_models.report import json_safe

        target.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False))

    save_results_aggregated._qd_patched = True
    tracker.save_results_aggregated = save_results_aggregated


_POST_IMPORT: dict[str, Callable[[ModuleType], None]] = {
    "lm_eval.models": _register_model,
    "lm_eval.tasks.manager": _patch_task_manager,
    "lm_eval.loggers.evaluation_tracker": _patch_evaluation_tracker,
}


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of watched modules to run a callback."""

    def find_spec(self, fullname, path, target=None):
        callback = _POST_IMPORT.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            callback(module)

        loader.exec_module = exec_module
        return spec


def register() -> None:
    """Register ``qd-hf`` and the ``qd_*`` tasks now (imports lm-eval's registry)."""
    import lm_eval.loggers.evaluation_tracker
    import lm_eval.models
    import lm_eval.tasks.manager

    _register_model(lm_eval.models)
    _patch_task_manager(lm_eval.tasks.manager)
    _patch_evaluation_tracker(lm_eval.loggers.evaluation_tracker)


def _install() -> None:
    if os.environ.get("QD_DISABLE_AUTOLOAD") == "1":
        return
    if any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        return
    for name, callback in _POST_IMPORT.items():
        if name in sys.modules:  # lm-eval was imported before us: act at once
            callback(sys.modules[name])
    sys.meta_path.insert(0, _PostImportFinder())


_install()
