r"""Sort methods that build a soft permutation matrix (NeuralSort, SoftSort, ...).

A matrix method defines one function on rows ``x`` of shape ``(*batch, n)``,

    ``present_matrix(backend, x, temperature, present) -> P``  (``(*batch, n, n)``),

the soft permutation that sorts the ``present`` entries of each row ascending:
row ``s < n_present`` of ``P`` is the (soft) one-hot of the entry at sorted
position ``s``, supported on present columns only; rows ``s >= n_present``
are never read (any finite values: masking them would be one more pass over
the ``n x n`` matrix, forward and backward).  ``x`` is finite where ``present`` (0 elsewhere); ``temperature`` is a
float or an array of shape ``(*batch, 1)``.

``MatrixMethod`` turns it into the whole sort-method interface
(``softops.sort``), with the infinity contract exact for every such method:
with ``m`` entries at ``-inf`` (after ``descending`` flips the sign) the first
``m`` slots are exactly the ``-inf`` entries (each slot ``1 / m`` on each of
them: tied infinities share their slots, so their ranks are their average
slot), the next the method's matrix of the finite entries, then the ``+inf``
ones.  From the full matrix ``P`` (``P @ x ~ sort(x)``):

* ``sort_rows``: ``P @ x`` on the finite slots, the infinities exactly;
* ``rank_rows``: ``r_j = sum_s (s + 1) P[s, j]`` (``P^T (1..n)``) of the
  finite entries' matrix, plus the number of ``-inf`` entries (so that
  ``soft_rank(x)[finite] = m + soft_rank(x[finite])`` although the columns of
  a row-stochastic ``P`` need not sum to 1); tied infinities get their
  average slot exactly;
* ``topk_mask_rows``: ``m_j = sum_s w_s P[s, j]`` on the descending matrix,
  ``w_s = clip(k - s, 0, 1)`` (the first ``k`` rows; sums to ``k``, and a
  fractional ``k`` takes that fraction of row ``floor(k)``);
* ``permutation_rows``: the full matrix itself (``soft_permutation``).

Everything is array operations, so the framework's autodiff gives every
transform and order directly.
"""

from __future__ import annotations

import abc

from softops._backend import Backend
from softops._shared import index_dtype


class MatrixMethod(abc.ABC):
    """Base of the matrix methods: the sort-method interface from
    ``present_matrix`` (see the module doc)."""

    has_matrix = True

    @staticmethod
    def temperature_for(tau, spacing, op: str):
        """``softops.Relative(tau)``: the temperature is a length in units of
        ``x`` for every operation, ``T = tau * spacing``."""
        return tau * spacing

    @abc.abstractmethod
    def present_matrix(self, backend: Backend, x, temperature, present):
        """The soft permutation of each row's present entries (module doc)."""

    # --- the sort-method interface (rows of shape (*batch, n)) --------------------

    def permutation_rows(self, backend: Backend, x, temperature, descending: bool):
        return _full_matrix(self, backend, x, temperature, descending)[0]

    def sort_rows(self, backend: Backend, x, temperature, descending: bool):
        xp = backend.xp
        y = -x if descending else x
        low, high, present = infinity_groups(xp, y)
        m = self.present_matrix(backend, xp.where(present, y, 0.0), temperature, present)
        # The present entries' values (slots 0 .. n_present - 1), then moved
        # down by m_low slots (the full matrix's P[s] = M[s - m_low], on the
        # n values rather than the n x n matrix); the infinities exactly.
        values = weighted_values(backend, m, xp.where(present, x, 0.0))
        first, last, source = _slots(backend, low, present)
        values = xp.take_along_axis(values, source, axis=-1)
        lo, hi = (xp.inf, -xp.inf) if descending else (-xp.inf, xp.inf)
        return xp.where(first, lo, xp.where(last, hi, values))

    def rank_rows(self, backend: Backend, x, temperature, descending: bool):
        xp = backend.xp
        y = -x if descending else x
        low, high, present = infinity_groups(xp, y)
        m = self.present_matrix(backend, xp.where(present, y, 0.0), temperature, present)
        slots = xp.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=backend.device(x))
        m_low, m_present = _count(xp, low, x.dtype), _count(xp, present, x.dtype)
        slots = xp.where(slots <= m_present, slots, 0.0)  # the present entries' rows only
        # Ranks among the present entries, after the m_low entries at -inf
        # (the columns of a row-stochastic matrix need not sum to 1, so the
        # full matrix's P^T (1..n) would shift them by m_low times that sum).
        ranks = m_low + xp.matmul(slots[..., None, :], m)[..., 0, :]
        tied_low = (m_low + 1.0) / 2.0
        tied_high = m_low + m_present + (_count(xp, high, x.dtype) + 1.0) / 2.0
        return xp.where(low, tied_low, xp.where(high, tied_high, ranks))

    def topk_mask_rows(self, backend: Backend, x, k, temperature, largest: bool):
        xp = backend.xp
        n = x.shape[-1]
        y = -x if largest else x
        low, high, present = infinity_groups(xp, y)
        m = self.present_matrix(backend, xp.where(present, y, 0.0), temperature, present)
        w = topk_slot_weights(backend, x, k)
        # sum_s w_s P[s, j] of the full matrix: the present entries' rows hold
        # slots m_low .., each group of tied infinities the mean of its slots' weights.
        first, last, _ = _slots(backend, low, present)
        m_low = _count(xp, low, x.dtype)
        slot = xp.arange(n, dtype=x.dtype, device=backend.device(x))
        ahead = xp.astype(xp.clip(slot + m_low, 0.0, n - 1.0), index_dtype(xp))
        w_present = xp.where(slot < _count(xp, present, x.dtype), xp.take_along_axis(w, ahead, axis=-1), 0.0)
        weights = xp.matmul(w_present[..., None, :], m)[..., 0, :]
        mean_first = xp.sum(xp.where(first, w, 0.0), axis=-1, keepdims=True) / xp.where(m_low > 0, m_low, 1.0)
        m_high = _count(xp, high, x.dtype)
        mean_last = xp.sum(xp.where(last, w, 0.0), axis=-1, keepdims=True) / xp.where(m_high > 0, m_high, 1.0)
        return xp.where(low, mean_first, xp.where(high, mean_last, weights))


def weighted_values(backend: Backend, p, x):
    """``P @ x`` for weights ``p`` (``(*batch, s, n)``, rows summing to 1 or 0)
    and finite rows ``x`` (``(*batch, n)``, the same batch).  Its derivatives
    are taken around the value ``v_s`` (held constant), as in soft_max: ``sum_j
    P_sj x_j`` has the same derivatives of every order as ``v_s + sum_j P_sj
    (x_j - v_s)``, whose terms stay finite next to the dtype's maximum
    (halved; weight-0 entries dropped), so a saturated row's gradient is
    exactly its weights.  One custom derivative: the forward is one matrix
    product and reverse mode the two products ``g x^T``-like and ``P^T g``
    (``_values_bwd``), with no pass over the ``n x n`` matrix for the
    re-expression (``_values_smooth``, which serves every other transform)."""
    return backend.custom_derivative(_values_fwd, _values_bwd, _values_smooth)(p, x)


def _values_fwd(xp, p, x):
    return xp.matmul(p, x[..., None])[..., 0], ()


def _half_offsets(xp, p, x, v):
    """``(x_j - v_s) / 2`` where ``P_sj > 0``, else 0 (finite at the dtype's maximum)."""
    return xp.where(p > 0, x[..., None, :] / 2 - v[..., :, None] / 2, 0.0)


def _values_bwd(xp, arrays, v, residuals, g):
    p, x = arrays
    gp = (2 * g)[..., :, None] * _half_offsets(xp, p, x, v)
    gx = xp.matmul(g[..., None, :], p)[..., 0, :]
    return gp, gx


def _values_smooth(xp, arrays, v, residuals):
    p, x = arrays
    return v + 2 * xp.sum(p * _half_offsets(xp, p, x, v), axis=-1)


def infinity_groups(xp, y):
    """``(low, high, present)``: entries at ``-inf``, at ``+inf``, and the rest
    (NaN counts as present: its row turns NaN)."""
    low, high = y == -xp.inf, y == xp.inf
    return low, high, ~(low | high)


def topk_slot_weights(backend: Backend, x, k):
    """``w_s = clip(k - s, 0, 1)`` over the slots of rows ``x`` (``x.shape``):
    the first ``k`` slots, a fractional ``k`` taking that fraction of slot
    ``floor(k)``."""
    xp = backend.xp
    slot = xp.arange(x.shape[-1], dtype=x.dtype, device=backend.device(x))
    if not isinstance(k, (int, float)) and k.dtype != x.dtype:
        k = xp.astype(k, x.dtype)
    return xp.broadcast_to(xp.clip(k - slot, 0.0, 1.0), x.shape)


def _count(xp, flags, dtype):
    return xp.sum(xp.astype(flags, dtype), axis=-1, keepdims=True)


def _slots(backend: Backend, low, present):
    """``(first, last, source)`` for rows with ``low`` entries at ``-inf`` and
    ``present`` finite ones: the slots of the leading and trailing infinities
    and, per slot, the present slot it reads (``slot - m_low``, clipped)."""
    xp = backend.xp
    n = low.shape[-1]
    m_low = xp.sum(xp.astype(low, index_dtype(xp)), axis=-1, keepdims=True)
    m_present = xp.sum(xp.astype(present, index_dtype(xp)), axis=-1, keepdims=True)
    slot = xp.arange(n, dtype=index_dtype(xp), device=backend.device(low))
    return slot < m_low, slot >= m_low + m_present, xp.clip(slot - m_low, 0, n - 1)


def _full_matrix(method, backend: Backend, x, temperature, descending: bool):
    """``(P, first, last, finite_x)``: the full soft permutation of each row in
    the operation's order, the slots that hold the leading / trailing
    infinities (``(*batch, n)``), and ``x`` with its infinities at 0."""
    xp = backend.xp
    n = x.shape[-1]
    y = -x if descending else x
    low, high, present = infinity_groups(xp, y)
    finite_x = xp.where(present, x, 0.0)
    m = method.present_matrix(backend, xp.where(present, y, 0.0), temperature, present)
    m_low, m_present = _count(xp, low, x.dtype), _count(xp, present, x.dtype)
    slot = xp.arange(n, dtype=x.dtype, device=backend.device(x))
    first = slot < m_low
    last = slot >= m_low + m_present
    # The present entries' rows move down by m_low slots: P[s] = M[s - m_low].
    source = xp.astype(xp.clip(slot - m_low, 0.0, n - 1.0), index_dtype(xp))
    shifted = xp.take_along_axis(m, xp.broadcast_to(source[..., None], m.shape), axis=-2)
    p = xp.where((first | last)[..., None], 0.0, shifted)
    m_high = _count(xp, high, x.dtype)
    p = p + xp.where(first[..., :, None] & low[..., None, :], 1.0 / xp.where(m_low > 0, m_low, 1.0)[..., None], 0.0)
    p = p + xp.where(last[..., :, None] & high[..., None, :], 1.0 / xp.where(m_high > 0, m_high, 1.0)[..., None], 0.0)
    return p, first, last, finite_x


def scaled_softmax(backend: Backend, u, temperature, present, scale, top=None, negate=False):
    """``softmax(u / T)`` over the last axis (``softmax(-u / T)`` with
    ``negate``), restricted to ``present`` columns (``(*batch, 1, n)``), for
    scores ``u = v * scale`` given as ``v`` and the constant ``scale``
    (``row_scale``): the maximum is taken out before multiplying by ``scale /
    T`` (clamped to the dtype's maximum), so that neither huge values nor tiny
    temperatures overflow; as ``T -> 0`` the weights become the one-hot of the
    maximum, shared by ties.

    ``top``: a constant the caller knows to be that maximum (reached in every
    row) and to bound every column's (signed) score, absent ones included; absent columns then enter
    as a ``-inf`` bias from the small ``(*batch, 1, n)`` mask instead of a
    ``where`` over the ``n x n`` scores (which could overflow to ``+inf``
    past an unknown maximum).  ``present=None`` (with ``top``): the caller's
    scores are already ``-inf`` (``+inf`` with ``negate``) at absent columns
    and finite at present ones (no pass over the scores for the mask)."""
    xp = backend.xp
    info = xp.finfo(u.dtype)
    known = top is not None
    if present is None:
        present = xp.ones(tuple(u.shape[:-2]) + (1, u.shape[-1]), dtype=xp.bool, device=backend.device(u))
        premasked = True
    else:
        premasked = False
    anything = xp.any(present, axis=-1, keepdims=True)
    if not known:
        signed = -u if negate else u
        top = backend.stop_gradient(xp.max(xp.where(present, signed, -info.max), axis=-1, keepdims=True))
        top = xp.where(anything, top, 0.0)
    if not isinstance(temperature, float) and temperature.ndim:
        temperature = temperature[..., None]  # (*batch, 1) -> (*batch, 1, 1)
    if isinstance(temperature, float):
        ratio = min(scale / temperature, float(info.max))
    else:
        ratio = xp.clip(scale / temperature, max=float(info.max))
    # Every row of scores keeps a finite entry (softmax of -inf alone is NaN):
    # a row with no present column (never read) keeps them all.
    keep = present | ~anything
    if known and isinstance(top, float) and top == 0.0:
        z = u * -ratio if negate else u * ratio  # no pass over the scores to shift them by 0
    else:
        z = (u + top) * -ratio if negate else (u - top) * ratio
    if not premasked:
        z = z + xp.astype(xp.where(keep, 0.0, -xp.inf), z.dtype) if known else xp.where(keep, z, -xp.inf)
    return backend.softmax(z)


def row_scale(n: int) -> float:
    """A power of two ``s >= 4 n`` to divide ``x`` by: sums of ``n`` distances
    of ``x / s`` cannot overflow even at the dtype's maximum, and the division
    is exact (but for subnormal results).  A constant, not a function of the
    data: a data-dependent scale (held constant) made ``jax.jit(jax.hessian)``
    of these matrices wrong by O(1) on XLA's CPU backend (jaxlib 0.10.2),
    where the eager Hessian was right."""
    return 2.0 ** (max(n - 1, 1).bit_length() + 2)
