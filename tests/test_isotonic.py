"""The PAV kernel (numba) against its pure-array twin and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import isotonic_regression, minimize

from softops._kernels import isotonic

ROWS = st.integers(1, 9).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (2, n), elements=st.floats(-5, 5).map(lambda v: round(v, 1))),
        arrays(np.float64, (2, n), elements=st.floats(-5, 5)),
        st.sampled_from([0.3, 1.0, 4.0]),
    )
)


def test_numba_is_used():
    assert isotonic.numba_available()


@given(ROWS)
def test_l2_matches_scipy(case):
    z, w, c = case
    p, _, _ = isotonic.forward_numpy(z, w, c, kl=False)
    for r in range(z.shape[0]):
        v = isotonic_regression(c * z[r] - w[r], increasing=False).x
        np.testing.assert_allclose(p[r], c * z[r] - v, atol=1e-9)


@pytest.mark.parametrize("kl", [False, True])
@given(case=ROWS)
def test_kernel_matches_twin(kl, case):
    z, w, c = case
    p, start, _ = isotonic.forward_numpy(z, w, c, kl)
    p_twin, start_twin = isotonic.forward_twin(np, z, w, np.asarray(c), kl)
    np.testing.assert_allclose(p, p_twin, atol=1e-9)
    g = np.cos(np.arange(z.size)).reshape(z.shape)
    # The partitions agree except where adjacent blocks have equal values
    # (merging them or not leaves the forward unchanged); compare gradients on
    # the kernel's partition.
    got = isotonic.backward_numpy(z, w, c, start, g, kl)
    want = isotonic.backward_twin(np, z, w, np.asarray(c), start, g, kl)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_kl_is_the_minimiser():
    """kl isotonic regression: argmin_{v non-increasing} <exp(c z - v), 1> + <exp(w), v>."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        z, w = rng.normal(size=(2, 6))
        p, _, _ = isotonic.forward_numpy(z[None], w[None], 1.5, kl=True)
        v = 1.5 * z - p[0]
        objective = lambda u: np.sum(np.exp(1.5 * z - u)) + np.sum(np.exp(w) * u)
        cons = {"type": "ineq", "fun": lambda u: u[:-1] - u[1:]}
        res = minimize(objective, np.zeros(6), constraints=cons, method="SLSQP",
                       options={"ftol": 1e-14, "maxiter": 500})
        assert objective(v) <= res.fun + 1e-9
        np.testing.assert_allclose(v, res.x, atol=1e-4)
        assert np.all(np.diff(v) <= 1e-12)


def test_float32_and_batch_shapes():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 4, 50)).astype(np.float32)
    w = np.broadcast_to(np.arange(50, 0, -1, dtype=np.float32), z.shape)
    p, start, _ = isotonic.forward_numpy(z, w, np.float32(2.0), kl=False)
    assert p.dtype == np.float32 and start.dtype == np.int32 and p.shape == z.shape
    p64, _, _ = isotonic.forward_numpy(z.astype(np.float64), w.astype(np.float64), 2.0, kl=False)
    np.testing.assert_allclose(p, p64, rtol=1e-6)


def test_without_numba_the_twin_runs(monkeypatch):
    rng = np.random.default_rng(1)
    z, w = rng.normal(size=(2, 3, 8))
    g = rng.normal(size=(3, 8))
    for kl in (False, True):
        p, start, _ = isotonic.forward_numpy(z, w, 0.8, kl)
        grads = isotonic.backward_numpy(z, w, 0.8, start, g, kl)
        monkeypatch.setattr(isotonic, "_numba_kernels", lambda: None)
        p_twin, start_twin, _ = isotonic.forward_numpy(z, w, 0.8, kl)
        grads_twin = isotonic.backward_numpy(z, w, 0.8, start_twin, g, kl)
        monkeypatch.undo()
        np.testing.assert_allclose(p_twin, p, atol=1e-12)
        for a, b in zip(grads_twin, grads):
            np.testing.assert_allclose(a, b, atol=1e-12)


# --- the kernel's own row sort and its permutation modes ------------------------

from softops._kernels import rowsort  # noqa: E402


def _numba_row_sort(x, descending=True):
    """Run rowsort.sort_row (compiled) on each row of ``x``."""
    import numba

    sort = numba.njit(rowsort.sort_row)
    bits, width = rowsort.key_bits(np.ascontiguousarray(x))
    n = x.shape[1]
    out = np.empty(x.shape, np.int32)
    key, key_b = np.empty(n, np.uint64), np.empty(n, np.uint64)
    idx, idx_b = np.empty(n, np.int32), np.empty(n, np.int32)
    count = np.empty(256, np.int64)
    for r in range(x.shape[0]):
        sort(bits, r, width, descending, key, key_b, idx, idx_b, count)
        out[r] = idx
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 7, rowsort.SMALL, rowsort.SMALL + 1, 300])
def test_row_sort_is_numpys_stable_sort(dtype, n):
    """Oracle: numpy's stable argsort of -x and of x (ties in row order), on
    rows with ties, signed zeros, infinities and huge / tiny magnitudes."""
    rng = np.random.default_rng(n)
    x = rng.choice([-np.inf, -1e30, -2.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 2.0, 1e30, np.inf], size=(5, n))
    x = np.where(rng.random((5, n)) < 0.5, rng.normal(size=(5, n)) * 10.0 ** rng.integers(-5, 5, (5, n)), x)
    x = x.astype(dtype)
    order = _numba_row_sort(x)
    # -0.0 and 0.0 are equal for numpy but ordered for the bit keys (0.0 first
    # when descending): compare the sorted values, and the order on non-zero rows.
    np.testing.assert_array_equal(np.take_along_axis(x, order, -1), -np.sort(-x, axis=-1))
    up = _numba_row_sort(x, descending=False)
    np.testing.assert_array_equal(np.take_along_axis(x, up, -1), np.sort(x, axis=-1))
    for r in range(5):
        assert sorted(order[r]) == list(range(n)) and sorted(up[r]) == list(range(n))
        if not np.any(x[r] == 0):
            np.testing.assert_array_equal(order[r], np.argsort(-x[r], kind="stable"))
            np.testing.assert_array_equal(up[r], np.argsort(x[r], kind="stable"))


def test_row_sort_puts_nan_at_the_ends():
    x = np.array([[1.0, np.nan, -np.inf, 3.0, -np.nan]] * 2)
    x[1] = -x[1]
    order = _numba_row_sort(x)
    for r in range(2):
        assert sorted(order[r]) == list(range(5))  # a permutation, NaN or not
        finite = [i for i in order[r] if not np.isnan(x[r, i])]
        assert list(x[r, finite]) == sorted(x[r, finite], reverse=True)


ROWS_UNSORTED = st.integers(1, 80).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (3, n), elements=st.floats(-5, 5).map(lambda v: round(v, 1))),
        st.sampled_from([0.3, 1.0, 4.0]),
    )
)


@pytest.mark.parametrize("kl", [False, True])
@pytest.mark.parametrize("unsort", ["z", "w"])
@given(case=ROWS_UNSORTED)
def test_kernel_sorts_and_permutes_like_the_twin(kl, unsort, case):
    """unsort='z' / 'w': the kernel sorts that sequence itself (ties included)
    and reads and writes through its permutation; the twin on rows sorted by
    numpy is the oracle, for values and all three cotangents."""
    y, c = case
    n = y.shape[-1]
    rho = np.arange(n, 0, -1.0)
    const = np.log(rho) if kl and unsort == "z" else rho
    z, w = (y, const[None]) if unsort == "z" else (const[None], y)
    p, start, order = isotonic.forward_numpy(z, w, c, kl, unsort)
    assert order.dtype == np.int32
    sorted_y = np.take_along_axis(y, order, -1)
    np.testing.assert_array_equal(sorted_y, -np.sort(-y, axis=-1))
    zs, ws = (sorted_y, np.broadcast_to(const, y.shape)) if unsort == "z" else (np.broadcast_to(const, y.shape), sorted_y)
    p_twin, _ = isotonic.forward_twin(np, zs, ws, np.asarray(c), kl)
    if unsort == "z":
        p = np.take_along_axis(p, order, -1)  # back to sorted order
    np.testing.assert_allclose(p, p_twin, atol=1e-9)
    g = np.cos(np.arange(y.size)).reshape(y.shape)
    g_sorted = np.take_along_axis(g, order, -1) if unsort == "z" else g
    gz, gw, gc = isotonic.backward_numpy(z, w, c, start, g, kl, order, unsort)
    tz, tw, tc = isotonic.backward_twin(np, zs, ws, np.asarray(c), start, g_sorted, kl)
    mine = gz if unsort == "z" else gw
    np.testing.assert_allclose(np.take_along_axis(mine, order, -1), tz if unsort == "z" else tw, atol=1e-9)
    other = gw if unsort == "z" else gz
    np.testing.assert_allclose(other, tw if unsort == "z" else tz, atol=1e-9)
    np.testing.assert_allclose(gc, tc, atol=1e-9)
    skip = isotonic.backward_numpy(z, w, c, start, g, kl, order, unsort, need=(unsort == "z", unsort == "w"))
    assert (skip[1] is None) if unsort == "z" else (skip[0] is None)


@pytest.mark.parametrize("unsort", ["z", "w"])
def test_without_numba_the_permutation_modes_agree(monkeypatch, unsort):
    rng = np.random.default_rng(2)
    y = rng.normal(size=(4, 9))
    y[:, 3] = y[:, 5]  # a tie
    rho = np.arange(9, 0, -1.0)[None]
    z, w = (y, rho) if unsort == "z" else (rho, y)
    g = rng.normal(size=y.shape)
    for kl in (False, True):
        p, start, order = isotonic.forward_numpy(z, w, 0.7, kl, unsort)
        grads = isotonic.backward_numpy(z, w, 0.7, start, g, kl, order, unsort)
        monkeypatch.setattr(isotonic, "_numba_kernels", lambda: None)
        p2, start2, order2 = isotonic.forward_numpy(z, w, 0.7, kl, unsort)
        grads2 = isotonic.backward_numpy(z, w, 0.7, start2, g, kl, order2, unsort)
        monkeypatch.undo()
        np.testing.assert_array_equal(order2, order)
        np.testing.assert_allclose(p2, p, atol=1e-12)
        for a, b in zip(grads2, grads):
            np.testing.assert_allclose(a, b, atol=1e-12)


def test_bad_unsort_is_refused():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="unsort"):
        isotonic.forward_numpy(z, z, 1.0, False, "x")
    with pytest.raises(ValueError, match="unsort"):
        isotonic.backward_numpy(z, z, 1.0, np.zeros((2, 3), np.int32), z, False, None, "z")
