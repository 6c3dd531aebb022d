"""``save_to``: the quantized model written as an HF folder with its ``quant_report.json``, and
the checks of the target folder before any weight loads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from qd_tasks.folder_swap import check_folder_target, real_folder, replace_folder

if TYPE_CHECKING:
    from torch import nn

REPORT_FILENAME = "quant_report.json"


def check_save_target(save_to: str, pretrained, overwrite: bool = False) -> None:
    """Refuse (one-line ``ValueError``, before any weight loads) a ``save_to`` that is the source
    model folder or a non-empty folder unless ``overwrite``, a folder holding the source model or
    inside it, a file, or an unwritable location."""
    target = os.path.abspath(os.path.expanduser(save_to))
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"save_to={save_to} is an existing file; allowed: a new or empty folder")
    source = _source_folder(pretrained)
    if not overwrite:
        if source is not None and os.path.isdir(target) and os.path.samefile(source, target):
            raise ValueError(f"save_to={save_to} is the source model folder; allowed: another folder, or save_overwrite=true to replace it")
        if os.path.isdir(target) and os.listdir(target):
            raise ValueError(f"save_to={save_to} is a non-empty folder; allowed: a new or empty folder, or save_overwrite=true to replace it")
    check_folder_target(save_to, _protected_inputs(save_to, source), what=f"save_to={save_to}")
    parent = os.path.dirname(str(real_folder(target)))
    while not os.path.isdir(parent):
        if os.path.exists(parent):
            raise ValueError(f"save_to={save_to}: {parent} is a file; allowed: a folder path")
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"save_to={save_to} is not writable ({parent} does not allow writing); allowed: a folder you can write to")


def _source_folder(pretrained) -> str | None:
    """The local model folder ``pretrained`` names (``None`` for a hub id or a model object)."""
    return os.path.abspath(os.path.expanduser(pretrained)) if isinstance(pretrained, str) and os.path.isdir(pretrained) else None


def _protected_inputs(save_to: str | os.PathLike, source: str | None) -> list[str]:
    """The source model folder, unless ``save_to`` is that folder itself (replaced only with
    ``save_overwrite=true``): a ``save_to`` holding it or inside it is never allowed."""
    return [] if source is None or real_folder(source) == real_folder(save_to) else [source]


def save_quantized(model: nn.Module, tokenizer, directory: str | os.PathLike, report: dict, pretrained=None) -> str:
    """Write ``model`` (dequantized weights, HF format, loadable by ``--model hf``), its
    tokenizer and ``quant_report.json`` to ``directory``; return the report path.

    The folder is replaced as a whole (:func:`qd_tasks.folder_swap.replace_folder`): written as a
    hidden sibling, swapped in, the old folder restored on any failure (no weights-less
    ``config.json``, no stale files of an earlier model mixed in). A link is followed to its folder;
    a ``directory`` holding the source model folder ``pretrained`` or inside it is refused.
    """
    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        write_report(report, folder / REPORT_FILENAME)

    what = f"save_to={os.fspath(directory)}"
    replace_folder(directory, write, _protected_inputs(directory, _source_folder(pretrained)), what=what)
    return os.path.join(real_folder(directory), REPORT_FILENAME)


def write_report(report: dict, path: str | os.PathLike) -> None:
    """Strict JSON (non-finite numbers already mapped to null)."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, allow_nan=False)
