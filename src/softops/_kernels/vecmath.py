r"""``exp`` and ``log`` that the compiler can vectorise, for the kernels' hot loops.

The C library's ``exp`` and ``log`` are one call per element that LLVM cannot
vectorise (4 to 7 ns each here); these polynomials run four lanes at once
(about 1 ns an element) when called in a flat loop of a kernel compiled with
``error_model="numpy"`` (numba's default Python error model puts a
division-by-zero branch in every division, which stops vectorisation).

``exp_nonpositive(x)``, ``x <= 0`` (Cody & Waite 1980 range reduction; Tang
1989 for the error analysis of this family): ``x = k ln 2 + r`` with ``k =
round(x / ln 2)`` and ``|r| <= ln(2) / 2``, ``ln 2`` split into a high part whose
low 32 bits are zero (``k ln2_hi`` is exact for ``|k| < 2^11``) and a low part;
``e^r`` by its Taylor polynomial of degree 13 in Horner form (truncation
``(ln 2 / 2)^14 / 14! < 5e-18`` relative); ``2^k`` by writing ``k + 1023`` into
the exponent bits.  Results that would be subnormal (``x < -708``) are 0: every
use adds the value to terms of at least 1, where a term below ``2^-1022``
cannot count.  ``-inf`` gives 0, NaN gives NaN, ``0`` gives exactly 1.

``log_positive(x)``, ``x > 0``: ``x = 2^k m`` with ``m`` in ``[sqrt(1/2),
sqrt(2))`` read off the bits (subnormals scaled by ``2^54`` first), ``log m =
2 atanh(s)`` with ``s = (m - 1) / (m + 1)``, ``|s| <= 0.1716``, by its series to
``s^23`` (truncation below ``1e-18`` relative), plus ``k ln 2`` in two parts.
``0`` gives ``-inf``, ``inf`` gives ``inf``, negative and NaN give NaN.

Both measured against the C library (the tests: ``tests/test_vecmath.py``):
at most 1 ulp apart for ``exp`` and 2 ulp for ``log``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["exp_nonpositive_py", "log_positive_py", "compiled"]

_LOG2E = 1.4426950408889634
# ln 2 = _LN2_HI + _LN2_LO, _LN2_HI with its low 32 bits zero (fdlibm's split).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_UNDERFLOW = -708.0
_SQRT2 = 1.4142135623730951
_TINY = 2.2250738585072014e-308  # the smallest normal float64
_TWO52 = 4503599627370496.0
_TWO54 = 18014398509481984.0


def exp_nonpositive_py(x):
    """The reference semantics of ``exp_nonpositive`` in plain Python."""
    if x < _UNDERFLOW:
        return 0.0
    return math.exp(x)


def log_positive_py(x):
    """The reference semantics of ``log_positive`` in plain Python."""
    if x == 0.0:
        return -math.inf
    if not x > 0.0:
        return math.nan
    return math.log(x)


def _exp_nonpositive(x):
    if not x >= _UNDERFLOW:
        return 0.0 if x < _UNDERFLOW else x  # -inf and below: 0; NaN: NaN
    k = math.floor(x * _LOG2E + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    # Taylor coefficients 1/13!, ..., 1/2!, 1, 1 (Horner).
    p = 1.6059043836821613e-10
    p = p * r + 2.08767569878681e-09
    p = p * r + 2.505210838544172e-08
    p = p * r + 2.755731922398589e-07
    p = p * r + 2.7557319223985893e-06
    p = p * r + 2.48015873015873e-05
    p = p * r + 0.0001984126984126984
    p = p * r + 0.001388888888888889
    p = p * r + 0.008333333333333333
    p = p * r + 0.041666666666666664
    p = p * r + 0.16666666666666666
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _as_float64((np.int64(k) + 1023) << 52)


def _log_positive(x):
    subnormal = x < _TINY
    bits = _as_int64(x * _TWO54 if subnormal else x)
    # The mantissa as m in [1, 2) and the biased exponent as a float (the 2^52 trick).
    m = _as_float64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    k = _as_float64(((bits >> 52) & 0x7FF) | 0x4330000000000000) - (_TWO52 + 1023.0)
    k = k - 54.0 if subnormal else k
    big = m > _SQRT2
    m = m * 0.5 if big else m
    k = k + 1.0 if big else k
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    # 2 atanh(s) = 2 s + s z (2/3 + 2/5 z + ... + 2/23 z^10) (Horner).
    t = 2.0 / 23.0
    t = t * z + 2.0 / 21.0
    t = t * z + 2.0 / 19.0
    t = t * z + 2.0 / 17.0
    t = t * z + 2.0 / 15.0
    t = t * z + 2.0 / 13.0
    t = t * z + 2.0 / 11.0
    t = t * z + 2.0 / 9.0
    t = t * z + 2.0 / 7.0
    t = t * z + 2.0 / 5.0
    t = t * z + 2.0 / 3.0
    out = k * _LN2_HI + (k * _LN2_LO + (2.0 * s + s * (z * t)))
    if not (x > 0.0 and x < math.inf):
        out = x if x == math.inf else (-math.inf if x == 0.0 else math.nan)
    return out


try:
    import numba
    from numba.core import types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised without numba
    numba = None
else:

    def _bitcast(source, target):
        @intrinsic
        def cast(typingctx, value):
            if value != source:
                return None

            def codegen(context, builder, signature, args):
                return builder.bitcast(args[0], context.get_value_type(target))

            return target(source), codegen

        return cast

    _as_float64 = _bitcast(types.int64, types.float64)  # reinterpret the bits
    _as_int64 = _bitcast(types.float64, types.int64)


@functools.cache
def compiled():
    """``(exp_nonpositive, log_positive)`` as numba functions (inlined into their
    callers), or None without numba."""
    if numba is None:
        return None
    jit = numba.njit(inline="always", cache=True, error_model="numpy")
    return jit(_exp_nonpositive), jit(_log_positive)
