"""The kernels' vectorisable exp (softops._kernels.fastexp) against the C library."""

import math

import numpy as np
import pytest

from softops._kernels import fastexp

compiled = fastexp.compiled()
needs_numba = pytest.mark.skipif(compiled is None, reason="numba is not installed")


def _apply(f):
    import numba

    @numba.njit
    def run(a, out):
        for i in range(a.size):
            out[i] = f(a[i])

    return run


@needs_numba
def test_within_one_ulp_of_libm(rng):
    """Oracle: math.exp (glibc, correctly rounded to < 1 ulp) on [-708, 0]."""
    x = np.concatenate([-rng.uniform(0, 708, 200_000), -rng.uniform(0, 1e-3, 10_000), -rng.exponential(1.0, 10_000)])
    got = np.empty_like(x)
    _apply(compiled)(x, got)
    want = np.exp(x)
    ulps = np.abs(got - want) / np.spacing(want)
    assert ulps.max() <= 1.0


@needs_numba
def test_special_values():
    """Exactly 1 at 0 (ties give e = 1), 0 past the subnormal range and at -inf,
    NaN kept; the plain-Python reference agrees."""
    x = np.array([0.0, -0.0, -1e-300, -708.5, -1e4, -np.inf, np.nan, -math.log(2.0), -708.0])
    got = np.empty_like(x)
    _apply(compiled)(x, got)
    want = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, np.nan, 0.5]
    np.testing.assert_array_equal(got[:8], want)
    assert abs(got[8] - math.exp(-708.0)) <= np.spacing(math.exp(-708.0))
    assert [fastexp.exp_nonpositive_py(float(v)) for v in x[:6]] == want[:6]
    assert math.isnan(fastexp.exp_nonpositive_py(math.nan))
