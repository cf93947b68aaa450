r"""Differentiable sorting networks as row kernels: values, slot weights, exact backward.

The same computation as ``softops.methods.network`` (Petersen et al. 2021,
2022), one row at a time, with every comparator a scalar step instead of a
layer of framework operations.  For each row ``y`` (the operation's order,
ascending network) the forward

1. moves the finite entries to the first lanes, stably (``pos[lane]`` is the
   caller's position), counts the ``-inf`` (``m_low``) and ``+inf`` entries;
   a row with a NaN is NaN;
2. runs the network of its finite count ``n_f`` on the lanes: comparator
   ``(i, j)`` of layer ``l`` is active when ``j < n_f`` and the layer's stage
   is below ``stages(n_f)``; with ``z = clip((b - a) / T, +-1e30)`` it sets
   ``v_i = min(a, b) + T h(|z|)``, ``v_j = max(a, b) - T h(|z|)`` (the convex
   combinations ``alpha a + (1 - alpha) b`` and back, ``alpha = f(z)``, with no
   difference of values formed) and stores ``z`` (``INACTIVE`` for an
   identity comparator);
3. ``op = SORT``: writes the sorted values with the infinities at the ends;
   ``op = COLUMNS``: pulls the slot weights ``w`` back through the layers
   reversed (``P_f^T w``; each layer is symmetric), storing each active
   comparator's difference ``d = w_i - w_j``, and writes each position's
   column weight (tied infinities: the mean of their slots' weights).

The backward is the exact vector-Jacobian product of that map (``x``, the
per-row temperature and the slot weights): with ``c = f(z) + z f'(z)``,
``d v_i / d a = d v_j / d b = c``, ``d v_i / d b = d v_j / d a = 1 - c`` and
``d v_i / d T = -d v_j / d T = z^2 f'(z)`` (``h(|z|)`` where ``z`` is
clipped); the pulled-back weights add ``d alpha = f'(z) dz`` with
``dz = (db - da) / T - z dT / T``.  It reads ``z`` and ``d`` and evaluates one
sigmoid per comparator.  Scalar arithmetic is in float64; values and
residuals are stored in the rows' dtype.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from softops._kernels import _threads, _tiers
from softops._kernels._rows import as_rows, readonly

SORT, COLUMNS = 0, 1
_NETWORKS = ("odd_even", "bitonic")
# ``kind``: the index in softops.methods.network.SIGMOIDS (logistic, cauchy, reciprocal, optimal).
KINDS = 4  # kernel variants per sigmoid
Z_MAX = 1e30  # as softops.methods.network._Z_MAX
INACTIVE = math.inf  # the stored z of an identity comparator (a clipped z is at most Z_MAX)


@functools.lru_cache(maxsize=64)
def tables(network: str, n: int):
    """``(lo, hi, stage, odd_even)``: the comparators of ``network`` on rows of
    ``n`` as ``(layers, width)`` int32 arrays (``-1`` pads short layers), each
    layer's stage, and whether it is the odd-even network (stages = count)."""
    from softops.methods.network import _layers

    lanes, layers = _layers(network, n)
    width = max([len(layer[0]) for layer in layers], default=0)
    lo = np.full((len(layers), width), -1, np.int32)
    hi = np.full((len(layers), width), -1, np.int32)
    for l, layer in enumerate(layers):
        lo[l, :len(layer[0])], hi[l, :len(layer[1])] = layer[0], layer[1]
    stage = np.array([layer[2] for layer in layers], np.int32)
    return readonly(lo, hi, stage) + [lanes, network == "odd_even"]


# --- per-comparator helpers (njit-ed when numba is there) -----------------------------


def _sigmoid_py(kind, z):
    """``(f(z), f'(z))`` of sigmoid ``kind``, float64."""
    if kind == 0:
        e = math.exp(-abs(z))  # in (0, 1]: never overflows
        s = 1.0 / (1.0 + e)
        f = s if z >= 0 else 1.0 - s
        return f, s * (1.0 - s)
    if kind == 1:
        pz = math.pi * z
        return 0.5 + math.atan(pz) / math.pi, 1.0 / (1.0 + pz * pz)
    if kind == 2:
        q = 1.0 + 2.0 * abs(z)
        return (1.0 - 0.5 / q if z >= 0 else 0.5 / q), 1.0 / (q * q)
    if abs(z) <= 0.25:
        return z + 0.5, 1.0
    return (1.0 - 1.0 / (16.0 * z) if z > 0 else -1.0 / (16.0 * z)), 1.0 / (16.0 * z * z)


def _h_py(kind, u):
    """``h(u) = u (1 - f(u))`` for ``u >= 0`` (bounded), float64."""
    if kind == 0:
        e = math.exp(-u)
        return u * e / (1.0 + e)
    if kind == 1:
        return u * math.atan(1.0 / (math.pi * u)) / math.pi if u > 0 else 0.0
    if kind == 2:
        return u / (2.0 * (1.0 + 2.0 * u))
    return 1.0 / 16.0 if u > 0.25 else u * (0.5 - u)


def _compact_py(y, pos):
    """Finite entries' positions into ``pos`` (stably); ``(count, m_low, nan)``."""
    count = 0
    m_low = 0
    nan = False
    for j in range(y.shape[0]):
        v = y[j]
        if v == -np.inf:
            m_low += 1
        elif v != np.inf:
            if v != v:
                nan = True
            pos[count] = j
            count += 1
    return count, m_low, nan


def _stages_py(count, odd_even):
    if odd_even:
        return count
    stages = 0
    while (1 << stages) < count:
        stages += 1
    return stages


def _forward_kernel(KIND, OP):
    """The forward row kernel of one sigmoid (``KIND``, the index in ``SIGMOIDS``) and
    operation (``OP``: ``SORT`` or ``COLUMNS``): closure constants, so numba
    prunes the other cases' branches (the helpers get them as literals) and
    each variant compiles only its own code, on its first call."""

    def _forward_rows(y, t, w, steps, lo, hi, stage, lanes, odd_even, out, zs, ds, row_lo, row_hi):
        n = y.shape[1]
        layers, width = lo.shape
        v = np.empty(lanes, np.float64)
        wl = np.empty(lanes, np.float64)
        pos = np.empty(n, np.int64)
        for r in range(row_lo, row_hi):
            yr = y[r * steps[0]]
            temp = float(t[r * steps[1]])
            count, m_low, nan = _compact(yr, pos)
            if nan:
                out[r, :] = np.nan
                zs[r, :, :] = np.nan
                if OP == COLUMNS:
                    ds[r, :, :] = np.nan
                continue
            for lane in range(lanes):
                v[lane] = yr[pos[lane]] if lane < count else 0.0
            stages = _stages(count, odd_even)
            ratio = 2.0 / temp
            for l in range(layers):
                live = stage[l] < stages
                for c in range(width):
                    i, j = lo[l, c], hi[l, c]
                    if i < 0 or not live or j >= count:
                        zs[r, l, c] = INACTIVE
                        continue
                    a, b = v[i], v[j]
                    z = min(max((0.5 * b - 0.5 * a) * ratio, -Z_MAX), Z_MAX)
                    zs[r, l, c] = z
                    shift = temp * _h(KIND, abs(z))
                    v[i] = min(a, b) + shift
                    v[j] = max(a, b) - shift
            if OP == SORT:
                for s in range(n):
                    if s < m_low:
                        out[r, s] = -np.inf
                    elif s < m_low + count:
                        out[r, s] = v[s - m_low]
                    else:
                        out[r, s] = np.inf
                continue
            wr = w[r * steps[2]]
            for lane in range(lanes):
                wl[lane] = wr[lane + m_low] if lane < count else 0.0
            for l in range(layers - 1, -1, -1):
                for c in range(width):
                    z = float(zs[r, l, c])
                    if z == INACTIVE:
                        continue
                    i, j = lo[l, c], hi[l, c]
                    alpha = _sigmoid(KIND, z)[0]
                    a, b = wl[i], wl[j]
                    d = a - b
                    ds[r, l, c] = d
                    wl[i] = b + alpha * d  # alpha a + (1 - alpha) b
                    wl[j] = a - alpha * d  # (1 - alpha) a + alpha b
            first, last = 0.0, 0.0
            m_high = n - m_low - count
            for s in range(m_low):
                first += wr[s]
            for s in range(m_low + count, n):
                last += wr[s]
            first /= max(m_low, 1)
            last /= max(m_high, 1)
            for s in range(n):
                out[r, s] = first if yr[s] == -np.inf else last
            for lane in range(count):
                out[r, pos[lane]] = wl[lane]

    return _forward_rows


def _backward_kernel(KIND, OP):
    """The backward row kernel (see ``_forward_kernel``)."""

    def _backward_rows(y, t, w, zs, ds, g, steps, lo, hi, stage, lanes, need_t, gy, gt, gw, row_lo, row_hi):
        n = y.shape[1]
        layers, width = lo.shape
        gv = np.empty(lanes, np.float64)
        gl = np.empty(lanes, np.float64)
        galpha = np.zeros((layers, width), np.float64)
        pos = np.empty(n, np.int64)
        for r in range(row_lo, row_hi):
            yr, gr = y[r * steps[0]], g[r]
            temp = float(t[r * steps[1]])
            count, m_low, nan = _compact(yr, pos)
            if nan:
                gy[r, :] = np.nan
                gt[r] = np.nan
                if OP == COLUMNS:
                    gw[r, :] = np.nan
                continue
            gv[:] = 0.0
            if OP == SORT:
                for lane in range(count):
                    gv[lane] = gr[m_low + lane]
            else:
                # Through the pull-back of the slot weights (applied to the layers
                # last to first, so differentiated first to last).
                for lane in range(lanes):
                    gl[lane] = gr[pos[lane]] if lane < count else 0.0
                for l in range(layers):
                    for c in range(width):
                        z = float(zs[r, l, c])
                        if z == INACTIVE:
                            continue
                        i, j = lo[l, c], hi[l, c]
                        alpha = _sigmoid(KIND, z)[0]
                        a, b = gl[i], gl[j]
                        galpha[l, c] = (a - b) * ds[r, l, c]
                        gl[i] = alpha * a + (1.0 - alpha) * b
                        gl[j] = (1.0 - alpha) * a + alpha * b
                m_high = n - m_low - count
                first, last = 0.0, 0.0
                for s in range(n):
                    if yr[s] == -np.inf:
                        first += gr[s]
                    elif yr[s] == np.inf:
                        last += gr[s]
                for s in range(n):
                    if s < m_low:
                        gw[r, s] = first / m_low
                    elif s < m_low + count:
                        gw[r, s] = gl[s - m_low]
                    else:
                        gw[r, s] = last / m_high
            inv_t = 1.0 / temp
            acc_t = 0.0
            for l in range(layers - 1, -1, -1):
                for c in range(width):
                    z = float(zs[r, l, c])
                    if z == INACTIVE:
                        continue
                    i, j = lo[l, c], hi[l, c]
                    f, fp = _sigmoid(KIND, z)
                    a, b = gv[i], gv[j]
                    if abs(z) >= Z_MAX:  # clipped: z is a constant
                        cc = f
                        dz = 0.0
                        if need_t:
                            acc_t += _h(KIND, abs(z)) * (a - b)
                    else:
                        cc = f + z * fp
                        dz = galpha[l, c] * fp if OP == COLUMNS else 0.0
                        if need_t:
                            acc_t += z * z * fp * (a - b) - dz * z * inv_t
                    gv[i] = cc * a + (1.0 - cc) * b - dz * inv_t
                    gv[j] = (1.0 - cc) * a + cc * b + dz * inv_t
            for s in range(n):
                gy[r, s] = 0.0
            for lane in range(count):
                gy[r, pos[lane]] = gv[lane]
            gt[r] = acc_t

    return _backward_rows


# Pure-Python stand-ins (the kernels' globals); _numba_kernels swaps in compiled ones.
_sigmoid, _h, _compact, _stages = _sigmoid_py, _h_py, _compact_py, _stages_py


@functools.cache
def _numba_kernels():
    """The compiled kernels, or None when numba is not installed."""
    global _sigmoid, _h, _compact, _stages
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(cache=True, nogil=True, error_model="numpy")
    # Helpers first: the kernels resolve these globals when they compile.
    _sigmoid, _h, _compact, _stages = jit(_sigmoid_py), jit(_h_py), jit(_compact_py), jit(_stages_py)
    kernel = numba.njit(cache=True, nogil=True, error_model="numpy")
    return _variants(kernel)


def _variants(wrap):
    """``{(kind, op): (forward, backward)}``, each kernel made by ``wrap``."""
    return {(kind, op): (wrap(_forward_kernel(kind, op)), wrap(_backward_kernel(kind, op)))
            for kind in range(KINDS) for op in (SORT, COLUMNS)}


def numba_available() -> bool:
    return _numba_kernels() is not None


_PLAIN = dict(_sigmoid=_sigmoid_py, _h=_h_py, _compact=_compact_py, _stages=_stages_py)


@functools.cache
def _python_kernels():
    return _variants(lambda f: _tiers.row_kernel(f, _PLAIN))


def _kernels(kind, op, dtype, size):
    """``(forward, backward)`` of one variant for a call of ``size`` entries
    computing in ``dtype``: numba's (compiled on first use, per variant and
    dtype, on a background thread while small calls run interpreted:
    ``softops._kernels._tiers``), else the plain-Python ones."""
    return _tiers.pick("network", (int(kind), op), _numba_kernels(), _python_kernels, _warm, dtype, size)


def _warm(kind, op, dtype):
    """One tiny forward and backward of the variant (compiles it)."""
    y = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 0.0, 2.0]], dtype)
    t = np.ones(2, dtype)
    if op == SORT:
        out, zs = sort_forward(y, t, 0, kind)
        sort_backward(y, t, zs, np.ones_like(out), 0, kind, True)
    else:
        out, zs, ds = columns_forward(y, t, np.ones_like(y), 0, kind)
        columns_backward(y, t, np.ones_like(y), zs, ds, np.ones_like(out), 0, kind, True)


def _broadcast(*shapes):
    """``numpy.broadcast_shapes`` on plain tuples (also of symbolic sizes)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        sizes = [s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0]
        big = [d for d in sizes if not (isinstance(d, int) and d == 1)]
        out.append(big[0] if big else 1)
    return tuple(out)


def _setup(y, t, w, network):
    y, t = np.asarray(y), np.asarray(t)
    n = y.shape[-1]
    w = None if w is None else np.asarray(w)
    batch = _broadcast(y.shape[:-1], t.shape, () if w is None else w.shape[:-1])
    work = y.dtype if y.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    y_rows, y_step = as_rows(y.astype(work, copy=False), y.shape[:-1], batch, n)
    t_rows, t_step = as_rows(t.astype(work, copy=False), t.shape, batch, None)
    if w is None:  # the sort reads no slot weights
        w_rows, w_step = np.zeros((1, 0), work), 0
    else:
        w_rows, w_step = as_rows(w.astype(work, copy=False), w.shape[:-1], batch, n)
    lo, hi, stage, lanes, odd_even = tables(_NETWORKS[int(network)], n)
    steps = np.array([y_step, t_step, w_step], np.int64)
    return batch, work, readonly(y_rows, t_rows, w_rows, steps), (lo, hi, stage, lanes, odd_even)


def _residual_shapes(y_shape, network, with_d):
    lo = tables(_NETWORKS[int(network)], y_shape[-1])[0]
    return lo.shape, (lo.shape if with_d else (0, 0))


def _forward(y, t, w, network, kind, op):
    batch, work, (y, t, w, steps), (lo, hi, stage, lanes, odd_even) = _setup(y, t, w, network)
    rows, n = math.prod(batch), y.shape[-1]
    z_shape, d_shape = _residual_shapes(y.shape, network, op == COLUMNS)
    out = np.empty((rows, n), work)
    zs = np.empty((rows,) + z_shape, work)
    ds = np.empty((rows,) + d_shape, work)
    args = (y, t, w, steps, lo, hi, stage, lanes, odd_even, out, zs, ds)
    kernel = _kernels(kind, op, work, rows * max(lo.size, n))[0]
    _threads.run(lambda a, b: kernel(*args, a, b), rows, max(lo.size, n))
    return out.reshape(batch + (n,)), zs.reshape(batch + z_shape), ds.reshape(batch + d_shape)


def _backward(y, t, w, zs, ds, g, network, kind, op, need_t):
    batch, work, (y, t, w, steps), (lo, hi, stage, lanes, _) = _setup(y, t, w, network)
    rows, n = math.prod(batch), y.shape[-1]

    def full(a, tail):
        return np.ascontiguousarray(np.broadcast_to(np.asarray(a).astype(work, copy=False), batch + tail)) \
            .reshape((rows,) + tail)

    zs, ds, g = readonly(full(zs, lo.shape), full(ds, ds.shape[-2:]), full(g, (n,)))
    gy = np.empty((rows, n), work)
    gt = np.zeros(rows, np.float64)
    gw = np.zeros((rows, n if op == COLUMNS else 0), work)
    args = (y, t, w, zs, ds, g, steps, lo, hi, stage, lanes, bool(need_t), gy, gt, gw)
    kernel = _kernels(kind, op, work, rows * max(lo.size, n))[1]
    _threads.run(lambda a, b: kernel(*args, a, b), rows, max(lo.size, n))
    return gy.reshape(batch + (n,)), gt.astype(work).reshape(batch), gw.reshape(batch + gw.shape[-1:])


# --- host kernels (softops._backend.register_kernel): NumPy arrays in and out -------
# ``network`` is the index in softops.methods.network.NETWORKS (``_NETWORKS``)
# and ``kind`` in SIGMOIDS: numbers, so that every framework passes them as
# static arguments.


def sort_forward(y, t, network, kind):
    """``(out, zs)``: the sorted rows (``y``'s shape) and each comparator's ``z``."""
    out, zs, _ = _forward(y, t, None, network, kind, SORT)
    return out, zs


def sort_backward(y, t, zs, g, network, kind, need_t):
    """``(gy, gt)`` for the cotangent ``g`` of ``sort_forward``'s ``out``."""
    gy, gt, _ = _backward(y, t, None, zs, np.zeros((0, 0), np.asarray(y).dtype), g, network, kind, SORT, need_t)
    return gy, gt


def columns_forward(y, t, w, network, kind):
    """``(out, zs, ds)``: ``P^T w`` per position (slot weights ``w``) and the residuals."""
    return _forward(y, t, w, network, kind, COLUMNS)


def columns_backward(y, t, w, zs, ds, g, network, kind, need_t):
    """``(gy, gt, gw)`` for the cotangent ``g`` of ``columns_forward``'s ``out``."""
    return _backward(y, t, w, zs, ds, g, network, kind, COLUMNS, need_t)


def _batch(shapes):
    y, t = shapes[0], shapes[1]
    w = shapes[2] if len(shapes) > 2 else ()
    return _broadcast(y[:-1], t, w[:-1] if w else ())


def sort_forward_shapes(shapes, network, kind):
    batch, n = _batch(shapes), shapes[0][-1]
    z_shape, _ = _residual_shapes(shapes[0], network, False)
    return [(batch + (n,), 0), (batch + z_shape, 0)]


def sort_backward_shapes(shapes, network, kind, need_t):
    batch = _batch(shapes[:2])
    return [(batch + (shapes[0][-1],), 0), (batch, 0)]


def columns_forward_shapes(shapes, network, kind):
    batch, n = _batch(shapes), shapes[0][-1]
    z_shape, d_shape = _residual_shapes(shapes[0], network, True)
    return [(batch + (n,), 0), (batch + z_shape, 0), (batch + d_shape, 0)]


def columns_backward_shapes(shapes, network, kind, need_t):
    batch, n = _batch(shapes[:3]), shapes[0][-1]
    return [(batch + (n,), 0), (batch, 0), (batch + (n,), 0)]


def _register():
    from softops._backend import register_kernel

    register_kernel(sort_forward, sort_forward_shapes)
    register_kernel(sort_backward, sort_backward_shapes)
    register_kernel(columns_forward, columns_forward_shapes)
    register_kernel(columns_backward, columns_backward_shapes)


_register()
