"""llama.cpp's own quantizer (``ggml-quants.c``) as a ctypes library: the byte-identity reference
for :mod:`qd_models.quant.gguf_quants` (test-only; never imported by the package).

The source comes from the ``llama-cpp-python`` sdist on PyPI (pinned version and sha256 below;
its ``vendor/llama.cpp`` is the llama.cpp whose kernels and ``llama_tensor_get_type`` rules we
follow). ``ggml-quants.c`` is compiled with ``cc -O2 -DNDEBUG`` (no ``-march``: llama.cpp builds
it into ``ggml-base`` without CPU-specific flags, so no FMA contraction) plus a 20-line stub for
the four ggml functions it calls. Built once into ``$QD_CACHE_DIR/ggml-ref/`` (default
``~/.cache/quant-disparity``); ``python tests/qd_models/ggml_reference.py`` builds it by hand and prints
the cost (``python tests/qd_models/ggml_reference.py SDIST.tar.gz`` uses a downloaded sdist). Needs a C compiler and PyPI (``pip download``) the first time.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from qd_models.cache_dir import cache_dir

SDIST_VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP = f"llama-cpp-python {SDIST_VERSION} (vendor/llama.cpp, ggml 0.25.3)"
_PREFIX = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
_MEMBERS = ("ggml/include/", "ggml/src/ggml-common.h", "ggml/src/ggml-impl.h", "ggml/src/ggml-quants.c",
            "ggml/src/ggml-quants.h", "ggml/src/ggml-cpu/", "src/llama-quant.cpp")

# ggml_type ids (ggml.h) -> (block size, bytes per block)
TYPES = {"q4_0": (2, 32, 18), "q4_1": (3, 32, 20), "q5_0": (6, 32, 22), "q5_1": (7, 32, 24), "q8_0": (8, 32, 34),
         "q2_k": (10, 256, 84), "q3_k": (11, 256, 110), "q4_k": (12, 256, 144), "q5_k": (13, 256, 176), "q6_k": (14, 256, 210)}

_STUB = r"""
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
static size_t blck(int t) { return (t == 2 || t == 3 || t == 6 || t == 7 || t == 8) ? 32 : (t >= 10 && t <= 15) ? 256 : 1; }
static size_t tsize(int t) {
    switch (t) { case 2: return 18; case 3: return 20; case 6: return 22; case 7: return 24; case 8: return 34;
        case 10: return 84; case 11: return 110; case 12: return 144; case 13: return 176; case 14: return 210; case 15: return 292; }
    return 4;
}
void ggml_abort(const char * file, int line, const char * fmt, ...) { fprintf(stderr, "ggml_abort %s:%d\n", file, line); abort(); }
size_t ggml_type_size(int type) { return tsize(type); }
size_t ggml_row_size(int type, int64_t ne) { return tsize(type) * ne / blck(type); }
const char * ggml_type_name(int type) { (void) type; return "?"; }
"""


def cache_root() -> Path:
    return cache_dir() / "ggml-ref"


def library_path() -> Path:
    return cache_root() / f"libggmlquants-{SDIST_VERSION}.so"


def source_dir() -> Path:
    return cache_root() / f"src-{SDIST_VERSION}"


def fetch_source() -> Path:
    """Download the pinned sdist with pip (once), check its hash, extract the files we need."""
    target = source_dir()
    if (target / "ggml/src/ggml-quants.c").is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "-d", tmp, f"llama-cpp-python=={SDIST_VERSION}"], check=True, capture_output=True)
        return extract(next(Path(tmp).glob("llama_cpp_python-*.tar.gz")))


def extract(sdist: Path) -> Path:
    """Check the sdist's sha256 and extract the llama.cpp files we need into :func:`source_dir`."""
    target = source_dir()
    digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise RuntimeError(f"llama-cpp-python {SDIST_VERSION} sdist sha256 {digest} != pinned {SDIST_SHA256}")
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers()
                   if m.name.startswith(_PREFIX) and m.name[len(_PREFIX):].startswith(_MEMBERS) and m.isfile()]
        archive.extractall(Path(tmp), members=members, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(Path(tmp) / _PREFIX), target)
    return target


def build() -> Path:
    """Compile ``ggml-quants.c`` + stub into the cached shared library (if missing)."""
    lib = library_path()
    if lib.is_file():
        return lib
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise FileNotFoundError("no C compiler (cc) on PATH")
    src = fetch_source()
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "stub.c"
        stub.write_text(_STUB)
        out = Path(tmp) / lib.name
        subprocess.run([compiler, "-O2", "-DNDEBUG", "-std=c11", "-fPIC", "-shared", f"-I{src}/ggml/include", f"-I{src}/ggml/src",
                        f"-I{src}/ggml/src/ggml-cpu", str(src / "ggml/src/ggml-quants.c"), str(stub), "-o", str(out), "-lm"],
                       check=True, capture_output=True, text=True)
        shutil.move(str(out), lib)
    return lib


class Reference:
    """``quantize(weight [rows, n], type_name, imatrix [n] | None) -> uint8 [rows, row_bytes]`` via
    llama.cpp's ``quantize_<type>(src, dst, nrow, n_per_row, quant_weights)``."""

    def __init__(self, path: Path | None = None):
        self.lib = ctypes.CDLL(str(path or build()))

    def quantize(self, weight: np.ndarray, type_name: str, imatrix: np.ndarray | None = None) -> np.ndarray:
        _, block, size = TYPES[type_name]
        x = np.ascontiguousarray(weight, dtype=np.float32)
        rows, n = x.shape
        out = np.zeros((rows, n // block * size), dtype=np.uint8)
        fn = getattr(self.lib, f"quantize_{type_name.replace('_k', '_K')}")
        fn.restype = ctypes.c_size_t
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        qw = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
        written = fn(x.ctypes.data, out.ctypes.data, rows, n, None if qw is None else qw.ctypes.data)
        assert written == out.size
        return out


if __name__ == "__main__":
    start = time.perf_counter()
    shutil.rmtree(cache_root(), ignore_errors=True)
    extract(Path(sys.argv[1])) if len(sys.argv) > 1 else fetch_source()
    fetched = time.perf_counter()
    print(f"sdist downloaded and extracted in {fetched - start:.1f} s -> {library_path()}")
    build()
    print(f"ggml-quants.c compiled in {time.perf_counter() - fetched:.1f} s")
