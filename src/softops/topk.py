r"""Differentiable top-k and quantiles: ``soft_topk``, ``soft_topk_mask``,
``soft_quantile`` and ``soft_median``.

* ``soft_topk`` and ``soft_quantile`` read the soft sort of ``softops.soft_sort``
  (same ``method`` and the same temperature: ``1 / T`` is the largest gap, in
  units of ``x``, that merged sorted values keep): the top-k values are its first
  ``k`` entries (descending for the largest), a quantile is its linear
  interpolation at position ``(n - 1) q`` (``torch.quantile``'s "linear" rule,
  read with ``softops.lookup``); a method with ``quantile_rows`` (Sinkhorn's
  three targets) supplies its own quantiles.
* ``soft_topk_mask`` projects ``x / T`` (as ``soft_rank`` does) onto the
  *capped simplex* ``{m in [0, 1]^n : sum m = k}``, which is the permutahedron
  of ``w = (1, ..., 1, k - floor, 0, ..., 0)`` (Blondel, Teboul, Berthet &
  Djolonga 2020, "Fast Differentiable Sorting and Ranking", sec. 3; the capped
  simplex is the base polytope of ``S -> min(|S|, k)``).  The l2 projection is
  ``m_i = clip(x_i / T - tau, 0, 1)`` with the threshold ``tau`` that makes the
  sum ``k``, so ``T`` is in units of ``x``: entries further than about ``T`` from
  the k-th largest value get exactly 0 or 1.  It is computed by the same
  pool-adjacent-violators kernel as the soft ranks, with exact gradients with
  respect to ``x``, the temperature and ``k``.  A sort method that defines
  ``topk_mask_rows(backend, x, k, temperature, largest)`` on rows ``(*batch, n)``
  supplies its own mask instead.
"""

from __future__ import annotations

import math
import numbers

from softops._axis import move_axis
from softops._backend import backend_of
from softops._prepare import compute_dtype
from softops._validate import (
    check_flag,
    check_float_array,
    concrete_scalar,
    concrete_values,
    normalize_axes,
)
from softops.index import lookup, lookup_along_axis
from softops.methods.permutahedron import project_rows
from softops._shared import as_float_array, per_shard, straight_through
from softops.sort import _exact_sort, _rows, clear_slots, last_value, prepare_sorting, present_count, resolve_method

__all__ = ["soft_median", "soft_quantile", "soft_topk", "soft_topk_mask"]


def _axis_length(x, axis):
    """``(backend, axes, n)``: the length of the (flattened) ``axis`` of ``x``."""
    backend = check_float_array(x)
    axes = normalize_axes(axis, x.ndim)
    empty = [a for a in axes if x.shape[a] == 0]
    if empty:
        raise ValueError(f"axis {empty[0]} of x has length 0; the operation needs at least one element")
    return backend, axes, math.prod([x.shape[a] for a in axes])


def _check_k_int(k, n):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(
            f"k must be an int for soft_topk (the output has k entries), got {k!r}; "
            "for a fractional k use soft_topk_mask"
        )
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and n = {n} (the length along axis), got {k}")
    return int(k)


def _check_k_real(k, n, backend):
    """``k`` a real number or a 0-d floating array of ``x``'s framework in [0, n]."""
    if isinstance(k, numbers.Real) and not isinstance(k, bool):
        value = float(k)
    elif hasattr(k, "shape"):
        try:
            same = backend_of(k) is backend
        except TypeError:
            same = False
        if not same or not backend.xp.isdtype(k.dtype, "real floating"):
            raise TypeError(
                f"k must be a Python number or a 0-d floating array of the same framework "
                f"as x ({backend.name}), got {type(k).__name__} of dtype {getattr(k, 'dtype', None)}"
            )
        if tuple(k.shape) != ():
            raise ValueError(f"k must be a scalar (0-d array), got shape {tuple(k.shape)}")
        value = concrete_scalar(k)
    else:
        raise TypeError(f"k must be a real number, got {k!r}")
    if value is not None and not (math.isfinite(value) and 0 <= value <= n):
        raise ValueError(f"k must be in [0, n] with n = {n} (the length along axis), got {value}")
    return k


def _k_slot(xp, layout, rows):
    """Rows ``(*batch, k)`` back in the caller's layout: the k entries take the
    place of the (first) reduced axis."""
    y = xp.reshape(rows, layout.batch_shape + (rows.shape[-1],))
    position = len([i for i in layout.permutation[: len(layout.batch_shape)] if i < min(layout.axes)])
    return move_axis(xp, y, -1, position)


@per_shard("x", "mask", "temperature")
def soft_topk(
    x, k, axis=-1, *, largest=True, temperature=1.0, method="permutahedron", hard=False, mask=None
):
    r"""Differentiable ``torch.topk(x, k, dim=axis).values``: the ``k`` largest
    (or smallest, ``largest=False``) values along ``axis``, sorted (largest first,
    or smallest first).

    The result is the first ``k`` entries of ``soft_sort(x, axis,
    descending=largest)`` (see ``softops.soft_sort`` for the method and the
    temperature: sorted neighbours closer than about ``1 / T``, in units of
    ``x``, stay exact, and wider gaps are merged and capped at ``1 / T``
    around their mean).  ``k`` is an int in ``[0, n]`` (``k = 0``: a zero-length axis, as ``torch.topk``).  The output has ``x``'s shape with
    ``axis`` replaced by ``k`` in place (as ``torch.topk``); with a tuple of axes
    they are flattened and replaced by one axis of length ``k`` at the place of
    the first.  ``hard=True`` returns the exact top-k values with the soft
    gradient.  ``mask`` (boolean, broadcastable to ``x``, True = present): the
    top-k of each row's ``p`` present entries; slots past ``p`` (when
    ``k > p``) are 0, and masked entries get zero gradient.

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_topk(np.array([5.0, 1.0, 2.0, 4.0]), 2, temperature=0.1)
        array([5., 4.])
        >>> softops.soft_topk(np.array([5.0, 1.0, 2.0, 4.0]), 2, temperature=2.0)
        array([3.75, 3.25])
    """
    x = as_float_array(x)
    _, _, n = _axis_length(x, axis)
    k = _check_k_int(k, n)
    check_flag(largest, "largest")
    p, rows, m = _rows(x, axis, largest, temperature, method, hard, "sort_rows", _exact_sort, mask)
    rows = rows[..., :k] if m is None else clear_slots(p.backend, rows[..., :k], m)
    return p.output(_k_slot(p.xp, p.layout, rows))


def _capped_simplex_weights(backend, k, like):
    """``w = (1, ..., 1, k - f, 0, ..., 0)`` with ``f = ceil(k) - 1`` ones, shaped
    like ``like``: the permutahedron of ``w`` is the capped simplex.  ``dw / dk``
    is 1 at position ``f`` (at an integer ``k``, the derivative from the left)."""
    xp = backend.xp
    n = like.shape[-1]
    i = xp.arange(n, dtype=like.dtype, device=backend.device(like))
    if isinstance(k, float):
        k = xp.asarray(k, dtype=like.dtype, device=backend.device(like))
    else:
        k = xp.astype(k, like.dtype)
    f = xp.ceil(backend.stop_gradient(k)) - 1.0
    w = xp.where(i < f, xp.ones_like(i), xp.where(i == f, k - f, xp.zeros_like(i)))
    return xp.broadcast_to(w, like.shape)


@per_shard("x", "mask", "temperature")
def soft_topk_mask(
    x, k, axis=-1, *, largest=True, temperature=1.0, method="permutahedron", hard=False, mask=None
):
    r"""Soft membership of the ``k`` largest (or smallest) entries along ``axis``.

    Returns weights ``m`` shaped like ``x``, in ``[0, 1]``, summing to ``k`` along
    ``axis``: the Euclidean projection of ``x / T`` (``-x / T`` for
    ``largest=False``) onto the capped simplex ``{m in [0, 1]^n : sum m = k}``,
    i.e. ``m_i = clip(x_i / T - tau, 0, 1)`` with ``tau`` set by the sum (the
    permutahedron of ``(1, ..., 1, 0, ..., 0)``; Blondel et al. 2020).  ``T`` is
    in units of ``x``: entries more than about ``T`` above (below) the k-th
    largest value get exactly 1 (0), and as ``T -> 0`` the mask is the exact
    top-k indicator (tied values at the boundary share the weight).

    ``k`` is a real number in ``[0, n]`` (``k = 0``: all zeros, zero gradient) or a 0-d floating array (then the mask
    is differentiable in ``k``: ``dm / dk`` is the direction in which the sum
    grows, from the left at an integer ``k``); a fractional ``k`` gives the
    capped simplex of sum ``k``.  ``k`` is a scalar; ``temperature`` a scalar or one per row
    (as for ``soft_rank``).  The
    permutahedron supports ``regularization="l2"`` only here; a method with its
    own ``topk_mask_rows`` (e.g. LapSum) uses that.  ``hard=True`` returns the
    exact 0/1 mask (ties: the first by position; a fractional ``k`` puts
    ``k - floor(k)`` on the next entry) with the soft gradient.  ``mask``
    (boolean, broadcastable to ``x``, True = present): the top-k among each
    row's present entries; masked positions return 0 with zero gradient (a row
    with fewer than ``k`` present entries selects all of them and sums to less
    than ``k``).

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_topk_mask(np.array([5.0, 1.0, 2.0, 4.0]), 2, temperature=0.1)
        array([1., 0., 0., 1.])
        >>> softops.soft_topk_mask(np.array([5.0, 1.0, 2.0, 4.0]), 2, temperature=4.0)
        array([1.  , 0.  , 0.25, 0.75])
    """
    x = as_float_array(x)
    backend, _, n = _axis_length(x, axis)
    k = _check_k_real(k, n, backend)
    check_flag(largest, "largest")
    check_flag(hard, "hard")
    config = resolve_method(method)
    p, present = prepare_sorting(x, axis, temperature, config, "rank", mask, last_value(largest))
    xp = p.xp
    if isinstance(k, numbers.Real):
        k = float(k)
    own = getattr(config, "topk_mask_rows", None)
    if own is not None:
        mask = own(p.backend, p.x, k, p.temperature, largest)
    else:
        if getattr(config, "regularization", "l2") != "l2":
            raise ValueError(
                "soft_topk_mask with the permutahedron needs regularization='l2' (the kl "
                "projection onto the capped simplex has no finite log-weights); "
                f"got {config!r}"
            )
        w = _capped_simplex_weights(p.backend, k, p.x)
        mask = project_rows(p.backend, p.x if largest else -p.x, w, p.temperature, kl=False)
    if hard:
        w = backend.stop_gradient(_capped_simplex_weights(p.backend, k, p.x))
        # Stable descending order of the selected entries: ties go to the first.
        order = xp.argsort(p.x if largest else -p.x, axis=-1, descending=True, stable=True)
        exact = xp.take_along_axis(w, p.backend.inverse_permutation(order), axis=-1)
        mask = straight_through(p.backend, exact, mask)
    if present is not None:
        mask = xp.where(present, mask, 0.0)
    return p.output(p.layout.restore(xp, mask))


def _check_q(q, backend, dtype, device):
    """``q`` (a number, a list of numbers, or a 0-d or 1-D floating array of ``x``'s
    framework) in ``[0, 1]`` as an array of the compute dtype."""
    xp = backend.xp
    python_numbers = isinstance(q, numbers.Real) or (
        isinstance(q, (list, tuple)) and all(isinstance(v, numbers.Real) for v in q)
    )
    if isinstance(q, bool) or (isinstance(q, (list, tuple)) and not python_numbers):
        if isinstance(q, (list, tuple)) and all(isinstance(v, (list, tuple)) for v in q):
            raise ValueError(f"q must be a scalar or a 1-D list, got {q!r}")
        raise TypeError(f"q must be a number or a 1-D list of numbers in [0, 1], got {q!r}")
    if python_numbers:
        values = [float(v) for v in q] if isinstance(q, (list, tuple)) else [float(q)]
        q = xp.asarray(values if isinstance(q, (list, tuple)) else values[0], dtype=dtype, device=device)
    else:
        try:
            same = backend_of(q) is backend
        except TypeError:
            same = False
        if not same or not xp.isdtype(q.dtype, "real floating"):
            raise TypeError(
                "q must be a number, a list, or a floating array of the same framework "
                f"as x ({backend.name}), got {type(q).__name__} of dtype {getattr(q, 'dtype', None)}"
            )
        values = concrete_values(q)
        values = None if values is None else values.ravel().tolist()
        q = xp.astype(q, dtype) if q.dtype != dtype else q
    if q.ndim > 1:
        raise ValueError(f"q must be a scalar or a 1-D array, got shape {tuple(q.shape)}")
    if values is not None and not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"q must lie in [0, 1], got {values}")
    return q


@per_shard("x", "mask", "temperature")
def soft_quantile(
    x, q, axis=-1, *, temperature=1.0, method="permutahedron", hard=False, keepdims=False, mask=None
):
    r"""Differentiable ``torch.quantile(x, q, dim=axis, keepdim=keepdims)``.

    The soft sort ``s = soft_sort(x, axis)`` (ascending; see ``softops.soft_sort``
    for the method and the temperature: ``1 / T`` is the largest gap, in units of
    ``x``, that merged sorted values keep) is read at the fractional position
    ``h = (n - 1) q`` by linear interpolation, ``(1 - t) s[floor h] + t s[floor h
    + 1]`` with ``t = h - floor h`` (``torch.quantile`` / ``numpy.quantile``
    method "linear", Hyndman & Fan 1996 type 7).  Gradients flow to ``x``, to the
    temperature and to a floating array ``q`` (``ds[h + 1] - ds[h]`` scaled by
    ``n - 1``; one-sided at the sample positions).

    ``q`` is a number or a 1-D list or array in ``[0, 1]``.  Layout as
    ``torch.quantile``: a scalar ``q`` removes ``axis`` (kept as size 1 with
    ``keepdims=True``); a 1-D ``q`` adds a leading dimension of length
    ``len(q)``.  ``hard=True`` returns the exact quantile with the soft gradient.
    ``mask`` (boolean, broadcastable to ``x``, True = present): each row's
    quantile of its ``p`` present entries (position ``(p - 1) q``; NaN for a
    row with none, as ``torch.nanquantile`` of an all-NaN row).  A sort method
    that defines ``quantile_rows(backend, x, q, temperature, mask)`` computes
    its own quantiles instead of reading its sort (Sinkhorn: three targets per
    ``q``, ``O(n)`` per iteration instead of ``O(n^2)``).

    Example::

        >>> import numpy as np, softops
        >>> x = np.array([5.0, 1.0, 2.0, 4.0])
        >>> softops.soft_quantile(x, [0.25, 0.5], temperature=1e-3)
        array([1.75, 3.  ])
        >>> softops.soft_quantile(x, 0.5, temperature=1.0)
        array(3.)
    """
    x = as_float_array(x)
    check_flag(keepdims, "keepdims")
    config = resolve_method(method)
    own = getattr(config, "quantile_rows", None)
    if own is None:
        p, rows, m = _rows(x, axis, False, temperature, method, hard, "sort_rows", _exact_sort, mask)
        q = _check_q(q, p.backend, rows.dtype, p.backend.device(rows))
        out = _read_quantiles(p.backend, rows, q, m)
    else:
        # The method's own quantiles (e.g. Sinkhorn's three targets per q).
        check_flag(hard, "hard")
        p, m = prepare_sorting(x, axis, temperature, config, "sort", mask, last_value(False))
        q = _check_q(q, p.backend, p.x.dtype, p.backend.device(p.x))
        out = own(p.backend, p.x, q, p.temperature, m)
        if m is not None:
            count = present_count(p.xp, m, out.dtype)
            out = p.xp.where((count if q.ndim else count[..., 0]) > 0, out, math.nan)
        if hard:
            exact = _read_quantiles(p.backend, _exact_sort(p.xp, p.x, False), q, m)
            out = straight_through(p.backend, exact, out)
    xp = p.xp
    vector = q.ndim == 1
    out = p.layout.restore_reduced(xp, out, keepdims=keepdims, trailing=int(vector))
    if vector:
        out = move_axis(xp, out, -1, 0)
    return p.output(out)


def _read_quantiles(backend, rows, q, m):
    """Sorted rows ``(*batch, n)`` read at ``(p - 1) q`` by linear interpolation
    (``p`` = n, or each row's present count under the mask ``m``; NaN for a
    row with none): ``(*batch)`` for a 0-d ``q``, ``(*batch, nq)`` for 1-D."""
    xp = backend.xp
    if m is None:
        out = lookup(rows, q * (rows.shape[-1] - 1), axis=-1)
    else:
        count = present_count(xp, m, rows.dtype)
        out = lookup_along_axis(clear_slots(backend, rows, m), q * xp.clip(count - 1, min=0.0), axis=-1)
        out = xp.where(count > 0, out, math.nan)
        if q.ndim == 0:
            out = out[..., 0]
    return out


@per_shard("x", "mask", "temperature")
def soft_median(x, axis=-1, *, temperature=1.0, method="permutahedron", hard=False, keepdims=False, mask=None):
    r"""Differentiable median: ``soft_quantile(x, 0.5, ...)``.

    Follows ``torch.quantile(x, 0.5)`` / ``numpy.median``: for an even length the
    mean of the two middle values (``torch.median`` instead returns the lower
    one).  Temperature as in ``soft_sort``.

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_median(np.array([[5.0, 1.0, 2.0, 4.0], [3.0, 0.0, 9.0, 9.0]]), temperature=1e-3)
        array([3., 6.])
    """
    x = as_float_array(x)
    return soft_quantile(
        x, 0.5, axis, temperature=temperature, method=method, hard=hard, keepdims=keepdims, mask=mask
    )
