r"""Differentiable sorting and ranking: ``soft_sort`` and ``soft_rank``.

Both work along ``axis`` (an int or a tuple of axes, flattened jointly), return
an array shaped like ``x`` and are differentiable with respect to ``x`` and to a
``temperature`` given as an array: 0-d, or one per row (broadcastable to the
batch shape, ``x``'s shape without ``axis``, or with ``x``'s dimensions and
size 1 along ``axis``).  The method is ``"permutahedron"``
(Blondel et al. 2020; see ``softops.methods.permutahedron``), ``"lapsum"``
(Struski et al. 2025; see ``softops.methods.lapsum``), or a config object
(``softops.Permutahedron(regularization=...)``, ``softops.LapSum()``); the
string ``"permutahedron"`` means ``Permutahedron(regularization="l2")``.
For ``"lapsum"`` the temperature is the scale of a Laplace distribution in
units of ``x`` for both operations: values closer than about ``T`` blend.

Temperature.  For the permutahedron it equals the regularisation strength
epsilon of Blondel et al. (and of torchsort / fast-soft-sort, so results agree
with theirs), and it acts differently on the two operations:

* ``soft_rank``: ``x / T`` is projected onto the permutahedron of (1..n), so
  ``T`` is in units of ``x`` and values closer than about ``T`` are blended:
  within a merged block ``B`` the l2 rank is
  ``rank_i = mean_B(rank) + (x_i - mean_B(x)) / T``.
* ``soft_sort``: ``(1..n) / T`` is projected onto the permutahedron of ``x``, so
  ``1 / T`` is a value gap in units of ``x``: sorted neighbours closer than
  about ``1 / T`` stay exact, and wider gaps are merged into blocks whose
  gaps are capped at ``1 / T``: within a merged block the l2 output is
  ``sort_k = mean_B(x) + (k - mean_B(k)) / T`` (so ``soft_sort([0, 10], T=1)
  = [4.5, 5.5]``, while ``T = 0.01`` returns ``[0, 10]``).  Large ``T`` pulls everything towards the mean of ``x``.

As ``T`` goes to 0 both give the exact result (for ranks of distinct values;
tied values share their average rank).

Scale-aware temperature: ``temperature=softops.Relative(tau)`` (see
``softops.temperature``) measures the blending length in neighbour gaps of each
row's data, ``s = tau * spacing``, and passes ``T = s`` to ranks and
``T = 1 / s`` to sorts, so that one dimensionless ``tau`` means the same for
both operations and is invariant to rescaling ``x``.
"""

from __future__ import annotations

import math
from dataclasses import replace

from softops._prepare import prepare
from softops._validate import check_flag
from softops.methods.lapsum import LapSum
from softops.methods.network import SortingNetwork
from softops.methods.neuralsort import NeuralSort
from softops.methods.permutahedron import Permutahedron
from softops.methods.sinkhorn import Sinkhorn
from softops.methods.softsort import SoftSort
from softops._shared import as_float_array, mask_rows, per_shard, straight_through
from softops.temperature import Relative

__all__ = ["LapSum", "NeuralSort", "Permutahedron", "Sinkhorn", "SoftSort", "SortingNetwork", "soft_rank", "soft_sort"]

# Each sort method is a small frozen config object with
#   sort_rows(backend, x, temperature, descending),
#   rank_rows(backend, x, temperature, descending) and
#   temperature_for(tau, spacing, op) (Relative(tau)),
# optionally topk_mask_rows(backend, x, k, temperature, largest),
# quantile_rows(backend, x, q, temperature, mask) and, for the
# methods that build a soft permutation matrix (softops.methods._matrix),
#   permutation_rows(backend, x, temperature, descending),
# on rows of shape (*batch, n); a string names the method's default config.
SORT_METHODS = {
    "permutahedron": Permutahedron,
    "lapsum": LapSum,
    "neuralsort": NeuralSort,
    "softsort": SoftSort,
    "network": SortingNetwork,
    "sinkhorn": Sinkhorn,
}


def resolve_method(method):
    """The config object of ``method`` (a name in SORT_METHODS or a config)."""
    if isinstance(method, tuple(SORT_METHODS.values())):
        return method
    if isinstance(method, str) and method in SORT_METHODS:
        return SORT_METHODS[method]()
    raise ValueError(
        "method must be one of "
        + ", ".join(repr(m) for m in SORT_METHODS)
        + " or a config object such as softops.Permutahedron(regularization='kl'); "
        + f"got {method!r}"
    )


def _exact_sort(xp, x, descending):
    return xp.sort(x, axis=-1, descending=descending)


def prepare_sorting(x, axis, temperature, config, op: str, mask=None, last=None):
    """``prepare`` for the sorting family: with ``mask`` (True = present) the
    masked entries are set to ``last`` (``+inf`` or ``-inf``: after every
    present entry in the operation's order, where the infinity contract keeps
    them out of every present entry's value and gradient); then
    ``temperature=Relative(tau)`` is resolved (from the present entries) into
    the method's per-row temperature for ``op`` ("sort": the method projects
    positions, as soft_sort, soft_topk, soft_quantile; "rank": it projects
    ``x / T``, as soft_rank and top-k masks).  Returns ``(prepared, mask rows or None)``."""
    relative = isinstance(temperature, Relative)
    p = prepare(x, axis, 1.0 if relative else temperature)
    m = mask_rows(p, mask)
    if m is not None:
        p = replace(p, x=p.xp.where(m, p.x, last))
    if relative:
        p = replace(p, temperature=temperature.resolve(p.backend, p.x, config, op, mask=m))
    return p, m


def _rows(x, axis, descending, temperature, method, hard, soft_rows, exact_rows, mask=None):
    """Checks, layout, the method's ``soft_rows`` ("sort_rows" or "rank_rows") on
    ``(*batch, n)``, and the straight-through ``exact_rows`` for ``hard=True``.
    Returns the ``Prepared`` input (masked entries at ``last_value(descending)``),
    the rows (compute dtype, batch layout) and the mask rows (or None)."""
    config = resolve_method(method)
    check_flag(descending, "descending")
    check_flag(hard, "hard")
    p, m = prepare_sorting(x, axis, temperature, config, soft_rows[: -len("_rows")], mask, last_value(descending))
    out = getattr(config, soft_rows)(p.backend, p.x, p.temperature, descending)
    if hard:
        out = straight_through(p.backend, exact_rows(p.xp, p.x, descending), out)
    return p, out, m


def last_value(descending):
    """The value that sorts after every other in the operation's order."""
    return -math.inf if descending else math.inf


def present_count(xp, m, dtype):
    """Present entries per row, ``(*batch, 1)``, as ``dtype``."""
    return xp.astype(xp.sum(xp.astype(m, xp.int32), axis=-1, keepdims=True), dtype)


def clear_slots(backend, rows, m):
    """Sorted rows with the slots past each row's present entries set to 0."""
    xp = backend.xp
    slot = xp.arange(rows.shape[-1], dtype=rows.dtype, device=backend.device(rows))
    return xp.where(slot < present_count(xp, m, rows.dtype), rows, 0.0)


def _masked_ranks(p, ranks, m, last):
    """Ranks among the present entries: 0 where masked, and present entries at
    ``last`` (which tie with the masked ones in the kernel) at their exact
    average rank ``n_present - (a - 1) / 2`` among the ``a`` of them."""
    xp = p.xp
    at_last = m & (p.x == last)
    a = present_count(xp, at_last, ranks.dtype)
    ranks = xp.where(at_last, present_count(xp, m, ranks.dtype) - (a - 1.0) / 2.0, ranks)
    return xp.where(m, ranks, 0.0)


def _exact_ranks(xp, x, descending):
    """Ranks 1..n, ties broken by position (stable ordinal ranks)."""
    order = xp.argsort(x, axis=-1, descending=descending, stable=True)
    return xp.astype(xp.argsort(order, axis=-1, stable=True), x.dtype) + 1.0


@per_shard("x", "mask", "temperature")
def soft_sort(x, axis=-1, *, descending=False, temperature=1.0, method="permutahedron", hard=False, mask=None):
    r"""Differentiable sort of ``x`` along ``axis`` (ascending unless ``descending``).

    Permutahedron method, l2 (Blondel et al. 2020, eq. 5): the output is the
    Euclidean projection of ``(1, ..., n) / T`` onto the convex hull of the
    permutations of ``x``.  It is non-decreasing, sums to ``sum(x)``, and splits
    into blocks of consecutive sorted positions; on a block ``B`` of size ``m``
    the values are ``mean_B(x) + (k - mean_B(k)) / T``: evenly spaced ``1 / T``
    apart around the block mean.  Sorted neighbours closer than about ``1 / T``
    (in units of ``x``) stay exact; a gap wider than that is merged and capped
    at ``1 / T`` (``soft_sort([0, 10], T=1) = [4.5, 5.5]``), and as ``T -> 0``
    the output is ``sort(x)``.  With
    ``Permutahedron(regularization="kl")`` position ``k`` of a block holds
    ``-LSE_B(-x) + log sum_{j in B} exp((k - j) / T)`` instead (``LSE`` the
    log-sum-exp; descending: ``LSE_B(x) - log sum_{j in B} exp((k - j) / T)``).

    LapSum method (``method="lapsum"``, Struski et al. 2025): position ``k``
    holds the point ``b`` whose LapSum soft rank is ``k``, i.e.
    ``sum_j sigma((b - x_j) / T) = k - 1/2`` with ``sigma`` the Laplace CDF
    (closed-form inverse; see ``softops.methods.lapsum``).

    ``hard=True`` returns the exact sort with the gradient of the soft one.

    Infinities are exact extremes (every method): with ``m`` entries at
    ``-inf`` the output is ``m`` times ``-inf`` followed by
    ``soft_sort(x[finite])`` (``+inf`` likewise at the end), with zero gradient
    for the infinite entries; a row holding a NaN returns NaN.

    ``mask`` (boolean, broadcastable to ``x``, True = present; padded or ragged
    rows): each row is sorted as if it held only its ``p`` present entries;
    they fill the first ``p`` output slots and the last ``n - p`` slots are 0
    (masked entries get zero gradient).

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_sort(np.array([5.0, 1.0, 2.0]), temperature=1.0)
        array([1.66666667, 2.66666667, 3.66666667])
        >>> softops.soft_sort(np.array([5.0, 1.0, 2.0]), temperature=0.1)
        array([1., 2., 5.])
    """
    x = as_float_array(x)
    p, out, m = _rows(x, axis, descending, temperature, method, hard, "sort_rows", _exact_sort, mask)
    if m is not None:
        out = clear_slots(p.backend, out, m)
    return p.output(p.layout.restore(p.xp, out))


@per_shard("x", "mask", "temperature")
def soft_rank(x, axis=-1, *, descending=False, temperature=1.0, method="permutahedron", hard=False, mask=None):
    r"""Differentiable ranks 1..n of ``x`` along ``axis`` (rank 1 = smallest, or
    the largest if ``descending``).

    Permutahedron method, l2 (Blondel et al. 2020, eq. 4): the output is the
    Euclidean projection of ``x / T`` onto the convex hull of the permutations of
    ``(1, ..., n)``.  Ranks sum to ``n (n + 1) / 2`` and are permutation
    equivariant.  Sorted values split into blocks; on a block ``B`` the ranks are
    ``mean_B(rank) + (x_i - mean_B(x)) / T``: values closer than about ``T`` (in
    units of ``x``) are blended, and as ``T -> 0`` the ranks are exact (tied
    values share their average rank).  With
    ``Permutahedron(regularization="kl")`` a block's ranks are
    ``sum_B(rank) * softmax_B(x / T)``: always positive.  LapSum method
    (``method="lapsum"``): ``rank_i = 1 + sum_{j != i} sigma((x_i - x_j) / T)``
    with ``sigma`` the Laplace CDF; ties get their average rank at every ``T``.

    ``hard=True`` returns exact ordinal ranks (ties ordered by position, like
    ``scipy.stats.rankdata(method="ordinal")``) with the gradient of the soft
    ranks.

    Infinities are exact extremes (every method): with ``m`` entries at
    ``-inf`` the finite entries' ranks are ``m + soft_rank(x[finite])`` and the
    ``-inf`` entries share the average rank ``(m + 1) / 2`` exactly (``+inf``
    likewise at the top); infinite entries get zero gradient.  The one
    exception is ``Permutahedron("kl")``, whose ranks are not shift-invariant:
    there the finite entries are projected onto the remaining positions
    ``m + 1, ..., n`` (same order and total as ``m + soft_rank(x[finite])``, not
    the same values).  A row holding a NaN returns NaN (other rows untouched).

    ``mask`` (boolean, broadcastable to ``x``, True = present; padded or ragged
    rows): each row is ranked as if it held only its present entries (ranks
    ``1..p``); masked positions return 0 with zero gradient.

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_rank(np.array([5.0, 1.0, 2.0]), temperature=2.0)
        array([3.  , 1.25, 1.75])
    """
    x = as_float_array(x)
    p, out, m = _rows(x, axis, descending, temperature, method, hard, "rank_rows", _exact_ranks, mask)
    if m is not None:
        out = _masked_ranks(p, out, m, last_value(descending))
    return p.output(p.layout.restore(p.xp, out))
