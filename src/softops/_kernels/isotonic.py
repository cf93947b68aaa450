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

Two implementations with one contract:

* ``forward_numpy`` / ``backward_numpy``: a numba kernel (``@njit(parallel=True,
  cache=True, nogil=True)``, rows in parallel with ``prange``; O(n) per row),
  compiled lazily on first use; without numba they fall back to the twin;
* ``forward_twin`` / ``backward_twin``: the same maps in pure Array API
  operations (O(n^2 log n) work, O(n^2) memory per row: the min-max formula
  ``v_i = min_{j <= i} max_{k >= i} f([j, k])`` with log-step scans; the window
  values take O(n^3) memory), the test oracle and the fallback without numba;
  fine for n up to a few hundred.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["forward_numpy", "backward_numpy", "forward_twin", "backward_twin", "numba_available"]


# --- numba kernel ----------------------------------------------------------------


def _pav_forward_rows(z, w, scale, kl, out, start):
    rows, n = z.shape
    # Scratch for every row at once: one allocation, not one per row.
    firsts = np.empty((rows, n + 1), np.int64)
    stats = np.empty((rows, 3, n), np.float64)
    for r in _prange(rows):
        c = scale[r]
        first = firsts[r]
        sz = stats[r, 0]  # l2: sum of z; kl: LSE of c z
        sw = stats[r, 1]  # l2: sum of w; kl: LSE of w
        count = stats[r, 2]
        top = -1
        for i in range(n):
            top += 1
            first[top] = i
            count[top] = 1.0
            if kl:
                sz[top] = c * np.float64(z[r, i])
            else:
                sz[top] = np.float64(z[r, i])
            sw[top] = np.float64(w[r, i])
            while top > 0:
                if kl:
                    before = sz[top - 1] - sw[top - 1]
                    after = sz[top] - sw[top]
                else:
                    before = (c * sz[top - 1] - sw[top - 1]) / count[top - 1]
                    after = (c * sz[top] - sw[top]) / count[top]
                if before >= after:
                    break
                if kl:
                    sz[top - 1] = _logaddexp(sz[top - 1], sz[top])
                    sw[top - 1] = _logaddexp(sw[top - 1], sw[top])
                else:
                    sz[top - 1] += sz[top]
                    sw[top - 1] += sw[top]
                count[top - 1] += count[top]
                top -= 1
        first[top + 1] = n
        for b in range(top + 1):
            lo = first[b]
            hi = first[b + 1]
            for i in range(lo, hi):
                start[r, i] = lo
                if kl:
                    out[r, i] = c * np.float64(z[r, i]) - sz[b] + sw[b]
                else:
                    out[r, i] = c * (np.float64(z[r, i]) - sz[b] / count[b]) + sw[b] / count[b]


def _pav_backward_rows(z, w, scale, start, g, kl, gz, gw, gc):
    rows, n = z.shape
    for r in _prange(rows):
        c = scale[r]
        total_c = 0.0
        lo = 0
        while lo < n:
            hi = lo + 1
            while hi < n and start[r, hi] == lo:
                hi += 1
            block_g = 0.0
            for i in range(lo, hi):
                block_g += np.float64(g[r, i])
            if kl:
                mz = -np.inf
                mw = -np.inf
                for i in range(lo, hi):
                    mz = max(mz, c * np.float64(z[r, i]))
                    mw = max(mw, np.float64(w[r, i]))
                ez = 0.0
                ew = 0.0
                for i in range(lo, hi):
                    ez += math.exp(c * np.float64(z[r, i]) - mz)
                    ew += math.exp(np.float64(w[r, i]) - mw)
                for i in range(lo, hi):
                    a = math.exp(c * np.float64(z[r, i]) - mz) / ez
                    d = np.float64(g[r, i]) - a * block_g
                    gz[r, i] = c * d
                    gw[r, i] = math.exp(np.float64(w[r, i]) - mw) / ew * block_g
                    total_c += np.float64(z[r, i]) * d
            else:
                mean_g = block_g / (hi - lo)
                mean_z = 0.0
                for i in range(lo, hi):
                    mean_z += np.float64(z[r, i])
                mean_z /= hi - lo
                for i in range(lo, hi):
                    gz[r, i] = c * (np.float64(g[r, i]) - mean_g)
                    gw[r, i] = mean_g
                    total_c += np.float64(g[r, i]) * (np.float64(z[r, i]) - mean_z)
            lo = hi
        gc[r] = total_c


def _logaddexp_py(a, b):
    m = max(a, b)
    if m == -np.inf:
        return m
    return m + math.log(math.exp(a - m) + math.exp(b - m))


_prange = range
_logaddexp = _logaddexp_py


@functools.cache
def _numba_kernels():
    """The compiled kernels, or None when numba is not installed."""
    global _prange, _logaddexp
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(cache=True, nogil=True)
    _logaddexp = jit(_logaddexp_py)
    _prange = numba.prange
    parallel = numba.njit(parallel=True, cache=True, nogil=True)
    return parallel(_pav_forward_rows), parallel(_pav_backward_rows)


def numba_available() -> bool:
    return _numba_kernels() is not None


def _rows(a, n):
    return np.ascontiguousarray(a).reshape(-1, n)


def _scale_rows(scale, shape):
    return np.ascontiguousarray(np.broadcast_to(np.asarray(scale, np.float64), shape)).reshape(-1)


def forward_numpy(z, w, scale, kl: bool):
    """``(p, start)`` for NumPy arrays ``z``, ``w`` of shape ``(..., n)`` and
    ``scale`` broadcastable to ``(...)``; ``start`` is int32."""
    z = np.asarray(z)
    kernels = _numba_kernels()
    if kernels is None:
        p, start = forward_twin(np, z, np.asarray(w, z.dtype), np.asarray(scale, z.dtype), kl)
        return p, start
    n = z.shape[-1]
    out = np.empty(z.shape, z.dtype)
    start = np.empty(z.shape, np.int32)
    kernels[0](
        _rows(z, n), _rows(np.asarray(w, z.dtype), n), _scale_rows(scale, z.shape[:-1]),
        bool(kl), out.reshape(-1, n), start.reshape(-1, n),
    )
    return out, start


def backward_numpy(z, w, scale, start, g, kl: bool):
    """``(gz, gw, gc)``: cotangents of ``z``, ``w`` and of the per-row scale
    (shape ``(...)``, reduce it to the shape of ``scale`` yourself)."""
    z = np.asarray(z)
    kernels = _numba_kernels()
    if kernels is None:
        return backward_twin(np, z, np.asarray(w, z.dtype), np.asarray(scale, z.dtype), start,
                             np.asarray(g, z.dtype), kl)
    n = z.shape[-1]
    gz = np.empty(z.shape, z.dtype)
    gw = np.empty(z.shape, z.dtype)
    gc = np.empty(z.shape[:-1], np.float64)
    kernels[1](
        _rows(z, n), _rows(np.asarray(w, z.dtype), n), _scale_rows(scale, z.shape[:-1]),
        _rows(start, n), _rows(np.asarray(g, z.dtype), n), bool(kl),
        gz.reshape(-1, n), gw.reshape(-1, n), gc.reshape(-1),
    )
    return gz, gw, gc.astype(z.dtype)


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
        p = c * z - _masked_lse(xp, block, c * z) + _masked_lse(xp, block, w)
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
        a = xp.exp(c * z - _masked_lse(xp, block, c * z))
        b = xp.exp(w - _masked_lse(xp, block, w))
        d = g - a * total_g
        return c * d, b * total_g, xp.sum(z * d, axis=-1)
    size = block_sum(xp.ones_like(z))
    mean_g = total_g / size
    return c * (g - mean_g), mean_g, xp.sum(g * (z - block_sum(z) / size), axis=-1)
