r"""Soft sorting, ranking and top-k by inverting a sum of Laplace CDFs (LapSum).

Struski, Bednarczyk, Podolak & Tabor 2025, "LapSum - One Method to
Differentiate Them All: Ranking, Sorting and Top-k Selection" (ICML,
arXiv:2503.06242).  With the Laplace CDF of scale ``T > 0`` (the temperature,
in units of ``x``)

    ``sigma(u) = exp(u / T) / 2``       for ``u <= 0``,
    ``sigma(u) = 1 - exp(-u / T) / 2``  for ``u > 0``,

the paper's LapSum of a row ``x`` is ``F(b) = sum_j sigma(b - x_j)``: continuous,
strictly increasing from 0 to ``n``, and on each gap between sorted neighbours
``y_m <= b <= y_{m+1}`` of the form ``m - A e^{-b/T} + B e^{b/T}``, so that
``F(b) = t`` is a quadratic in ``e^{b/T}`` and has a closed-form root (the
paper's closed-form inverse of LapSum).  Here:

* soft rank:  ``r_i = 1/2 + F(x_i) = 1 + sum_{j != i} sigma(x_i - x_j)``;
  ranks sum to ``n (n + 1) / 2`` since ``sigma(u) + sigma(-u) = 1``;
* soft sort:  ``s_k = F^{-1}(k - 1/2)``, the point whose soft rank is ``k``;
* soft top-k mask (largest): ``p_i = sigma(x_i - b)`` with ``F(b) = n - k``,
  so that ``sum_i p_i = k`` and every ``p_i`` lies in ``[0, 1]`` (the paper's
  soft top-k; smallest: ``p_i = sigma(b - x_i)`` with ``F(b) = k``).

Values closer than about ``T`` are blended; values more than a few ``T`` apart
are treated exactly.  As ``T -> 0`` the sort, the ranks and the top-k mask
become exact.  Ties: tied values get equal ranks at every ``T`` (their average
rank ``k + (g - 1) / 2`` as ``T -> 0`` for a tie of ``g`` values at ranks
``k..k+g-1``); the sorted outputs of a tie are spread by a few ``T`` around the
tied value; a ``k`` that splits a tie shares the remainder equally among it.

Numerics.  After one sort of the row (``y`` ascending, gaps ``g_j = y_{j+1} - y_j``)
everything is expressed through the bounded sums

    ``alpha_j = sum_{i <= j} exp(-(y_j - y_i) / T)``  in ``[1, j]``,
    ``beta_j  = sum_{i >= j} exp(-(y_i - y_j) / T)``  in ``[1, n - j + 1]``,

computed by the linear recurrences ``alpha_j = 1 + exp(-g_{j-1} / T) alpha_{j-1}``
(and its mirror for ``beta``) as a log-depth parallel scan of affine maps whose
coefficients all lie in ``[0, n]``: no ``exp(x / T)`` is ever formed, so nothing
overflows or cancels for any scale of ``x`` and ``T``.  The sorted ranks are
``k + (beta_k - alpha_k) / 2``.  On the gap between knots ``m`` and ``m + 1``,
``P = alpha_m e^{-(b - y_m)/T}`` and ``Q = beta_{m+1} e^{-(y_{m+1} - b)/T}`` satisfy
``Q - P = 2 (t - m)`` and ``P Q = C = alpha_m beta_{m+1} e^{-g_m / T}``, so
``max(P, Q) = D = |d| + sqrt(d^2 + C)`` with ``d = t - m``; ``log D`` is
evaluated as ``log|d| + log(1 + sqrt(1 + C / d^2))`` when ``d^2 > C``, giving
``b = y_{m+1} - T log(beta_{m+1} / D)`` if ``d >= 0`` else
``y_m + T log(alpha_m / D)``; otherwise ``b = (y_m + y_{m+1}) / 2 +
T (log(alpha_m / beta_{m+1}) / 2 + asinh(d / sqrt(C)))`` (``|d / sqrt(C)| <= 1``;
the scale ``1 / sqrt(C)`` is capped at ``e^80``, reached only for ``d = 0``).
``b`` is kept as a knot (or midpoint) plus ``T`` times an offset, so the mask
forms ``(x_i - b) / T`` without cancelling ``x``-sized terms.  The gap ``m`` holding each target comes from the
sorted ranks (one ``searchsorted`` for the sort, one count for top-k).
Two implementations with one contract:

* on CPU arrays (NumPy, PyTorch CPU tensors, JAX on CPU) with numba installed,
  each operation is one custom VJP around the framework's sort and a numba
  kernel of ``softops._kernels.lapsum`` (O(n) per row after the sort, both
  ways), whose backward is the hand-derived exact Jacobian (implicit function
  theorem for the sort and the mask) for ``x``, the temperature and ``k``;
* elsewhere (accelerators, no numba) the twin below: the same formulas in
  Array API operations, differentiated by the framework's autodiff (every branch
  of every ``where`` is finite), so its gradients are exact too, O(n log n),
  and also flow to a 0-d temperature and to ``k``.  It is the kernel's test
  oracle.

Under JAX the row functions are ``jax.jit``-ed (one compilation per shape
instead of one per small operation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from softops._axis import sum_to
from softops._backend import Backend, backend_of
from softops._shared import per_row

__all__ = ["LapSum"]


@dataclass(frozen=True)
class LapSum:
    """The LapSum method (Struski et al. 2025): soft sort, rank and top-k from the
    closed-form inverse of a sum of Laplace CDFs of scale ``T`` (the temperature,
    in units of ``x``).  See ``softops.methods.lapsum``.

    Example::

        >>> import numpy as np, softops
        >>> x = np.array([5.0, 1.0, 2.0])
        >>> softops.soft_rank(x, temperature=1.0, method="lapsum")
        array([2.96594865, 1.19309754, 1.84095381])
        >>> softops.soft_sort(x, temperature=1.0, method="lapsum")
        array([0.67343736, 2.25122071, 5.0658839 ])
        >>> softops.soft_sort(x, temperature=0.01, method="lapsum")
        array([1., 2., 5.])
        >>> from softops._backend import backend_of
        >>> softops.LapSum().topk_mask_rows(backend_of(x), x, 2, 0.5, True)
        array([0.99954462, 0.18416755, 0.81628783])

    The soft sort at ``T = 1`` is ``F^{-1}(k - 1/2)``: 1 and 2 are within ``T``
    of each other, so they are pushed apart (LapSum's sort is not
    mean-preserving; ``s_1 < min(x)`` once ``T`` is comparable to the gaps).
    """

    @staticmethod
    def temperature_for(tau, spacing, op: str):
        """Temperature for ``softops.Relative(tau)``: the Laplace scale is a length
        in units of ``x`` for every operation, ``T = tau * spacing``."""
        return tau * spacing

    # The sort-method interface (see softops.sort): rows of shape (*batch, n).
    def sort_rows(self, backend: Backend, x, temperature, descending: bool):
        function = kernel_sort_rows if backend.lapsum_kernel(x) else sort_rows
        return _compiled(backend, function, temperature)(backend, x, temperature, descending)

    def rank_rows(self, backend: Backend, x, temperature, descending: bool):
        function = kernel_rank_rows if backend.lapsum_kernel(x) else rank_rows
        return _compiled(backend, function, temperature)(backend, x, temperature, descending)

    def topk_mask_rows(self, backend: Backend, x, k, temperature, largest: bool):
        """Soft top-k membership weights of each row (see ``topk_mask_rows``)."""
        xp = backend.xp
        if isinstance(k, (int, float)):
            k = xp.asarray(float(k), dtype=x.dtype, device=backend.device(x))
        elif k.dtype != x.dtype:
            k = xp.astype(k, x.dtype)
        function = kernel_topk_mask_rows if backend.lapsum_kernel(x) else topk_mask_rows
        return _compiled(backend, function, temperature)(backend, x, k, temperature, largest)


def _compiled(backend: Backend, function, temperature):
    """``function(backend, array, array, array, flag)`` itself, or under JAX its
    ``jax.jit`` (backend and flag static): eager JAX would otherwise compile each
    of its few dozen small operations separately for every new shape.  A kernel
    function also gets ``need_t`` (static), decided here, before the jit makes
    a Python-float temperature a traced array: a float needs no derivative, so
    the kernels skip the temperature's coefficients (40% of LapSum's sort
    forward at n = 16)."""
    flags = {"need_t": not isinstance(temperature, float)} if function in _KERNEL_FUNCTIONS else {}
    if backend.name == "jax":
        function = _jax_jit(function)
    return functools.partial(function, **flags) if flags else function


@functools.lru_cache(maxsize=None)
def _jax_jit(function):
    import jax

    mask = function in (topk_mask_rows, kernel_topk_mask_rows)
    static = {"static_argnames": ("need_t",)} if function in _KERNEL_FUNCTIONS else {}
    return jax.jit(function, static_argnums=(0, 4 if mask else 3), **static)


def _affine_scan(xp, d):
    """``c_j = 1 + d_j c_{j-1}`` along the last axis (``d_0`` must be 0), by a
    Hillis-Steele scan of the affine maps ``c -> 1 + d_j c`` (log2(n) steps)."""
    n = d.shape[-1]
    c = d * 0.0 + 1.0
    step = 1
    while step < n:
        c = xp.concat([c[..., :step], c[..., step:] + d[..., step:] * c[..., :-step]], axis=-1)
        if 2 * step < n:
            d = xp.concat([d[..., :step], d[..., step:] * d[..., :-step]], axis=-1)
        step *= 2
    return c


class _Knots:
    """One sorted row and its LapSum sums (see the module docstring)."""

    def __init__(self, backend: Backend, x, temperature, order=None):
        xp = backend.xp
        self.xp, self.n, self.t = xp, x.shape[-1], temperature
        # The ascending order (the kernel's, where it computed one).
        self.order = xp.argsort(x, axis=-1, stable=True) if order is None else order
        y = backend.take(x, self.order)
        # Tied infinities are a tie; next to an infinity the gap is infinite
        # (e = 0 decouples the finite entries).
        # (An infinite gap is computed from a finite stand-in and selected
        # after: every coefficient of the linearisation stays finite, which
        # reverse mode, transposing it, needs.)
        tied_infinities = (y[..., 1:] == y[..., :-1]) & xp.isinf(y[..., :-1])
        gaps = xp.where(tied_infinities, 0.0, y[..., 1:] - y[..., :-1])
        self.infinite = xp.isinf(gaps)
        finite_gaps = xp.where(self.infinite, 0.0, gaps)
        e = xp.where(self.infinite, 0.0, xp.exp(-finite_gaps / temperature))
        # (tied to x: for n = 1 the ranks still have a graph)
        zero = xp.where(xp.isinf(y[..., :1]), 0.0, y[..., :1]) * 0.0
        # alpha forwards, beta backwards, in one scan of a stacked array.
        d = xp.stack([xp.concat([zero, e], axis=-1), xp.concat([zero, xp.flip(e, axis=-1)], axis=-1)])
        c = _affine_scan(xp, d)
        alpha, beta = c[0], xp.flip(c[1], axis=-1)
        k = xp.cumulative_sum(xp.ones_like(y), axis=-1)  # 1..n
        self.ranks = k + 0.5 * (beta - alpha)  # sorted order; F(y_k) = ranks_k - 1/2
        self.y, self.gaps, self.alpha, self.beta = y, finite_gaps, alpha, beta

    def segments(self):
        """Per gap ``m = 0..n``, stacked (shape ``(5, *batch, n + 1)``): the knots
        ``y_m``, ``y_{m+1}``, ``log alpha_m``, ``log beta_{m+1}`` and ``log C``; the
        outer gaps get their one knot twice and ``log alpha = log beta = 0``."""
        xp, t = self.xp, self.t
        la, lb = xp.log(self.alpha), xp.log(self.beta)
        zero = xp.zeros_like(la[..., :1])
        lc = xp.where(self.infinite, -xp.inf, la[..., :-1] + lb[..., 1:] - self.gaps / t)
        return xp.stack(
            [
                xp.concat([self.y[..., :1], self.y], axis=-1),
                xp.concat([self.y, self.y[..., -1:]], axis=-1),
                xp.concat([zero, la], axis=-1),
                xp.concat([lb, zero], axis=-1),
                xp.concat([zero, lc, zero], axis=-1),
            ]
        )

    def invert(self, target, m):
        """``b`` with ``F(b) = target`` as ``(anchor, offset)``, ``b = anchor + T offset``
        with ``anchor`` a knot or the midpoint of two (so that ``(x - b) / T`` can
        be formed without cancellation); ``m`` is the number of knots with
        ``F(y_j) <= target`` (an int array shaped like ``target``)."""
        xp, n = self.xp, self.n
        seg = self.segments()
        picked = xp.take_along_axis(seg, xp.broadcast_to(m[None], (5, *m.shape)), axis=-1)
        yl, yr, la, lb, lc = (picked[i, ...] for i in range(5))  # no iteration over an array (graphs)
        edge = (m == 0) | (m == n)
        delta = target - xp.astype(m, target.dtype)
        big = edge | (delta * delta > xp.exp(lc))
        # |d| > sqrt(C): log D = log|d| + log(1 + sqrt(1 + C / d^2)), and
        # b = y_{m+1} - T (log beta - log D) (d >= 0) or y_m + T (log alpha - log D).
        ad = xp.where(big, xp.abs(delta), xp.ones_like(delta))
        ratio = xp.where(edge, xp.zeros_like(lc), xp.exp(lc - 2.0 * xp.log(ad)))
        log_d = xp.log(ad) + xp.log(1.0 + xp.sqrt(1.0 + ratio))
        # |d| <= sqrt(C): b = (y_m + y_{m+1}) / 2 + T ((log alpha - log beta) / 2
        # + asinh(d / sqrt(C))).  The scale is capped at e^80: beyond it
        # |d| <= sqrt(C) only holds for d = 0 exactly.
        ls = xp.where(big, xp.zeros_like(lc), lc)
        z = delta * xp.exp(xp.clip(-0.5 * ls, max=80.0))
        # asinh(z) for |z| <= 1, written with log1p (torch's CPU asinh is slow).
        small = 0.5 * (la - lb) + xp.log1p(z + z * z / (1.0 + xp.sqrt(1.0 + z * z)))
        up = delta >= 0
        anchor = xp.where(big, xp.where(up, yr, yl), 0.5 * (yl + yr))
        offset = xp.where(big, xp.where(up, log_d - lb, la - log_d), small)
        return anchor, offset


def rank_rows(backend: Backend, x, temperature, descending: bool, order=None):
    """Soft ranks (1..n) of each row of ``x`` (shape ``(*batch, n)``)."""
    knots = _Knots(backend, x, temperature, order)
    ranks = backend.take(knots.ranks, backend.inverse_permutation(knots.order))
    return (x.shape[-1] + 1.0) - ranks if descending else ranks


def _sort_gaps(backend: Backend, knots: _Knots):
    """For targets ``k - 1/2`` (``k = 1..n``): ``m_k = #{j : ranks_j <= k}``, by
    one ``searchsorted`` over all rows (row ``i``'s integer keys offset by
    ``i (n + 1)`` so that the flattened keys stay sorted)."""
    xp = backend.xp
    n = knots.n
    idx = knots.order.dtype
    keys = xp.astype(xp.ceil(backend.stop_gradient(knots.ranks)), idx)
    keys = xp.reshape(keys, (-1, n))
    rows = xp.reshape(xp.arange(keys.shape[0], dtype=idx, device=backend.device(keys)), (-1, 1))
    queries = xp.reshape(xp.arange(1, n + 1, dtype=idx, device=backend.device(keys)), (1, n))
    pos = xp.searchsorted(
        xp.reshape(keys + rows * (n + 1), (-1,)), xp.reshape(queries + rows * (n + 1), (-1,)), side="right"
    )
    m = xp.astype(xp.reshape(pos, (-1, n)), idx) - rows * n
    return xp.reshape(m, knots.ranks.shape)


def sort_rows(backend: Backend, x, temperature, descending: bool, order=None):
    """Soft sort of each row of ``x`` (shape ``(*batch, n)``): ``F^{-1}(k - 1/2)``."""
    xp = backend.xp
    knots = _Knots(backend, x, temperature, order)
    target = xp.cumulative_sum(xp.ones_like(x), axis=-1) - 0.5
    anchor, offset = knots.invert(target, _sort_gaps(backend, knots))
    s = anchor + temperature * offset
    return xp.flip(s, axis=-1) if descending else s


def _sigma(xp, u):
    """The standard Laplace CDF; each branch of the ``where`` is finite."""
    v = xp.where(u <= 0, u, -u)
    e = 0.5 * xp.exp(v)
    return xp.where(u <= 0, e, 1.0 - e)


def topk_mask_rows(backend: Backend, x, k, temperature, largest: bool, order=None):
    """Soft top-k membership of each row of ``x`` (shape ``(*batch, n)``): weights
    in ``[0, 1]`` summing to ``k`` (clipped to ``[0, n]``); ``k`` is an array of
    ``x``'s dtype broadcastable to ``x.shape[:-1]`` (differentiable)."""
    xp = backend.xp
    n = x.shape[-1]
    k = xp.broadcast_to(k, x.shape[:-1])[..., None]
    knots = _Knots(backend, x, temperature, order)
    target = n - k if largest else k
    inside = (target > 0) & (target < n)
    target = xp.where(inside, target, xp.full_like(target, 0.5 * n))
    below = backend.stop_gradient(knots.ranks) - 0.5 <= backend.stop_gradient(target)
    m = xp.sum(xp.astype(below, knots.order.dtype), axis=-1, keepdims=True)
    anchor, offset = knots.invert(target, m)
    d = xp.where((x == anchor) & xp.isinf(x), 0.0, x - anchor)  # (an infinity at its own knot: 0)
    infinite = xp.isinf(d)  # (finite stand-in, selected after: see _Knots)
    u = xp.where(infinite, d, xp.where(infinite, 0.0, d) / temperature - offset)  # (x - b) / T
    p = _sigma(xp, u if largest else -u)
    # k >= n: every entry is in; k <= 0: none is.
    return xp.where(inside, p, xp.where(k >= n, xp.ones_like(p), xp.zeros_like(p)))


# --- the kernel path ------------------------------------------------------------------
# Each operation is one custom derivative whose forward and fast backward are
# one kernel call each (softops._kernels.lapsum): the forward sorts the rows
# itself and writes through the permutation, the backward reads the forward's
# coefficients.  Every other transform (forward mode, higher orders,
# torch.func) differentiates the twin above on the kernel's sort order
# (``_kernel_smooth``): the same closed forms, with every branch finite.
# Module-level functions: they must be hashable and equal across calls (see
# permutahedron).


def _kernel_fwd(op, need_t):
    def fwd(xp, x, t, *k):
        out, aux, gaps, y, order = backend_of(x).lapsum_forward(op, x, t, *(k or [None]), need_t=need_t)
        return out, (aux, gaps, y, order)

    return fwd


def _kernel_bwd(op, need_t):
    def bwd(xp, arrays, out, residuals, g):
        (x, t, *k), (aux, gaps, y, order) = arrays, residuals
        gx, gt, gk = backend_of(y).lapsum_backward(op, y, order, t, aux, gaps, g, *(k or [None]), need_t=need_t)
        grads = (gx, sum_to(xp, gt, t.shape))
        return grads + (sum_to(xp, gk, k[0].shape),) if k else grads

    return bwd


def _kernel_smooth(op):
    def smooth(xp, arrays, out, residuals):
        (x, t, *k), order = arrays, residuals[3]
        backend = backend_of(x)
        x = backend.xp.where(backend.xp.isinf(x), backend.stop_gradient(x), x)  # infinities are constants
        t = t[..., None]
        if op == "rank":
            return rank_rows(backend, x, t, False, order)
        if op == "sort":
            return sort_rows(backend, x, t, False, order)
        return topk_mask_rows(backend, x, k[0], t, True, order)

    return smooth


# Per operation and whether the temperature can need a gradient (a Python float
# cannot: its cotangent, 0, is then not computed).
_KERNEL_OPS = {
    (op, need_t): (_kernel_fwd(op, need_t), _kernel_bwd(op, need_t), _kernel_smooth(op))
    for op in ("rank", "sort", "mask")
    for need_t in (False, True)
}


def _kernel_op(backend: Backend, op: str, need_t: bool):
    return backend.custom_derivative(*_KERNEL_OPS[op, need_t])


def kernel_rank_rows(backend: Backend, x, temperature, descending: bool, *, need_t: bool):
    """``rank_rows`` by the kernel (``descending``: the ranks of ``-x``); ``need_t``:
    whether the temperature can need a derivative (False for a Python float)."""
    op = _kernel_op(backend, "rank", need_t)
    return op(-x if descending else x, per_row(backend, x, temperature))


def kernel_sort_rows(backend: Backend, x, temperature, descending: bool, *, need_t: bool):
    """``sort_rows`` by the kernel."""
    s = _kernel_op(backend, "sort", need_t)(x, per_row(backend, x, temperature))
    return backend.xp.flip(s, axis=-1) if descending else s


def kernel_topk_mask_rows(backend: Backend, x, k, temperature, largest: bool, *, need_t: bool):
    """``topk_mask_rows`` by the kernel (smallest: the largest of ``-x``)."""
    op = _kernel_op(backend, "mask", need_t)
    return op(x if largest else -x, per_row(backend, x, temperature), per_row(backend, x, k))


_KERNEL_FUNCTIONS = (kernel_rank_rows, kernel_sort_rows, kernel_topk_mask_rows)
