"""Differentiable selection: relaxed one-hot of argmax, soft argmax/argmin, soft max/min.

Every operation here turns the scores ``x`` along ``axis`` into weights ``w`` on
the probability simplex, then reads something off them:

* ``argmax_weights`` returns ``w`` itself (the relaxed one-hot of argmax);
* ``soft_argmax`` returns the expected index ``sum_i w_i * i`` (coordinates for a
  tuple of axes: the spatial soft-argmax);
* ``soft_max`` returns the expected value ``sum_i w_i * x_i``.

The weights are ``method((x - max x) / temperature)``.  The temperature is in the
units of ``x``: scores that differ by much more than the temperature get weights
that differ by a large factor (softmax: ratio ``exp(gap / temperature)``), and those
more than ``temperature`` (sparsemax) or ``2 * temperature`` (entmax15) below the
maximum get weight exactly 0.  As the temperature goes to 0 every method returns
the exact operation, with ties sharing the weight equally (so the soft argmax of
a tie is the mean of the tied indices).

The temperature is a positive number, an array with one per row (shaped like
the batch, ``x``'s shape without ``axis``, or broadcastable to it; or with
``x``'s dimensions and size 1 along ``axis``), or ``softops.Relative(tau)``:
``tau`` typical neighbour gaps of the row, ``T = tau * sqrt(12) std(x) / n``
over its finite entries (``softops.temperature``; held constant for autodiff).
So ``Relative(1)`` gives two entries one typical gap apart the softmax weight
ratio ``e``, whatever the scale of ``x``, and scaling or shifting ``x`` leaves
the weights unchanged.

Numerical safety: the maximum is subtracted before dividing, half precision is
computed in float32, entries equal to ``-inf`` are masked out (weight 0), and a row
that is entirely ``-inf`` is read as a row of ties.
"""

from __future__ import annotations

import numpy as np

from softops._shared import as_float_array, straight_through
from softops._prepare import Prepared, prepare
from softops._validate import check_choice, check_float_array, check_flag
from softops.methods.simplex import SIMPLEX_MAPS, softmax
from softops.temperature import data_spacing

__all__ = [
    "argmax_weights",
    "soft_argmax",
    "soft_argmin",
    "soft_max",
    "soft_min",
]

WEIGHT_METHODS = ("softmax", "sparsemax", "entmax15", "gumbel")
MAX_METHODS = ("softmax", "sparsemax", "entmax15", "logsumexp")


def _relative(p: Prepared, tau: float):
    """``Relative(tau)`` for the select family: ``tau`` typical neighbour gaps."""
    return tau * data_spacing(p.backend, p.x)


def _shifted_scores(p: Prepared):
    """``((x - max) / temperature, x_safe, all_masked)`` along the last axis.

    ``x_safe`` is ``x`` with all-``-inf`` rows replaced by zeros (read as ties);
    the maximum is held constant for autodiff (every map is shift-invariant)."""
    xp = p.xp
    all_masked = xp.all(p.x == -xp.inf, axis=-1, keepdims=True)
    x_safe = xp.where(all_masked, 0.0, p.x)
    row_max = p.backend.stop_gradient(xp.max(x_safe, axis=-1, keepdims=True))
    present = x_safe > -xp.inf
    # -inf entries stay -inf without dividing them: a temperature that depends
    # on x (Relative) would otherwise get 0 * inf = NaN in its derivative
    shifted = xp.where(present, x_safe - row_max, 0.0)
    return xp.where(present, shifted / p.temperature, -xp.inf), x_safe, all_masked


def _one_hot_argmax(backend, x):
    """Exact one-hot of the first maximal entry along the last axis."""
    xp = backend.xp
    first = xp.argmax(x, axis=-1, keepdims=True)
    positions = xp.arange(x.shape[-1], dtype=first.dtype, device=backend.device(x))
    return xp.astype(positions == first, x.dtype)


def _relaxed_one_hot(p: Prepared, method: str, key):
    """Weights of shape ``(*batch, n)`` and the exact one-hot they relax."""
    if method == "gumbel":
        if key is None:
            raise ValueError(
                "method='gumbel' needs key= (a JAX PRNG key, a torch.Generator, "
                "a numpy.random.Generator or an int seed)"
            )
        noise = p.backend.gumbel(key, tuple(p.x.shape), p.x.dtype, like=p.x)
        p = Prepared(p.backend, p.x + noise, p.layout, p.dtype, p.temperature)
        simplex_map = softmax
    else:
        simplex_map = SIMPLEX_MAPS[method]
    z, x_safe, _ = _shifted_scores(p)
    weights = simplex_map(p.backend, z)
    return weights, _one_hot_argmax(p.backend, x_safe)


def _check_common(method, allowed, hard, keepdims=False):
    check_choice(method, "method", allowed)
    check_flag(hard, "hard")
    check_flag(keepdims, "keepdims")


def argmax_weights(x, axis=-1, *, temperature=1.0, method="softmax", hard=False, key=None):
    r"""Relaxed one-hot encoding of ``argmax(x, axis)``.

    Returns ``w = method((x - max x) / temperature)`` along ``axis``: an array shaped
    like ``x``, non-negative, summing to 1 over ``axis`` (over all of them jointly
    when ``axis`` is a tuple).

    Methods (all differentiable, gradients in closed form):

    * ``"softmax"``: ``w_i = exp(x_i / T) / sum_j exp(x_j / T)``; dense.
    * ``"sparsemax"``: Euclidean projection of ``x / T`` onto the simplex
      (Martins & Astudillo 2016); entries more than ``T`` below the max get 0.
    * ``"entmax15"``: 1.5-entmax (Peters et al. 2019); entries more than ``2 T``
      below the max get 0; smoother than sparsemax.
    * ``"gumbel"``: Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017),
      ``softmax((x + g) / T)`` with ``g`` standard Gumbel noise drawn from ``key``
      (a JAX PRNG key, a ``torch.Generator``, a ``numpy.random.Generator`` or an
      int seed).  ``x`` plays the role of unnormalised log-probabilities.

    ``temperature`` (> 0, in units of ``x``) divides the scores; as it goes to 0
    the weights become the one-hot of the maximum, shared equally between ties.
    ``hard=True`` returns the exact one-hot (first index on ties; for ``"gumbel"``
    the one-hot of the perturbed argmax, a sample of the categorical
    distribution) with the gradient of the relaxed weights (straight-through).

    Example::

        >>> import numpy as np, softops
        >>> softops.argmax_weights(np.array([-2.0, 0.0, 0.5]), method="sparsemax")
        array([0.  , 0.25, 0.75])
    """
    x = as_float_array(x)
    _check_common(method, WEIGHT_METHODS, hard)
    p = prepare(x, axis, temperature, relative=_relative)
    weights, one_hot = _relaxed_one_hot(p, method, key)
    if hard:
        weights = straight_through(p.backend, one_hot, weights)
    return p.output(p.layout.restore(p.xp, weights))


def _index_table(xp, sizes, dtype, device):
    """``(prod(sizes), len(sizes))`` table: row f holds the coordinates of flat index f."""
    n = 1
    for s in sizes:
        n *= s
    flat = xp.arange(n, device=device)
    columns = []
    stride = n
    for size in sizes:
        stride //= size
        columns.append(xp.astype((flat // stride) % size, dtype))
    return xp.stack(columns, axis=-1)


def soft_argmax(
    x, axis=-1, *, temperature=1.0, method="softmax", hard=False, keepdims=False, key=None
):
    r"""Differentiable argmax: the expected index ``sum_i w_i * i``.

    ``w = argmax_weights(x, axis, temperature=temperature, method=method)``.  The
    result is a floating array (``x``'s dtype) in index units: 0 for the first
    position, ``n - 1`` for the last.  Its gradient with respect to ``x`` is
    ``d/dx_j = sum_i i * dw_i/dx_j``: raising a score pulls the index towards it.

    With a tuple of k axes (e.g. ``axis=(-2, -1)`` on heatmaps of shape
    ``(batch, channels, H, W)``) the weights run jointly over those axes and the
    result carries a trailing dimension of size k with the coordinates in axis
    order, ``(i, j, ...)``: the spatial soft-argmax (e.g. Nibali et al. 2018,
    DSNT), shape ``(batch, channels, 2)`` here.

    ``temperature`` is in units of ``x`` (see ``argmax_weights``); as it goes to 0
    the result is the exact argmax, or the mean of the tied indices.
    ``hard=True`` returns the exact index (first on ties) as a float with the
    gradient of the soft one.  ``keepdims=True`` keeps the reduced axes as size 1
    (the coordinate dimension, if any, stays last).

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_argmax(np.array([0.0, 0.0, 0.0, 0.0]), temperature=1e-6)
        array(1.5)
        >>> softops.soft_argmax(np.array([8.0, 8.0, 8.0, 9.0]), temperature=0.01)
        array(3.)
    """
    x = as_float_array(x)
    _check_common(method, WEIGHT_METHODS, hard, keepdims)
    p = prepare(x, axis, temperature, relative=_relative)
    xp = p.xp
    weights, one_hot = _relaxed_one_hot(p, method, key)
    table = _index_table(xp, p.layout.axis_sizes, weights.dtype, p.backend.device(weights))
    index = xp.matmul(weights, table)
    if hard:
        index = straight_through(p.backend, xp.matmul(one_hot, table), index)
    coordinates = isinstance(axis, (tuple, list))
    if not coordinates:
        index = index[..., 0]
    index = p.layout.restore_reduced(xp, index, keepdims=keepdims, trailing=int(coordinates))
    return p.output(index)


def soft_argmin(
    x, axis=-1, *, temperature=1.0, method="softmax", hard=False, keepdims=False, key=None
):
    """Differentiable argmin: ``soft_argmax(-x, ...)``; ``+inf`` entries are masked.

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_argmin(np.array([3.0, -1.0, 2.0]), temperature=1e-3)
        array(1.)
    """
    x = as_float_array(x)
    check_float_array(x)
    return soft_argmax(
        -x, axis, temperature=temperature, method=method, hard=hard, keepdims=keepdims, key=key
    )


def soft_max(x, axis=-1, *, temperature=1.0, method="softmax", hard=False, keepdims=False):
    r"""Differentiable maximum.

    For the simplex methods (``"softmax"``, ``"sparsemax"``, ``"entmax15"``) it is the
    weighted mean ``sum_i w_i * x_i`` with ``w = argmax_weights(x, ...)``: it always
    lies within ``[min x, max x]`` and falls towards the mean as the temperature
    grows.  ``method="logsumexp"`` gives ``T * log(sum_i exp(x_i / T))``, the smooth
    maximum whose gradient is the softmax; it exceeds ``max x`` by at most
    ``T * log(n)``.

    ``temperature`` is in units of ``x``; as it goes to 0 the result is ``max x``.
    ``hard=True`` returns the exact maximum with the method's gradient.  ``-inf``
    entries are masked out; a row of only ``-inf`` has maximum ``-inf`` (gradient 0).

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_max(np.array([1.0, 2.0, 3.0]), method="sparsemax", temperature=2.0)
        array(2.75)
    """
    x = as_float_array(x)
    _check_common(method, MAX_METHODS, hard, keepdims)
    p = prepare(x, axis, temperature, relative=_relative)
    xp = p.xp
    z, x_safe, all_masked = _shifted_scores(p)
    row_max = xp.max(x_safe, axis=-1)
    if method == "logsumexp":
        shift = p.backend.stop_gradient(row_max)
        value = shift + p.row_temperature * xp.log(xp.sum(xp.exp(z), axis=-1))
    else:
        weights = SIMPLEX_MAPS[method](p.backend, z)
        x_finite = xp.where(x_safe == -xp.inf, 0.0, x_safe)
        value = xp.sum(weights * x_finite, axis=-1)
        # The weights sum to 1 only up to rounding: pin the value into
        # [min, max] without touching its gradient.  (Forward: pinned + 0,
        # exactly; value + (pinned - value) could round past the bound.)
        sg = p.backend.stop_gradient
        pinned = xp.minimum(xp.maximum(value, xp.min(x_safe, axis=-1)), row_max)
        # The gradient w + sum_i x_i dw_i/dx, taken as w + sum_i (x_i - v)
        # dw_i/dx (the same, as sum_i dw_i = 0) with v the value held
        # constant: x_i times the rounding of sum_i dw_i, huge next to the
        # dtype's maximum (a constant row at 1e308 gave 5e291 instead of
        # 1 / n), is gone.  Halved so that x_i - v cannot overflow (by 2, not
        # max|x|: XLA flushes the subnormal 1 / max|x| to 0), and entries of
        # weight 0 drop out first.
        offset = xp.where(weights > 0, x_finite / 2 - sg(pinned)[..., None] / 2, 0.0)
        tangent = 2 * xp.sum(weights * offset, axis=-1)
        value = sg(pinned) + (tangent - sg(tangent))
    if hard:
        value = straight_through(p.backend, row_max, value)
    value = xp.where(all_masked[..., 0], -xp.inf, value)
    return p.output(p.layout.restore_reduced(xp, value, keepdims=keepdims))


def soft_min(x, axis=-1, *, temperature=1.0, method="softmax", hard=False, keepdims=False):
    """Differentiable minimum: ``-soft_max(-x, ...)``; ``+inf`` entries are masked.

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_min(np.array([1.0, 2.0, 3.0]), method="sparsemax", temperature=2.0)
        array(1.25)
    """
    x = as_float_array(x)
    check_float_array(x)
    out = -soft_max(-x, axis, temperature=temperature, method=method, hard=hard, keepdims=keepdims)
    # NumPy's negation of a 0-d array is a scalar; soft_max returns a 0-d array.
    return np.asarray(out) if isinstance(out, np.generic) else out
