r"""Soft sorting and ranking by projection onto the permutahedron.

Blondel, Teboul, Berthet & Djolonga 2020, "Fast Differentiable Sorting and
Ranking" (ICML).  The permutahedron ``P(w)`` is the convex hull of the
permutations of ``w``.  With ``rho = (n, n-1, ..., 1)`` and a temperature
``T > 0`` (the paper's regularisation strength epsilon):

* l2:  ``P_Q(z, w) = argmin_{mu in P(w)} ||mu - z||^2``;
  soft rank ``r(x) = P_Q(x / T, rho)``, soft sort (descending)
  ``s(x) = P_Q(rho / T, x)``  (paper, eqs. 4-5);
* kl:  ``P_E(z, w) = argmin_{mu in P(exp w)} KL(mu, exp z)``;
  soft rank ``r(x) = P_E(x / T, log rho)``, soft sort (descending)
  ``s(x) = log P_E(rho / T, x)``.

Both projections reduce, after sorting ``z`` descending, to one isotonic
regression (paper, Prop. 3), solved by the pool-adjacent-violators kernel of
``softops._kernels.isotonic`` on rows; its custom VJP is the exact Jacobian
(block averages for l2, block softmaxes for kl; paper, section 5), so forward
and backward both cost O(n) after the O(n log n) sort.  The kernel forms each
output from block statistics (``sort_k = mean_B(x) + (rho_k - mean_B rho) / T``
for l2) so that no ``rho / T`` sized intermediate is ever subtracted from
another: float32 results stay within float32 rounding of float64 ones at every
temperature.

``sort_rows`` and ``rank_rows`` work on ``(*batch, n)`` rows; other operations
(top-k, quantiles) are built on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from softops._axis import sum_to
from softops._backend import Backend, backend_of
from softops._validate import check_choice

__all__ = ["Permutahedron", "project_rows", "rank_rows", "sort_rows"]

REGULARIZATIONS = ("l2", "kl")


@dataclass(frozen=True)
class Permutahedron:
    """The permutahedron method (Blondel et al. 2020) and its regulariser.

    ``regularization="l2"`` (the default, and what ``method="permutahedron"``
    means) is the Euclidean projection; ``"kl"`` the Kullback-Leibler one, whose
    soft ranks are positive and whose soft sort stays within the convex hull of
    ``x`` on each block of merged values.
    """

    regularization: str = "l2"

    def __post_init__(self):
        check_choice(self.regularization, "regularization", REGULARIZATIONS)

    # The sort-method interface (see softops.sort): rows of shape (*batch, n).
    def sort_rows(self, backend: Backend, x, temperature, descending: bool):
        return sort_rows(backend, x, temperature, self.regularization, descending)

    def rank_rows(self, backend: Backend, x, temperature, descending: bool):
        return rank_rows(backend, x, temperature, self.regularization, descending)

    @staticmethod
    def temperature_for(tau, spacing, op: str):
        """Temperature for ``softops.Relative(tau)`` given the data's neighbour
        spacing: ranks blend gaps below ``T`` ("rank": ``T = tau * spacing``); sorts
        cap gaps above ``1 / T`` ("sort": ``T = tau / spacing``)."""
        return tau * spacing if op == "rank" else tau / spacing


def _positions(backend: Backend, like, log: bool):
    """``rho = (n, ..., 1)`` (``log rho`` if ``log``) in ``like``'s dtype, as one row of
    shape ``(1, ..., 1, n)`` that the kernel shares between all rows."""
    xp = backend.xp
    n = like.shape[-1]
    rho = xp.arange(n, 0, -1, dtype=like.dtype, device=backend.device(like))
    rho = xp.log(rho) if log else rho
    return xp.reshape(rho, (1,) * (like.ndim - 1) + (n,))


# Each operation is one custom derivative around one kernel call per pass: the
# kernel sorts the rows itself and reads and writes through the permutation, so
# no framework sort, gather, scatter or broadcast copy is spent.
#
#   rank:    p = P(y / T, rho) in y's order (z = y, sorted by the kernel; w = rho shared);
#   sort:    p = P(rho / T, y) in sorted order (z = rho shared; w = y, sorted by the kernel);
#   project: p = P(y / T, w) in y's order, w an input (sorted descending).
#
# The fast reverse rule is the kernel's backward.  Every other transform
# differentiates ``_smooth``: the kernel's closed form on its block partition
# (``start``, sorted order), held fixed,
#   l2: p_i = c (z_i - mean_B z) + mean_B w,   kl: p_i = c z_i - LSE_B(c z) + LSE_B(w),
# in array operations (a gather, two segment sums and a gather back per
# sequence).  Entries of an infinite block contribute zeros (their outputs are
# constants).  Built once at import (JAX caches the custom_jvp on the
# functions, and torch.compile traces the autograd.Function's constant op
# tuple only through plain functions, not functools.partial).


def _block_sum(backend: Backend, v, start):
    """Per sorted position: the sum of ``v`` over its block."""
    return backend.take(backend.segment_sum(v, start), start)


def _block_mean(backend: Backend, v, start, size):
    """``mean_B(v)`` per sorted position."""
    return _block_sum(backend, v, start) / size


def _block_lse_gap(backend: Backend, d, start):
    """``LSE_B(v) - v_first`` per sorted position from ``d = v - v_first`` (``v``
    sorted descending, so ``d <= 0`` and no exponential overflows)."""
    return backend.xp.log(_block_sum(backend, backend.xp.exp(d), start))


def _smooth(backend: Backend, zs, ws, c, start, kl: bool):
    """The kernel's primal on sorted rows from its partition ``start``, as a
    differentiable function of ``zs``, ``ws`` and the scale ``c`` (infinite
    entries read as 0: their blocks are constants; a NaN stays NaN).

    Scaled values enter only as ``c (z - z_first)``, a block's first entry held
    constant (the log-sum-exp's shift): never as ``c z - c z_first``, which
    XLA's fused multiply-add evaluates as the rounding error of ``c z_first``
    (a single entry's ``exp`` of it was inf or 0 once ``c z`` reached about
    1e17 in float64 or 1e9 in float32: nan derivatives)."""
    xp = backend.xp
    zs = xp.where(xp.isinf(zs), 0.0, zs)
    ws = xp.where(xp.isinf(ws), 0.0, ws)
    size = _block_sum(backend, xp.ones_like(zs), start)
    first = backend.stop_gradient(backend.take(zs, start))
    # A flat block (one entry, or a tie: every block once the temperature is
    # small against the gaps of z) does not depend on c: its terms carry c
    # held constant.  Its derivative in c is exactly 0, whereas the chain rule
    # through 1 / T gave 0 * (dT / T^2), nan once 1 / T^2 overflows (T below
    # about 1 / sqrt(max): 5e-20 in float32) in forward mode.
    flat = _block_sum(backend, xp.astype(zs == first, zs.dtype), start) == size
    c = c[..., None]
    c = xp.where(flat, backend.stop_gradient(c), c)
    if kl:
        # c z - LSE_B(c z) + LSE_B(w); a single entry's first two terms are 0
        # for every z: z held there, so its second derivative is 0 rather
        # than 0 * c^2.
        d = c * (xp.where(size == 1, first, zs) - first)
        w_first = backend.stop_gradient(backend.take(ws, start))
        return d - _block_lse_gap(backend, d, start) + w_first + _block_lse_gap(backend, ws - w_first, start)
    return c * (zs - _block_mean(backend, zs, start, size)) + _block_mean(backend, ws, start, size)


def _make_ops(kl: bool):
    def rank_fwd(xp, y, scale):
        backend = backend_of(y)
        p, start, order = backend.isotonic_forward(y, _positions(backend, y, kl), scale, kl, "z")
        return p, (start, order)

    def rank_bwd(xp, arrays, p, residuals, g):
        (y, scale), (start, order) = arrays, residuals
        backend = backend_of(y)
        gy, _, gc = backend.isotonic_backward(
            y, _positions(backend, y, kl), scale, start, g, kl, order, "z", need=(True, False)
        )
        return gy, sum_to(xp, gc, scale.shape)

    def rank_smooth(xp, arrays, p, residuals):
        (y, scale), (start, order) = arrays, residuals
        backend = backend_of(y)
        ps = _smooth(backend, backend.take(y, order), _positions(backend, y, kl), scale, start, kl)
        return backend.take(ps, backend.inverse_permutation(order))

    def sort_fwd(xp, y, scale):
        backend = backend_of(y)
        p, start, order = backend.isotonic_forward(_positions(backend, y, False), y, scale, kl, "w")
        return p, (start, order)

    def sort_bwd(xp, arrays, p, residuals, g):
        (y, scale), (start, order) = arrays, residuals
        backend = backend_of(y)
        _, gy, gc = backend.isotonic_backward(
            _positions(backend, y, False), y, scale, start, g, kl, order, "w", need=(False, True)
        )
        return gy, sum_to(xp, gc, scale.shape)

    def sort_smooth(xp, arrays, p, residuals):
        (y, scale), (start, order) = arrays, residuals
        backend = backend_of(y)
        return _smooth(backend, _positions(backend, y, False), backend.take(y, order), scale, start, kl)

    def project_fwd(xp, y, w, scale):
        backend = backend_of(y)
        p, start, order = backend.isotonic_forward(y, w, scale, kl, "z")
        return p, (start, order)

    def project_bwd(xp, arrays, p, residuals, g):
        (y, w, scale), (start, order) = arrays, residuals
        gy, gw, gc = backend_of(y).isotonic_backward(y, w, scale, start, g, kl, order, "z")
        return gy, sum_to(xp, gw, w.shape), sum_to(xp, gc, scale.shape)

    def project_smooth(xp, arrays, p, residuals):
        (y, w, scale), (start, order) = arrays, residuals
        backend = backend_of(y)
        ps = _smooth(backend, backend.take(y, order), w, scale, start, kl)
        return backend.take(ps, backend.inverse_permutation(order))

    return {
        "rank": (rank_fwd, rank_bwd, rank_smooth),
        "sort": (sort_fwd, sort_bwd, sort_smooth),
        "project": (project_fwd, project_bwd, project_smooth),
    }


_OPS = {False: _make_ops(kl=False), True: _make_ops(kl=True)}


def _op(backend: Backend, name: str, kl: bool):
    return backend.custom_derivative(*_OPS[kl][name])


def _reciprocal_fwd(xp, t):
    return 1.0 / t, ()


def _reciprocal_bwd(xp, arrays, c, residuals, g):
    # -g / T^2 as -(g c) c: 0 where the operation does not depend on T (every
    # block a single entry or a tie, as at tiny T), where 1 / T^2 overflows.
    return (-(g * c) * c,)


def _reciprocal_smooth(xp, arrays, c, residuals):
    # 1 / T as c * (1 / (T c)) with c = 1 / T held constant: the same function,
    # whose chain rule multiplies a cotangent by c before the second c (as
    # _reciprocal_bwd does), so a zero cotangent stays 0 at tiny T rather than
    # 0 * (1 / T^2 = inf) = nan (torch.func.grad, JAX forward mode).
    (t,) = arrays
    return c * (1.0 / (t * c))


def _scale(backend: Backend, x, temperature):
    """``1 / temperature`` per row, of shape ``x.shape[:-1]`` or broadcastable to
    it with as many axes (the temperature is a float, a 0-d array, or per row of
    shape ``(*batch, 1)``)."""
    xp = backend.xp
    shape = (1,) * (x.ndim - 1)
    if isinstance(temperature, float):
        return xp.full(shape, 1.0 / temperature, dtype=x.dtype, device=backend.device(x))
    scale = backend.custom_derivative(_reciprocal_fwd, _reciprocal_bwd, _reciprocal_smooth)(temperature)
    if scale.ndim == x.ndim:  # a per-row temperature of shape (*batch, 1)
        return scale[..., 0]
    return xp.reshape(scale, shape)


def _floored_temperature(backend: Backend, temperature, bound, like):
    """The projection's temperature, at least ``bound / max`` (``bound`` per
    row, held constant: the largest ``|z|`` that ``1 / T`` multiplies): the
    kernel and the re-expression form ``z / T`` (KL: and log-sum-exps of it),
    which overflowed at temperatures near the smallest normal (``nan``; audit
    R9), and the temperature's own derivative there was ``0 * inf``.  At
    that floor ``z / T`` still separates entries one ulp of ``bound`` apart by
    about ``4e292`` (float64; ``4e31`` in float32), so every block is a single
    entry or an exact tie, whose outputs do not depend on ``T``: values and
    derivatives (0 in ``T``) are the limit's to working precision (but for
    values near the float maximum, whose gaps can exceed ``max / n``:
    the sort then blends them as at a larger temperature).  Returns a float
    or an array of shape ``(*batch, 1)``."""
    xp = backend.xp
    big = float(xp.finfo(like.dtype).max)
    if isinstance(bound, float):
        floor = bound / big
        if isinstance(temperature, float):
            return max(temperature, floor)
    else:
        # A true division: compilers (XLA) turn a division by a constant into a
        # product with its reciprocal, which is subnormal in float32 and
        # flushed to 0 (the floor was 0 under jax.jit).
        floor = backend.stop_gradient(bound / xp.where(xp.isnan(bound), bound, big))[..., None]
        if isinstance(temperature, float):
            return xp.clip(floor, min=temperature)  # max(floor, T), sharded as floor
    if temperature.ndim == 0:
        temperature = xp.reshape(temperature, (1,) * like.ndim)
    return xp.where(floor > temperature, floor, temperature)


def _finite_bound(backend: Backend, z):
    """``max |z|`` over each row's finite entries (``z.shape[:-1]``)."""
    xp = backend.xp
    return backend.stop_gradient(xp.max(xp.where(xp.isfinite(z), xp.abs(z), 0.0), axis=-1))


def sort_rows(backend: Backend, x, temperature, regularization: str, descending: bool):
    """Soft sort of each row of ``x`` (shape ``(*batch, n)``)."""
    # Descending soft sort of y: P(rho / T, y) with y's entries sorted descending.
    y = x if descending else -x
    kl = regularization == "kl"
    # z = rho, at most n
    temperature = _floored_temperature(backend, temperature, float(x.shape[-1]), x)
    p = _op(backend, "sort", kl)(y, _scale(backend, x, temperature))
    return p if descending else -p


def project_rows(backend: Backend, y, w, temperature, kl: bool):
    """``P(y / T, w)`` on each row (shape ``(*batch, n)``), in ``y``'s order: the
    projection of ``y / T`` onto the permutahedron of ``w``, whose entries must be
    sorted descending (kl: ``w`` holds log-weights and the primal is returned).
    Ties in ``y`` may come in any order: tied entries always share one block."""
    temperature = _floored_temperature(backend, temperature, _finite_bound(backend, y), y)
    return _op(backend, "project", kl)(y, w, _scale(backend, y, temperature))


def rank_rows(backend: Backend, x, temperature, regularization: str, descending: bool):
    """Soft ranks (1..n) of each row of ``x`` (shape ``(*batch, n)``)."""
    kl = regularization == "kl"
    temperature = _floored_temperature(backend, temperature, _finite_bound(backend, x), x)
    p = _op(backend, "rank", kl)(-x if descending else x, _scale(backend, x, temperature))
    return backend.xp.exp(p) if kl else p
