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


def taps(xp, x, n: int, mode: str, padding: str):
    """``[(position, weight_or_None, inside_or_None), ...]`` for coordinate ``x``."""
    int_dtype = index_dtype(xp)
    if xp.isdtype(x.dtype, "integral"):
        m, inside = fold(xp, xp.astype(x, int_dtype), n, padding)
        return [(m, None, inside)]
    r, undefined = reduce_coordinate(xp, x, n, padding)
    if mode == "nearest":
        # A coordinate with no defined read reads NaN (weight NaN, position safe).
        weight = xp.where(undefined, xp.nan, xp.ones_like(r))
        m, inside = fold(xp, xp.astype(xp.floor(r + 0.5), int_dtype), n, padding)
        return [(m, weight, inside)]
    base = xp.floor(r)
    t = xp.where(undefined, xp.nan, r - base)
    base = xp.astype(base, int_dtype)
    if mode == "linear":
        offsets, weights = (0, 1), (1 - t, t)
    else:
        offsets, weights = (-1, 0, 1, 2), keys_weights(t)
    result = []
    for offset, weight in zip(offsets, weights):
        m, inside = fold(xp, base + offset, n, padding)
        result.append((m, weight, inside))
    return result


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
