"""Interpolation taps and padding along one axis, for the indexing family.

Samples sit at the integer positions ``0 .. n-1`` of an axis of length ``n``; a
coordinate ``x`` (index units, floating or integer) reads the interpolant there.
``taps(...)`` returns, for each of the 1 (nearest), 2 (linear) or 4 (cubic)
neighbours of ``x``, a safe integer position in ``[0, n)``, the interpolation
weight (None for nearest) and a validity mask (None unless padding is 'zeros').

Padding (what the array holds outside ``[0, n-1]``):

* ``"clamp"``: the edge values continue (edge padding); a linear read is the read
  at ``clip(x, 0, n-1)``, so its gradient with respect to ``x`` is 0 outside.
* ``"zeros"``: zeros outside, so a linear read fades to 0 over the last unit.
* ``"wrap"``: n-periodic, ``a[j + n] = a[j]`` (so ``-1`` is the last element).
* ``"reflect"``: whole-sample symmetric, ``a[-j] = a[j]`` and
  ``a[n-1+j] = a[n-1-j]`` (period ``2(n-1)``; ``numpy.pad`` "reflect", scipy
  "mirror", ``grid_sample`` "reflection" with ``align_corners=True``): the
  interpolant is mirror-symmetric about the end samples, with no flat spot there.
"""

from __future__ import annotations

import itertools
import math

from softops._shared import index_dtype

PADDINGS = ("clamp", "zeros", "wrap", "reflect")
MODES = ("linear", "cubic", "nearest")


def fold(xp, m, n: int, padding: str):
    """Integer positions ``m`` mapped into ``[0, n)`` by the padding rule, and the
    mask of those that really lie inside (None when every position is valid)."""
    if padding == "wrap":
        return xp.remainder(m, n), None
    if padding == "reflect":
        if n == 1:
            return xp.zeros_like(m), None
        period = 2 * (n - 1)
        m = xp.remainder(m, period)
        return xp.where(m < n, m, period - m), None
    inside = (m >= 0) & (m < n) if padding == "zeros" else None
    return xp.clip(m, 0, n - 1), inside


def reduce_coordinate(xp, x, n: int, padding: str):
    """``(r, undefined)``: ``x`` moved into a bounded range where every rule gives
    the same read (periodic paddings take the remainder, the others clip to
    ``[-2, n+1]``, beyond which every tap is an edge value or a zero), and the mask
    of coordinates with no defined read (NaN; also +-inf for periodic paddings),
    which are replaced by 0 in ``r`` so that their positions stay safe."""
    if padding in ("wrap", "reflect"):
        undefined = ~xp.isfinite(x)
        period = n if padding == "wrap" else max(2 * (n - 1), 1)
        return xp.remainder(xp.where(undefined, 0.0, x), float(period)), undefined
    undefined = xp.isnan(x)
    return xp.clip(xp.where(undefined, 0.0, x), -2.0, n + 1.0), undefined


def keys_weights(t):
    """Keys (1981) cubic convolution with a = -1/2 (Catmull-Rom), taps at offsets
    -1, 0, 1, 2 from ``floor(x)`` and ``t = x - floor(x)``; C1, and exact for
    quadratics (Keys 1981, eq. 15 and sec. III)."""
    t2 = t * t
    t3 = t2 * t
    return (
        (-t3 + 2 * t2 - t) / 2,
        (3 * t3 - 5 * t2 + 2) / 2,
        (-3 * t3 + 4 * t2 + t) / 2,
        (t3 - t2) / 2,
    )


def weight_derivatives(t, mode: str):
    """``[w, w', w'', ...]``: the taps' weights and their derivatives in ``t`` of
    every nonzero order (linear: 2 taps, orders 0-1; Keys cubic: 4 taps, orders
    0-3), each a tuple over the taps (constants as Python floats)."""
    if mode == "linear":
        return [(1 - t, t), (-1.0, 1.0)]
    t2 = t * t
    return [
        keys_weights(t),
        ((-3 * t2 + 4 * t - 1) / 2, (9 * t2 - 10 * t) / 2, (-9 * t2 + 8 * t + 1) / 2, (3 * t2 - 2 * t) / 2),
        (2 - 3 * t, 9 * t - 5, 4 - 9 * t, 3 * t - 1),
        (-3.0, 9.0, -9.0, 3.0),
    ]


# Per order of weight_derivatives, the largest sum of |w_c^(j)(t)| over the taps
# for t in [0, 1]: linear 1, 2; cubic 1.25, 3, 12, 24.
_WEIGHT_BOUNDS = {"linear": (1.0, 2.0), "cubic": (1.25, 3.0, 12.0, 24.0)}


def _scale(bound: float) -> float:
    """The least power of two >= ``bound`` (>= 1).  A sum of taps whose weights
    (summing to at most ``bound`` in absolute value) are divided by it has every
    partial sum within the largest ``|v_c|``, so it cannot overflow; multiplying
    back by a power of two overflows only where the true sum does."""
    return 2.0 ** max(0, math.ceil(math.log2(bound)))


def cell(xp, x, n: int, mode: str, padding: str):
    """``(positions, t)`` for a floating coordinate ``x`` and ``mode`` "linear"
    or "cubic": ``positions`` lists ``(m, inside_or_None)`` for each tap (safe
    integer positions in ``[0, n)``), ``t = x - floor(x)`` (differentiable in
    ``x``; NaN where the read is undefined)."""
    int_dtype = index_dtype(xp)
    r, undefined = reduce_coordinate(xp, x, n, padding)
    base = xp.floor(r)
    t = xp.where(undefined, xp.nan, r - base)
    base = xp.astype(base, int_dtype)
    offsets = (0, 1) if mode == "linear" else (-1, 0, 1, 2)
    return [fold(xp, base + offset, n, padding) for offset in offsets], t


def taps(xp, x, n: int, mode: str, padding: str):
    """``[(position, weight_or_None, inside_or_None), ...]`` for coordinate ``x``."""
    int_dtype = index_dtype(xp)
    if xp.isdtype(x.dtype, "integral"):
        m, inside = fold(xp, xp.astype(x, int_dtype), n, padding)
        return [(m, None, inside)]
    if mode == "nearest":
        r, undefined = reduce_coordinate(xp, x, n, padding)
        # A coordinate with no defined read reads NaN (weight NaN, position safe).
        weight = xp.where(undefined, xp.nan, xp.ones_like(r))
        m, inside = fold(xp, xp.astype(xp.floor(r + 0.5), int_dtype), n, padding)
        return [(m, weight, inside)]
    positions, t = cell(xp, x, n, mode, padding)
    weights = weight_derivatives(t, mode)[0]
    return [(m, weight, inside) for (m, inside), weight in zip(positions, weights)]


def combine(xp, per_axis, strides):
    """Tensor product of the taps of several coordinates: flat positions
    ``sum_i m_i * stride_i``, weights multiplied, masks and-ed."""
    combos = [(None, None, None)]
    for axis_taps, stride in zip(per_axis, strides):
        combos = [
            (
                m * stride if flat is None else flat + m * stride,
                w if weight is None else (weight if w is None else weight * w),
                ok if inside is None else (inside if ok is None else inside & ok),
            )
            for flat, weight, inside in combos
            for m, w, ok in axis_taps
        ]
    return combos


def interpolate(xp, combos, gather):
    """``sum_c weight_c * gather(flat_c)`` with masked taps reading exactly 0.

    ``gather(flat)`` returns values whose leading dimensions match ``flat``'s
    (trailing ones carried along)."""
    total = None
    for flat, weight, inside in combos:
        values = gather(flat)
        extra = values.ndim - flat.ndim
        if inside is not None:
            values = xp.where(xp.reshape(inside, inside.shape + (1,) * extra), values, 0.0)
        if weight is not None:
            w = xp.reshape(weight, weight.shape + (1,) * extra)
            # A tap of weight exactly 0 adds nothing, also at an infinite
            # sample (0 * inf would be NaN: a read at an integer position
            # next to an infinity is that sample's value).
            values = xp.where((w == 0) & xp.isinf(values), 0.0, values) * w
        total = values if total is None else total + values
    return total


# --- reads whose coordinate derivatives cannot overflow where the truth is finite --------
#
# The autodiff of ``sum_c W_c(t) v_c`` forms the coordinate's gradient from the
# terms ``g v_c W_c'(t)`` (and, through the cubic weights' polynomials, larger
# multiples of ``g v_c``): next to values near the float maximum they overflow,
# and meet as inf - inf = NaN, where the true derivative is finite (audit R11).
# ``read`` below sums ``D = sum_c W_c'(t) v_c`` first, with scaled weights
# (``_scale``), and only then meets the upstream gradient.


def _weighted(xp, values, weights, scale: float, extra: int):
    """``sum_c weights_c * values_c`` with every weight divided by ``scale`` and the
    sum multiplied back; a tap of weight exactly 0 adds nothing, also at an
    infinite or NaN sample (a read at an integer position is that sample's
    value, whatever its neighbours hold)."""
    total = None
    for v, w in zip(values, weights):
        if isinstance(w, float):
            term = v * (w / scale)
        else:
            w = xp.reshape(w, w.shape + (1,) * extra)
            term = xp.where(w == 0, 0.0, v * (w / scale if scale != 1 else w))
        total = term if total is None else total + term
    return total * scale if scale != 1 else total


def _product_weights(per_axis, combos, derivative=None):
    """The tensor-product weight of each tap combination (``per_axis[i][order][c]``:
    axis i's weights of that order), differentiated once along ``derivative``."""
    weights = []
    for combo in combos:
        w = None
        for axis, c in enumerate(combo):
            factor = per_axis[axis][1 if axis == derivative else 0][c]
            w = factor if w is None else w * factor
        weights.append(w)
    return weights


def _combos(d: int, mode: str):
    return list(itertools.product(range(2 if mode == "linear" else 4), repeat=d))


def _bound(mode: str, d: int, derivative: bool) -> float:
    """The largest sum of |tensor-product weights| over the taps of ``d`` axes
    (once differentiated along one axis with ``derivative``)."""
    value, slope = _WEIGHT_BOUNDS[mode][:2]
    return slope * value ** (d - 1) if derivative else value**d


def _value(xp, ts, values, mode: str):
    """``sum_c W_c(t) v_c`` (``values`` in ``_combos`` order)."""
    d = len(ts)
    extra = values[0].ndim - ts[0].ndim
    per_axis = [weight_derivatives(t, mode) for t in ts]
    weights = _product_weights(per_axis, _combos(d, mode))
    return _weighted(xp, values, weights, _scale(_bound(mode, d, False)), extra)


def _taylor(xp, ts, values, mode: str, stop_gradient):
    """The same read as ``_value``, summed one axis at a time as the interpolant's
    Taylor expansion in each ``t`` about ``t0 = stop_gradient(t)``:

        r = V + e D_1 + e^2 / 2 D_2 (+ e^3 / 6 D_3),   D_j = sum_c w_c^(j)(t0) v_c,

    exact (the interpolant is a polynomial of that degree in ``t`` on the cell);
    ``e = t - t0`` is 0 in value and carries the derivatives of every order, so
    each ``D_j`` is summed before it meets a tangent or cotangent.  ``D_j``
    beyond the dtype's range saturate at +- its largest finite number (the value
    is never ``0 * inf``).  For the transforms other than first-order reverse
    mode (see ``read``)."""
    d = len(ts)
    extra = values[0].ndim - ts[0].ndim
    largest = float(xp.finfo(values[0].dtype).max)
    taps = 2 if mode == "linear" else 4
    table = dict(zip(_combos(d, mode), values))
    for axis in reversed(range(d)):
        t = ts[axis]
        t0 = stop_gradient(t)
        orders = weight_derivatives(t0, mode)
        e = t - t0
        e = xp.reshape(e, e.shape + (1,) * extra)
        reduced = {}
        for prefix in itertools.product(range(taps), repeat=axis):
            column = [table[prefix + (c,)] for c in range(taps)]
            r = _weighted(xp, column, orders[0], _scale(_WEIGHT_BOUNDS[mode][0]), extra)
            power = None
            for j in range(1, len(orders)):
                power = e if power is None else power * e
                dj = _weighted(xp, column, orders[j], _scale(_WEIGHT_BOUNDS[mode][j]), extra)
                r = r + (power / math.factorial(j)) * xp.clip(dj, -largest, largest)
            reduced[prefix] = r
        table = reduced
    return table[()]


def _slope_op(mode: str, d: int):
    """``(fwd, bwd, smooth)`` of the custom derivative ``Z(t_1..t_d, v...)``: value
    0, derivative in ``t_i`` the read's slope ``D_i = sum_c W_c^(i) v_c`` (summed
    with scaled weights, then saturated at the dtype's largest number), and 0 in
    the values at first order (the value ``V(t0)`` carries those).  Other
    transforms differentiate ``smooth``: ``_taylor`` less ``V(t0)``."""
    combos = _combos(d, mode)
    scale = _scale(_bound(mode, d, True))

    def fwd(xp, *arrays):
        return xp.zeros_like(arrays[d]), ()

    def bwd(xp, arrays, out, residuals, g):
        ts, values = arrays[:d], arrays[d:]
        extra = values[0].ndim - ts[0].ndim
        largest = float(xp.finfo(values[0].dtype).max)
        # An infinite sample counts as the largest finite number: a tap of
        # derivative weight 0 then adds exactly 0, and any other saturates.
        values = [xp.clip(v, -largest, largest) for v in values]
        per_axis = [weight_derivatives(t, mode)[:2] for t in ts]
        grads = []
        for axis in range(d):
            slope = None
            for v, w in zip(values, _product_weights(per_axis, combos, axis)):
                term = v * (w / scale if isinstance(w, float) else xp.reshape(w / scale, w.shape + (1,) * extra))
                slope = term if slope is None else slope + term
            gt = g * xp.clip(slope * scale, -largest, largest)
            grads.append(xp.sum(gt, axis=tuple(range(-extra, 0))) if extra else gt)
        return tuple(grads) + (None,) * len(values)

    def smooth(xp, arrays, out, residuals):
        from softops._backend import backend_of

        ts, values = arrays[:d], arrays[d:]
        stop = backend_of(values[0]).stop_gradient
        # In units of 16 x the samples: a read that overshoots the dtype's
        # maximum (cubic) stays finite there, so s is never inf - inf and its
        # derivatives are the true ones (16 is a power of two: exact).
        values = [v / 16.0 for v in values]
        return (_taylor(xp, ts, values, mode, stop) - _value(xp, [stop(t) for t in ts], values, mode)) * 16.0

    return fwd, bwd, smooth


# One triple per mode and number of axes, made once: the custom derivative is
# keyed by these functions (a dict, not functools.lru_cache, which
# torch.compile warns about).
_SLOPE_OPS = {(mode, d): _slope_op(mode, d) for mode in ("linear", "cubic") for d in (1, 2, 3)}


def _slope_ops(mode: str, d: int):
    if (mode, d) not in _SLOPE_OPS:
        _SLOPE_OPS[mode, d] = _slope_op(mode, d)
    return _SLOPE_OPS[mode, d]


def read(xp, backend, coords, sizes, strides, mode: str, padding: str, gather):
    """The tensor-product read (``mode`` "linear" or "cubic", floating
    coordinates ``coords`` along axes of ``sizes`` whose flat positions have
    ``strides``): ``V(t0) + Z(t, v)``, the value at the coordinates' values
    (the gradient to the array) plus a term of value 0 whose derivative in each
    coordinate is the slope summed before it meets the upstream gradient (see
    ``_slope_op``).  ``gather(flat)`` returns values whose leading dimensions
    match ``flat``'s (trailing ones carried along); taps outside the array under
    "zeros" padding read exactly 0."""
    cells = [cell(xp, c, n, mode, padding) for c, n in zip(coords, sizes)]
    values = []
    for combo in _combos(len(cells), mode):
        flat = inside = None
        for (positions, _), stride, c in zip(cells, strides, combo):
            m, ok = positions[c]
            flat = m * stride if flat is None else flat + m * stride
            inside = ok if inside is None else (inside if ok is None else inside & ok)
        v = gather(flat)
        if inside is not None:
            v = xp.where(xp.reshape(inside, inside.shape + (1,) * (v.ndim - flat.ndim)), v, 0.0)
        values.append(v)
    ts = [t for _, t in cells]
    if backend.constant(*ts):
        return _value(xp, ts, values, mode)
    out = _value(xp, [backend.stop_gradient(t) for t in ts], values, mode)
    return out + backend.custom_derivative(*_slope_ops(mode, len(ts)))(*ts, *values)
