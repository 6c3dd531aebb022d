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
  appended to its include paths, so ``lm-eval ls tasks`` and ``--tasks qd_*`` see it.

Set ``QD_DISABLE_AUTOLOAD=1`` to switch this off; :func:`register` does the same work by
hand (for interpreters started with ``-S``, where ``.pth`` files are not read).
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

MODEL_TARGET = "qd_models.qd_hf:QDHFLM"
TASKS_DIR = Path(__file__).resolve().parent.parent / "qd_tasks"


def _register_model(models_module: ModuleType) -> None:
    from lm_eval.api.registry import model_registry as registry

    from qd_models.run_record import LM_EVAL_MODEL

    if LM_EVAL_MODEL not in registry:
        registry.register(LM_EVAL_MODEL, target=MODEL_TARGET)


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


_POST_IMPORT: dict[str, Callable[[ModuleType], None]] = {
    "lm_eval.models": _register_model,
    "lm_eval.tasks.manager": _patch_task_manager,
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
    import lm_eval.models
    import lm_eval.tasks.manager

    _register_model(lm_eval.models)
    _patch_task_manager(lm_eval.tasks.manager)


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
