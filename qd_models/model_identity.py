"""A model's weight fingerprint (standard library only): what makes two runs "the same model".

:func:`model_fingerprint` of a local model folder is ``sha256:<hex>``, a sha256 over the name and
content hash of every weight file in it (``*.safetensors``, ``*.bin``, ... :data:`WEIGHT_SUFFIXES`;
the folder's path and name are not part of it). Each file's content hash is cached in
``cache_dir()/weights`` by (resolved path, size, mtime_ns), so a rerun does not rehash a 1 GB
shard; entries are written atomically and an unreadable entry is a miss. A hub id (not a local
folder) has no files here: its fingerprint is ``name:<id>@<revision>`` (:func:`is_weight_hash`
says which kind a fingerprint is). Used by the sweep's folder hash, the fidelity identity, the
results' ``quant_disparity`` block and ``qd-analyze``'s pairing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from qd_models.cache_dir import cache_dir

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".msgpack", ".h5")
HASH_PREFIX = "sha256:"
NAME_PREFIX = "name:"
_CHUNK = 1 << 24


def weight_files(folder: Path) -> list[Path]:
    """The weight files under ``folder`` (hidden folders and files skipped), sorted by relative name."""
    found = []
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES) and not any(part.startswith(".") for part in parts):
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def file_sha256(path: Path) -> str:
    """The sha256 of ``path``'s bytes, cached by (resolved path, size, mtime_ns)."""
    resolved = path.resolve()
    stat = resolved.stat()
    key = {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = _cache_folder() / (hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest() + ".json")
    try:
        cached = json.loads(entry.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and cached.get("key") == key and isinstance(cached.get("sha256"), str) and len(cached["sha256"]) == 64:
            return cached["sha256"]
    except (OSError, ValueError):
        pass  # absent or unreadable entry: a miss
    digest = hashlib.sha256()
    with open(resolved, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    value = digest.hexdigest()
    _write_atomic(entry, json.dumps({"key": key, "sha256": value}))
    return value


def model_fingerprint(pretrained, revision=None) -> str:
    """``sha256:<hex>`` over the weight files of a local model folder (module doc), else
    ``name:<pretrained>@<revision or main>`` (a hub id: its weights are not hashed)."""
    folder = Path(os.path.expanduser(str(pretrained))) if isinstance(pretrained, (str, os.PathLike)) else None
    files = weight_files(folder) if folder is not None and folder.is_dir() else []
    if not files:
        logger.info("qd model identity: %s has no local weight files; its identity is its name and revision", pretrained)
        return f"{NAME_PREFIX}{pretrained}@{revision or 'main'}"
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(folder).as_posix()}\0{file_sha256(file)}\n".encode())
    return HASH_PREFIX + digest.hexdigest()


def is_weight_hash(fingerprint) -> bool:
    """Whether ``fingerprint`` hashes weight files (not a name fallback)."""
    return isinstance(fingerprint, str) and fingerprint.startswith(HASH_PREFIX)


def _cache_folder() -> Path:
    return cache_dir() / "weights"


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename (best effort: a cache)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    except OSError as err:  # an unwritable cache only costs a rehash next time
        logger.warning("qd model identity: could not cache a weight hash in %s (%s)", path.parent, err)
