r"""Differentiable sorting networks: relaxed conditional swaps, layer by layer.

Petersen, Borgelt, Kuehne & Deussen 2021, "Differentiable Sorting Networks for
Scalable Sorting and Ranking Supervision" (ICML, arXiv:2105.04019) and 2022,
"Monotonic Differentiable Sorting Networks" (ICLR, arXiv:2203.09630).  A
sorting network is a fixed sequence of layers of disjoint comparators
``(i, j)``, ``i < j``; each puts the smaller of lanes ``i`` and ``j`` into
lane ``i``.  Relaxed, with ``z = (b - a) / T`` for the values ``a`` (lane
``i``) and ``b`` (lane ``j``) and a sigmoid ``f``,

    ``alpha = f(z)``,  ``min' = alpha a + (1 - alpha) b``,  ``max' = (1 - alpha) a + alpha b``,

so each layer is a doubly stochastic linear map of the lanes (symmetric 2 x 2
blocks) and the network's soft permutation ``P`` is their product.  Sigmoids
(Petersen et al. 2022, Sec. 4): ``"logistic"`` ``1 / (1 + e^{-z})``;
``"cauchy"`` ``1/2 + arctan(pi z) / pi``; ``"reciprocal"`` ``1/2 + z / (1 +
2 |z|)``; ``"optimal"`` ``z + 1/2`` on ``|z| <= 1/4``, ``1 - 1 / (16 z)``
above, ``-1 / (16 z)`` below.  The last three make the soft sort monotonic
(``d sort / d x >= 0`` elementwise; the paper's Theorem 3).  The temperature
is the inverse steepness, in units of ``x``: pairs closer than about ``T``
are blended at every comparator they meet (so more layers blend more).

Networks: ``"odd_even"`` (odd-even transposition, ``n`` layers of neighbour
comparators, ``O(n^2)`` work) and ``"bitonic"`` (all comparators ascending, a
"flip" layer opening each merge; ``n`` padded to a power of two ``N``,
``log2 N (log2 N + 1) / 2`` layers, ``O(n log^2 n)`` work and memory).

Computed here on values, never on dense per-layer matrices: the sort runs the
layers on the values (``min' = lo + T h(|z|)``, ``max' = a + b - min'`` with
``h(u) = u (1 - f(u))`` bounded, so nothing overflows next to the dtype's
maximum); ranks and top-k masks are ``P^T w`` (slot weights ``w``), which is
the layers applied in reverse order to ``w`` (each layer is symmetric); the
dense ``P`` is built (the layers applied to the identity) only for
``soft_permutation`` and ``soft_sort_by``.  Gradients: the framework's
autodiff through the layers (every transform and order).  On CPU arrays with
numba the sort, ranks and masks run as one kernel call forward and one
backward (``softops._kernels.network``: the same comparators as scalar loops,
an exact vector-Jacobian product in ``x``, the temperature and ``k``), about
90x faster than diffsort's dense layers at n = 128 (README); every other
transform differentiates the layers above.

Infinities and masks: the present finite entries are moved to the first
lanes (stably) and the network of their own count ``n_f`` runs on them:
comparators that reach beyond lane ``n_f`` and layers beyond that network
(odd-even: layer ``>= n_f``; bitonic: merges wider than the next power of two
of ``n_f``) are identities, so a row with infinities or masked entries is
sorted exactly as the row of its finite entries alone would be.

Example::

    >>> import numpy as np, softops
    >>> softops.soft_sort(np.array([3.0, 1.0, 2.0]), temperature=0.1, method="network").round(4)
    array([1., 2., 3.])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from softops._axis import sum_to
from softops._backend import Backend, backend_of
from softops._shared import index_dtype, per_row
from softops._validate import check_choice
from softops.methods._matrix import MatrixMethod, infinity_groups, topk_slot_weights

NETWORKS = ("odd_even", "bitonic")
SIGMOIDS = ("logistic", "cauchy", "reciprocal", "optimal")
_Z_MAX = 1e30  # |z| beyond this: every sigmoid is saturated in float64 but cauchy's h (1 / pi^2)


_LAYERS: dict = {}


def _layers(network: str, n: int):
    """``(lanes, layers)``: each layer ``(lo, hi, stage, source, rest)``:
    comparators from lanes ``lo`` (the smaller goes there) to ``hi``, the
    stage it belongs to (a row with ``n_f`` entries runs the stages below
    ``_stages(network, n_f)``), and the static gather that writes a layer's
    outputs back (``_put``).  Plain Python lists (``torch.compile`` traces
    them as constants), kept in a plain dict of at most 64 entries
    (``torch.compile`` warns when it traces into ``functools.lru_cache``)."""
    key = (network, n)
    if key not in _LAYERS:
        if len(_LAYERS) >= 64:
            _LAYERS.clear()
        _LAYERS[key] = _build_layers(network, n)
    return _LAYERS[key]


def _build_layers(network: str, n: int):
    pairs = []
    if network == "odd_even":
        lanes = n
        for layer in range(n):
            comparators = [(i, i + 1) for i in range(layer % 2, n - 1, 2)]
            if comparators:
                pairs.append((comparators, layer))
    else:
        lanes = 1 << max(n - 1, 0).bit_length()
        for stage in range(lanes.bit_length() - 1):
            size = 2 << stage
            # The flip opens each merge (every block then sorts ascending) ...
            pairs.append(([(start + i, start + size - 1 - i) for start in range(0, lanes, size)
                           for i in range(size // 2)], stage))
            d = size // 4
            while d >= 1:  # ... then half-cleaners
                pairs.append(([(start + i, start + i + d) for start in range(0, lanes, 2 * d)
                               for i in range(d)], stage))
                d //= 2
    layers = []
    for comparators, stage in pairs:
        lo = [a for a, _ in comparators]
        hi = [b for _, b in comparators]
        used = set(lo) | set(hi)
        rest = [i for i in range(lanes) if i not in used]
        source = [0] * lanes
        for position, lane in enumerate(lo + hi + rest):
            source[lane] = position
        layers.append((lo, hi, stage, source, rest))
    return lanes, tuple(layers)


def _stages(xp, network: str, count):
    """The number of stages a row of ``count`` entries (float array) runs."""
    if network == "odd_even":
        return count
    return xp.ceil(xp.log2(xp.where(count > 1, count, 1.0)))


def _sigmoid(xp, name: str, z):
    if name == "logistic":
        return 0.5 + 0.5 * xp.tanh(z / 2)
    if name == "cauchy":
        return 0.5 + xp.atan(math.pi * z) / math.pi
    if name == "reciprocal":
        # 1 - 1 / (2 + 4 z) above 0, 1 / (2 - 4 z) below: = 1/2 + z / (1 + 2 |z|),
        # in a form whose derivative 1 / (1 + 2 |z|)^2 autodiff forms without
        # cancellation (the plain form's is 1/q - 2 |z| / q^2: 0 or noise at |z| ~ 1e30).
        up = z >= 0
        return xp.where(up, 1 - 0.5 / (1 + 2 * xp.where(up, z, 0.0)), 0.5 / (1 - 2 * xp.where(up, 0.0, z)))
    small = xp.abs(z) <= 0.25
    safe = xp.where(small, 1.0, z)
    return xp.where(small, z + 0.5, xp.where(z > 0, 1 - 1 / (16 * safe), -1 / (16 * safe)))


def _h(xp, name: str, u):
    """``h(u) = u (1 - f(u))`` for ``u >= 0`` (bounded), in a form that stays
    exact where ``1 - f(u)`` underflows."""
    if name == "logistic":
        return u * (0.5 - 0.5 * xp.tanh(u / 2))
    if name == "cauchy":
        # u atan(1 / (pi u)) / pi = u (1/2 - atan(pi u) / pi): the second form near 0
        # (h'(0) = 1/2, as a kink at a tie needs: see _min_max), the first beyond 1
        # (no cancellation).
        big = u > 1.0
        far = u * xp.atan(1 / (math.pi * xp.where(big, u, 1.0))) / math.pi
        return xp.where(big, far, u * (0.5 - xp.atan(math.pi * u) / math.pi))
    if name == "reciprocal":
        return u / (2 * (1 + 2 * u))
    big = u > 0.25
    return xp.where(big, 1.0 / 16.0, u * (0.5 - u))


@dataclass(frozen=True)
class SortingNetwork(MatrixMethod):
    """A differentiable sorting network (``method="network"``: odd-even,
    logistic); see the module doc."""

    network: str = "odd_even"
    sigmoid: str = "logistic"

    def __post_init__(self):
        check_choice(self.network, "network", NETWORKS)
        check_choice(self.sigmoid, "sigmoid", SIGMOIDS)

    # --- the network on the present entries, moved to the first lanes ------------

    def _setup(self, backend: Backend, y, temperature):
        """Finite entries of ``y`` (the operation's order: ascending) first, in
        their order; everything a pass needs."""
        xp = backend.xp
        n = y.shape[-1]
        low, high, present = infinity_groups(xp, y)
        order = xp.argsort(xp.astype(~present, xp.int32), axis=-1, stable=True)
        lanes, layers = _layers(self.network, n)
        values = xp.take_along_axis(xp.where(present, y, 0.0), order, axis=-1)
        count = xp.sum(xp.astype(present, y.dtype), axis=-1, keepdims=True)
        if lanes > n:
            pad = xp.zeros(values.shape[:-1] + (lanes - n,), dtype=y.dtype, device=backend.device(y))
            values = xp.concat([values, pad], axis=-1)
        info = xp.finfo(y.dtype)
        t = temperature
        ratio = min(2.0 / t, float(info.max)) if isinstance(t, float) else xp.clip(2.0 / t, max=float(info.max))
        return {"low": low, "high": high, "present": present, "order": order, "values": values,
                "count": count, "stages": _stages(xp, self.network, count), "layers": layers,
                "lanes": lanes, "t": t, "ratio": ratio}

    def _active(self, backend, s, hi, stage):
        xp = backend.xp
        hi_lane = xp.asarray([float(h) for h in hi], dtype=s["count"].dtype, device=backend.device(s["count"]))
        return (hi_lane < s["count"]) & (stage < s["stages"])

    def _forward(self, backend: Backend, s):
        """Run the layers on the values; returns ``(values, alphas)``."""
        xp = backend.xp
        v = s["values"]
        alphas = []
        for layer in s["layers"]:
            lo, hi, stage = layer[:3]
            a, b = _take(backend, v, lo), _take(backend, v, hi)
            z = xp.clip((b / 2 - a / 2) * s["ratio"], -_Z_MAX, _Z_MAX)
            active = self._active(backend, s, hi, stage)
            alpha = xp.where(active, _sigmoid(xp, self.sigmoid, z), 1.0)
            alphas.append(alpha)
            # min' = lo + T h(|z|) and max' = hi - T h(|z|): the same as the
            # convex combinations, with no difference of values formed.
            shift = s["t"] * _h(xp, self.sigmoid, xp.abs(z))
            lo_v, hi_v = _min_max(backend, a, b)
            low = xp.where(active, lo_v + shift, a)
            high = xp.where(active, hi_v - shift, b)
            v = _put(backend, v, layer, low, high)
        return v, alphas

    def _pullback(self, backend: Backend, s, alphas, w):
        """``P_f^T w`` for slot weights ``w`` of the finite lanes (``(*batch, lanes)``)."""
        xp = backend.xp
        for layer, alpha in zip(reversed(s["layers"]), reversed(alphas)):
            a, b = _take(backend, w, layer[0]), _take(backend, w, layer[1])
            w = _put(backend, w, layer, alpha * a + (1 - alpha) * b, (1 - alpha) * a + alpha * b)
        return w

    def _columns(self, backend: Backend, y, temperature, slot_weights):
        """Column weights ``sum_s w_s P[s, j]`` of the full soft permutation for
        slot weights ``w`` (``(*batch, n)``, the operation's order)."""
        xp = backend.xp
        n = y.shape[-1]
        s = self._setup(backend, y, temperature)
        _, alphas = self._forward(backend, s)
        m_low = xp.sum(xp.astype(s["low"], y.dtype), axis=-1, keepdims=True)
        slot = xp.arange(n, dtype=y.dtype, device=backend.device(y))
        # The finite lanes hold slots m_low .. m_low + count - 1.
        source = xp.astype(xp.clip(slot + m_low, 0.0, n - 1.0), index_dtype(xp))
        w = xp.where(slot < s["count"], xp.take_along_axis(slot_weights, source, axis=-1), 0.0)
        if s["lanes"] > n:
            w = xp.concat([w, xp.zeros(w.shape[:-1] + (s["lanes"] - n,), dtype=w.dtype,
                                       device=backend.device(w))], axis=-1)
        finite = self._pullback(backend, s, alphas, w)[..., :n]
        finite = xp.take_along_axis(finite, backend.inverse_permutation(s["order"]), axis=-1)
        first = slot < m_low
        last = slot >= m_low + s["count"]
        m_high = xp.sum(xp.astype(s["high"], y.dtype), axis=-1, keepdims=True)
        mean_first = xp.sum(xp.where(first, slot_weights, 0.0), axis=-1, keepdims=True) / xp.where(m_low > 0, m_low, 1.0)
        mean_last = xp.sum(xp.where(last, slot_weights, 0.0), axis=-1, keepdims=True) / xp.where(m_high > 0, m_high, 1.0)
        return xp.where(s["low"], mean_first, xp.where(s["high"], mean_last, finite))

    # --- the sort-method interface --------------------------------------------------

    def present_matrix(self, backend: Backend, x, temperature, present):
        xp = backend.xp
        n = x.shape[-1]
        y = xp.where(present, x, xp.inf)
        s = self._setup(backend, y, temperature)
        _, alphas = self._forward(backend, s)
        # P_f: the layers applied to the identity (lanes x lanes), rows = output lanes.
        eye = xp.eye(s["lanes"], dtype=x.dtype, device=backend.device(x))
        m = xp.broadcast_to(eye, x.shape[:-1] + (s["lanes"], s["lanes"]))
        for layer, alpha in zip(s["layers"], alphas):
            a, b = _take(backend, m, layer[0], axis=-2), _take(backend, m, layer[1], axis=-2)
            al = alpha[..., :, None]
            m = _put(backend, m, layer, al * a + (1 - al) * b, (1 - al) * a + al * b, axis=-2)
        m = m[..., :n, :n]
        # Columns back to the caller's positions.
        columns = backend.inverse_permutation(s["order"])
        m = xp.take_along_axis(m, xp.broadcast_to(columns[..., None, :], m.shape), axis=-1)
        slot = xp.arange(n, dtype=x.dtype, device=backend.device(x))
        return xp.where((slot < s["count"])[..., :, None] & present[..., None, :], m, 0.0)

    def sort_rows(self, backend: Backend, x, temperature, descending: bool):
        y = -x if descending else x
        if backend.cpu_kernels(x):
            out = _kernel_op(backend, self, "sort", temperature)(y, per_row(backend, x, temperature))
        else:
            out = self._sort(backend, y, temperature)
        return -out if descending else out

    def rank_rows(self, backend: Backend, x, temperature, descending: bool):
        xp = backend.xp
        y = -x if descending else x
        slots = xp.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=backend.device(x))
        return self._weights(backend, y, temperature, xp.reshape(slots, (1,) * (x.ndim - 1) + (x.shape[-1],)))

    def topk_mask_rows(self, backend: Backend, x, k, temperature, largest: bool):
        y = -x if largest else x
        return self._weights(backend, y, temperature, topk_slot_weights(backend, x, k))

    def _sort(self, backend: Backend, y, temperature):
        """The ascending soft sort of ``y`` in array operations."""
        xp = backend.xp
        n = y.shape[-1]
        s = self._setup(backend, y, temperature)
        values, _ = self._forward(backend, s)
        m_low = xp.sum(xp.astype(s["low"], y.dtype), axis=-1, keepdims=True)
        slot = xp.arange(n, dtype=y.dtype, device=backend.device(y))
        source = xp.astype(xp.clip(slot - m_low, 0.0, n - 1.0), index_dtype(xp))
        out = xp.take_along_axis(values[..., :n], source, axis=-1)
        return xp.where(slot < m_low, -xp.inf, xp.where(slot >= m_low + s["count"], xp.inf, out))

    def _weights(self, backend: Backend, y, temperature, slot_weights):
        """Column weights ``P^T w`` (``_columns``) by the kernel where it runs."""
        if backend.cpu_kernels(y):
            return _kernel_op(backend, self, "columns", temperature)(y, per_row(backend, y, temperature), slot_weights)
        return self._columns(backend, y, temperature, backend.xp.broadcast_to(slot_weights, y.shape))


# --- the kernel path (softops._kernels.network) -----------------------------------------
# On CPU arrays with numba, the sort and the column weights (ranks, top-k
# masks) are each one custom derivative whose forward and fast backward are
# one kernel call each; every other transform (forward mode, higher orders,
# torch.func, JAX's reverse mode by transposition) differentiates the array
# code above, which computes the same function.


def _kernel_functions(method: SortingNetwork, op: str, need_t: bool):
    from softops._kernels import network as kernels

    static = (NETWORKS.index(method.network), SIGMOIDS.index(method.sigmoid))
    if op == "sort":
        def fwd(xp, y, t):
            out, zs = backend_of(y).kernel(kernels.sort_forward, (y, t), static)
            return out, (zs,)

        def bwd(xp, arrays, out, residuals, g):
            y, t = arrays
            gy, gt = backend_of(y).kernel(kernels.sort_backward, (y, t, residuals[0], g), static + (need_t,))
            return gy, sum_to(xp, gt, t.shape)

        def smooth(xp, arrays, out, residuals):
            y, t = arrays
            return method._sort(backend_of(y), y, t[..., None])
    else:
        def fwd(xp, y, t, w):
            out, zs, ds = backend_of(y).kernel(kernels.columns_forward, (y, t, w), static)
            return out, (zs, ds)

        def bwd(xp, arrays, out, residuals, g):
            y, t, w = arrays
            gy, gt, gw = backend_of(y).kernel(kernels.columns_backward, (y, t, w, *residuals, g),
                                              static + (need_t,))
            return gy, sum_to(xp, gt, t.shape), sum_to(xp, gw, w.shape)

        def smooth(xp, arrays, out, residuals):
            y, t, w = arrays
            return method._columns(backend_of(y), y, t[..., None], xp.broadcast_to(w, y.shape))
    return fwd, bwd, smooth


# Built once (hashable, equal across calls: jit caches and compiled graphs stay
# valid), per config, operation and whether the temperature can need a
# gradient (a Python float cannot: its cotangent is then not computed).
_KERNEL_OPS = {
    (network, sigmoid, op, need_t): _kernel_functions(SortingNetwork(network, sigmoid), op, need_t)
    for network in NETWORKS for sigmoid in SIGMOIDS for op in ("sort", "columns") for need_t in (False, True)
}


def _kernel_op(backend: Backend, method: SortingNetwork, op: str, temperature):
    key = (method.network, method.sigmoid, op, not isinstance(temperature, float))
    return backend.custom_derivative(*_KERNEL_OPS[key])


def _index(backend: Backend, like, idx):
    return backend.xp.asarray(idx, device=backend.device(like))


def _min_max(backend: Backend, a, b):
    """``(min(a, b), max(a, b))`` exactly, with the derivatives of ``a/2 + b/2 -+
    |b/2 - a/2|``.  The comparator ``min + T h(|z|)`` (``z`` proportional to
    ``b/2 - a/2``) is smooth at a tie, where its two kinks cancel; written with
    the same ``|b/2 - a/2|`` as ``z``, they cancel under any rule for ``|u|``'s
    derivative at 0 (PyTorch: 0, JAX: 1), where ``minimum``'s own tie rule
    would not."""
    xp, stop = backend.xp, backend.stop_gradient
    if not backend.differentiable:
        return xp.minimum(a, b), xp.maximum(a, b)
    mid, half = a / 2 + b / 2, xp.abs(b / 2 - a / 2)  # finite for finite a and b

    def exact(value, smooth):
        return stop(value) + (smooth - stop(smooth))

    return exact(xp.minimum(a, b), mid - half), exact(xp.maximum(a, b), mid + half)


def _take(backend: Backend, v, idx, axis=-1):
    return backend.xp.take(v, _index(backend, v, idx), axis=axis)


def _put(backend: Backend, v, layer, new_lo, new_hi, axis=-1):
    """``v`` with the layer's lanes ``lo`` and ``hi`` (along ``axis``) replaced:
    a static gather from ``[new_lo, new_hi, the rest]``, no scatter."""
    _, _, _, source, rest = layer
    parts = [new_lo, new_hi] + ([_take(backend, v, rest, axis=axis)] if rest else [])
    return _take(backend, backend.xp.concat(parts, axis=axis), source, axis=axis)
