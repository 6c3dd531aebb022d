"""The ``--out`` folder of ``qd-analyze``: never half-written, never mixed with the stale files of
an earlier report, never replacing files ``qd-analyze`` did not write without ``--overwrite``.

The report is written into a new sibling folder (``.<name>.tmp-*``) and swapped in when complete;
:data:`MANIFEST` in it lists every file written. An existing ``--out`` is replaced when it is empty
or holds only the files of its own manifest (an earlier report), otherwise only with ``overwrite``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

MANIFEST = ".qd-analyze-manifest.json"


def check_output_folder(out: str | Path, inputs: Iterable[str | Path], overwrite: bool = False) -> None:
    """Raise ``ValueError`` (one line) when ``out`` may not be replaced by a new report: it is a
    file, it holds one of ``inputs``, or (without ``overwrite``) it holds files no manifest lists."""
    folder = Path(out)
    resolved = folder.resolve()
    for path in inputs:
        if resolved == Path(path).resolve() or resolved in Path(path).resolve().parents:
            raise ValueError(f"out={out} holds the input {path}; allowed: a folder outside the inputs")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"out={out} is an existing file; allowed: a folder")
    if overwrite:
        return
    foreign = sorted(set(_entries(folder)) - _report_entries(folder))
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ValueError(f"out={out} holds files qd-analyze did not write ({foreign[0]}{more}); "
                         "allowed: a new or empty folder, an earlier qd-analyze --out, or --overwrite to replace it")


def replace_folder(out: str | Path, write: Callable[[Path], object]) -> None:
    """Run ``write(folder)`` on a new sibling folder of ``out``, list what it wrote in
    :data:`MANIFEST`, then put it in place of ``out`` (the old folder is removed; on failure
    the new one is, and ``out`` is left as it was)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    staging, old = out.parent / f".{out.name}.tmp-{token}", out.parent / f".{out.name}.old-{token}"
    staging.mkdir()
    try:
        write(staging)
        files = sorted(path.relative_to(staging).as_posix() for path in staging.rglob("*") if path.is_file())
        (staging / MANIFEST).write_text(json.dumps({"written_by": "qd-analyze", "files": files}, indent=1), encoding="utf-8")
        if out.exists():
            os.rename(out, old)
        os.rename(staging, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.rename(old, out)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (relative POSIX paths), the manifest left out."""
    return [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.name != MANIFEST or path.parent != folder]


def _report_entries(folder: Path) -> set[str]:
    """The files the manifest of ``folder`` lists and the folders holding them (empty when unreadable)."""
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    entries = set()
    for name in map(str, files):
        entries.add(name)
        entries.update(parent.as_posix() for parent in Path(name).parents if parent != Path("."))
    return entries
