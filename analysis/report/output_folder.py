"""The ``--out`` folder of ``qd-analyze``: never half-written, never mixed with the stale files of
an earlier report, never replacing files ``qd-analyze`` did not write without ``--overwrite``.

The report is written into a new sibling folder and swapped in when complete (:mod:`qd_tasks.folder_swap`);
:data:`MANIFEST` in it lists every file written. An existing ``--out`` is replaced when it is empty
or holds only the files of its own manifest (an earlier report), otherwise only with ``overwrite``;
never when it holds an input or lies inside one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from qd_tasks.folder_swap import check_folder_target, replace_folder

MANIFEST = ".qd-analyze-manifest.json"


def check_output_folder(out: str | Path, inputs: Iterable[str | Path], overwrite: bool = False) -> None:
    """Raise ``ValueError`` (one line) when ``out`` may not be replaced by a new report: it is a
    file, it holds one of ``inputs`` or lies inside one (every input, even with ``overwrite``), or
    (without ``overwrite``) it holds files no manifest lists."""
    check_folder_target(out, inputs, what=f"out={out}")
    folder = Path(out)
    if not folder.exists() or overwrite:
        return
    foreign = sorted(set(_entries(folder)) - _report_entries(folder))
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ValueError(f"out={out} holds files qd-analyze did not write ({foreign[0]}{more}); "
                         "allowed: a new or empty folder, an earlier qd-analyze --out, or --overwrite to replace it")


def write_report_folder(out: str | Path, write: Callable[[Path], object], inputs: Iterable[str | Path] = ()) -> None:
    """Run ``write(folder)`` on a new sibling folder of ``out``, list what it wrote in
    :data:`MANIFEST`, then swap it in place of ``out`` (:func:`qd_tasks.folder_swap.replace_folder`:
    on any failure ``out`` is left as it was)."""
    def write_with_manifest(staging: Path) -> None:
        write(staging)
        files = sorted(path.relative_to(staging).as_posix() for path in staging.rglob("*") if path.is_file())
        (staging / MANIFEST).write_text(json.dumps({"written_by": "qd-analyze", "files": files}, indent=1), encoding="utf-8")

    replace_folder(out, write_with_manifest, inputs, what=f"out={out}")


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
