"""Replace a folder as a whole: build the new one beside it, swap it in, restore the old one on any failure.

Every command that writes a folder of results (``save_to``, ``qd-analyze --out``, ``qd-make-tasks``,
the sweep's per-config folders) goes through :func:`replace_folder`, so a failure at any step leaves
the folder as it was and never mixes old and new files. The new content is written into a hidden
sibling ``.tmp-<name>-<token>`` (same file system: each rename is atomic); the old folder is moved to
``.old-<name>-<token>`` for the swap and removed once the new one is in place. A symbolic link is
followed to the folder it names (the link stays a link). A folder that holds one of the command's
inputs, or lies inside one, is never replaced.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

STAGING_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
TOKEN_HEX_DIGITS = 4
"""Bytes of the random token in staging and old-folder names (``secrets.token_hex``)."""
T = TypeVar("T")


def staged_folder_name(name: str) -> str | None:
    """The target folder name of a staging folder name ``.tmp-<name>-<token>`` (``None`` for any other name)."""
    stem, _, token = name.removeprefix(STAGING_PREFIX).rpartition("-")
    if not name.startswith(STAGING_PREFIX) or not stem or len(token) != TOKEN_HEX_DIGITS * 2:
        return None
    return stem


def real_folder(target: str | os.PathLike) -> Path:
    """The absolute path ``target`` names, every symbolic link followed (also a dangling one)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(target))))


def check_folder_target(target: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str | None = None) -> Path:
    """The real folder ``target`` names; one-line ``ValueError`` (``what``, default ``target``, names the
    parameter) when it is an existing file, is one of ``inputs``, holds one or lies inside one (an
    input is compared both as written, a link itself, and as the folder it names)."""
    what = what or f"{target}"
    real = real_folder(target)
    if real.exists() and not real.is_dir():
        raise ValueError(f"{what} is an existing file; allowed: a folder")
    for path in inputs:
        for source in {real_folder(path), Path(os.path.abspath(os.path.expanduser(os.fspath(path))))}:  # the link too
            if real == source or real in source.parents:
                raise ValueError(f"{what} holds the input {path}; allowed: a folder outside the inputs")
            if source in real.parents:
                raise ValueError(f"{what} is inside the input {path}; allowed: a folder outside the inputs")
    return real


def replace_folder(target: str | os.PathLike, write: Callable[[Path], T],
                   inputs: Iterable[str | os.PathLike] = (), what: str | None = None) -> T:
    """Run ``write(staging)`` on a new hidden sibling of ``target``'s real folder, then put it in
    place of that folder; return what ``write`` returned. On any failure (``write`` raising, either rename
    failing, Ctrl-C) the staging folder is removed and the old folder is back in place. Refusals as
    :func:`check_folder_target`, before ``write`` runs."""
    real = check_folder_target(target, inputs, what)
    real.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(TOKEN_HEX_DIGITS)
    staging = real.parent / f"{STAGING_PREFIX}{real.name}-{token}"
    old = real.parent / f"{OLD_PREFIX}{real.name}-{token}"
    staging.mkdir()
    try:
        result = write(staging)
        had_old = real.exists()
        if had_old:
            os.rename(real, old)
        try:
            os.rename(staging, real)
        except BaseException:
            if had_old:
                _restore(old, real)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
    return result


def _restore(old: Path, real: Path) -> None:
    """Move ``old`` back to ``real`` (a failure says where the old contents are)."""
    try:
        os.rename(old, real)
    except OSError as error:
        raise OSError(f"{real} could not be restored after a failed swap; its old contents are in {old} ({error})") from error
