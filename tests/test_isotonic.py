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
    p, _ = isotonic.forward_numpy(z, w, c, kl=False)
    for r in range(z.shape[0]):
        v = isotonic_regression(c * z[r] - w[r], increasing=False).x
        np.testing.assert_allclose(p[r], c * z[r] - v, atol=1e-9)


@pytest.mark.parametrize("kl", [False, True])
@given(case=ROWS)
def test_kernel_matches_twin(kl, case):
    z, w, c = case
    p, start = isotonic.forward_numpy(z, w, c, kl)
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
        p, _ = isotonic.forward_numpy(z[None], w[None], 1.5, kl=True)
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
    p, start = isotonic.forward_numpy(z, w, np.float32(2.0), kl=False)
    assert p.dtype == np.float32 and start.dtype == np.int32 and p.shape == z.shape
    p64, _ = isotonic.forward_numpy(z.astype(np.float64), w.astype(np.float64), 2.0, kl=False)
    np.testing.assert_allclose(p, p64, rtol=1e-6)


def test_without_numba_the_twin_runs(monkeypatch):
    rng = np.random.default_rng(1)
    z, w = rng.normal(size=(2, 3, 8))
    g = rng.normal(size=(3, 8))
    for kl in (False, True):
        p, start = isotonic.forward_numpy(z, w, 0.8, kl)
        grads = isotonic.backward_numpy(z, w, 0.8, start, g, kl)
        monkeypatch.setattr(isotonic, "_numba_kernels", lambda: None)
        p_twin, start_twin = isotonic.forward_numpy(z, w, 0.8, kl)
        grads_twin = isotonic.backward_numpy(z, w, 0.8, start_twin, g, kl)
        monkeypatch.undo()
        np.testing.assert_allclose(p_twin, p, atol=1e-12)
        for a, b in zip(grads_twin, grads):
            np.testing.assert_allclose(a, b, atol=1e-12)
