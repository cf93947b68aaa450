r"""Sinkhorn: sorting as entropic optimal transport onto sorted targets.

Cuturi, Teboul & Vert 2019, "Differentiable Ranks and Sorting using Optimal
Transport" (NeurIPS, arXiv:1905.11885): the ``n`` entries of a row (mass 1
each) are transported onto ``m`` targets at the increasing positions ``y_j =
j`` (mass ``b_j``, summing to ``n``) for the cost ``c_ij = -x_i y_j``, with an
entropic penalty of weight ``T``:

    ``P = argmin_{P 1 = 1, P^T 1 = b, P >= 0} <P, c> - T H(P)``,
    ``P_ij = exp((f_i + g_j - c_ij) / T)``.

For ``T -> 0`` the plan is the monotone matching (sorting, the cost being
submodular); for ``T > 0`` two entries ``x_a > x_b`` trade a pair of
neighbouring targets with odds ``exp((x_a - x_b) / T)``, so the temperature is
a length in units of ``x``: entries closer than about ``T`` share their
targets (``-x_i y_j`` is ``(x_i - y_j)^2 / 2`` up to the potentials: this is
also the squared-Euclidean problem of the paper with ``epsilon = T`` and
unsquashed values).  Targets:

* sort, rank, permutation matrix, ``soft_sort_by``: ``m = n`` targets of mass 1
  (the slots); the matrix is ``P^T`` (row ``s`` = the entries' masses at slot
  ``s``; rows sum to 1, columns to 1 within the tolerance: doubly stochastic);
* top-k mask (Xie et al. 2020, "Differentiable Top-k with Optimal Transport",
  NeurIPS, arXiv:2002.06504): ``m = 2`` targets of masses ``n - k`` and ``k``;
  the mask is each entry's mass at the upper one, ``sigmoid((x_i - theta) /
  T)`` with the threshold ``theta`` that makes it sum to ``k`` -- ``O(n)`` per
  iteration;
* quantile at ``q`` (Cuturi et al. 2019, sec. 4): ``m = 3`` targets of masses
  ``(h, 1, n - 1 - h)``, ``h = (n - 1) q``; the quantile is the barycentre of
  the middle unit (``torch.quantile``'s linear rule as ``T -> 0``),
  differentiable in ``q`` through the masses -- ``O(n)`` per iteration and ``q``.

Solver: Sinkhorn sweeps (``u = a / K v`` then ``v = b / K^T u``, each exact
in its own marginal) in the scaling domain, stabilised by absorption
(Schmitzer 2019): a sweep is two matrix-vector products and no exponential;
scalings that leave ``exp(+-20)`` move into the log potentials and the kernel
``K`` is recomputed.  Warm start at the hard matching: the cost enters as the
reduced cost ``c_ij - f0_i - g0_j >= 0`` of the dual of the exact (``T = 0``)
problem (``g0`` from the midpoints between sorted values at the targets' mass
boundaries), computed as sums of non-negative gaps, so that it has no
cancellation even next to the dtype's maximum, a small ``T`` starts at the
solution and no row of ``K`` underflows.  Where the sweeps contract slowly
(close ties at a small ``T``), a damped Newton step on the marginal
conditions joins them (``newton``; an ``m x m`` solve).  The loop (on the
device: ``jax.lax.while_loop``; torch's ``while_loop`` under
``torch.compile``) stops per row when every entry's total mass is within
``tolerance`` (relative) of 1, or after ``max_iterations``; the last update
makes the targets' masses exact (so a top-k mask sums to ``k`` and the
matrix's rows sum to 1 up to rounding).  Cost ``O(n m)`` time and memory per
sweep.

Gradients: implicit differentiation at the solution (not unrolling).  The
plan's first-order reverse mode is the adjoint of the optimality conditions:
with ``W = G * P`` (``G`` the cotangent), ``K = [[diag(P 1), P], [P^T,
diag(P^T 1)]]`` and ``(l_r, l_c) = K^+ (W 1, W^T 1)`` (one ``m x m`` Schur
solve), ``V = W - P * (l_r + l_c^T)`` gives ``dx_i = sum_j V_ij y_j / T``,
``dT = sum_ij V_ij c~_ij / T^2`` and the targets' masses ``l_c``.  Every
other transform (forward mode, Hessians, ``torch.func``) differentiates two
Newton steps on the optimality conditions taken from the solution, which
have the solution map's derivatives up to third order.  The derivatives are
those of the exact solution; the value is the solver's (within the
tolerance).  The Schur solves are dense: ``O(m^3)`` per row (``m = n`` for
sort and rank, 2 for the top-k mask).

Example::

    >>> import numpy as np, softops
    >>> softops.soft_sort(np.array([2.0, 0.0, 1.0]), temperature=0.5, method="sinkhorn").round(4)
    array([0.2608, 1.    , 1.7392])
    >>> softops.soft_topk_mask(np.array([5.0, 1.0, 2.0, 4.0]), 2, temperature=1.0, method="sinkhorn").round(4)
    array([0.8808, 0.1192, 0.2689, 0.7311])
    >>> softops.soft_quantile(np.array([5.0, 1.0, 2.0, 4.0]), [0.25, 0.5], temperature=0.5, method="sinkhorn").round(4)
    array([1.7298, 3.    ])

(the threshold is 3 there: ``sigmoid(x - 3)``.)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from softops._backend import Backend, backend_of, register_opaque
from softops._shared import index_dtype
from softops.methods._matrix import MatrixMethod, _count, infinity_groups, weighted_values

# Columns per block of the reduced cost's prefix sums (``_reduced_cost``).
_BLOCK = 32
# The default tolerance (relative error of any entry's total mass) by dtype.
_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


@dataclass(frozen=True)
class Sinkhorn(MatrixMethod):
    """Entropic optimal transport onto sorted targets (Cuturi et al. 2019):
    ``method="sinkhorn"``; see the module doc.  ``tolerance``: the relative
    error of the entries' masses at which the iterations stop (``None``:
    ``1e-12`` in float64, ``1e-5`` in float32); ``max_iterations``: the cap
    on sweeps (a row that has not converged by then returns its last
    iterate); ``newton``: whether a damped Newton step joins a sweep where
    the sweeps contract slowly (close ties at a small ``T``)."""

    tolerance: float | None = None
    max_iterations: int = 1000
    newton: bool = True

    def __post_init__(self):
        t = self.tolerance
        if t is not None and (isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t < 1):
            raise ValueError(f"Sinkhorn(tolerance=...) must be None or a number in (0, 1), got {t!r}")
        m = self.max_iterations
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"Sinkhorn(max_iterations=...) must be an int >= 1, got {m!r}")
        if not isinstance(self.newton, bool):
            raise TypeError(f"Sinkhorn(newton=...) must be a bool, got {self.newton!r}")

    def _tolerance(self, dtype) -> float:
        if self.tolerance is not None:
            return float(self.tolerance)
        # NumPy, JAX and TensorFlow dtypes have a .name; torch's print as "torch.float64".
        name = getattr(dtype, "name", None) or str(dtype).rsplit(".", 1)[-1]
        return _TOLERANCE.get(name, _TOLERANCE["float32"])

    def present_matrix(self, backend: Backend, x, temperature, present):
        xp = backend.xp
        a = xp.astype(present, x.dtype)
        n_present = xp.sum(a, axis=-1, keepdims=True)
        slot = xp.arange(x.shape[-1], dtype=x.dtype, device=backend.device(x))
        b = xp.astype(slot < n_present, x.dtype)  # one unit of mass per slot of the present entries
        return xp.matrix_transpose(transport(self, backend, x, a, b, temperature))

    def topk_mask_rows(self, backend: Backend, x, k, temperature, largest: bool):
        xp = backend.xp
        y = x if largest else -x
        low, high, present = infinity_groups(xp, y)
        m_low, m_high, n_present = (_count(xp, flags, x.dtype) for flags in (low, high, present))
        if not isinstance(k, float) and k.dtype != x.dtype:
            k = xp.astype(k, x.dtype)
        # The entries at +inf come first (sharing k if there are more of them),
        # then the present entries' transport of mass k - m_high onto the upper
        # target, then the -inf ones.
        upper = xp.clip(k - m_high, 0.0, n_present)
        b = xp.concat([n_present - upper, upper], axis=-1)
        plan = transport(self, backend, xp.where(present, y, 0.0), xp.astype(present, x.dtype), b, temperature)
        share_high = xp.where(m_high > 0, xp.clip(k / xp.where(m_high > 0, m_high, 1.0), max=1.0), 0.0)
        rest = xp.clip(k - m_high - n_present, 0.0, None)
        share_low = xp.where(m_low > 0, rest / xp.where(m_low > 0, m_low, 1.0), 0.0)
        return xp.where(high, share_high, xp.where(low, share_low, plan[..., 1]))

    def quantile_rows(self, backend: Backend, x, q, temperature, present):
        """Quantiles with three targets (Cuturi et al. 2019, sec. 4; Xie et
        al. 2020): the present entries go onto targets of masses ``(h, 1, p - 1
        - h)`` with ``h = (p - 1) q`` (``p`` present entries), and the quantile
        is the barycentre of the middle target's unit of mass -- as ``T -> 0``
        it holds ``1 - t`` of sorted entry ``floor h`` and ``t`` of the next
        (``torch.quantile``'s linear rule).  ``O(n)`` per iteration and per
        ``q``; rows ``(*batch, n)``, ``q`` 0-d or ``(nq,)``; returns
        ``(*batch)`` or ``(*batch, nq)``.  Entries at ``-inf`` (``+inf``) hold
        the lowest (highest) mass: a middle unit that reaches them is
        ``-inf`` (``+inf``)."""
        xp = backend.xp
        if present is None:
            present = xp.ones(tuple(x.shape), dtype=xp.bool, device=backend.device(x))
        low, high = present & (x == -xp.inf), present & (x == xp.inf)
        finite = present & ~(low | high)  # NaN too: its row turns NaN
        n_all, m_low, n_f = (_count(xp, flags, x.dtype) for flags in (present, low, finite))
        qs = q[None] if q.ndim == 0 else q
        h = qs * xp.clip(n_all - 1.0, 0.0, None)  # (*batch, nq)
        below = xp.clip(h - m_low, 0.0, n_f)
        above = xp.clip(h + 1.0 - m_low, 0.0, n_f)
        b = xp.stack([below, above - below, n_f - above], axis=-1)  # (*batch, nq, 3)
        shape = tuple(h.shape) + (x.shape[-1],)
        y = xp.broadcast_to(xp.where(finite, x, 0.0)[..., None, :], shape)
        a = xp.broadcast_to(xp.astype(finite, x.dtype)[..., None, :], shape)
        if not isinstance(temperature, float) and temperature.ndim:
            temperature = xp.broadcast_to(temperature[..., None, :], tuple(h.shape) + (1,))
        plan = transport(self, backend, y, a, b, temperature)
        out = weighted_values(backend, plan[..., 1][..., None, :], y)[..., 0]
        # The linear rule meets sorted entry floor(h) with weight 1 - t > 0
        # and entry floor(h) + 1 where t > 0.
        reach_low, reach_high = h < m_low, h > m_low + n_f - 1.0
        out = xp.where(reach_low, xp.where(reach_high, xp.nan, -xp.inf), xp.where(reach_high, xp.inf, out))
        return out[..., 0] if q.ndim == 0 else out


def transport(config: Sinkhorn, backend: Backend, x, a, b, temperature):
    """The entropic plan ``P`` (``(*batch, n, m)``) of rows ``x`` (``(*batch,
    n)``, finite where ``a > 0``) with entry masses ``a`` (0 or 1) onto the
    targets ``y_j = j`` with masses ``b`` (``(*batch, m)``, summing to
    ``sum(a)``), at ``temperature`` (a float or ``(*batch, 1)``); differentiable
    in ``x``, ``b`` and the temperature (see the module doc)."""
    xp = backend.xp
    if isinstance(temperature, float) or not temperature.ndim:
        if isinstance(temperature, float):
            temperature = xp.asarray(temperature, dtype=x.dtype, device=backend.device(x))
        elif temperature.dtype != x.dtype:
            temperature = xp.astype(temperature, x.dtype)
        temperature = xp.broadcast_to(temperature, tuple(x.shape[:-1]) + (1,))
    if b.dtype != x.dtype:
        b = xp.astype(b, x.dtype)
    op = backend.custom_derivative(*_rules(config._tolerance(x.dtype), config.max_iterations, config.newton))
    return op(x, a, b, temperature)


def _reduced_cost(xp, x, a, b):
    """``c~_ij = c_ij - f0_i - g0_j >= 0`` for ``c_ij = -x_i j``: with the
    boundaries ``q_l`` (``l = 1..m-1``; the sorted present values at the mass
    ``sum_{j < l} b_j``, the midpoint where it falls between two entries),
    ``c~_ij = sum_{l <= j} relu(q_l - x_i) + sum_{l > j} relu(x_i - q_l)``
    (sums of non-negative terms: no cancellation).  Any ``q`` gives the same
    plan; these make ``c~`` zero on the exact matching."""
    n, m = x.shape[-1], b.shape[-1]
    if m == 1:
        return xp.zeros(tuple(x.shape) + (1,), dtype=x.dtype, device=_device(x))
    present = a > 0
    n_present = xp.sum(xp.astype(present, index_dtype(xp)), axis=-1, keepdims=True)
    top = xp.clip(n_present - 1, 0, None)
    ordered = xp.sort(xp.where(present, x, xp.inf), axis=-1)
    ordered = xp.where(xp.arange(n, device=_device(x)) < n_present, ordered, 0.0)
    mass = xp.cumulative_sum(b, axis=-1)[..., :-1]  # the mass below boundary l, (*batch, m - 1)
    lower = xp.clip(xp.astype(xp.ceil(mass), index_dtype(xp)) - 1, 0, None)
    upper = xp.astype(xp.floor(mass), index_dtype(xp))
    lower, upper = xp.minimum(lower, top), xp.minimum(upper, top)
    q = xp.take_along_axis(ordered, lower, axis=-1) / 2 + xp.take_along_axis(ordered, upper, axis=-1) / 2
    # Boundary l is column l - 1 of q; columns from m - 1 up to a whole number of
    # blocks are NaN, which add nothing to either sum below.
    block = min(_BLOCK, m)
    width = -(-m // block) * block
    nan = xp.full(tuple(q.shape[:-1]) + (width - m + 1,), xp.nan, dtype=x.dtype, device=_device(x))
    gap = xp.concat([q, nan], axis=-1)[..., None, :] - x[..., :, None]  # (*batch, n, width)
    big = xp.finfo(x.dtype).max  # an overflowed gap counts as the largest finite one: no inf * 0 below
    up = xp.clip(xp.where(gap > 0, gap, 0.0), max=big)  # relu(q_l - x_i) at column l - 1
    down = xp.clip(xp.where(gap < 0, -gap, 0.0), max=big)  # relu(x_i - q_l)
    # c~_ij = sum_{k < j} up_k + sum_{k >= j} down_k: prefix and suffix sums
    # within blocks of columns as products with 0/1 triangles (a cumulative
    # sum along a short last axis is slow in XLA and NumPy), plus the sums
    # of the whole blocks before (after) -- sums of non-negative terms still.
    shape = tuple(gap.shape[:-1]) + (width // block, block)
    up, down = xp.reshape(up, shape), xp.reshape(down, shape)
    k = xp.arange(block, device=_device(x))
    before = xp.astype(k[:, None] < k[None, :], x.dtype)
    after = xp.astype(k[:, None] >= k[None, :], x.dtype)
    totals_up, totals_down = xp.sum(up, axis=-1), xp.sum(down, axis=-1)
    zero = xp.zeros(tuple(shape[:-2]) + (1,), dtype=x.dtype, device=_device(x))
    carry_up = xp.concat([zero, xp.cumulative_sum(totals_up, axis=-1)[..., :-1]], axis=-1)
    carry_down = xp.concat([xp.flip(xp.cumulative_sum(xp.flip(totals_down, axis=-1), axis=-1), axis=-1)[..., 1:],
                            zero], axis=-1)
    cost = xp.matmul(up, before) + xp.matmul(down, after) + (carry_up + carry_down)[..., None]
    cost = xp.reshape(cost, tuple(gap.shape))[..., :m]
    # A row with a NaN entry is NaN (the NaN columns added nothing).
    return xp.where(xp.any(xp.isnan(x), axis=-1)[..., None, None], xp.nan, cost)


def _device(x):
    return backend_of(x).device(x)


def _schur(xp, p, a, b):
    """``(S, r)``: the regularised Schur complement ``diag(P^T 1) - P^T
    diag(1 / P 1) P + w 1 1^T`` on the targets with mass (identity on the
    others; ``w 1 1^T`` removes the null direction of the potentials, a tiny
    ridge keeps an exact permutation solvable) and the entries' totals
    ``P 1`` (1 where an entry is absent)."""
    m = b.shape[-1]
    entry, target = a > 0, b > 0
    rows = xp.where(entry, xp.sum(p, axis=-1), 1.0)
    cols = xp.sum(p, axis=-2)
    s = -xp.matmul(xp.matrix_transpose(p), p / rows[..., :, None])
    eye = xp.arange(m, device=_device(p))[:, None] == xp.arange(m, device=_device(p))[None, :]
    valid = xp.sum(xp.astype(target, p.dtype), axis=-1, keepdims=True)[..., None]
    weight = xp.sum(b, axis=-1, keepdims=True)[..., None] / xp.where(valid > 0, valid * valid, 1.0)
    ridge = 4 * xp.finfo(p.dtype).eps * xp.max(b, axis=-1, keepdims=True)[..., None]
    s = s + xp.where(eye, cols[..., None, :] + ridge, 0.0) + weight
    both = target[..., :, None] & target[..., None, :]
    return xp.where(both, s, xp.astype(eye, p.dtype)), rows


def _solve(xp, s, rhs):
    return xp.linalg.solve(s, rhs[..., None])[..., 0]


def _newton(xp, p, a, b, damping=None):
    """The Newton step ``(df, dg)`` of the potentials (in units of ``T``) for
    the marginal conditions ``P 1 = a``, ``P^T 1 = b`` at the plan ``p``:
    ``K (df, dg) = -(P 1 - a, P^T 1 - b)``, by the Schur complement on ``g``.
    ``damping`` (the rows' current error, ``(*batch,)``): a Levenberg-Marquardt
    term ``damping * diag(b)`` that vanishes at the solution (quadratic
    convergence kept) and bounds the step where ``S`` is nearly singular
    (a plan close to a permutation)."""
    s, rows = _schur(xp, p, a, b)
    if damping is not None:
        m = b.shape[-1]
        eye = xp.arange(m, device=_device(p))[:, None] == xp.arange(m, device=_device(p))[None, :]
        s = s + xp.where(eye, damping[..., None, None] * b[..., None, :], 0.0)
    r = xp.where(a > 0, rows - a, 0.0)
    c = xp.where(b > 0, xp.sum(p, axis=-2) - b, 0.0)
    rhs = xp.where(b > 0, -c + xp.matmul(xp.matrix_transpose(p), (r / rows)[..., None])[..., 0], 0.0)
    dg = _solve(xp, s, rhs)
    df = xp.where(a > 0, (-r - xp.matmul(p, dg[..., None])[..., 0]) / rows, 0.0)
    return df, dg


def _logits(xp, x, x0, cost, t, keep):
    """``log K_ij = (y_j (x_i - x0_i) - c~_ij) / T`` (``x0`` the solution's
    ``x``: the same derivatives as ``-c_ij / T`` up to the potentials, without
    cancellation), ``-inf`` outside ``keep``."""
    j = xp.arange(cost.shape[-1], dtype=cost.dtype, device=_device(cost))
    z = ((x - x0)[..., :, None] * j - xp.where(keep, cost, 0.0)) / t[..., None]
    return xp.where(keep, z, -xp.inf)


def _plan(xp, logits, f, g):
    return xp.exp(logits + f[..., :, None] + g[..., None, :])


# Scalings beyond exp(+-_ABSORB) go into the log potentials (the kernel is
# recomputed): the plan's entries then stay within a few orders of magnitude
# of what exp(logits + f + g) gives, far from overflow in float32.
_ABSORB = 20.0


def _potentials(xp, logits, a, b, tolerance, max_iterations, newton):
    """The potentials ``(f, g)`` (in units of ``T``) of the plan ``exp(logits
    + f + g)`` with entry masses ``a`` and target masses ``b``.

    Sinkhorn sweeps in the scaling domain, stabilised by absorption (Schmitzer
    2019, "Stabilized sparse scaling algorithms for entropy regularized
    transport problems", SIAM J. Sci. Comput., sec. 3.2): with the kernel
    ``K = exp(logits + F + G)`` and scalings ``u, v`` (``f = F + log u``,
    ``g = G + log v``) a sweep is ``u = a / K v``, ``v = b / K^T u``, two
    matrix-vector products and no exponential; when a scaling leaves
    ``exp(+-20)`` it moves into ``F, G`` and ``K`` is recomputed.  The
    warm start (``logits`` are ``-c~ / T``, zero on the hard matching) makes
    ``K`` the plan of the exact problem from the first sweep, so no row of
    ``K`` underflows.  Where the sweeps contract slowly (close ties at a small
    ``T``: the error would take more than ``max(2, m / 4)`` further sweeps at
    the last sweep's rate) and ``newton`` is set, a damped Newton step on the
    marginal conditions (``_newton``, an ``m x m`` solve, about ``m / 5``
    sweeps' work) joins the sweep.  A row stops when every present entry's
    mass is within ``tolerance`` (relative) of its own, or after
    ``max_iterations`` sweeps; a finished row keeps its state, whose last
    update made the targets' masses exact."""
    backend = backend_of(logits)
    max_iterations, newton = int(max_iterations), bool(newton)
    m = b.shape[-1]
    patience = max(2.0, m / 4.0)
    tiny = xp.finfo(logits.dtype).smallest_normal
    entry, target = a > 0, b > 0

    def matvec(k, v):
        return xp.matmul(k, v[..., None])[..., 0]

    def vecmat(u, k):
        return xp.matmul(u[..., None, :], k)[..., 0, :]

    def cond(step, big_f, big_g, u, v, k, error):
        return xp.any(error > tolerance) & (step < max_iterations)

    def newton_step(u, v, k, err):
        df, dg = _newton(xp, u[..., :, None] * k * v[..., None, :], a, b, err)
        # A damped step: no potential moves by more than 1 (a factor e).
        big = xp.maximum(xp.max(xp.abs(df), axis=-1), xp.max(xp.abs(dg), axis=-1))[..., None]
        scale = 1.0 / xp.clip(big, min=1.0)
        return u * xp.exp(scale * df), v * xp.exp(scale * dg)

    def absorb(big_f, big_g, u, v, k):
        big_f = xp.where(entry, big_f + xp.log(u), 0.0)
        big_g = xp.where(target, big_g + xp.log(v), 0.0)
        k = xp.exp(logits + big_f[..., :, None] + big_g[..., None, :])
        return big_f, big_g, xp.ones_like(u), xp.ones_like(v), k

    def keep(big_f, big_g, u, v, k):
        return big_f, big_g, u, v, k

    def body(step, big_f, big_g, u, v, k, error):
        # Measure the state (u, v) (its columns exact) by the row update; a
        # row within the tolerance keeps it and stops.
        u_new = xp.where(entry, a / xp.clip(matvec(k, v), min=tiny), 1.0)
        err = xp.max(xp.where(entry, xp.abs(u / u_new - 1.0), 0.0), axis=-1)
        active = (err > tolerance) & (error > tolerance)
        # The contraction of the last sweep, and the sweeps it would still need.
        rate = xp.where(xp.isfinite(error), err / xp.clip(error, min=tiny), 0.0)
        left = xp.where(rate < 1.0, xp.log(tolerance / xp.clip(err, min=tiny))
                        / xp.log(xp.clip(rate, min=tiny, max=0.999)), math.inf)
        v_old = v
        if newton:
            slow = xp.any(active & (left > patience))
            u_new, v = backend.cond(slow, lambda u_, v_: newton_step(u_, v_, k, err), lambda u_, v_: (u_, v_),
                                    (u_new, v))
        v_new = xp.where(target, b / xp.clip(vecmat(u_new, k), min=tiny), 1.0)
        u = xp.where(active[..., None], u_new, u)
        v = xp.where(active[..., None], v_new, v_old)
        far = xp.any(xp.abs(xp.log(u)) > _ABSORB) | xp.any(xp.abs(xp.log(v)) > _ABSORB)
        big_f, big_g, u, v, k = backend.cond(far, absorb, keep, (big_f, big_g, u, v, k))
        return step + 1, big_f, big_g, u, v, k, xp.where(error > tolerance, err, error)

    error = xp.full(tuple(a.shape[:-1]), math.inf, dtype=a.dtype, device=_device(a))
    state = (xp.asarray(0, device=_device(a)), xp.zeros_like(a), xp.zeros_like(b), xp.ones_like(a),
             xp.ones_like(b), xp.exp(logits), error)
    _, big_f, big_g, u, v, _, _ = backend.while_loop(cond, body, state)
    return xp.where(entry, big_f + xp.log(u), 0.0), xp.where(target, big_g + xp.log(v), 0.0)


register_opaque(_potentials, like=(1, 2))

_RULES: dict = {}


def _rules(tolerance: float, max_iterations: int, newton: bool):
    """``(fwd, bwd, smooth)`` of ``transport`` (see ``Backend.custom_derivative``)
    for one solver setting, built once so that the framework functions are
    reused (a plain dict: ``torch.compile`` traces a lookup in it, where it
    warns about ``functools.lru_cache``)."""
    key = (tolerance, max_iterations, newton)
    if key not in _RULES:
        _RULES[key] = _make_rules(*key)
    return _RULES[key]


def _make_rules(tolerance: float, max_iterations: int, newton: bool):

    def fwd(xp, x, a, b, t):
        cost = _reduced_cost(xp, x, a, b)
        keep = (a > 0)[..., :, None] & (b > 0)[..., None, :] & xp.isfinite(cost)
        logits = _logits(xp, x, x, cost, t, keep)
        f, g = backend_of(x).opaque(_potentials, (logits, a, b), (tolerance, max_iterations, newton))
        return _plan(xp, logits, f, g), (f, g, cost, x + 0.0)

    def bwd(xp, arrays, out, residuals, grad):
        x, a, b, t = arrays
        f, g, cost, _ = residuals
        p = out
        s, rows = _schur(xp, p, a, b)
        w = grad * p
        u, v = xp.sum(w, axis=-1), xp.sum(w, axis=-2)
        pt = xp.matrix_transpose(p)
        lam_c = xp.where(b > 0, _solve(xp, s, v - xp.matmul(pt, (u / rows)[..., None])[..., 0]), 0.0)
        lam_r = xp.where(a > 0, (u - xp.matmul(p, lam_c[..., None])[..., 0]) / rows, 0.0)
        vv = w - p * (lam_r[..., :, None] + lam_c[..., None, :])
        j = xp.arange(p.shape[-1], dtype=p.dtype, device=_device(p))
        gx = xp.matmul(vv, j[:, None])[..., 0] / t
        gt = xp.sum(xp.sum(xp.where(p > 0, vv * cost, 0.0), axis=-1), axis=-1)[..., None] / (t * t)
        return gx, None, lam_c, gt

    def smooth(xp, arrays, out, residuals):
        x, a, b, t = arrays
        f, g, cost, x0 = residuals
        stop = backend_of(x).stop_gradient
        keep = out > 0  # entries that underflowed stay 0 (their derivatives are below rounding)
        logits = _logits(xp, x, x0, cost, t, keep)
        for _ in range(2):  # Newton steps: derivatives of the solution map to third order
            df, dg = _newton(xp, xp.where(keep, _plan(xp, logits, f, g), 0.0), a, b)
            # The value stays the solver's; the step carries the derivatives.
            f, g = f + (df - stop(df)), g + (dg - stop(dg))
        return xp.where(keep, _plan(xp, logits, f, g), 0.0)

    return fwd, bwd, smooth


for _tolerance in _TOLERANCE.values():  # the defaults, built before any trace
    _rules(_tolerance, Sinkhorn.max_iterations, Sinkhorn.newton)
