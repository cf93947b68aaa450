"""Differentiable indexing: reads and writes at fractional positions.

Positions are in index units: the samples of an axis of length ``n`` sit at
``0, 1, ..., n-1``, and a fractional position ``x`` reads the interpolant of the
samples there.  Gradients flow to the array, to floating indices (through the
interpolation weights) and to written values.  Integer indices read and write
exactly and carry no gradient.

* ``soft_index(index, size)``: dense weights over ``size`` positions;
* ``soft_take(arr, weights, axis)``: the superposition read ``sum_j w_j arr[j]``;
* ``lookup(arr, index, axis)``: interpolated read (linear, Keys cubic, nearest),
  multilinear over several axes; ``lookup_along_axis``: the batched
  (``take_along_axis``) form;
* ``assign``, ``soft_assign``, ``soft_scatter_add``: functional writes (inputs are
  never modified).

What the array holds beyond its ends is set by ``padding`` ("clamp", "zeros",
"wrap", "reflect"; see ``softops._interp``).  Lookups gather the 1, 2 or 4
neighbours of each coordinate, never a dense ``size x size`` matrix.  Half
precision is computed in float32; no finite index, however far outside, gives
NaN or inf in a value or a gradient.  A NaN index reads NaN (and writes nothing);
``+-inf`` reads the far edge value ("clamp") or 0 ("zeros"), and NaN for the
periodic paddings, where it has no position.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from softops._axis import move_axis
from softops._backend import backend_of
from softops._interp import MODES, PADDINGS, combine, fold, interpolate, taps
from softops._interp import read as interpolated_read
from softops._prepare import compute_dtype
from softops._validate import (
    check_choice,
    check_flag,
    check_float_array,
    check_temperature,
    normalize_axes,
)
from softops._shared import as_array, as_float_array, index_dtype, straight_through

__all__ = [
    "assign",
    "lookup",
    "lookup_along_axis",
    "soft_assign",
    "soft_index",
    "soft_scatter_add",
    "soft_take",
]

KERNELS = ("linear", "cubic", "gaussian", "laplace", "nearest")


# --- argument checks --------------------------------------------------------------


def _check_same_framework(backend, a, name: str, what: str):
    try:
        same = backend_of(a) is backend
    except TypeError:
        same = False
    if not same:
        raise TypeError(
            f"{name} must be an array of the same framework as {what} ({backend.name}), "
            f"got {type(a).__name__}"
        )


def _check_index(backend, index, what="arr"):
    _check_same_framework(backend, index, "index", what)
    xp = backend.xp
    if not (xp.isdtype(index.dtype, "integral") or xp.isdtype(index.dtype, "real floating")):
        raise TypeError(
            f"index must have an integer or real floating dtype, got {index.dtype}"
        )


def _as_array_like(backend, value, like, name):
    """``value`` (an array of ``like``'s framework or a Python number) as an array."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return backend.xp.asarray(value, dtype=like.dtype, device=backend.device(like))
    _check_same_framework(backend, value, name, "arr")
    if not backend.xp.isdtype(value.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {value.dtype}")
    return value


def _compute(xp, arrays, caller_dtype):
    """Cast floating arrays to the common compute dtype (float32 for half)."""
    floats = [a for a in arrays if a is not None and xp.isdtype(a.dtype, "real floating")]
    dtype = compute_dtype(xp, xp.result_type(caller_dtype, *[a.dtype for a in floats]))
    return dtype, [
        xp.astype(a, dtype) if a is not None and xp.isdtype(a.dtype, "real floating") and a.dtype != dtype else a
        for a in arrays
    ]


def _cast(xp, out, dtype):
    """The result in the caller's dtype."""
    return xp.astype(out, dtype) if out.dtype != dtype else out


def _axes_of(arr, axis):
    axes = normalize_axes(axis, arr.ndim)
    empty = [a for a in axes if arr.shape[a] == 0]
    if empty:
        raise ValueError(f"axis {empty[0]} of arr has length 0; there is nothing to index")
    return axes


# --- layout: the indexed axes first and flattened ----------------------------------


def _inverse(perm):
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))


class _Front:
    """``arr`` viewed as ``(N, R)``: the indexed axes first (flattened, size N), the
    remaining axes (the "rest", size R) after, in order."""

    def __init__(self, xp, arr, axes):
        self.axes = axes
        self.sizes = tuple(arr.shape[a] for a in axes)
        self.rest_axes = tuple(i for i in range(arr.ndim) if i not in axes)
        self.rest_shape = tuple(arr.shape[i] for i in self.rest_axes)
        self.perm = axes + self.rest_axes
        self.strides = tuple(math.prod(self.sizes[i + 1 :]) for i in range(len(axes)))
        moved = xp.permute_dims(arr, self.perm) if self.perm != tuple(range(arr.ndim)) else arr
        self.flat = xp.reshape(moved, (math.prod(self.sizes), math.prod(self.rest_shape)))
        # Rest axes before the first indexed axis stay in front of the index dims.
        self.lead = sum(1 for i in self.rest_axes if i < min(axes))

    def restore(self, xp, y):
        """``(N, R)`` back to the caller's layout."""
        y = xp.reshape(y, self.sizes + self.rest_shape)
        return xp.permute_dims(y, _inverse(self.perm))

    def _slot_perm(self, k):
        """Permutation taking ``(*I, *rest)`` (``len(I) == k``) to the slot layout
        ``rest[:lead] + I + rest[lead:]`` (that of ``numpy.take``)."""
        r = len(self.rest_shape)
        return (
            tuple(k + i for i in range(self.lead))
            + tuple(range(k))
            + tuple(k + i for i in range(self.lead, r))
        )

    def slot_shape(self, index_shape):
        rest = self.rest_shape
        return rest[: self.lead] + tuple(index_shape) + rest[self.lead :]

    def to_slot(self, xp, y, index_shape):
        """``(K, R)`` rows of the index positions to the slot layout."""
        y = xp.reshape(y, tuple(index_shape) + self.rest_shape)
        perm = self._slot_perm(len(index_shape))
        return xp.permute_dims(y, perm) if perm != tuple(range(len(perm))) else y

    def from_slot(self, xp, v, index_shape, name="value"):
        """An array broadcastable to the slot shape, as ``(K, R)`` rows."""
        shape = self.slot_shape(index_shape)
        try:
            np.broadcast_shapes(tuple(v.shape), shape)
            if len(v.shape) > len(shape):
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{name} of shape {tuple(v.shape)} does not fit the written slot, of "
                f"shape {shape} (arr's shape with the indexed axes replaced by the "
                "index's positions); it must broadcast to it"
            ) from None
        v = xp.broadcast_to(v, shape)
        k = len(index_shape)
        perm = self._slot_perm(k)
        if perm != tuple(range(len(perm))):
            v = xp.permute_dims(v, _inverse(perm))
        return xp.reshape(v, (math.prod(index_shape), math.prod(self.rest_shape)))


def _coordinates(index, front: _Front):
    """The per-axis coordinate arrays and the index's position shape."""
    k = len(front.axes)
    if k == 1:
        return [index], tuple(index.shape)
    if index.ndim == 0 or index.shape[-1] != k:
        raise ValueError(
            f"index must have a trailing dimension of size {k} holding the coordinates "
            f"along axis={front.axes}, got shape {tuple(index.shape)}"
        )
    return [index[..., i] for i in range(k)], tuple(index.shape[:-1])


# --- soft_index ---------------------------------------------------------------------


def _dense_from_taps(xp, tap_list, size, dtype, device):
    positions = xp.arange(size, dtype=index_dtype(xp), device=device)
    total = None
    for m, weight, inside in tap_list:
        hit = m[..., None] == positions
        if inside is not None:
            hit = hit & inside[..., None]
        w = xp.ones((), dtype=dtype, device=device) if weight is None else weight[..., None]
        term = xp.where(hit, w, xp.zeros((), dtype=dtype, device=device))
        total = term if total is None else total + term
    return total


def _kernel_distance(xp, d, kernel):
    """The kernel's distance measure: ``d^2`` (gaussian) or ``|d|`` (laplace).
    ``|d|`` is written with ``where`` so that its derivative at a sample
    (``d = 0``, Laplace's kink) is 0, the mean of the two sides, in every
    framework (``jax.grad(jnp.abs)(0.)`` is 1, PyTorch's is 0; and
    array-api-compat's ``sign`` for torch cannot be vmapped)."""
    if kernel == "gaussian":
        return d * d
    return xp.where(d < 0, -d, xp.where(d > 0, d, 0.0 * d))


def _kernel_logits(xp, d, bandwidth, kernel, ref=0.0):
    """``log k(d) - log k(d_ref)``, with ``ref`` the reference's distance measure
    (``_kernel_distance``).  Measuring from the nearest sample keeps the largest
    logit finite (0) however narrow the bandwidth, where ``-(d / b)^2 / 2``
    alone is ``-inf`` for every sample (NaN weights); the bandwidth divides
    last, once per factor, so that ``b^2`` never underflows."""
    excess = _kernel_distance(xp, d, kernel) - ref
    return -(excess / bandwidth / bandwidth) / 2 if kernel == "gaussian" else -(excess / bandwidth)


def _floor_logits(xp, logits, dtype):
    """Logits far below ``log`` of the smallest subnormal (weight exactly 0)
    held there, so that no gradient reaches the ``inf`` slopes behind them."""
    info = xp.finfo(dtype)
    smallest_subnormal = float(info.smallest_normal) * float(info.eps)
    return xp.clip(logits, min=math.log(smallest_subnormal) - 16.0)  # exp() of it is exactly 0


def _logsumexp(backend, z):
    """``log sum exp z`` over the last axis, shifted by its (constant) maximum."""
    xp = backend.xp
    shift = backend.stop_gradient(xp.max(z, axis=-1, keepdims=True))
    return xp.log(xp.sum(xp.exp(z - shift), axis=-1)) + shift[..., 0]


def _log_lattice_sum(backend, t, bandwidth, kernel, ref):
    """``log sum_{j in Z} k(t - j) - log k(d_ref)`` for ``t`` in ``[0, 1)``: the
    normaliser of a kernel over every integer position (used by
    padding='zeros'), relative to the reference distance ``ref``."""
    xp = backend.xp
    if kernel == "laplace":
        # Two geometric series: sum_{j<=0} e^{-(t-j)/b} + sum_{j>=1} e^{-(j-t)/b}.
        a = -(t - ref) / bandwidth
        b = -((1 - t) - ref) / bandwidth
        return xp.logaddexp(a, b) - xp.log(-xp.expm1(-1 / bandwidth))
    # Gaussian: the direct sum over j in [-8, 9] for narrow kernels, Poisson
    # summation sqrt(2 pi) b (1 + 2 sum_k e^{-2 pi^2 b^2 k^2} cos(2 pi k t)) for wide
    # ones (each truncation error < 1e-30 on its side of b = 1/2).
    offsets = xp.astype(xp.arange(-8, 10, device=backend.device(t)), t.dtype)
    column = bandwidth[..., None] if bandwidth.ndim else bandwidth
    direct = _logsumexp(backend, _kernel_logits(xp, t[..., None] - offsets, column, kernel, ref[..., None]))
    series = xp.ones_like(t)
    for k in range(1, 5):
        series = series + 2 * xp.exp(-2 * math.pi**2 * (bandwidth * k) ** 2) * xp.cos(2 * math.pi * k * t)
    poisson = math.log(math.sqrt(2 * math.pi)) + xp.log(bandwidth) + xp.log(
        xp.clip(series, min=1e-30)
    ) + ref / bandwidth / bandwidth / 2
    return xp.where(bandwidth < 0.5, direct, poisson)


def _smooth_kernel_weights(backend, x, size, kernel, bandwidth, padding):
    xp = backend.xp
    device = backend.device(x)
    j = xp.astype(xp.arange(size, device=device), x.dtype)
    # Narrow kernels take the lattice softmax below (zeros padding); known
    # here for a Python-number bandwidth, else chosen per element.
    cut = 0.5 if kernel == "gaussian" else 0.1
    narrow_only = (bandwidth < cut) if isinstance(bandwidth, float) else None
    if isinstance(bandwidth, float):
        bandwidth = xp.asarray(bandwidth, dtype=x.dtype, device=device)
    x = x[..., None]
    if padding == "zeros":
        # Far outside every weight is 0 in the working precision: clip there.
        reach = 40.0 * bandwidth + 2.0
        x = xp.clip(x, -reach, size - 1 + reach)
        base = xp.floor(x)
        t = x - base
        # Both measured from the nearest integer, which the lattice sum holds.
        ref = backend.stop_gradient(_kernel_distance(xp, xp.minimum(t, 1 - t), kernel))

        def wide():
            row_bandwidth = bandwidth[..., 0] if bandwidth.ndim else bandwidth
            return xp.exp(_floor_logits(xp, _kernel_logits(xp, x - j, bandwidth, kernel, ref) - _log_lattice_sum(
                backend, t[..., 0], row_bandwidth, kernel, ref[..., 0])[..., None], x.dtype))

        # Narrow kernels: a softmax over the integers base - 8 ... base + 9 (the
        # rest weigh below e^-80), of which those in [0, size) are read; one
        # normalised expression, so that its derivative stays 0 where a weight
        # is 1 however narrow the kernel (the two parts of ``wide`` would meet
        # as inf - inf there).
        def narrow():
            offsets = xp.astype(xp.arange(-8, 10, device=device), x.dtype)
            lattice = _floor_logits(xp, _kernel_logits(xp, t - offsets, bandwidth, kernel, ref), x.dtype)
            p = xp.exp(lattice)
            p = p / xp.sum(p, axis=-1, keepdims=True)
            at = (base + offsets)[..., :, None] == j  # (..., 18, size)
            return xp.sum(xp.where(at, p[..., :, None], 0.0), axis=-2)

        if narrow_only is not None:
            return narrow() if narrow_only else wide()
        return xp.where(bandwidth < cut, narrow(), wide())
    ends = None  # the reflect images that do not exist (the end samples appear once a period)
    if padding == "clamp":
        # Clamped with where, not clip: at an end sample exactly (x = 0 or n - 1,
        # a common read) the derivative is the one from inside the axis in
        # every framework (jnp.clip would split it in half there).
        inside = xp.where(x < 0.0, 0.0, xp.where(x > size - 1.0, size - 1.0, x))
        images = [inside - j]
    elif size == 1:
        return xp.ones_like(x + j)
    else:
        period = size if padding == "wrap" else 2 * (size - 1)
        finite = xp.isfinite(x)  # +-inf has no place on a periodic axis: NaN
        y = xp.remainder(xp.where(finite, x, 0.0), float(period))
        y = xp.where(finite, y, xp.nan)
        # Every image of sample j within one period either side of y.
        images = [y - j - m * period for m in (-1, 0, 1)]
        if padding == "reflect":
            ends = (j == 0) | (j == size - 1)
            images += [xp.where(ends, 0.0, y + j - m * period) for m in (0, 1, 2)]
    # Measured from the nearest image of any sample (its logit is 0; see _kernel_logits).
    ref = _kernel_distance(xp, images[0], kernel)
    for m, d in enumerate(images[1:], 1):
        distance = _kernel_distance(xp, d, kernel)
        ref = xp.minimum(ref, xp.where(ends, xp.inf, distance) if m >= 3 else distance)
    # A constant shift of every logit: exact with no gradient.
    ref = backend.stop_gradient(xp.min(ref, axis=-1, keepdims=True))
    logits = None
    for m, d in enumerate(images):
        term = _kernel_logits(xp, d, bandwidth, kernel, ref)
        if m >= 3:
            term = xp.where(ends, -xp.inf, term)
        term = _floor_logits(xp, term, x.dtype)
        logits = term if logits is None else xp.logaddexp(logits, term)
    e = xp.exp(logits)
    return e / xp.sum(e, axis=-1, keepdims=True)


def soft_index(index, size, *, kernel="linear", bandwidth=1.0, padding="clamp"):
    r"""Weights over ``size`` positions that read the array at fractional ``index``.

    Returns ``w`` of shape ``index.shape + (size,)`` with ``sum_j w[..., j] a[j]``
    the read of a length-``size`` array ``a`` at ``index`` (``soft_take``); the
    weights are differentiable in ``index``.  Kernels, with ``x`` the index and
    ``b`` the ``bandwidth`` (in index units, > 0; used by the smooth kernels
    only; a number, an array broadcastable to ``index`` (one per read), or
    ``softops.Relative(tau)``, ``tau`` grid spacings, which is ``tau`` index units):

    * ``"linear"``: ``1 - t`` at ``floor(x)`` and ``t`` at ``floor(x) + 1``, with
      ``t = x - floor(x)``: ``soft_take(a, soft_index(x)) == lookup(a, x)``.
    * ``"cubic"``: Keys (1981) cubic convolution weights (a = -1/2) at
      ``floor(x) - 1 .. floor(x) + 2`` (some negative).
    * ``"nearest"``: one-hot at ``floor(x + 1/2)``; zero gradient.
    * ``"gaussian"``: ``w_j ∝ exp(-(x - j)^2 / (2 b^2))``; ``"laplace"``:
      ``w_j ∝ exp(-|x - j| / b)``.  Dense: every position gets weight, so a
      gradient can pull the index across the array.

    ``padding`` says what lies beyond the ends: ``"clamp"`` clips ``x`` to
    ``[0, size-1]`` (gradient 0 outside; rows sum to 1); ``"wrap"`` is
    ``size``-periodic and ``"reflect"`` mirrors about the end samples (whole-sample,
    period ``2 (size-1)``), both folding weight that falls outside back onto the
    array (rows sum to 1); ``"zeros"`` drops the weight that falls outside (the
    smooth kernels are normalised over all integer positions), so rows fade to 0
    past the ends.  Integer indices give exact one-hot rows.

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_index(np.array(2.5), 5)
        array([0. , 0. , 0.5, 0.5, 0. ])
        >>> softops.soft_index(np.array(1.0), 3, kernel="gaussian", bandwidth=0.5).round(4)
        array([0.1065, 0.787 , 0.1065])
    """
    index = as_array(index)
    check_choice(kernel, "kernel", KERNELS)
    check_choice(padding, "padding", PADDINGS)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    size = int(size)
    try:
        backend = backend_of(index)
    except TypeError:
        raise TypeError(
            "index must be a PyTorch tensor, a JAX array or a NumPy array, "
            f"got {type(index).__name__}"
        ) from None
    _check_index(backend, index, "index")
    bandwidth = check_temperature(bandwidth, backend, "bandwidth")
    if type(bandwidth).__name__ == "Relative":
        bandwidth = float(bandwidth.tau)  # tau grid spacings: the spacing is 1 index unit
    xp = backend.xp
    if not isinstance(bandwidth, float) and bandwidth.ndim:
        shape, want = tuple(bandwidth.shape), tuple(index.shape)
        if len(shape) > len(want) or not all(s in (1, w) for s, w in zip(shape[::-1], want[::-1])):
            raise ValueError(f"bandwidth of shape {shape} must broadcast to index's shape {want}")
        bandwidth = xp.broadcast_to(bandwidth, want)[..., None]
    if xp.isdtype(index.dtype, "integral"):
        dtype = caller = xp.asarray(0.0).dtype  # the default floating dtype
    else:
        caller = index.dtype
        dtype = compute_dtype(xp, index.dtype)
        index = xp.astype(index, dtype) if index.dtype != dtype else index
    if kernel in ("gaussian", "laplace"):
        if xp.isdtype(index.dtype, "integral"):
            index = xp.astype(index, dtype)
        # Below the smallest normal number the kernel is the nearest-sample limit already.
        tiny = float(xp.finfo(dtype).smallest_normal)
        if isinstance(bandwidth, float):
            bandwidth = max(bandwidth, tiny)
        else:
            bandwidth = xp.clip(xp.astype(bandwidth, dtype), min=tiny)
        w = _smooth_kernel_weights(backend, index, size, kernel, bandwidth, padding)
    else:
        tap_list = taps(xp, index, size, kernel, padding)
        w = _dense_from_taps(xp, tap_list, size, dtype, backend.device(index))
    return _cast(xp, w, caller)


# --- reads ----------------------------------------------------------------------------


def _check_read_options(mode, padding, hard):
    check_choice(mode, "mode", MODES)
    check_choice(padding, "padding", PADDINGS)
    check_flag(hard, "hard")


def _read(xp, coords, sizes, strides, mode, padding, hard, backend, gather):
    """Interpolated read; with ``hard`` the nearest sample's value carrying the
    gradient of ``mode``'s interpolant (straight-through)."""

    def read(m):
        if m == "nearest" or xp.isdtype(coords[0].dtype, "integral"):
            per_axis = [taps(xp, c, n, m, padding) for c, n in zip(coords, sizes)]
            return interpolate(xp, combine(xp, per_axis, strides), gather)
        return interpolated_read(xp, backend, coords, sizes, strides, m, padding, gather)

    soft = read(mode)
    if not hard or mode == "nearest" or xp.isdtype(coords[0].dtype, "integral"):
        return soft
    return straight_through(backend, read("nearest"), soft)


def lookup(arr, index, axis=0, *, mode="linear", padding="clamp", hard=False):
    r"""Read ``arr`` at fractional positions ``index`` along ``axis``.

    With one axis the result is shaped like ``numpy.take(arr, index, axis)``; the
    read at ``x`` with ``t = x - floor(x)`` is

    * ``"linear"``: ``(1 - t) a[floor(x)] + t a[floor(x) + 1]``;
    * ``"cubic"``: Keys (1981) cubic convolution (a = -1/2, Catmull-Rom) over
      ``a[floor(x) - 1 .. floor(x) + 2]``: C1, interpolating, exact on quadratics;
    * ``"nearest"``: ``a[floor(x + 1/2)]`` (zero gradient with respect to ``x``).

    With a tuple of k axes, ``index`` has a trailing dimension of size k holding
    coordinates ``(i, j, ...)`` in index units and the read is the tensor product
    (multilinear, or multicubic) over those axes, the other axes of ``arr``
    carried along (as ``scipy.ndimage.map_coordinates`` per channel); the index's
    positions replace the indexed axes at the place of the first of them.

    The gradient with respect to ``index`` is that of the interpolant; at an
    integer position it is the one-sided difference ``a[x + 1] - a[x]`` (as in
    ``grid_sample``).  It is summed over the taps before it meets the upstream
    gradient, so it is finite wherever its true value fits the dtype, also for
    samples near the float maximum; beyond that it is +- the dtype's largest
    finite number in reverse mode (+-inf in forward mode).  ``padding`` ("clamp", "zeros", "wrap", "reflect") sets the
    values beyond the ends (see ``soft_index``).  ``hard=True`` returns the nearest
    sample itself (an element of ``arr``, or 0 outside with "zeros") with the
    gradient of ``mode``'s interpolant.  Integer indices read exactly.

    Example::

        >>> import numpy as np, softops
        >>> softops.lookup(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array(1.5))
        array(2.5)
        >>> grid = np.arange(12.0).reshape(3, 4)
        >>> softops.lookup(grid, np.array([[0.5, 1.5], [1.5, 2.5]]), axis=(0, 1))
        array([3.5, 8.5])
    """
    arr = as_float_array(arr)
    index = as_array(index, like=arr)
    _check_read_options(mode, padding, hard)
    backend = check_float_array(arr, "arr")
    _check_index(backend, index)
    xp = backend.xp
    caller = arr.dtype
    axes = _axes_of(arr, axis)
    _, (arr, index) = _compute(xp, [arr, index], caller)
    front = _Front(xp, arr, axes)
    coords, index_shape = _coordinates(index, front)
    rows = front.flat

    def gather(flat):
        values = xp.take(rows, xp.reshape(flat, (-1,)), axis=0)
        return xp.reshape(values, tuple(flat.shape) + (rows.shape[1],))

    out = _read(xp, coords, front.sizes, front.strides, mode, padding, hard, backend, gather)
    out = front.to_slot(xp, out, index_shape)
    return _cast(xp, out, caller)


def _broadcast_shapes(*shapes, names):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(
            f"the batch dimensions of {names[0]} {shapes[0]} and {names[1]} {shapes[1]} "
            "do not broadcast"
        ) from None


def lookup_along_axis(arr, index, axis=-1, *, mode="linear", padding="clamp", hard=False):
    r"""Batched read: each batch element reads its own array (``take_along_axis``).

    ``arr`` and ``index`` have the same number of dimensions; along ``axis`` the
    result has ``index``'s length, and every other dimension is the broadcast of
    the two.  Entry ``out[..., i, ...] = read(arr[..., :, ...], index[..., i, ...])``
    with the modes, padding and ``hard`` of ``lookup``.

    Example::

        >>> import numpy as np, softops
        >>> a = np.array([[0.0, 10.0, 20.0], [5.0, 6.0, 7.0]])
        >>> softops.lookup_along_axis(a, np.array([[0.25], [1.5]]))
        array([[2.5],
               [6.5]])
    """
    arr = as_float_array(arr)
    index = as_array(index, like=arr)
    _check_read_options(mode, padding, hard)
    backend = check_float_array(arr, "arr")
    _check_index(backend, index)
    xp = backend.xp
    if index.ndim != arr.ndim:
        raise ValueError(
            f"index must have as many dimensions as arr ({arr.ndim}) for "
            f"take_along_axis semantics, got shape {tuple(index.shape)}"
        )
    (ax,) = _axes_of(arr, axis) if not isinstance(axis, (tuple, list)) else (None,)
    if ax is None:
        raise TypeError(f"axis must be an int for lookup_along_axis, got {axis!r}")
    caller = arr.dtype
    _, (arr, index) = _compute(xp, [arr, index], caller)
    arr = move_axis(xp, arr, ax, -1)
    index = move_axis(xp, index, ax, -1)
    batch = _broadcast_shapes(
        tuple(arr.shape[:-1]), tuple(index.shape[:-1]), names=("arr", "index")
    )
    arr = xp.broadcast_to(arr, batch + (arr.shape[-1],))
    index = xp.broadcast_to(index, batch + (index.shape[-1],))

    def gather(flat):
        return xp.take_along_axis(arr, flat, axis=-1)

    out = _read(xp, [index], (arr.shape[-1],), (1,), mode, padding, hard, backend, gather)
    out = move_axis(xp, out, -1, ax)
    return _cast(xp, out, caller)


def _weight_rows(xp, weights, front: _Front, name="weights"):
    """``weights`` of shape ``(*W, *sizes)`` as ``(K, N)`` rows, and ``W``."""
    k = len(front.axes)
    if weights.ndim < k or tuple(weights.shape[weights.ndim - k :]) != front.sizes:
        raise ValueError(
            f"{name} must end with the length(s) of arr along axis={front.axes}, "
            f"{front.sizes}; got shape {tuple(weights.shape)}"
        )
    positions = tuple(weights.shape[: weights.ndim - k])
    return xp.reshape(weights, (math.prod(positions), math.prod(front.sizes))), positions


def _setup_weighted(arr, weights, axis, extra=()):
    backend = check_float_array(arr, "arr")
    _check_same_framework(backend, weights, "weights", "arr")
    xp = backend.xp
    if not xp.isdtype(weights.dtype, "real floating"):
        raise TypeError(f"weights must have a real floating dtype, got {weights.dtype}")
    axes = _axes_of(arr, axis)
    extra = [_as_array_like(backend, v, arr, name) for name, v in extra]
    caller = arr.dtype
    _, (arr, weights, *extra) = _compute(xp, [arr, weights, *extra], caller)
    front = _Front(xp, arr, axes)
    rows, positions = _weight_rows(xp, weights, front)
    return backend, xp, caller, front, rows, positions, extra


def soft_take(arr, weights, axis=0):
    r"""The superposition read ``sum_j weights[..., j] * arr[j along axis]``.

    ``weights`` has shape ``(*W, n)`` with ``n = arr.shape[axis]`` (for a tuple
    of axes, ``(*W, *sizes)``, the sum running over all of them); the result is
    shaped like ``numpy.take(arr, index, axis)`` for an index of shape ``W``.
    Weights may be one-hot (exact indexing), from ``argmax_weights``,
    ``soft_index`` or anywhere; they need not sum to 1.

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_take(np.array([1.0, 2.0, 4.0]), np.array([0.0, 0.5, 0.5]))
        array(3.)
    """
    arr = as_float_array(arr)
    weights = as_array(weights, like=arr)
    backend, xp, caller, front, rows, positions, _ = _setup_weighted(arr, weights, axis)
    out = front.to_slot(xp, xp.matmul(rows, front.flat), positions)
    return _cast(xp, out, caller)


# --- writes -------------------------------------------------------------------------


def _write(xp, front, rows, values, erase):
    """``arr * prod_k (1 - w_k erase_k) + sum_k w_k value_k`` on ``(N, R)`` rows."""
    if isinstance(erase, float):
        keep = xp.prod(1 - erase * rows, axis=0)[:, None]
    else:
        keep = xp.prod(1 - rows[:, :, None] * erase[:, None, :], axis=0)
    return front.flat * keep + xp.matmul(xp.matrix_transpose(rows), values)


def soft_assign(arr, weights, value, axis=0, *, erase=1.0):
    r"""Soft write (the write head of memory networks), returning a new array.

    ``out = arr * (1 - w * erase) + w * value`` along ``axis`` for weights ``w`` of
    shape ``(n,)``.  Weights of shape ``(*H, n)`` are ``prod(H)`` heads writing at
    once (Graves et al. 2014, Neural Turing Machines, eqs. 3-4): the erase factors
    multiply and the additions sum,
    ``out = arr * prod_h (1 - w_h erase_h) + sum_h w_h value_h``.  ``value`` (and
    ``erase``, a number or an array) broadcast to the written slot, shaped like
    ``numpy.take(arr, index, axis)`` for an index of shape ``H``.  With one-hot
    weights and ``erase=1`` this is the exact assignment.

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_assign(np.zeros(3), np.array([0.0, 0.25, 0.75]), np.array(4.0))
        array([0., 1., 3.])
    """
    arr = as_float_array(arr)
    weights, value = as_array(weights, like=arr), as_array(value, like=arr)
    if isinstance(erase, numbers.Real) and not isinstance(erase, bool):
        erase_arg = ()
        erase = float(erase)
    else:
        erase_arg = (("erase", erase),)
    backend, xp, caller, front, rows, positions, extra = _setup_weighted(
        arr, weights, axis, (("value", value),) + erase_arg
    )
    values = front.from_slot(xp, extra[0], positions)
    if erase_arg:
        erase = front.from_slot(xp, extra[1], positions, name="erase")
    out = front.restore(xp, _write(xp, front, rows, values, erase))
    return _cast(xp, out, caller)


def soft_scatter_add(arr, weights, value, axis=0):
    r"""Soft scatter-add: ``out = arr + sum_h w_h * value_h``, a new array.

    Weights and ``value`` are laid out as in ``soft_assign``; with one-hot weights
    this is ``numpy.add.at`` (repeated positions accumulate).

    Example::

        >>> import numpy as np, softops
        >>> softops.soft_scatter_add(np.ones(3), np.array([[1.0, 0, 0], [0.5, 0.5, 0]]), np.array([2.0, 4.0]))
        array([5., 3., 1.])
    """
    arr = as_float_array(arr)
    weights, value = as_array(weights, like=arr), as_array(value, like=arr)
    backend, xp, caller, front, rows, positions, extra = _setup_weighted(
        arr, weights, axis, (("value", value),)
    )
    values = front.from_slot(xp, extra[0], positions)
    out = front.restore(xp, front.flat + xp.matmul(xp.matrix_transpose(rows), values))
    return _cast(xp, out, caller)


def _exact_write(xp, front, flat, inside, values, device):
    """Copy-and-set at integer flat positions (the last write wins on repeats)."""
    n = front.flat.shape[0]
    flat = xp.reshape(flat, (-1,))
    if flat.shape[0] == 0:
        return front.flat
    positions = xp.arange(n, dtype=flat.dtype, device=device)
    hit = flat[:, None] == positions
    if inside is not None:
        hit = hit & xp.reshape(inside, (-1,))[:, None]
    written = xp.any(hit, axis=0)
    hits = xp.astype(xp.flip(hit, axis=0), xp.int32)
    last = flat.shape[0] - 1 - xp.argmax(hits, axis=0)
    return xp.where(written[:, None], xp.take(values, last, axis=0), front.flat)


def assign(arr, index, value, axis=0, *, mode="nearest", padding="clamp"):
    r"""Write ``value`` at ``index`` along ``axis`` and return the new array.

    ``value`` broadcasts to the slot ``numpy.take(arr, index, axis)`` (with a
    tuple of k axes, ``index`` ends in k coordinates, as in ``lookup``).

    * ``mode="nearest"`` (and any integer index): the exact write at
      ``floor(x + 1/2)``, like ``out = arr.copy(); out[..., i, ...] = value``;
      on repeated positions the last write wins.  Gradients flow to ``arr``
      (zero where overwritten) and to ``value``.
    * ``mode="linear"``: a fractional index splats into its neighbours,
      ``out = arr * (1 - w) + w * value`` with ``w = soft_index(index, n)``
      (the tensor product over several axes), so the index gets a gradient too;
      several positions write as the heads of ``soft_assign``.

    ``padding`` maps positions outside the array as in ``lookup``: "clamp" writes
    to the edge, "wrap" and "reflect" fold, "zeros" drops the write.

    Example::

        >>> import numpy as np, softops
        >>> softops.assign(np.zeros(4), np.array(1.25), np.array(8.0), mode="linear")
        array([0., 6., 2., 0.])
    """
    arr = as_float_array(arr)
    index, value = as_array(index, like=arr), as_array(value, like=arr)
    check_choice(mode, "mode", ("nearest", "linear"))
    check_choice(padding, "padding", PADDINGS)
    backend = check_float_array(arr, "arr")
    _check_index(backend, index)
    xp = backend.xp
    value = _as_array_like(backend, value, arr, "value")
    caller = arr.dtype
    axes = _axes_of(arr, axis)
    dtype, (arr, index, value) = _compute(xp, [arr, index, value], caller)
    front = _Front(xp, arr, axes)
    coords, index_shape = _coordinates(index, front)
    values = front.from_slot(xp, value, index_shape)
    if mode == "nearest" or xp.isdtype(index.dtype, "integral"):
        per_axis = [taps(xp, c, n, "nearest", padding) for c, n in zip(coords, front.sizes)]
        ((flat, weight, inside),) = combine(xp, per_axis, front.strides)
        if weight is not None:  # a NaN coordinate writes nothing
            inside = (weight == 1) if inside is None else inside & (weight == 1)
        out = _exact_write(xp, front, flat, inside, values, backend.device(arr))
    else:
        # A NaN coordinate writes nothing (as mode="nearest"); it is read as 0
        # first, so that no NaN reaches the gradient either.
        per_axis = [
            xp.where(xp.isnan(c)[..., None], 0.0, soft_index(xp.where(xp.isnan(c), 0.0, c), n, padding=padding))
            for c, n in zip(coords, front.sizes)
        ]
        w = per_axis[0]
        for wi in per_axis[1:]:
            w = xp.reshape(w[..., :, None] * wi[..., None, :], tuple(w.shape[:-1]) + (-1,))
        rows = xp.reshape(w, (math.prod(index_shape), math.prod(front.sizes)))
        out = _write(xp, front, rows, values, 1.0)
    out = front.restore(xp, out)
    return _cast(xp, out, caller)
