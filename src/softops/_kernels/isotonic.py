r"""Isotonic regression (pool adjacent violators) on rows, for the permutahedron.

Every row holds two sequences ``z`` and ``w`` of length ``n`` and a positive scale
``c``.  The problem solved is the non-increasing isotonic regression whose block
values are

* ``"l2"``: ``f_B = c * mean_B(z) - mean_B(w)``, the solution of
  ``argmin_{v_1 >= ... >= v_n} ||v - (c z - w)||^2``;
* ``"kl"``: ``f_B = LSE_B(c z) - LSE_B(w)`` (``LSE`` the log-sum-exp over the
  block), the solution of ``argmin_{v_1 >= ... >= v_n} <exp(c z - v), 1> + <exp(w), v>``

(Blondel, Teboul, Berthet & Djolonga 2020, "Fast Differentiable Sorting and
Ranking", eqs. 6-7 and Prop. 3; Best, Chakravarti & Ubhaya 2000 for PAV).

What is returned is not ``v`` but the *primal* ``p = c z - v``, assembled from
block statistics so that no large-minus-large cancellation occurs:

* l2: ``p_i = c (z_i - mean_B z) + mean_B w``;
* kl: ``p_i = c z_i - LSE_B(c z) + LSE_B(w)``;

together with ``start``, the index of the first element of ``i``'s block (the
partition, which is all the backward pass needs).  Block statistics are
accumulated in float64 whatever the input dtype.

The backward pass maps a cotangent ``g`` of ``p`` to cotangents of ``z``, ``w``
and ``c`` (the partition is locally constant, so these are exact):

* l2: ``gz = c (g - mean_B g)``, ``gw = mean_B g``, ``gc = sum g (z - mean_B z)``;
* kl: with ``G_B = sum_B g``, ``a = softmax_B(c z)``, ``b = softmax_B(w)``:
  ``gz = c (g - a G_B)``, ``gw = b G_B``, ``gc = sum z (g - a G_B)``.

Sorting and permutations.  The permutahedron needs one of the two sequences
sorted descending.  With ``unsort="z"`` or ``"w"`` that sequence is passed in
the caller's order and the kernel sorts each row itself (``rowsort``: counting
sort for short rows, radix sort for long ones; several times faster than the
frameworks' sorts on a CPU) and reads, and for ``z`` also writes ``p``, through
the permutation: an operation costs one kernel call per pass and no framework
sort, gather or scatter.  Rows may be shared: ``z``, ``w`` and ``scale``
broadcast on the batch axes and a single row is read in place.

Two implementations with one contract:

* ``forward_numpy`` / ``backward_numpy``: a numba kernel (``@njit(cache=True,
  nogil=True)`` over a range of rows, which ``softops._kernels._threads``
  spreads over its non-spinning pool for large calls; O(n) per row after the
  O(n) to O(n log n) row sort), compiled lazily on first use; without
  numba they fall back to the twin (sorting with numpy);
* ``forward_twin`` / ``backward_twin``: the same maps on sorted rows in pure
  Array API operations (O(n^2 log n) work, O(n^2) memory per row: the min-max
  formula ``v_i = min_{j <= i} max_{k >= i} f([j, k])`` with log-step scans;
  the window values take O(n^3) memory), the test oracle and the fallback
  without numba; fine for n up to a few hundred.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

from softops._kernels import _threads, _tiers, rowsort
from softops._kernels._rows import as_rows, readonly

__all__ = ["forward_numpy", "backward_numpy", "forward_twin", "backward_twin", "numba_available"]


# --- numba kernel ----------------------------------------------------------------

# Where the caller's order applies (see forward_numpy): nowhere, to z (and so to
# the output p and its cotangent g), or to w.
_UNSORT = {None: 0, "z": 1, "w": 2}


def _forward_kernel(KL, UNSORT):
    """The forward row kernel for one regularisation (``KL``) and ``UNSORT``
    (``_UNSORT``), both closure constants: numba prunes the other cases'
    branches, so each variant compiles only its own code."""
    def _pav_forward_rows(z, w, scale, steps, sort_bits, bits, out, start, order,
                          row_lo, row_hi, floats, keys, ints, count):
        n = out.shape[1]
        # Scratch of the thread running rows row_lo..row_hi (see _Scratch): the sorted z and w of the
        # current row; a stack of blocks (block b starts at first[b] and has
        # the statistics sz[b], sw[b]: l2 the means of z and w; KL the LSE of
        # c (z - z_first) and of w); the row sort's keys and indices.  Since
        # b <= first[b], the starts live in the output row ``start`` and are
        # overwritten from the end at the close.  (Indexing inside a row stays
        # 2-D: row views would cost a reference count each.)
        zs, ws, sz, sw = floats[0], floats[1], floats[2], floats[3]
        key, key_b, idx, idx_b = keys[0], keys[1], ints[0], ints[1]
        for r in range(row_lo, row_hi):
            c = np.float64(scale[r * steps[2]])
            zr = r * steps[0]
            wr = r * steps[1]
            if UNSORT != 0:
                _sort_row(sort_bits, r, bits, True, key, key_b, idx, idx_b, count)
                for i in range(n):
                    order[r, i] = idx[i]
            # Infinite entries (+inf of either sequence first, -inf last: both
            # are sorted descending) form one tie block at each end, outside
            # the pooling; a row holding a NaN is NaN (found while copying).
            nan = False
            for i in range(n):
                a = np.float64(z[zr, idx[i] if UNSORT == 1 else i])
                b = np.float64(w[wr, idx[i] if UNSORT == 2 else i])
                zs[i] = a
                ws[i] = b
                nan |= (a != a) | (b != b)
            if nan:
                for i in range(n):
                    start[r, i] = i
                    out[r, idx[i] if UNSORT == 1 else i] = np.nan
                continue
            first = 0
            while first < n and (zs[first] == np.inf or ws[first] == np.inf):
                first += 1
            last = n
            while last > first and (zs[last - 1] == -np.inf or ws[last - 1] == -np.inf):
                last -= 1
            top = -1
            for i in range(first, last):
                top += 1
                start[r, top] = i
                # Per block: l2 the means of z and w; KL the log-sum-exp of w
                # and that of c z relative to the block's first (largest) z.
                sz[top] = 0.0 if KL else zs[i]
                sw[top] = ws[i]
                # Pool while the previous block's value (c z - w: l2 means, KL
                # log-sum-exps) is below this one's.  The two values are compared
                # through their differences, so that rounding never equates them
                # where c z dwarfs w (at small T: tied z would stay in separate
                # blocks, with different outputs).
                while top > 0:
                    if KL:
                        gap = c * (zs[start[r, top - 1]] - zs[start[r, top]]) + (sz[top - 1] - sz[top])
                    else:
                        gap = c * (sz[top - 1] - sz[top])
                    if not gap < sw[top - 1] - sw[top]:
                        break
                    if KL:
                        sz[top - 1] = _logaddexp(sz[top - 1], c * (zs[start[r, top]] - zs[start[r, top - 1]]) + sz[top])
                        sw[top - 1] = _logaddexp(sw[top - 1], sw[top])
                    else:
                        # l2 keeps block means, merged as a convex combination:
                        # sums of values near the float maximum would overflow.
                        fa = (start[r, top] - start[r, top - 1]) / (i + 1 - start[r, top - 1])
                        fb = 1.0 - fa
                        sz[top - 1] = fa * sz[top - 1] + fb * sz[top]
                        sw[top - 1] = fa * sw[top - 1] + fb * sw[top]
                    top -= 1
            hi = last
            for b in range(top, -1, -1):
                lo = start[r, b]
                shift_w = sw[b]
                # The block's z term from differences to its first (largest)
                # entry, exact for ties (a tie block gives c z - LSE(c z) =
                # -log m and l2 c (z - mean z) = 0 however large c z is):
                # KL log sum exp(c (z_i - z_lo)) (sz); l2 the mean of the
                # halved differences (finite up to the float maximum).
                rel = sz[b]  # KL: log sum exp(c (z_i - z_lo))
                if not KL:
                    rel = 0.0
                    for i in range(lo, hi):
                        rel += (0.5 * zs[i] - 0.5 * zs[lo]) / (hi - lo)
                for i in range(lo, hi):
                    start[r, i] = lo
                    j = idx[i] if UNSORT == 1 else i
                    if KL:
                        out[r, j] = c * (zs[i] - zs[lo]) - rel + shift_w
                    else:
                        out[r, j] = c * ((0.5 * zs[i] - 0.5 * zs[lo]) - rel) * 2.0 + shift_w
                hi = lo
            # The infinite blocks: the infinite sequence's term is its value
            # (KL: LSE), the finite one's is exact (l2: c (z - mean z); KL:
            # c z - LSE(c z)), and an infinite z reads as a tie (l2: 0; KL:
            # -log m, a uniform softmax).
            for end in range(2):
                lo = 0 if end == 0 else last
                hi = first if end == 0 else n
                if lo == hi:
                    continue
                m = hi - lo
                z_inf = zs[lo] == np.inf or zs[lo] == -np.inf
                mz = 0.0
                mw = 0.0
                for i in range(lo, hi):
                    start[r, i] = lo
                    if KL:
                        mz = c * zs[i] if i == lo else _logaddexp(mz, c * zs[i])
                        mw = ws[i] if i == lo else _logaddexp(mw, ws[i])
                    else:
                        mz += zs[i] / m
                        mw += ws[i] / m
                for i in range(lo, hi):
                    j = idx[i] if UNSORT == 1 else i
                    if KL:
                        out[r, j] = (-math.log(m) if z_inf else c * zs[i] - mz) + mw
                    else:
                        out[r, j] = (0.0 if z_inf else c * (zs[i] - mz)) + mw

    return _pav_forward_rows


def _backward_kernel(KL, UNSORT):
    """The backward row kernel (see ``_forward_kernel``)."""
    def _pav_backward_rows(z, w, scale, steps, start, g, order, gz, gw, gc, row_lo, row_hi):
        n = start.shape[1]
        z_step, w_step, c_step = steps[0], steps[1], steps[2]
        need_gz = gz.shape[0] > 0
        need_gw = gw.shape[0] > 0
        for r in range(row_lo, row_hi):
            c = np.float64(scale[r * c_step])
            zr = r * z_step
            wr = r * w_step
            total_c = 0.0
            lo = 0
            while lo < n:
                hi = lo + 1
                while hi < n and start[r, hi] == lo:
                    hi += 1
                z0 = np.float64(z[zr, order[r, lo] if UNSORT == 1 else lo])
                w0 = np.float64(w[wr, order[r, lo] if UNSORT == 2 else lo])
                if not (np.isfinite(z0) and np.isfinite(w0)):
                    # An infinite block is a constant; a NaN one (a NaN row) is NaN.
                    fill = np.nan if (z0 != z0 or w0 != w0) else 0.0
                    for i in range(lo, hi):
                        if need_gz:
                            gz[r, order[r, i] if UNSORT == 1 else i] = fill
                        if need_gw:
                            gw[r, order[r, i] if UNSORT == 2 else i] = fill
                    total_c += fill
                    lo = hi
                    continue
                block_g = 0.0
                for i in range(lo, hi):
                    block_g += np.float64(g[r, order[r, i] if UNSORT == 1 else i])
                if KL:
                    mz = -np.inf
                    mw = -np.inf
                    for i in range(lo, hi):
                        mz = max(mz, c * np.float64(z[zr, order[r, i] if UNSORT == 1 else i]))
                        mw = max(mw, np.float64(w[wr, order[r, i] if UNSORT == 2 else i]))
                    ez = 0.0
                    ew = 0.0
                    for i in range(lo, hi):
                        ez += math.exp(c * np.float64(z[zr, order[r, i] if UNSORT == 1 else i]) - mz)
                        ew += math.exp(np.float64(w[wr, order[r, i] if UNSORT == 2 else i]) - mw)
                    for i in range(lo, hi):
                        zi = np.float64(z[zr, order[r, i] if UNSORT == 1 else i])
                        a = math.exp(c * zi - mz) / ez
                        d = np.float64(g[r, order[r, i] if UNSORT == 1 else i]) - a * block_g
                        if need_gz:
                            gz[r, order[r, i] if UNSORT == 1 else i] = c * d
                        if need_gw:
                            gw[r, order[r, i] if UNSORT == 2 else i] = (
                                math.exp(np.float64(w[wr, order[r, i] if UNSORT == 2 else i]) - mw) / ew * block_g
                            )
                        total_c += zi * d
                else:
                    mean_g = block_g / (hi - lo)
                    mean_z = 0.0  # a sum of z / m: no overflow near the float maximum
                    for i in range(lo, hi):
                        mean_z += np.float64(z[zr, order[r, i] if UNSORT == 1 else i]) / (hi - lo)
                    for i in range(lo, hi):
                        gi = np.float64(g[r, order[r, i] if UNSORT == 1 else i])
                        if need_gz:
                            gz[r, order[r, i] if UNSORT == 1 else i] = c * (gi - mean_g)
                        if need_gw:
                            gw[r, order[r, i] if UNSORT == 2 else i] = mean_g
                        total_c += gi * (np.float64(z[zr, order[r, i] if UNSORT == 1 else i]) - mean_z)
                lo = hi
            gc[r] = total_c

    return _pav_backward_rows


def _logaddexp_py(a, b):
    m = max(a, b)
    if m == -np.inf or m == np.inf:
        return m
    return m + math.log(math.exp(a - m) + math.exp(b - m))


_logaddexp = _logaddexp_py
_sort_row = rowsort.sort_row


class _Scratch(threading.local):
    """Scratch memory for one chunk of the forward kernel, kept per thread
    (the caller's and each pool thread) and reused across calls: fresh pages
    cost a page fault each (expensive in a VM), which would cost more than the
    kernel at large ``n``.  Four float64 rows of ``n`` (sorted z and w, the
    block stack), two uint64 and two int32 rows of ``n`` (the row sort) and
    256 counters; rows beyond ``LIMIT`` bytes are not kept."""

    LIMIT = 64 << 20

    def __init__(self):
        self.arrays = None

    def get(self, n):
        if self.arrays is not None and self.arrays[0].shape[1] == n:
            return self.arrays
        arrays = (np.empty((4, n), np.float64), np.empty((2, n), np.uint64),
                  np.empty((2, n), np.int32), np.empty(256, np.int64))
        if sum(a.nbytes for a in arrays) <= self.LIMIT:
            self.arrays = arrays
        return arrays


_SCRATCH = _Scratch()


@functools.cache
def _numba_kernels():
    """The compiled kernels, or None when numba is not installed."""
    global _logaddexp, _sort_row
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(cache=True, nogil=True)
    _logaddexp = jit(_logaddexp_py)
    _sort_row = rowsort.compiled_sort_row()
    # numba compiles each variant on its first call (per dtype).
    return {(kl, unsort): (jit(_forward_kernel(kl, code)), jit(_backward_kernel(kl, code)))
            for kl in (False, True) for unsort, code in _UNSORT.items()}


def numba_available() -> bool:
    return _numba_kernels() is not None


# The plain-Python helpers (what the names above are before numba loads).
_PLAIN = dict(_logaddexp=_logaddexp_py, _sort_row=rowsort.sort_row)


@functools.cache
def _python_kernels():
    # The forward kernel's row range is followed by its scratch arrays (argument 9 on).
    return {(kl, unsort): (_tiers.row_kernel(_forward_kernel(kl, code), _PLAIN, rows_at=9),
                           _tiers.row_kernel(_backward_kernel(kl, code), _PLAIN))
            for kl in (False, True) for unsort, code in _UNSORT.items()}


def _kernels_for(lay, kl, unsort):
    """``(forward, backward)`` of the variant for ``lay``'s rows: numba's
    (compiled on first use, per variant and dtype, on a background thread
    while small calls run as plain Python: ``softops._kernels._tiers``), or
    None without numba (the NumPy twin runs)."""
    kernels = _numba_kernels()
    if kernels is None:
        return None
    return _tiers.pick("isotonic", (bool(kl), unsort), kernels, _python_kernels, _warm, lay.dtype, lay.rows * lay.n)


def _warm(kl, unsort, dtype):
    """One tiny forward and backward of the variant (compiles it)."""
    z = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 0.0, 2.0]], dtype)
    w = np.array([4.0, 3.0, 2.0, 1.0], dtype)
    scale = np.ones(2, dtype)
    p, start, order = forward_numpy(z, w, scale, kl, unsort)
    backward_numpy(z, w, scale, start, np.ones_like(z), kl, order, unsort)


_NO_ORDER = np.zeros((1, 0), np.int32)
_NO_BITS = np.zeros((1, 0), np.uint32)


class _Layout:
    """The common batch shape of ``z``, ``w`` and ``scale`` and, for each, a
    ``(rows or 1, ...)`` contiguous view plus a row step (0: one row shared by
    all rows, 1: a row per row); partial broadcasts are materialised."""

    def __init__(self, z, w, scale):
        z, w, scale = np.asarray(z), np.asarray(w), np.asarray(scale)
        self.n = n = z.shape[-1]
        if w.shape[-1] != n:
            raise ValueError(f"z and w must have the same last axis, got {z.shape} and {w.shape}")
        self.batch = np.broadcast_shapes(z.shape[:-1], w.shape[:-1], scale.shape)
        self.rows = math.prod(self.batch)
        self.dtype = np.result_type(z.dtype, w.dtype)
        self.z, z_step = self._rows(z.astype(self.dtype, copy=False), z.shape[:-1], n)
        self.w, w_step = self._rows(w.astype(self.dtype, copy=False), w.shape[:-1], n)
        self.scale, c_step = self._rows(scale, scale.shape, None)
        self.steps = np.array([z_step, w_step, c_step], np.int64)

    def _rows(self, a, batch, n):
        return as_rows(a, batch, self.batch, n)

    def unsorted(self, unsort):
        """The rows of the sequence named by ``unsort`` (it must have a row per row)."""
        a = self.z if unsort == "z" else self.w
        if a.shape[0] != self.rows:
            a = np.ascontiguousarray(np.broadcast_to(a, (self.rows, self.n)))
        return a

    def order(self, order):
        if order is None:
            return _NO_ORDER
        return np.ascontiguousarray(np.broadcast_to(order, self.batch + (self.n,)), np.int32).reshape(
            self.rows, self.n)

    def all_rows(self, a):
        """One of the row views (``z``, ``w``, ``scale[:, None]``: ``(rows or 1,
        m)``) with a row per row."""
        return np.ascontiguousarray(np.broadcast_to(a, (self.rows,) + a.shape[1:]))

    def full(self, a):
        return np.ascontiguousarray(np.broadcast_to(a, self.batch + a.shape[-1:])).reshape(
            self.rows, a.shape[-1])


def _check_unsort(unsort, order=None, backward=False):
    if unsort not in _UNSORT or (backward and (unsort is None) != (order is None)):
        raise ValueError(f"unsort must be None, 'z' or 'w' (with its order in the backward pass), got {unsort!r}")


def forward_numpy(z, w, scale, kl: bool, unsort=None):
    """``(p, start, order)`` for NumPy arrays ``z``, ``w`` of shape ``(..., n)``
    and ``scale`` of shape ``(...)`` (the three broadcast on the batch axes; a
    row shared by every row is read in place).  ``start`` (int32, sorted order)
    is the index of the first element of each element's block.

    ``unsort=None``: ``z`` and ``w`` come sorted descending, ``order`` is None.
    ``unsort="z"`` or ``"w"``: that sequence comes in the caller's order and
    the kernel sorts each of its rows descending (``softops._kernels.rowsort``);
    ``order`` (int32) is the permutation, ``sorted[i] = caller[order[i]]``.
    With ``"z"`` ``p`` is returned in the caller's order of ``z``
    (``p[order[i]]`` holds sorted position ``i``); with ``"w"`` in sorted order."""
    _check_unsort(unsort)
    lay = _Layout(z, w, scale)
    kernels = _kernels_for(lay, kl, unsort)
    if kernels is None:
        return _forward_by_twin(lay, kl, unsort)
    rows, n = lay.rows, lay.n
    out = np.empty((rows, n), lay.dtype)
    start = np.empty((rows, n), np.int32)
    if unsort is None:
        sort_bits, bits, order = _NO_BITS, 32, _NO_ORDER
    else:
        sort_bits, bits = rowsort.key_bits(lay.unsorted(unsort))
        order = np.empty((rows, n), np.int32)
    z, w, scale, steps, sort_bits = readonly(lay.z, lay.w, lay.scale, lay.steps, sort_bits)
    args = (z, w, scale, steps, sort_bits, bits, out, start, order)
    kernel = kernels[0]
    _threads.run(lambda lo, hi: kernel(*args, lo, hi, *_SCRATCH.get(n)), rows, n)
    shape = lay.batch + (n,)
    return out.reshape(shape), start.reshape(shape), (None if unsort is None else order.reshape(shape))


def backward_numpy(z, w, scale, start, g, kl: bool, order=None, unsort=None, need=(True, True)):
    """``(gz, gw, gc)``: cotangents of ``z``, ``w`` (shape ``(*batch, n)``; the
    sequence named by ``unsort`` and its cotangent in the caller's order, read
    through ``order`` from ``forward_numpy``; None where ``need`` says so) and
    of the scale (shape ``batch``), given the cotangent ``g`` of ``p`` (in the
    order ``p`` was returned in).  Reduce them to the inputs' shapes yourself."""
    _check_unsort(unsort, order, backward=True)
    lay = _Layout(z, w, scale)
    kernels = _kernels_for(lay, kl, unsort)
    if kernels is None:
        return _backward_by_twin(lay, start, g, kl, order, unsort, need)
    rows, n = lay.rows, lay.n
    gz = np.empty((rows, n) if need[0] else (0, n), lay.dtype)
    gw = np.empty((rows, n) if need[1] else (0, n), lay.dtype)
    gc = np.empty(rows, np.float64)
    z, w, scale, steps, start, g, order = readonly(
        lay.z, lay.w, lay.scale, lay.steps, lay.full(np.asarray(start)), lay.full(np.asarray(g, lay.dtype)),
        lay.order(order))
    args = (z, w, scale, steps, start, g, order, gz, gw, gc)
    kernel = kernels[1]
    _threads.run(lambda lo, hi: kernel(*args, lo, hi), rows, n)
    shape = lay.batch + (n,)
    return (
        gz.reshape(shape) if need[0] else None,
        gw.reshape(shape) if need[1] else None,
        gc.astype(lay.dtype).reshape(lay.batch),
    )


def _sorted_rows(lay, unsort):
    """Full rows of z and w, the one named by ``unsort`` sorted descending
    (stable), and the permutation (None without ``unsort``)."""
    z, w = lay.all_rows(lay.z), lay.all_rows(lay.w)
    if unsort is None:
        return z, w, None
    order = np.argsort(-(z if unsort == "z" else w), axis=-1, kind="stable").astype(np.int32)
    if unsort == "z":
        z = np.take_along_axis(z, order, axis=-1)
    else:
        w = np.take_along_axis(w, order, axis=-1)
    return z, w, order


def _quiet(function):
    """``function`` without NumPy's floating-point warnings: the twin meets the
    same overflows as the kernel (which handles them and warns about nothing)."""
    def quiet(*args):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return function(*args)
    return quiet


@_quiet
def _forward_by_twin(lay, kl, unsort):
    """``forward_numpy`` without numba: the twin on the sorted rows."""
    z, w, order = _sorted_rows(lay, unsort)
    p, start = forward_twin(np, z, w, lay.all_rows(lay.scale[:, None])[:, 0], kl)
    if unsort == "z":
        p = _unsort(p, order)
    shape = lay.batch + (lay.n,)
    return p.reshape(shape), start.reshape(shape), (None if order is None else order.reshape(shape))


@_quiet
def _backward_by_twin(lay, start, g, kl, order, unsort, need):
    o = lay.order(order)
    z, w = lay.all_rows(lay.z), lay.all_rows(lay.w)
    g = lay.full(np.asarray(g, lay.dtype))
    if unsort == "z":
        z = np.take_along_axis(z, o, axis=-1)
        g = np.take_along_axis(g, o, axis=-1)
    elif unsort == "w":
        w = np.take_along_axis(w, o, axis=-1)
    gz, gw, gc = backward_twin(np, z, w, lay.all_rows(lay.scale[:, None])[:, 0], lay.full(np.asarray(start)), g, kl)
    if unsort == "z":
        gz = _unsort(gz, o)
    elif unsort == "w":
        gw = _unsort(gw, o)
    shape = lay.batch + (lay.n,)
    return (
        gz.reshape(shape) if need[0] else None,
        gw.reshape(shape) if need[1] else None,
        gc.astype(lay.dtype).reshape(lay.batch),
    )


def _unsort(a, order):
    """``out[order[i]] = a[i]`` along the last axis."""
    out = np.empty_like(a)
    np.put_along_axis(out, order, a, axis=-1)
    return out


# --- pure Array API twin -----------------------------------------------------------


def _reverse_cummax(xp, x):
    """``out[..., i] = max_{k >= i} x[..., k]`` by log-step doubling (Hillis &
    Steele 1986): ceil(log2 n) elementwise steps."""
    n = x.shape[-1]
    shift = 1
    while shift < n:
        x = xp.concat([xp.maximum(x[..., : n - shift], x[..., shift:]), x[..., n - shift :]], axis=-1)
        shift *= 2
    return x


def _block_mask(xp, start):
    """``(..., n, n)`` boolean: ``i`` and ``j`` lie in one block."""
    return start[..., :, None] == start[..., None, :]


def _masked_lse(xp, mask, a):
    """Per element ``i``: log-sum-exp of ``a`` over ``i``'s block."""
    big = xp.where(mask, a[..., None, :], -xp.inf)
    m = xp.max(big, axis=-1)
    return m + xp.log(xp.sum(xp.exp(big - m[..., None]), axis=-1))


def _window_values(xp, z, w, c, kl):
    """``f([j, k])`` for every window ``j <= k`` as an ``(..., n, n)`` array (row j,
    column k); entries with ``k < j`` are unspecified."""
    n = z.shape[-1]
    positions = xp.arange(n)
    inside = (positions[None, None, :] >= positions[:, None, None]) & (
        positions[None, None, :] <= positions[None, :, None]
    )  # (j, k, i): i in [j, k]
    if kl:
        return _masked_window_lse(xp, inside, c * z) - _masked_window_lse(xp, inside, w)
    y = c * z - w
    total = xp.sum(xp.where(inside, y[..., None, None, :], 0.0), axis=-1)
    size = xp.sum(xp.astype(inside, z.dtype), axis=-1)
    return total / xp.where(size > 0, size, 1.0)


def _masked_window_lse(xp, inside, a):
    """Log-sum-exp of ``a`` over each window; empty windows (k < j) give 0."""
    nonempty = xp.any(inside, axis=-1)
    big = xp.where(inside, a[..., None, None, :], -xp.inf)
    m = xp.where(nonempty, xp.max(big, axis=-1), 0.0)
    total = xp.sum(xp.exp(big - m[..., None]), axis=-1)
    return m + xp.log(xp.where(nonempty, total, 1.0))


def forward_twin(xp, z, w, scale, kl: bool):
    """Same contract as ``forward_numpy`` in Array API operations of ``xp``.

    Uses ``(..., n, n, n)`` intermediates for the window values: an oracle for
    small ``n``, not a production path."""
    n = z.shape[-1]
    c = xp.astype(xp.broadcast_to(xp.asarray(scale), z.shape[:-1]), z.dtype)[..., None]
    f = _window_values(xp, z, w, c, kl)
    positions = xp.arange(n)
    upper = positions[None, :] >= positions[:, None]  # (j, k): k >= j
    # R[j, i] = max_{k >= i} f[j, k]; v_i = min_{j <= i} R[j, i].
    r = _reverse_cummax(xp, xp.where(upper, f, -xp.inf))
    v = xp.min(xp.where(upper, r, xp.inf), axis=-2)
    mask = v[..., :, None] == v[..., None, :]
    start = xp.astype(xp.argmax(xp.astype(mask, xp.int32), axis=-1), xp.int32)
    block = _block_mask(xp, start)
    if kl:
        # c z - LSE_B(c z) from differences to the block's first (largest)
        # entry: exact for ties however large c z is.
        dz = c * (z - xp.take_along_axis(z, xp.astype(start, xp.int64), axis=-1))
        p = dz - _masked_lse(xp, block, dz) + _masked_lse(xp, block, w)
    else:
        size = xp.sum(xp.astype(block, z.dtype), axis=-1)
        mean = lambda a: xp.sum(xp.where(block, a[..., None, :], 0.0), axis=-1) / size
        p = c * (z - mean(z)) + mean(w)
    return p, start


def backward_twin(xp, z, w, scale, start, g, kl: bool):
    """Same contract as ``backward_numpy`` in Array API operations of ``xp``."""
    c = xp.astype(xp.broadcast_to(xp.asarray(scale), z.shape[:-1]), z.dtype)[..., None]
    block = _block_mask(xp, start)
    block_sum = lambda a: xp.sum(xp.where(block, a[..., None, :], 0.0), axis=-1)
    total_g = block_sum(g)
    if kl:
        dz = c * (z - xp.take_along_axis(z, xp.astype(start, xp.int64), axis=-1))
        a = xp.exp(dz - _masked_lse(xp, block, dz))
        b = xp.exp(w - _masked_lse(xp, block, w))
        d = g - a * total_g
        return c * d, b * total_g, xp.sum(z * d, axis=-1)
    size = block_sum(xp.ones_like(z))
    mean_g = total_g / size
    return c * (g - mean_g), mean_g, xp.sum(g * (z - block_sum(z) / size), axis=-1)
