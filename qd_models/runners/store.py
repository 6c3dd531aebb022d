"""A sweep's output store: one folder per config, written under a temporary name and renamed
when complete (``sweep_complete.json`` marks it), an exclusive lock per config (several sweeps,
e.g. the shards of one, write one folder; ``flock``, which Linux NFS clients also take on the
server), and the content digests that make a folder's hash change with the code, data and
calibration texts."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import shutil
from pathlib import Path

from qd_tasks.cli_errors import UserInputError
from qd_tasks.folder_swap import STAGING_PREFIX, staged_folder_name

COMPLETE_MARKER = "sweep_complete.json"
LOCK_DIR = ".sweep-locks"
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
def config_lock(output: Path, name: str):
    """Hold the exclusive lock of config folder ``output/name`` (:class:`UserInputError` at once
    when another process holds it)."""
    lock_path = output / LOCK_DIR / f"{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(f"another qd-sweep is writing {name} in {output}; wait for it, or give each process its own --shard K/N") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_tmp(output: Path) -> None:
    """Remove the ``.tmp-<folder>-<token>`` staging folders of killed sweeps (those whose config
    folder no process holds)."""
    for stale in output.glob(f"{TMP_PREFIX}*"):
        name = staged_folder_name(stale.name) or stale.name.removeprefix(TMP_PREFIX)  # an older `.tmp-<folder>`
        try:
            with config_lock(output, name):
                shutil.rmtree(stale, ignore_errors=True)
        except UserInputError:  # being written now
            continue


def read_results(folder: Path) -> dict | None:
    """The newest ``results_*.json`` under ``folder`` (``None`` when there is none)."""
    files = sorted(folder.rglob("results_*.json"))
    return json.loads(files[-1].read_text(encoding="utf-8")) if files else None
