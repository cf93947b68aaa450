"""The kernels' vectorisable exp and log (softops._kernels.vecmath) against the C library."""

import math

import numpy as np
import pytest

from softops._kernels import vecmath

compiled = vecmath.compiled()
needs_numba = pytest.mark.skipif(compiled is None, reason="numba is not installed")


def _apply(f, x):
    import numba

    @numba.njit(error_model="numpy")
    def run(a, out):
        for i in range(a.size):  # a flat loop: the vectorised form the kernels use
            out[i] = f(a[i])

    out = np.empty_like(x)
    run(x, out)
    return out


def _ulps(got, want):
    return np.abs(got - want) / np.spacing(np.abs(want))


@needs_numba
def test_exp_within_one_ulp_of_libm(rng):
    """Oracle: numpy's exp (the C library's, < 1 ulp from the true value) on [-708, 0]."""
    x = np.concatenate([-rng.uniform(0, 708, 200_000), -rng.uniform(0, 1e-3, 10_000),
                        -rng.exponential(1.0, 10_000)])
    assert _ulps(_apply(compiled[0], x), np.exp(x)).max() <= 1.0


@needs_numba
def test_exp_special_values():
    """Exactly 1 at 0 (tied knots give e = 1), 0 past the subnormal range and at
    -inf, NaN kept; the plain-Python reference agrees."""
    x = np.array([0.0, -0.0, -1e-300, -708.5, -1e4, -np.inf, np.nan, -math.log(2.0), -708.0])
    got = _apply(compiled[0], x)
    want = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, np.nan, 0.5]
    np.testing.assert_array_equal(got[:8], want)
    assert _ulps(got[8], math.exp(-708.0)) <= 1.0
    assert [vecmath.exp_nonpositive_py(float(v)) for v in x[:6]] == want[:6]
    assert math.isnan(vecmath.exp_nonpositive_py(math.nan))


@needs_numba
def test_log_within_two_ulp_of_libm(rng):
    """Oracle: numpy's log over the whole positive range, subnormals included."""
    x = np.concatenate([rng.uniform(1e-3, 10.0, 200_000), np.exp(rng.uniform(-700, 700, 50_000)),
                        1.0 + rng.uniform(-1e-6, 1e-6, 10_000), [5e-324, 1e-310, 2.2250738585072014e-308]])
    want = np.log(x)
    got = _apply(compiled[1], x)
    nonzero = want != 0
    assert _ulps(got[nonzero], want[nonzero]).max() <= 2.0
    assert np.all(got[~nonzero] == 0.0)


@needs_numba
def test_log_special_values():
    x = np.array([1.0, 2.0, 0.5, 0.0, np.inf, np.nan, -1.0, -np.inf])
    want = [0.0, math.log(2.0), -math.log(2.0), -np.inf, np.inf, np.nan, np.nan, np.nan]
    np.testing.assert_array_equal(_apply(compiled[1], x), want)
    np.testing.assert_array_equal([vecmath.log_positive_py(float(v)) for v in x], want)
