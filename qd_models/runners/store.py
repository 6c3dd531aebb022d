"""A sweep's output store: one folder per config, written under a temporary name and renamed
when complete (``sweep_complete.json`` marks it), an exclusive lock per output folder, and the
content digests that make a folder's hash change with the code, data and calibration texts."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
from pathlib import Path

from qd_tasks.folder_swap import STAGING_PREFIX

COMPLETE_MARKER = "sweep_complete.json"
LOCK_FILE = ".sweep.lock"
TMP_PREFIX = STAGING_PREFIX  # replace_folder stages a config folder as .tmp-<folder>-<token>


def tree_digest(path: Path) -> str | None:
    """sha1 over the relative names and bytes of a file or of every file under a folder
    (``None`` when it does not exist)."""
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha1()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha1 of the source and bundled data of ``qd_models`` and ``qd_tasks``."""
    import qd_tasks

    digest = hashlib.sha1()
    for package in (Path(__file__).resolve().parent.parent, Path(qd_tasks.__file__).parent):
        digest.update((tree_digest(package) or "").encode())
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` (``RuntimeError`` at once when another sweep holds it)."""
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another qd-sweep is writing to {lock_path.parent}; wait for it or use another --output_path") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_results(folder: Path) -> dict | None:
    """The newest ``results_*.json`` under ``folder`` (``None`` when there is none)."""
    files = sorted(folder.rglob("results_*.json"))
    return json.loads(files[-1].read_text(encoding="utf-8")) if files else None
