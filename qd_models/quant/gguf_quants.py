"""GGUF block quantization (llama.cpp ``ggml-quants.c``), vectorised over blocks in numpy.

``quantize_blocks(weight [rows, n], type_name, imatrix [n] | None) -> uint8 [rows, row_bytes]``
returns the exact GGUF bytes llama.cpp's ``quantize_<type>(src, dst, nrow, n_per_row,
quant_weights)`` writes (llama.cpp vendored in llama-cpp-python 0.3.36, ggml 0.25.3; tested
byte for byte against that C code): the reference quantizers without an importance matrix
(``quantize_row_*_ref``) and the ``quantize_row_*_impl`` variants with one. Every float
operation is float32 in C's order (sequential sums, no FMA), ``nearest_int`` is llama.cpp's
``+12582912`` bit trick and fp16 rounding is IEEE round-to-nearest-even, so results are
bit-exact, not approximate (``gguf.quants.quantize`` differs from llama.cpp for q4_0/q5_0 on a
block of -0.0, so the legacy types are implemented here too). ``dequantize`` is ``gguf.quants.dequantize``.
No method names or CLI constants here.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
QK_K = 256
GROUP_MAX_EPS = F32(1e-15)
TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "f16")
IMATRIX_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
"""Types whose llama.cpp quantizer uses an importance matrix (q8_0 and f16 ignore it)."""


def _qtype(type_name: str):
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType[type_name.upper()]


def block_layout(type_name: str) -> tuple[int, int]:
    """(weights per block, bytes per block) from ``gguf.constants.GGML_QUANT_SIZES``."""
    from gguf.constants import GGML_QUANT_SIZES

    return GGML_QUANT_SIZES[_qtype(type_name)]


def bits_per_weight(type_name: str) -> float:
    """Storage bits per weight of a type: bytes per block * 8 / weights per block."""
    block, size = block_layout(type_name)
    return size * 8 / block


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """llama.cpp's ``nearest_int``: round half to even through ``v + 1.5*2^23`` (bit-exact, also
    for |v| > 2^22 where C returns the same wrapped value)."""
    bits = (v.astype(F32) + F32(12582912.0)).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def _sum(a: np.ndarray) -> np.ndarray:
    """C's ``float s = 0; for (i...) s += a[i];`` over the last axis (sequential float32)."""
    return F32(0) + np.cumsum(a, axis=-1, dtype=F32)[..., -1]


def _fp16(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=F32).astype(np.float16)


def _first_absmax(x: np.ndarray) -> np.ndarray:
    """Signed value of the first element with the largest |x| in each row (C's strict ``>`` scan)."""
    idx = np.argmax(np.abs(x), axis=-1)
    return np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]


def _bytes(*fields: np.ndarray) -> np.ndarray:
    """Concatenate per-block fields (fp16 scalars or uint8 arrays) into uint8 ``[nb, size]``."""
    parts = []
    for f in fields:
        if f.dtype == np.float16:
            parts.append(np.ascontiguousarray(f).view(np.uint8).reshape(f.shape[0], 2))
        else:
            parts.append((np.asarray(f) & 0xFF).astype(np.uint8).reshape(f.shape[0], -1))
    return np.concatenate(parts, axis=1)


def make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)`` per row of ``x [B, n]``:
    (scale ``[B]``, L ``[B, n]`` in 0..2*nmax-1)."""
    with np.errstate(all="ignore"):
        mx = _first_absmax(x)
        zero = np.abs(mx) < GROUP_MAX_EPS
        mx = np.where(zero, F32(1), mx)[:, None]
        w = x * x if qw is None else qw

        def trial(iscale):
            l = np.clip(_nearest_int(iscale * x), -nmax, nmax - 1)
            lf = l.astype(F32)
            return l, _sum(w * x * lf), _sum(w * lf * lf)

        l, sumlx, suml2 = trial(F32(-nmax) / mx)
        L = l + nmax
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            l, sumlx, suml2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / mx)
            upd = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(upd[:, None], l + nmax, L)
            scale = np.where(upd, sumlx / suml2, scale).astype(F32)
            best = np.where(upd, scale * sumlx, best).astype(F32)
    return np.where(zero, F32(0), scale), np.where(zero[:, None], 0, L)


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_q3_quants(n, nmax, x, L, do_rmse=true)`` per row: (scale ``[B]``, L in 0..2*nmax-1)."""
    with np.errstate(all="ignore"):
        mx = _first_absmax(x)
        zero = np.abs(mx) < GROUP_MAX_EPS
        mx = np.where(zero, F32(1), mx)[:, None]
        L = np.clip(_nearest_int((F32(-nmax) / mx) * x), -nmax, nmax - 1)
        w = x * x
        lf = L.astype(F32)
        sumlx, suml2 = _sum(w * x * lf), _sum(w * lf * lf)
        for _ in range(5):  # a pass without change leaves the state unchanged: C's early break is implied
            for i in range(x.shape[1]):
                wi, xi, li = w[:, i], x[:, i], L[:, i].astype(F32)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                new = np.clip(_nearest_int(xi * sl2 / slx), -nmax, nmax - 1)
                nf = new.astype(F32)
                slx2 = slx + wi * xi * nf
                sl22 = sl2 + wi * nf * nf
                upd = (slx > 0) & (new != L[:, i]) & (sl22 > 0) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22)
                L[:, i] = np.where(upd, new, L[:, i])
                sumlx = np.where(upd, slx2, sumlx)
                suml2 = np.where(upd, sl22, suml2)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0)).astype(F32)
    return np.where(zero, F32(0), scale), np.where(zero[:, None], 0, L + nmax)


def make_qkx_quants(x: np.ndarray, weights: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                    use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``make_qkx2_quants`` / ``make_qkx3_quants`` (identical when weights are given) per row:
    (scale ``[B]``, the_min ``[B]`` (= -min), L ``[B, n]`` in 0..nmax)."""
    with np.errstate(all="ignore"):
        mn = np.take_along_axis(x, np.argmin(x, axis=-1)[:, None], axis=-1)[:, 0]
        mx = np.take_along_axis(x, np.argmax(x, axis=-1)[:, None], axis=-1)[:, 0]
        sum_w = np.cumsum(weights, axis=-1, dtype=F32)[:, -1]
        sum_x = np.cumsum(weights * x, axis=-1, dtype=F32)[:, -1]
        mn = np.where(mn > 0, F32(0), mn).astype(F32)
        flat = mx == mn
        flat_min = mn
        rng = np.where(flat, F32(1), mx - mn)[:, None]
        mnc = mn[:, None]

        def error(scale, minimum, L):
            diff = scale[:, None] * L.astype(F32) + minimum[:, None] - x
            diff = np.abs(diff) if use_mad else diff * diff
            return _sum(weights * diff)

        iscale = F32(nmax) / rng
        L = np.clip(_nearest_int(iscale * (x - mnc)), 0, nmax)
        scale = (F32(1) / iscale)[:, 0]
        best = error(scale, mn, L)
        for step in range(nstep + 1):  # C updates min (and so max - min) whenever a step improves
            cur_min = np.where(flat, F32(0), mn)[:, None]
            iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / np.where(flat[:, None], F32(1), mx[:, None] - cur_min)
            aux = np.clip(_nearest_int(iscale * (x - cur_min)), 0, nmax)
            lf = aux.astype(F32)
            sum_l, sum_l2, sum_xl = _sum(weights * lf), _sum(weights * lf * lf), _sum(weights * lf * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_min = np.where(pos, F32(0), this_min).astype(F32)
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale).astype(F32)
            cur = error(this_scale, this_min, aux)
            upd = (D > 0) & (cur < best)
            best = np.where(upd, cur, best)
            L = np.where(upd[:, None], aux, L)
            scale = np.where(upd, this_scale, scale).astype(F32)
            mn = np.where(upd, this_min, mn).astype(F32)
    return np.where(flat, F32(0), scale), (-np.where(flat, flat_min, mn)).astype(F32), np.where(flat[:, None], 0, L)


def make_qp_quants(x: np.ndarray, nmax: int, qw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``make_qp_quants(n, nmax, x, L, quant_weights)`` per row: (scale ``[B]``, L uint8 values ``[B, n]``)."""
    with np.errstate(all="ignore"):
        mx = np.maximum(x.max(axis=-1), F32(0))
        zero = mx < GROUP_MAX_EPS
        mx = np.where(zero, F32(1), mx)[:, None]
        iscale = F32(nmax) / mx
        L = _nearest_int(iscale * x) & 0xFF
        scale = F32(1) / iscale
        diff = x - scale * L.astype(F32)
        best = _sum(qw * diff * diff)
        for step in range(-4, 5):
            if step == 0:
                continue
            iscale_is = (F32(0.1) * F32(step) + F32(nmax)) / mx
            l = np.minimum(nmax, _nearest_int(iscale_is * x)).astype(F32)
            diff = x - (F32(1) / iscale_is) * l
            mse = _sum(qw * diff * diff)
            upd = mse < best
            best = np.where(upd, mse, best)
            iscale = np.where(upd[:, None], iscale_is, iscale)
        lraw = np.minimum(nmax, _nearest_int(iscale * x))
        L = lraw & 0xFF
        lf = lraw.astype(F32)
        sumlx, suml2 = _sum(qw * x * lf), _sum(qw * lf * lf)
        for _ in range(5):
            for i in range(x.shape[1]):
                wi, xi, li = qw[:, i], x[:, i], L[:, i].astype(F32)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                new = np.minimum(nmax, _nearest_int(xi * sl2 / slx))
                nf = new.astype(F32)
                slx2 = slx + wi * xi * nf
                sl22 = sl2 + wi * nf * nf
                upd = (slx > 0) & (sl2 > 0) & (new != L[:, i]) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22)
                L[:, i] = np.where(upd, new & 0xFF, L[:, i])
                sumlx = np.where(upd, slx2, sumlx)
                suml2 = np.where(upd, sl22, suml2)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0)).astype(F32)
    return np.where(zero, F32(0), scale), np.where(zero[:, None], 0, L)


# ---------------------------------------------------------------- packing helpers

def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """q2_K/q3_K ``qs``: L ``[nb, 256]`` (0..3) -> ``[nb, 64]``."""
    parts = []
    for j in (0, 128):
        c = L[:, j:j + 128].reshape(-1, 4, 32)
        parts.append(c[:, 0] | (c[:, 1] << 2) | (c[:, 2] << 4) | (c[:, 3] << 6))
    return np.concatenate(parts, axis=1)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """q4_K/q5_K 12-byte scales from 8 (uint8) scales and mins per block (C's packing, uint8 stores)."""
    s = np.zeros((ls.shape[0], 12), dtype=np.int64)
    s[:, 0:4] = ls[:, 0:4]
    s[:, 4:8] = lm[:, 0:4]
    s[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    s[:, 0:4] = (s[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)) & 0xFF
    s[:, 4:8] = (s[:, 4:8] | ((lm[:, 4:8] >> 4) << 6)) & 0xFF
    return s


def _unpack_scales_k4(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``get_scale_min_k4`` for j = 0..7: (sc, m) ``[nb, 8]``."""
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def _pack_scales_q3(l6: np.ndarray) -> np.ndarray:
    """q3_K 12-byte scales from 16 6-bit values (0..63) per block."""
    s = np.zeros((l6.shape[0], 12), dtype=np.int64)
    s[:, 0:8] = (l6[:, 0:8] & 0xF) | ((l6[:, 8:16] & 0xF) << 4)
    hi = l6 >> 4
    for j in range(16):
        s[:, 8 + j % 4] |= hi[:, j] << (2 * (j // 4))
    return s & 0xFF


def _requant(x: np.ndarray, d: np.ndarray, dm: np.ndarray | None, L: np.ndarray, lo: int, hi: int, offset: int) -> np.ndarray:
    """Final ``l = nearest_int((x + dm)/d)`` pass per sub-block; sub-blocks with d == 0 keep L."""
    with np.errstate(all="ignore"):
        num = x if dm is None else x + dm[..., None]
        new = np.clip(_nearest_int(num / d[..., None]), lo, hi) + offset
    return np.where((d != 0)[..., None], new, L)


# ---------------------------------------------------------------- K-quants

def _weights_sigma(x: np.ndarray, qw: np.ndarray, factor: float) -> np.ndarray:
    """``qw * sqrtf(sigma2 + x*x)`` with ``sigma2 = factor*sum(x^2)/QK_K`` per super-block; x ``[nb, 256]``."""
    sigma2 = F32(factor) * _sum(x * x) / F32(QK_K)
    return qw * np.sqrt(sigma2[:, None] + x * x)


def _q2_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    nb = x.shape[0]
    sub = x.reshape(nb * 16, 16)
    if qw is None:
        scales, mins, L = make_qkx_quants(sub, np.abs(sub), 3, -0.5, 0.1, 15, True)
        scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
        max_scale = np.maximum(scales.max(axis=1), F32(0))
        max_min = np.maximum(mins.max(axis=1), F32(0))
        with np.errstate(all="ignore"):
            ls = np.where((max_scale > 0)[:, None], _nearest_int((F32(15) / max_scale)[:, None] * scales), 0) & 0xFF
            lm = np.where((max_min > 0)[:, None], _nearest_int((F32(15) / max_min)[:, None] * mins), 0)
        packed = (ls | (lm << 4)) & 0xFF
        d = _fp16(np.where(max_scale > 0, max_scale / F32(15), F32(0)))
        dmin = _fp16(np.where(max_min > 0, max_min / F32(15), F32(0)))
    else:
        w = _weights_sigma(x, qw, 1.0).reshape(nb * 16, 16)
        sw = _sum(w).reshape(nb, 16)
        scales, mins, L = make_qkx_quants(sub, w, 3, -0.9, 0.05, 36, False)
        dm, Ls = make_qp_quants(scales.reshape(nb, 16), 15, sw)
        mm, Lm = make_qp_quants(mins.reshape(nb, 16), 15, sw)
        d, dmin = _fp16(dm), _fp16(mm)
        packed = (Ls | (Lm << 4)) & 0xFF
    dsub = d.astype(F32)[:, None] * (packed & 0xF).astype(F32)
    msub = dmin.astype(F32)[:, None] * (packed >> 4).astype(F32)
    L = _requant(x.reshape(nb, 16, 16), dsub, msub, L.reshape(nb, 16, 16), 0, 3, 0).reshape(nb, QK_K)
    return _bytes(packed, _pack_2bit(L), d, dmin)


def _q3_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    nb = x.shape[0]
    sub = x.reshape(nb * 16, 16)
    if qw is None:
        scales, L = make_q3_quants(sub, 4)
        scales = scales.reshape(nb, 16)
        max_scale = _first_absmax(scales)
        nz = max_scale != 0
        with np.errstate(all="ignore"):
            iscale = F32(-32) / np.where(nz, max_scale, F32(1))
            l = _nearest_int(iscale[:, None] * scales)
        l = ((l + 128) & 0xFF) - 128  # int8_t store
        l6 = np.where(nz[:, None], np.clip(l, -32, 31) + 32, 0)
        packed = np.where(nz[:, None], _pack_scales_q3(l6), 0)
        d = _fp16(np.where(nz, F32(1) / iscale, F32(0)))
    else:
        w = _weights_sigma(x, qw, 2.0).reshape(nb * 16, 16)
        sw = _sum(w).reshape(nb, 16)
        scales, L = make_qx_quants(sub, 4, w)
        d_block, l6 = make_qx_quants(scales.reshape(nb, 16), 32, sw)
        packed = _pack_scales_q3(l6)
        d = _fp16(d_block)
    sc = np.concatenate([packed[:, 0:8] & 0xF, packed[:, 0:8] >> 4], axis=1)
    sc = (sc | (((packed[:, 8 + np.arange(16) % 4] >> (2 * (np.arange(16) // 4))) & 3) << 4)) - 32
    dsub = d.astype(F32)[:, None] * sc.astype(F32)
    L = _requant(x.reshape(nb, 16, 16), dsub, None, L.reshape(nb, 16, 16), -4, 3, 4).reshape(nb, QK_K)
    high = L > 3
    hmask = np.zeros((nb, 32), dtype=np.int64)
    for bit in range(8):
        hmask |= high[:, bit * 32:(bit + 1) * 32].astype(np.int64) << bit
    L = np.where(high, L - 4, L)
    return _bytes(hmask, _pack_2bit(L), packed, d)


def _q45_k(x: np.ndarray, qw: np.ndarray | None, nmax: int) -> np.ndarray:
    nb = x.shape[0]
    sub = x.reshape(nb * 8, 32)
    if qw is None:
        av_x = np.sqrt(_sum(sub * sub) / F32(32))
        w = av_x[:, None] + np.abs(sub)
        rmin, nstep = (-1.0, 20) if nmax == 15 else (-0.5, 15)
        scales, mins, L = make_qkx_quants(sub, w, nmax, rmin, 0.1, nstep, False)
        scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
        max_scale = np.maximum(scales.max(axis=1), F32(0))
        max_min = np.maximum(mins.max(axis=1), F32(0))
        with np.errstate(all="ignore"):
            inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
            inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
        ls = np.minimum(63, _nearest_int(inv_scale[:, None] * scales) & 0xFF)
        lm = np.minimum(63, _nearest_int(inv_min[:, None] * mins) & 0xFF)
        d, dmin = _fp16(max_scale / F32(63)), _fp16(max_min / F32(63))
    else:
        sigma2 = F32(2) * _sum(x * x) / F32(QK_K)
        w = (qw * np.sqrt(sigma2[:, None] + x * x)).reshape(nb * 8, 32)
        sw = _sum(w).reshape(nb, 8)
        scales, mins, L = make_qkx_quants(sub, w, nmax, -0.9, 0.05, 36, False)
        d_block, ls = make_qp_quants(scales.reshape(nb, 8), 63, sw)
        m_block, lm = make_qp_quants(mins.reshape(nb, 8), 63, sw)
        if nmax == 31:
            ls, lm = np.minimum(63, ls), np.minimum(63, lm)
        d, dmin = _fp16(d_block), _fp16(m_block)
    packed = _pack_scales_k4(ls, lm)
    sc, m = _unpack_scales_k4(packed)
    dsub = d.astype(F32)[:, None] * sc.astype(F32)
    msub = dmin.astype(F32)[:, None] * m.astype(F32)
    L = _requant(x.reshape(nb, 8, 32), dsub, msub, L.reshape(nb, 8, 32), 0, nmax, 0).reshape(nb, 4, 2, 32)
    if nmax == 15:
        return _bytes(d, dmin, packed, (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(nb, 128))
    qh = np.zeros((nb, 32), dtype=np.int64)
    for chunk in range(4):
        qh |= (L[:, chunk, 0] > 15).astype(np.int64) << (2 * chunk)
        qh |= (L[:, chunk, 1] > 15).astype(np.int64) << (2 * chunk + 1)
    low = L & 0xF
    return _bytes(d, dmin, packed, qh, (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(nb, 128))


def _q6_k(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    nb = x.shape[0]
    sub = x.reshape(nb * 16, 16)
    scales, L = make_qx_quants(sub, 32, None if qw is None else qw.reshape(nb * 16, 16))
    scales = scales.reshape(nb, 16)
    max_scale = _first_absmax(scales)
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = F32(-128) / np.where(zero, F32(1), max_scale)
        sc = np.minimum(127, _nearest_int(iscale[:, None] * scales))
    sc = ((sc + 128) & 0xFF) - 128
    d = _fp16(F32(1) / iscale)
    dsub = d.astype(F32)[:, None] * sc.astype(F32)
    L = _requant(x.reshape(nb, 16, 16), dsub, None, L.reshape(nb, 16, 16), -32, 31, 32).reshape(nb, 2, 4, 32)
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4), (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)],
                        axis=2).reshape(nb, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4) | ((L[:, :, 3] >> 4) << 6)).reshape(nb, 64)
    out = _bytes(ql, qh, sc, d)
    out[zero] = 0
    return out


# ---------------------------------------------------------------- legacy types

def _trunc_int(v: np.ndarray) -> np.ndarray:
    """C's float -> integer conversion (truncation toward zero)."""
    return np.trunc(v).astype(np.int64)


def _legacy_ref(x: np.ndarray, type_name: str) -> np.ndarray:
    """``quantize_row_{q4_0,q4_1,q5_0,q5_1,q8_0}_ref``: x ``[nb, 32]`` -> ``[nb, size]``."""
    with np.errstate(all="ignore"):
        if type_name in ("q4_0", "q5_0", "q8_0"):
            amax = np.abs(x).max(axis=1)
            if type_name == "q8_0":
                d = amax / F32(127)
            else:
                mx = np.where(amax > 0, _first_absmax(x), F32(0))  # C keeps max = 0.0f until |v| > 0
                d = mx / F32(-8 if type_name == "q4_0" else -16)
            idd = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
            v = x * idd[:, None]
            if type_name == "q8_0":
                t = np.trunc(v)
                q = (t + np.where(np.abs(v - t) >= F32(0.5), np.sign(v), F32(0))).astype(np.int64)  # roundf
                return _bytes(_fp16(d), q)
            L = np.minimum(15 if type_name == "q4_0" else 31, _trunc_int(v + F32(8.5 if type_name == "q4_0" else 16.5)))
            head = (_fp16(d),)
        else:
            mn = np.take_along_axis(x, np.argmin(x, axis=1)[:, None], axis=1)[:, 0]
            mx = np.take_along_axis(x, np.argmax(x, axis=1)[:, None], axis=1)[:, 0]
            d = (mx - mn) / F32(15 if type_name == "q4_1" else 31)
            idd = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
            L = _trunc_int((x - mn[:, None]) * idd[:, None] + F32(0.5))
            L = np.minimum(15, L) if type_name == "q4_1" else L & 0xFF
            head = (_fp16(d), _fp16(mn))
    return _pack_legacy(head, L, type_name.startswith("q5"))


def _pack_legacy(head: tuple, L: np.ndarray, bits5: bool) -> np.ndarray:
    """Legacy block bytes: fp16 head fields, [qh (q5)], nibbles of L ``[nb, 32]``."""
    qs = (L[:, :16] & 0xF) | ((L[:, 16:] & 0xF) << 4)
    if not bits5:
        return _bytes(*head, qs)
    qh = (((L[:, :16] >> 4) & 1) << np.arange(16)).sum(axis=1) | ((((L[:, 16:] >> 4) & 1) << np.arange(16, 32)).sum(axis=1))
    return _bytes(*head, (qh[:, None] >> np.array([0, 8, 16, 24])) & 0xFF, qs)

# ---------------------------------------------------------------- legacy types with an importance matrix

def _legacy_imatrix(x: np.ndarray, qw: np.ndarray, type_name: str) -> np.ndarray:
    """``quantize_row_q{4,5}_{0,1}_impl``: x, qw ``[rows, n]`` -> ``[rows * n/32, size]``;
    sigma2 is the mean x^2 of the whole row."""
    n = x.shape[1]
    sigma2 = _sum(x * x) / F32(n)
    w = (qw * np.sqrt(sigma2[:, None] + x * x)).reshape(-1, 32)
    xb = x.reshape(-1, 32)
    bits5 = type_name.startswith("q5")
    if type_name.endswith("_0"):
        d, L = make_qx_quants(xb, 16 if bits5 else 8, w)
        head = (_fp16(d),)
    else:
        d, the_min, L = make_qkx_quants(xb, w, 31 if bits5 else 15, -0.9, 0.05, 36, False)
        head = (_fp16(d), _fp16(-the_min))
    return _pack_legacy(head, L, bits5)


# ---------------------------------------------------------------- public API

def quantize_blocks(weight: np.ndarray, type_name: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """GGUF bytes of ``weight [rows, n]`` (float32; blocks run along ``n``, the input dim) as
    ``type_name`` (see :data:`TYPES`) -> uint8 ``[rows, n/block*size]``, byte-identical to
    llama.cpp's ``quantize_<type>``; ``imatrix`` ``[n]`` (mean x^2 per input channel) is used as
    llama.cpp uses quant_weights (ignored by q8_0 and f16). ``n`` must be a multiple of the block size."""
    if type_name not in TYPES:
        raise ValueError(f"type_name={type_name!r} is not allowed; allowed: {', '.join(TYPES)}")
    x = np.ascontiguousarray(weight, dtype=F32)
    if x.ndim != 2:
        raise ValueError(f"weight has shape {x.shape}; allowed: a 2-D [rows, n] array")
    rows, n = x.shape
    if type_name == "f16":
        return x.astype(np.float16).view(np.uint8).reshape(rows, 2 * n)
    block, size = block_layout(type_name)
    if n % block:
        raise ValueError(f"row length {n} is not a multiple of {block}, the block size of {type_name}")
    qw = None
    if imatrix is not None and type_name in IMATRIX_TYPES:
        qw = np.ascontiguousarray(np.broadcast_to(np.asarray(imatrix, dtype=F32).reshape(1, n), (rows, n)))
    if qw is None and block == 32:
        out = _legacy_ref(x.reshape(-1, 32), type_name)
    elif block == 32:
        out = _legacy_imatrix(x, qw, type_name)
    else:
        xs = x.reshape(-1, QK_K)
        ws = None if qw is None else qw.reshape(-1, QK_K)
        if type_name == "q2_k":
            out = _q2_k(xs, ws)
        elif type_name == "q3_k":
            out = _q3_k(xs, ws)
        elif type_name == "q6_k":
            out = _q6_k(xs, ws)
        else:
            out = _q45_k(xs, ws, 15 if type_name == "q4_k" else 31)
    return out.reshape(rows, n // block * size)


def dequantize(data: np.ndarray, type_name: str) -> np.ndarray:
    """float32 ``[rows, n]`` from GGUF bytes ``[rows, row_bytes]`` (``gguf.quants.dequantize``)."""
    if type_name == "f16":
        return np.ascontiguousarray(data).view(np.float16).astype(F32)
    from gguf.quants import dequantize as gguf_dequantize

    return gguf_dequantize(data, _qtype(type_name))
