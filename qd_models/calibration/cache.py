"""The calibration statistics' disk cache: a key over the model's weight fingerprint and parameters, the calibration
token ids and the target modules; entries written atomically, unreadable ones a logged miss."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from qd_models.cache_dir import cache_dir
from qd_models.model_identity import model_fingerprint

logger = logging.getLogger(__name__)

STATS_VERSION = 2
FINGERPRINT_CHUNK = 1 << 22


def model_key(model: nn.Module) -> str:
    """What the statistics depend on of ``model``: the weights' fingerprint
    (:func:`qd_models.model_identity.model_fingerprint` of the folder it was loaded from, the one
    identity sweeps, fidelity files and ``qd-analyze`` use) and :func:`parameter_digest` (what is in
    memory now: the loaded dtype, any change made after loading)."""
    source = getattr(getattr(model, "config", None), "_name_or_path", None)
    return f"{model_fingerprint(source) if source else 'in-memory'}|{parameter_digest(model)}"


def parameter_digest(model: nn.Module) -> str:
    """sha256 over the model class, its config (minus its path) and each parameter's name,
    shape, dtype, float64 sum and sum of squares."""
    digest = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None:
        cfg = config.to_dict()
        cfg.pop("_name_or_path", None)
        digest.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            total = square = 0.0
            for chunk in param.detach().reshape(-1).split(FINGERPRINT_CHUNK):  # no full float64 copy
                chunk = chunk.double()
                total, square = total + float(chunk.sum()), square + float(chunk.square().sum())
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}|{total!r}|{square!r}".encode())
    return digest.hexdigest()


def calibration_key(fingerprint: str, token_ids: dict[str, list[list[int]]], module_names: list[str], seed: int | None = None) -> str:
    """sha256 of the model fingerprint, every calibration token id, the module names, :data:`STATS_VERSION`
    and ``calib_seed`` when set (unset: the key of a run without it)."""
    payload = json.dumps({"version": STATS_VERSION, "model": fingerprint, "tokens": token_ids, "modules": module_names,
                          **({"calib_seed": seed} if seed is not None else {})})
    return hashlib.sha256(payload.encode()).hexdigest()


def stats_cache_dir() -> Path:
    """Where calibration statistics are cached (``cache_dir()/calibration``)."""
    return cache_dir() / "calibration"


def read_cache(path: Path) -> dict | None:
    """A cache entry, or ``None`` (a miss, logged naming the file) when it cannot be read or
    lacks a field; the recomputed statistics then replace it atomically."""
    try:
        payload = torch.load(path, weights_only=True)
        if not isinstance(payload, dict) or any(name not in payload for name in ("langs", "tokens", "second_moments", "stopped_before")):
            raise ValueError("missing fields")
        return payload
    except Exception as err:  # noqa: BLE001 - any unreadable entry (truncated zip, pickle error, ...) is a miss
        logger.warning("qd calibration: cache file %s is unreadable (%s); recomputing and replacing it", path, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None


def write_atomic(payload: dict, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
