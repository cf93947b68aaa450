r"""Soft permutation matrices, and other arrays carried along a soft order.

``soft_permutation(x)`` is a relaxed argsort: a matrix ``P`` of shape
``(*batch, n, n)`` whose row ``s`` is a distribution over the entries of ``x``
peaked at the entry of sorted position ``s``, so that ``P @ x ~ sort(x)``.
``soft_sort_by(keys, values)`` reorders ``values`` (any trailing feature
dimensions) by the soft order of ``keys``: ``P @ values``.  Both take the
methods that build such a matrix (``softops.methods._matrix``):
``"network"`` (differentiable sorting networks, Petersen et al. 2021 / 2022;
the default), ``"neuralsort"`` (Grover et al. 2019) and ``"softsort"``
(Prillo & Eisenschlos 2020), or their configs; the permutahedron and LapSum compute
sorts and ranks without one and are refused with a message naming those
that have one.  The same methods serve ``soft_sort``, ``soft_rank``,
``soft_topk``, ``soft_topk_mask`` and ``soft_quantile`` (ranks ``P^T (1..n)``;
the top-k mask is the sum of the first ``k`` rows of the descending matrix).
"""

from __future__ import annotations

import math
import numbers

from softops._shared import as_float_array, per_shard, straight_through
from softops._validate import check_flag
from softops.sort import SORT_METHODS, last_value, prepare_sorting, present_count, resolve_method

__all__ = ["soft_permutation", "soft_sort_by"]


def _matrix_method(method, name):
    config = resolve_method(method)
    if not hasattr(config, "permutation_rows"):
        have = [m for m, cls in SORT_METHODS.items() if hasattr(cls, "permutation_rows")]
        raise ValueError(
            f"{name} needs a method that builds a soft permutation matrix: one of "
            + ", ".join(repr(m) for m in have)
            + f" (or its config); {config!r} computes sorts and ranks without one"
        )
    return config


def _int_axis(axis, name):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name}: axis must be an int (one axis is sorted), got {axis!r}")
    return int(axis)


def _matrix(x, axis, descending, temperature, method, hard, mask, name):
    """``(prepared, P)``: ``P`` of shape ``(*batch, n, n)`` in the row layout,
    rows of the slots past each row's present entries 0."""
    config = _matrix_method(method, name)
    _int_axis(axis, name)
    check_flag(descending, "descending")
    check_flag(hard, "hard")
    last = last_value(descending)
    p, m = prepare_sorting(x, axis, temperature, config, "sort", mask, last)
    xp = p.xp
    perm = config.permutation_rows(p.backend, p.x, p.temperature, descending)
    if hard:
        order = xp.argsort(p.x, axis=-1, descending=descending, stable=True)
        columns = xp.arange(p.x.shape[-1], device=p.backend.device(p.x))
        exact = xp.astype(order[..., :, None] == columns, perm.dtype)
        perm = straight_through(p.backend, exact, perm)
    if m is not None:
        slot = xp.arange(p.x.shape[-1], dtype=perm.dtype, device=p.backend.device(perm))
        perm = xp.where((slot < present_count(xp, m, perm.dtype))[..., :, None], perm, 0.0)
    return p, perm


@per_shard("x", "mask", "temperature")
def soft_permutation(
    x, axis=-1, *, descending=False, temperature=1.0, method="network", hard=False, k=None, mask=None
):
    r"""Relaxed argsort: the soft permutation matrix that sorts ``x`` along ``axis``.

    Returns ``P`` of shape ``(*batch, n, n)`` (``batch``: ``x``'s other axes in
    order) with ``P[..., s, j]`` the weight of entry ``j`` at sorted position
    ``s`` (ascending, or descending with ``descending=True``), so that
    ``P @ x ~ sort(x)`` and ``P @ v`` sorts any ``v`` along (``soft_sort_by``).
    Every row sums to 1 (the network's columns too: it is doubly stochastic;
    NeuralSort and SoftSort are row-stochastic only); ``temperature`` (units of ``x``; a number, one per
    row, or ``softops.Relative(tau)``) -> 0 gives the exact permutation
    matrix, tied entries sharing their slots.  ``k`` (an int, ``1 <= k <=
    n``) returns the first ``k`` rows only, ``(*batch, k, n)``.  ``hard=True``:
    the exact permutation matrix (stable: ties by position) with the soft
    matrix's gradient.  Infinities: ``-inf`` entries take the first slots
    exactly (tied ones share them: each of those rows is ``1 / m`` on each of
    the ``m``), ``+inf`` the last.  ``mask`` (boolean, broadcastable to
    ``x``, True = present): the permutation of the present entries, in the
    first ``n_present`` rows; later rows and masked columns are 0.

    Methods: ``"network"`` (default; ``softops.SortingNetwork``: odd-even or
    bitonic, four sigmoids; the matrix costs ``O(n^2 log^2 n)`` for bitonic),
    ``"neuralsort"`` (``softops.NeuralSort``) and ``"softsort"``
    (``softops.SoftSort``), ``O(n^2)`` per row.

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_permutation(np.array([3.0, 1.0, 2.0]), temperature=1e-3)
        array([[0., 1., 0.],
               [0., 0., 1.],
               [1., 0., 0.]])
    """
    x = as_float_array(x)
    p, perm = _matrix(x, axis, descending, temperature, method, hard, mask, "soft_permutation")
    n = p.x.shape[-1]
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n:
            raise ValueError(f"k must be an int in [1, {n}] (the number of rows to return), got {k!r}")
        perm = perm[..., : int(k), :]
    return p.output(perm)


@per_shard("keys", "values", "mask", "temperature")
def soft_sort_by(
    keys, values, axis=-1, *, descending=False, temperature=1.0, method="network", hard=False, mask=None
):
    r"""``values`` reordered by the soft order of ``keys`` along ``axis``.

    ``values`` has ``keys``' shape (the batch axes and the sorted axis) plus
    any trailing feature dimensions; the result has ``values``' shape, with
    position ``s`` along ``axis`` the ``P[s]``-weighted mean of the values,
    ``P = soft_permutation(keys, axis, ...)``: ``sum_j P[s, j] values[j]``.
    As the temperature goes to 0 it is ``values`` taken in ``argsort(keys)``
    order (``take_along_axis``), with ties averaged; ``hard=True`` is exactly
    that (stable) with the soft gradient.  Differentiable in ``keys`` and
    ``values``.  ``values`` must be finite (a weight 0 times ``inf`` is NaN);
    integer values are read as floats.  ``mask``: as in ``soft_permutation``
    (positions past each row's present entries get 0).

    Example (seed 001: the rows of ``a`` whose score ``c`` is in the top half)::

        >>> import numpy as np, softops
        >>> c = np.array([0.2, 3.0, -1.0, 2.0])
        >>> a = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
        >>> softops.soft_sort_by(c, a, descending=True, temperature=1e-3)[:2]
        array([[ 2., 20.],
               [ 4., 40.]])
    """
    keys = as_float_array(keys)
    p, perm = _matrix(keys, axis, descending, temperature, method, hard, mask, "soft_sort_by")
    xp, backend = p.xp, p.backend
    values = as_float_array(values)
    from softops._backend import backend_of

    try:
        same = backend_of(values).name == backend.name
    except TypeError:
        same = False
    if not same:
        raise TypeError(f"values must be an array of keys' framework ({backend.name}), got {type(values).__name__}")
    shape = p.layout.shape
    ndim = len(shape)
    if tuple(values.shape[:ndim]) != shape:
        raise ValueError(
            f"values of shape {tuple(values.shape)} must start with keys' shape {shape} "
            "(the batch axes and the sorted axis), followed by any feature dimensions"
        )
    features = tuple(values.shape[ndim:])
    dtype = values.dtype
    if not xp.isdtype(dtype, "real floating"):
        values, dtype = xp.astype(values, perm.dtype), p.dtype
    work = xp.result_type(perm.dtype, values.dtype)
    if xp.finfo(work).bits < 32:
        work = xp.float32
    ax = p.layout.axes[0]
    v = xp.permute_dims(values, (*p.layout.permutation, *range(ndim, values.ndim)))
    v = xp.reshape(xp.astype(v, work), (*p.layout.batch_shape, shape[ax], math.prod(features))) if features else xp.astype(v, work)[..., None]
    out = xp.matmul(xp.astype(perm, work), v)
    out = xp.reshape(out, (*p.layout.batch_shape, shape[ax], *features))
    inverse = [0] * ndim
    for position, source in enumerate(p.layout.permutation):
        inverse[source] = position
    out = xp.permute_dims(out, (*inverse, *range(ndim, values.ndim)))
    return xp.astype(out, dtype) if out.dtype != dtype else out
