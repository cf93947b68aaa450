"""soft_index, soft_take, lookup, lookup_along_axis, assign, soft_assign,
soft_scatter_add on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

import softops
from harness import NumpyHarness, finite_difference_vjp

PADDINGS = ["clamp", "zeros", "wrap", "reflect"]
# scipy.ndimage.map_coordinates modes with the same extension of the samples.
SCIPY_MODE = {"clamp": "nearest", "zeros": "grid-constant", "wrap": "grid-wrap", "reflect": "mirror"}
NP = NumpyHarness()


def away_from_integers(x, margin=0.05):
    """Shift points within ``margin`` of an integer (kinks of every interpolant)."""
    frac = x - np.floor(x)
    return np.where(np.minimum(frac, 1 - frac) < margin, x + 2 * margin, x)


def check_gradient(h, make, x, rtol=1e-6, atol=1e-9, seed=0):
    """Autodiff VJP of ``make(h)`` at ``x`` against central differences on NumPy."""
    f = make(h)
    out = NP.to_numpy(make(NP)(x))
    cot = np.random.default_rng(seed).normal(size=np.shape(out))
    got = h.vjp(f, x, cot)
    expected = finite_difference_vjp(make(NP), x, cot)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


# --- the values -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_lookup_value(backend, dtype):
    a = backend.asarray([1, 2, 3, 4, 5], dtype)
    out = softops.lookup(a, backend.asarray(1.5, dtype))
    assert backend.to_numpy(out) == 2.5 and out.dtype == a.dtype


def test_linear_lookup_gradients_fix_the_seed(diff_backend):
    """The seed's swapped weights gave d/d index = -1; the slope of [1..5] is +1."""
    arr = np.array([1.0, 2, 3, 4, 5])
    d_arr = diff_backend.vjp(lambda a: softops.lookup(a, diff_backend.asarray(1.5)), arr, np.array(1.0))
    d_index = diff_backend.vjp(lambda i: softops.lookup(diff_backend.asarray(arr), i), np.array(1.5), np.array(1.0))
    np.testing.assert_array_equal(d_arr, [0, 0.5, 0.5, 0, 0])
    assert d_index == 1.0


def test_soft_index_value_and_one_hot_take(backend, rng):
    w = softops.soft_index(backend.asarray(2.5), 5)
    np.testing.assert_array_equal(backend.to_numpy(w), [0, 0, 0.5, 0.5, 0])
    arr = rng.normal(size=(5, 3))
    i = np.array([[4, 0], [2, 2]])
    out = softops.soft_take(backend.asarray(arr), backend.asarray(np.eye(5)[i]), axis=0)
    np.testing.assert_array_equal(backend.to_numpy(out), np.take(arr, i, axis=0))


def test_2d_lookup_matches_map_coordinates(backend):
    grid = np.arange(12.0).reshape(3, 4)
    coords = np.array([[0.5, 1.5], [1.5, 2.5]])
    out = softops.lookup(backend.asarray(grid), backend.asarray(coords), axis=(0, 1))
    np.testing.assert_allclose(backend.to_numpy(out), [3.5, 8.5], rtol=1e-15)
    assert np.allclose(scipy.ndimage.map_coordinates(grid, coords.T, order=1), [3.5, 8.5])


@pytest.mark.parametrize("padding", PADDINGS)
def test_multilinear_matches_map_coordinates_with_channels(backend, rng, padding):
    """Order-1 scipy.ndimage.map_coordinates (per channel) for every padding."""
    img = rng.normal(size=(4, 5, 6, 2))  # (H, W, D, channels)
    coords = rng.uniform(-3, 8, size=(7, 3))
    out = backend.to_numpy(softops.lookup(backend.asarray(img), backend.asarray(coords), axis=(0, 1, 2), padding=padding))
    expected = np.stack(
        [scipy.ndimage.map_coordinates(img[..., c], coords.T, order=1, mode=SCIPY_MODE[padding]) for c in range(2)],
        axis=-1,
    )
    np.testing.assert_allclose(out, expected, atol=1e-12)


# --- padding at and past both ends --------------------------------------------------------

ENDS = [-1.5, -0.5, 0.0, 3.0, 3.5, 4.5]


@pytest.mark.parametrize(
    "padding, expected",
    [
        ("clamp", [1, 1, 1, 4, 4, 4]),
        ("zeros", [0, 0.5, 1, 4, 2, 0]),
        ("wrap", [3.5, 2.5, 1, 4, 2.5, 1.5]),  # a[-1] = a[3]
        ("reflect", [2.5, 1.5, 1, 4, 3.5, 2.5]),  # a[-1] = a[1], a[4] = a[2]
    ],
)
def test_padding_at_and_past_both_ends(backend, padding, expected):
    a = backend.asarray([1.0, 2.0, 3.0, 4.0])
    out = softops.lookup(a, backend.asarray(ENDS), padding=padding)
    np.testing.assert_allclose(backend.to_numpy(out), expected, rtol=1e-15)
    w = backend.to_numpy(softops.soft_index(backend.asarray(ENDS), 4, padding=padding))
    np.testing.assert_allclose(w @ [1.0, 2.0, 3.0, 4.0], expected, rtol=1e-15)


def test_index_gradient_at_the_ends(diff_backend):
    """One-sided (floor, floor+1) slope at integers; clamp is flat outside."""
    a = np.array([1.0, 2.0, 4.0, 8.0])
    for padding, expected in [
        ("clamp", [0, 0, 1, 0, 0, 0]),
        ("zeros", [0, 1, 1, -8, -8, 0]),
        ("wrap", [4, -7, 1, -7, -7, 1]),
        ("reflect", [-2, -1, 1, -4, -4, -2]),
    ]:
        f = lambda i: softops.lookup(diff_backend.asarray(a), i, padding=padding)
        got = np.array([diff_backend.vjp(f, np.array(x), np.array(1.0)) for x in ENDS])
        np.testing.assert_allclose(got, expected, atol=1e-15, err_msg=padding)


# --- cubic (Keys 1981) -------------------------------------------------------------------


def test_keys_weights_closed_form(backend):
    """Keys 1981 with a = -1/2 at t = 1/2: (-1, 9, 9, -1) / 16."""
    w = softops.soft_index(backend.asarray(3.5), 8, kernel="cubic")
    np.testing.assert_allclose(backend.to_numpy(w), np.array([0, 0, -1, 9, 9, -1, 0, 0]) / 16, rtol=1e-15)


@pytest.mark.parametrize("padding", PADDINGS)
def test_cubic_reproduces_quadratics(backend, rng, padding):
    """Keys 1981, sec. III: the a = -1/2 kernel is exact for polynomials of degree <= 2."""
    n = 9
    q = lambda x: 0.7 * x**2 - 3.0 * x + 2.0
    x = rng.uniform(1, n - 2, size=20)  # every tap inside: padding does not matter
    out = softops.lookup(backend.asarray(q(np.arange(n))), backend.asarray(x), mode="cubic", padding=padding)
    np.testing.assert_allclose(backend.to_numpy(out), q(x), rtol=1e-12)


def test_cubic_interpolates_and_is_c1(diff_backend, rng):
    a = rng.normal(size=7)
    at_ints = softops.lookup(diff_backend.asarray(a), diff_backend.asarray(np.arange(7.0)), mode="cubic")
    np.testing.assert_allclose(diff_backend.to_numpy(at_ints), a, rtol=1e-14)
    f = lambda i: softops.lookup(diff_backend.asarray(a), i, mode="cubic")
    for k in range(1, 6):
        left = diff_backend.vjp(f, np.array(k - 1e-9), np.array(1.0))
        right = diff_backend.vjp(f, np.array(k + 1e-9), np.array(1.0))
        np.testing.assert_allclose(left, right, atol=1e-7)


# --- nearest and hard ----------------------------------------------------------------------


def test_nearest_and_hard(diff_backend, rng):
    a = rng.normal(size=6)
    x = np.array([0.2, 1.49, 1.51, 4.9, -3.0, 9.0])
    near = diff_backend.to_numpy(softops.lookup(diff_backend.asarray(a), diff_backend.asarray(x), mode="nearest"))
    np.testing.assert_array_equal(near, a[np.clip(np.floor(x + 0.5), 0, 5).astype(int)])
    for mode in ["linear", "cubic"]:
        hard = lambda i: softops.lookup(diff_backend.asarray(a), i, mode=mode, hard=True)
        soft = lambda i: softops.lookup(diff_backend.asarray(a), i, mode=mode)
        np.testing.assert_array_equal(diff_backend.to_numpy(hard(diff_backend.asarray(x))), near)
        cot = np.ones_like(x)
        np.testing.assert_allclose(diff_backend.vjp(hard, x, cot), diff_backend.vjp(soft, x, cot), rtol=1e-15)


def test_integer_index_reads_exactly(backend, rng):
    a = rng.normal(size=(3, 5))
    i = np.array([[4, 0, -1], [2, 7, 3]])
    out = softops.lookup(backend.asarray(a), backend.asarray(i, "int64"), axis=1, padding="wrap")
    np.testing.assert_array_equal(backend.to_numpy(out), np.take(a, i, axis=1, mode="wrap"))
    w = softops.soft_index(backend.asarray(i, "int64"), 5, padding="zeros")
    np.testing.assert_array_equal(backend.to_numpy(w), np.eye(6)[np.where((i >= 0) & (i < 5), i, 5)][..., :5])


# --- lookup_along_axis ------------------------------------------------------------------


def test_lookup_along_axis(backend, rng):
    arr = rng.normal(size=(3, 1, 6))
    idx = rng.uniform(-1, 6, size=(1, 4, 2))
    out = backend.to_numpy(softops.lookup_along_axis(backend.asarray(arr), backend.asarray(idx), axis=-1, mode="cubic"))
    assert out.shape == (3, 4, 2)
    for b in range(3):
        for r in range(4):
            row = softops.lookup(arr[b, 0], idx[0, r], mode="cubic")
            np.testing.assert_allclose(out[b, r], row, rtol=1e-14)
    ints = rng.integers(0, 6, size=(3, 1, 4))
    exact = softops.lookup_along_axis(backend.asarray(arr), backend.asarray(ints, "int64"), axis=2)
    np.testing.assert_array_equal(backend.to_numpy(exact), np.take_along_axis(arr, ints, axis=2))


# --- writes ---------------------------------------------------------------------------------


def test_assign_exact_and_soft_assign_one_hot(backend, rng):
    arr = rng.normal(size=(4, 3))
    value = rng.normal(size=(2, 3))
    i = np.array([3, 1])
    expected = arr.copy()
    expected[i] = value
    a, v = backend.asarray(arr), backend.asarray(value)
    out = softops.assign(a, backend.asarray(i, "int64"), v)
    np.testing.assert_array_equal(backend.to_numpy(out), expected)
    np.testing.assert_array_equal(backend.to_numpy(softops.assign(a, backend.asarray(i + 0.3), v)), expected)
    soft = softops.soft_assign(a, backend.asarray(np.eye(4)[i]), v)
    np.testing.assert_array_equal(backend.to_numpy(soft), expected)
    np.testing.assert_array_equal(backend.to_numpy(a), arr)  # nothing mutated
    np.testing.assert_array_equal(backend.to_numpy(v), value)


def test_assign_nd_repeats_and_dropped_writes(backend):
    arr = np.zeros((3, 4, 2))
    coords = np.array([[0, 1], [2, 3], [0, 1], [5, 0]])
    value = np.array([[1.0], [2.0], [3.0], [4.0]])  # broadcast over the channels
    out = softops.assign(backend.asarray(arr), backend.asarray(coords, "int64"), backend.asarray(value), axis=(0, 1), padding="zeros")
    expected = arr.copy()
    expected[0, 1], expected[2, 3] = 3.0, 2.0  # last write wins; (5, 0) is dropped
    np.testing.assert_array_equal(backend.to_numpy(out), expected)


def test_assign_linear_splats(backend):
    out = softops.assign(backend.asarray(np.ones(4)), backend.asarray(1.25), backend.asarray(9.0), mode="linear")
    np.testing.assert_allclose(backend.to_numpy(out), [1, 0.25 + 6.75, 0.75 + 2.25, 1], rtol=1e-15)
    grid = softops.assign(backend.asarray(np.zeros((2, 3))), backend.asarray([0.5, 1.0]), backend.asarray(4.0), axis=(0, 1), mode="linear")
    np.testing.assert_allclose(backend.to_numpy(grid), [[0, 2, 0], [0, 2, 0]], rtol=1e-15)


def test_multi_head_soft_assign_and_scatter_add(backend, rng):
    arr = rng.normal(size=(5, 2))
    w = rng.dirichlet(np.ones(5), size=3)
    value = rng.normal(size=(3, 2))
    erase = rng.uniform(size=(3, 2))
    out = softops.soft_assign(backend.asarray(arr), backend.asarray(w), backend.asarray(value), erase=backend.asarray(erase))
    keep = np.prod(1 - w[:, :, None] * erase[:, None, :], axis=0)
    np.testing.assert_allclose(backend.to_numpy(out), arr * keep + w.T @ value, rtol=1e-13)
    i = np.array([1, 4, 1])
    added = softops.soft_scatter_add(backend.asarray(arr), backend.asarray(np.eye(5)[i]), backend.asarray(value))
    expected = arr.copy()
    np.add.at(expected, i, value)
    np.testing.assert_allclose(backend.to_numpy(added), expected, rtol=1e-15)


# --- gradients against finite differences (float64) ---------------------------------------


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_lookup_gradients(diff_backend, rng, mode, padding):
    arr = rng.normal(size=(5, 4, 2))
    idx = away_from_integers(rng.uniform(-2.5, 6.5, size=(3, 2)))
    check_gradient(diff_backend, lambda h: lambda a: softops.lookup(a, h.asarray(idx), axis=(0, 1), mode=mode, padding=padding), arr)
    check_gradient(diff_backend, lambda h: lambda i: softops.lookup(h.asarray(arr), i, axis=(0, 1), mode=mode, padding=padding), idx)
    idx1 = away_from_integers(rng.uniform(-2.5, 6.5, size=(2, 4)))
    check_gradient(diff_backend, lambda h: lambda i: softops.lookup_along_axis(h.asarray(arr[..., 0]), i, axis=0, mode=mode, padding=padding), idx1)


@pytest.mark.parametrize("kernel", ["gaussian", "laplace", "linear", "cubic"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_soft_index_gradients(diff_backend, rng, kernel, padding):
    x = away_from_integers(rng.uniform(-3, 7, size=6))
    check_gradient(diff_backend, lambda h: lambda i: softops.soft_index(i, 5, kernel=kernel, bandwidth=0.8, padding=padding), x)


@pytest.mark.parametrize("bandwidth", [0.3, 3.0])
def test_gradient_with_respect_to_bandwidth(diff_backend, bandwidth):
    x = np.array([-1.3, 0.4, 2.7, 3.6, 5.2, 9.9])
    for padding in PADDINGS:
        make = lambda h: lambda b: softops.soft_index(h.asarray(x), 5, kernel="gaussian", bandwidth=b[()], padding=padding)
        check_gradient(diff_backend, make, np.array(bandwidth))


def test_gaussian_gradient_pulls_across_the_array(diff_backend):
    """Linear weights only see the neighbours; a Gaussian sees the far target."""
    target = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    for kernel, sign in [("linear", 0), ("gaussian", 1)]:
        f = lambda i: softops.soft_take(diff_backend.asarray(target), softops.soft_index(i, 6, kernel=kernel, bandwidth=2.0))
        assert np.sign(diff_backend.vjp(f, np.array(0.4), np.array(1.0))) == sign


def test_write_and_take_gradients(diff_backend, rng):
    arr = rng.normal(size=(5, 3))
    w = rng.dirichlet(np.ones(5), size=2)
    value = rng.normal(size=(2, 3))
    erase = rng.uniform(size=(2, 1))
    h = diff_backend
    ops = {
        "take": lambda H, a, w, v, e: softops.soft_take(a, w),
        "assign": lambda H, a, w, v, e: softops.soft_assign(a, w, v, erase=e),
        "scatter": lambda H, a, w, v, e: softops.soft_scatter_add(a, w, v),
    }
    args = [arr, w, value, erase]
    for name, op in ops.items():
        for k in range(4 if name == "assign" else 3 if name == "scatter" else 2):
            def make(H, k=k, op=op):
                def f(x):
                    full = [H.asarray(a) for a in args]
                    full[k] = x
                    return op(H, *full)
                return f
            check_gradient(h, make, args[k])
    idx = away_from_integers(rng.uniform(-1, 5, size=(2, 2)))
    grid = rng.normal(size=(4, 5, 2))
    slot = rng.normal(size=(2, 2))
    check_gradient(h, lambda H: lambda i: softops.assign(H.asarray(grid), i, H.asarray(slot), axis=(0, 1), mode="linear"), idx)
    check_gradient(h, lambda H: lambda v: softops.assign(H.asarray(grid), H.asarray(idx), v, axis=(0, 1)), slot)
    # The exact write: zero gradient where overwritten.
    g = h.vjp(lambda a: softops.assign(a, h.asarray([1, 3], "int64"), h.asarray(value)), arr, np.ones((5, 3)))
    np.testing.assert_array_equal(g, np.array([1, 0, 1, 0, 1.0])[:, None] * np.ones(3))


# --- invariants (hypothesis) -------------------------------------------------------------------

values = st.lists(st.floats(-100, 100, allow_subnormal=False), min_size=1, max_size=8).map(np.array)


@given(a=values, data=st.data())
def test_linear_lookup_invariants(backend, a, data):
    n = len(a)
    i = data.draw(st.integers(0, n - 1))
    t = data.draw(st.floats(0, 1))
    exact = softops.lookup(backend.asarray(a), backend.asarray(float(i)))
    assert backend.to_numpy(exact) == a[i]  # integer positions read exactly
    x = min(i + t, n - 1.0)
    out = backend.to_numpy(softops.lookup(backend.asarray(a), backend.asarray(x)))
    lo, hi = sorted([a[i], a[min(i + 1, n - 1)]])
    assert lo - 1e-12 <= out <= hi + 1e-12


@settings(max_examples=20)
@given(
    x=st.lists(st.floats(-50, 50), min_size=6, max_size=6).map(np.array),
    n=st.sampled_from([1, 2, 5]),
    kernel=st.sampled_from(["linear", "cubic", "gaussian", "laplace", "nearest"]),
    padding=st.sampled_from(["clamp", "wrap", "reflect"]),
    bandwidth=st.floats(0.05, 20),
)
def test_soft_index_rows_sum_to_one(backend, x, n, kernel, padding, bandwidth):
    w = backend.to_numpy(softops.soft_index(backend.asarray(x), n, kernel=kernel, bandwidth=bandwidth, padding=padding))
    assert w.shape == x.shape + (n,)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    if kernel in ("gaussian", "laplace", "linear", "nearest"):
        assert (w >= 0).all()


@settings(max_examples=20)
@given(
    x=st.lists(st.floats(-20, 20), min_size=4, max_size=4).map(np.array),
    mode=st.sampled_from(["linear", "cubic", "nearest"]),
    padding=st.sampled_from(PADDINGS),
)
def test_lookup_equals_soft_take_of_soft_index(backend, x, mode, padding):
    a = np.array([3.0, -1.0, 4.0, 1.0, -5.0])
    w = softops.soft_index(backend.asarray(x), 5, kernel=mode, padding=padding)
    via_take = softops.soft_take(backend.asarray(a), w)
    direct = softops.lookup(backend.asarray(a), backend.asarray(x), mode=mode, padding=padding)
    np.testing.assert_allclose(backend.to_numpy(via_take), backend.to_numpy(direct), atol=1e-12)


def test_zeros_padding_gaussian_interior_rows_sum_to_one(backend):
    x = np.array([200.3, 180.0, 221.7])
    for b in [0.2, 0.5, 0.7, 3.0]:
        w = backend.to_numpy(softops.soft_index(backend.asarray(x), 400, kernel="gaussian", bandwidth=b, padding="zeros"))
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
        wl = backend.to_numpy(softops.soft_index(backend.asarray(x), 400, kernel="laplace", bandwidth=b, padding="zeros"))
        np.testing.assert_allclose(wl.sum(-1), 1.0, rtol=1e-12)


# --- hostile inputs, precision -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hostile_indices_stay_finite(diff_backend, dtype):
    """Values and gradients stay finite for any finite index (float32: forward)."""
    h = diff_backend
    x = np.array([-1e30, -3e9, 1e-30, 4.0, 7e9, 1e30])  # the shape of the gradient tests
    a = np.arange(5.0)
    ops = [
        lambda i, p: softops.lookup(h.asarray(a, dtype), i, mode="cubic", padding=p),
        lambda i, p: softops.lookup(h.asarray(a, dtype), i, mode="nearest", padding=p),
    ] + [
        lambda i, p, k=k, b=b: softops.soft_index(i, 5, kernel=k, bandwidth=b, padding=p)
        for k, b in [("gaussian", 1e-3), ("gaussian", 1e3), ("laplace", 1e-3)]
    ]
    for padding in PADDINGS:
        for op in ops if dtype == "float64" else ops[0:3:2]:
            f = lambda i: op(i, padding)
            out = f(h.asarray(x, dtype))
            assert np.isfinite(h.to_numpy(out)).all()
            if dtype == "float64" and op is not ops[1]:
                assert np.isfinite(h.vjp(f, x, np.ones(out.shape))).all()


def _forward_mode(h, f, x, dtype):
    """``(value, tangent)`` of ``f`` at ``x`` along ones, in the framework's
    forward mode (None where the harness has none here)."""
    if h.name == "torch":
        import torch

        xt = h.asarray(x, dtype)
        return tuple(h.to_numpy(a) for a in torch.func.jvp(f, (xt,), (torch.ones_like(xt),)))
    if h.name == "jax":
        import jax

        xj = h.asarray(x, dtype)
        return tuple(h.to_numpy(a) for a in jax.jvp(f, (xj,), (h.xp.ones_like(xj),)))
    return None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_index_gradient_near_the_float_maximum(diff_backend, rng, dtype, mode, padding):
    """Audit R11: with samples near the dtype's maximum, the derivative in the
    index is the true one (the same read of the samples scaled by 2^-20, in
    float64, times 2^20) wherever that fits the dtype; beyond, it saturates at
    +- the largest finite number (reverse mode) or is +-inf (forward mode); never NaN, in reverse and forward mode, for
    1-D, 2-D and batched reads.  (The autodiff of sum_c w_c(t) a_c met
    overflowed terms as inf - inf.)"""
    h = diff_backend
    big = float(np.finfo(dtype).max)
    scale = 2.0**20
    a1 = rng.choice([-1.0, 1.0], size=9) * rng.uniform(0.3, 1.0, size=9) * big
    a1[:5] = np.array([1.0, 1.0, 1.0, -1.0, 1.0]) * 0.99 * big  # a cubic read at 1.5 overshoots the maximum
    a1 = a1.astype(dtype).astype(np.float64)
    a2 = (rng.choice([-1.0, 1.0], size=(5, 6)) * rng.uniform(0.3, 1.0, size=(5, 6)) * big).astype(dtype)
    a2 = a2.astype(np.float64)
    i1 = np.array([0.5, 1.25, 1.5, 2.0, 2.5, 3.75, 5.5, 6.9, 7.0, -0.4, 8.6])
    i2 = np.array([[0.5, 1.25], [2.0, 2.5], [3.75, 0.5], [1.1, 4.6], [3.0, 3.0]])
    reads = [
        (lambda a: (lambda i: softops.lookup(a, i, mode=mode, padding=padding)), a1, i1),
        (lambda a: (lambda i: softops.lookup(a, i, axis=(0, 1), mode=mode, padding=padding)), a2, i2),
        (lambda a: (lambda i: softops.lookup_along_axis(a, i, mode=mode, padding=padding)),
         np.stack([a1, -a1]), np.stack([i1, i1[::-1]])),
    ]
    tol = 8 * float(np.finfo(dtype).eps)
    for make, a, index in reads:
        f = make(h.asarray(a, dtype))
        out = f(h.asarray(index, dtype))
        got = h.vjp(f, index, np.ones(out.shape), dtype)
        want = h.vjp(make(h.asarray(a / scale)), index, np.ones(out.shape)) * scale
        fits = np.abs(want) < big
        np.testing.assert_allclose(got[fits], want[fits], rtol=tol, atol=tol * big)
        beyond = np.abs(want) > (1 + 4 * tol) * big
        np.testing.assert_array_equal(got[beyond], np.sign(want[beyond]) * big)
        value = h.to_numpy(out)
        forward = _forward_mode(h, f, index, dtype)
        if forward is not None:
            np.testing.assert_array_equal(forward[0], value)  # an overflowed read stays +-inf, never NaN
        if forward is not None and index.ndim == 1:
            np.testing.assert_allclose(forward[1][fits], want[fits], rtol=tol, atol=tol * big)
            # beyond the range: +-inf in forward mode (+- the largest number in reverse mode)
            assert np.all(np.sign(forward[1][beyond]) == np.sign(want[beyond])), forward[1][beyond]
            assert np.all(np.abs(forward[1][beyond]) >= big), forward[1][beyond]
        value_want = h.to_numpy(make(h.asarray(a / scale))(h.asarray(index))) * scale
        finite = np.abs(value_want) < big
        np.testing.assert_allclose(value[finite], value_want[finite], rtol=tol, atol=tol * big)
        over = np.abs(value_want) > (1 + 4 * tol) * big
        np.testing.assert_array_equal(value[over], np.sign(value_want[over]) * np.inf)


@pytest.mark.parametrize("padding", PADDINGS)
def test_non_finite_index(backend, padding):
    """NaN reads NaN in every mode; +-inf reads the far value for clamp/zeros and
    NaN for the periodic paddings (no place on the circle); NaN writes nothing."""
    a = backend.asarray(np.arange(1.0, 5.0))
    x = backend.asarray([np.nan, np.inf, -np.inf, 1.5])
    far = [4.0, 1.0] if padding == "clamp" else [0.0, 0.0] if padding == "zeros" else [np.nan, np.nan]
    for mode in ["linear", "cubic", "nearest"]:
        for hard in [False, True]:
            got = backend.to_numpy(softops.lookup(a, x, mode=mode, padding=padding, hard=hard))
            np.testing.assert_array_equal(got[:3], [np.nan] + far)
    w = backend.to_numpy(softops.soft_index(x, 4, kernel="gaussian", padding=padding))
    assert np.isnan(w[0]).all() and np.isfinite(w[3]).all()
    out = softops.assign(a, backend.asarray([np.nan, 2.0]), backend.asarray(9.0), padding=padding)
    np.testing.assert_array_equal(backend.to_numpy(out), [1, 2, 9, 4])


def test_half_precision(backend, rng):
    arr = rng.normal(size=(6, 3))
    x = rng.uniform(-1, 6, size=4)
    dtypes = ["float16", "bfloat16"] if backend.has_bfloat16 else ["float16"]
    expected = softops.lookup(arr, x, mode="cubic")
    for dtype in dtypes:
        out = softops.lookup(backend.asarray(arr, dtype), backend.asarray(x, dtype), mode="cubic")
        assert out.dtype == backend.dtype(dtype)
        np.testing.assert_allclose(backend.to_numpy(out), expected, atol=0.1)


# --- bad arguments ------------------------------------------------------------------------------


def test_bad_arguments(backend):
    a = backend.asarray(np.zeros((3, 4)))
    i = backend.asarray([0.5, 1.5])
    cases = [
        (lambda: softops.lookup(a, backend.asarray([[0.5, 1, 2]]), axis=(0, 1)), ValueError, "trailing dimension of size 2"),
        (lambda: softops.soft_take(a, backend.asarray(np.ones((2, 4))), axis=0), ValueError, "weights must end"),
        (lambda: softops.soft_assign(a, backend.asarray(np.ones(4)), backend.asarray(1.0)), ValueError, "weights must end"),
        (lambda: softops.lookup(a, i, mode="quadratic"), ValueError, "mode must be one of"),
        (lambda: softops.soft_index(i, 4, kernel="box"), ValueError, "kernel must be one of"),
        (lambda: softops.lookup(a, i, padding="edge"), ValueError, "padding must be one of"),
        (lambda: softops.soft_index(i, 4, kernel="gaussian", bandwidth=0.0), ValueError, "bandwidth must be finite and > 0"),
        (lambda: softops.soft_index(i, 4, bandwidth=-1.0), ValueError, "bandwidth"),
        (lambda: softops.soft_index(i, 0), ValueError, "size must be a positive int"),
        (lambda: softops.assign(a, i, backend.asarray(np.ones((3, 3)))), ValueError, "value of shape"),
        (lambda: softops.soft_assign(a, backend.asarray(np.ones(3)), backend.asarray(np.ones(5))), ValueError, "value of shape"),
        (lambda: softops.lookup(a, i, axis=2), ValueError, "axis=2 is out of range"),
        (lambda: softops.lookup(a, i, hard=1), TypeError, "hard must be True or False"),
        (lambda: softops.lookup(a, "0.5"), TypeError, "index must be an array"),
        (lambda: softops.lookup(a, backend.asarray([True], "bool")), TypeError, "index must have an integer or real floating"),
        (lambda: softops.lookup(backend.asarray([1, 2], "int64"), i), TypeError, "arr must have a real floating"),
        (lambda: softops.lookup_along_axis(a, i), ValueError, "as many dimensions as arr"),
        (lambda: softops.lookup_along_axis(a, backend.asarray(np.ones((2, 1)))), ValueError, "do not broadcast"),
        (lambda: softops.assign(a, i, 1.0, mode="cubic"), ValueError, "mode must be one of"),
        (lambda: softops.lookup(np.zeros((0, 3)) if backend.name == "numpy" else backend.asarray(np.zeros((0, 3))), i), ValueError, "length 0"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


# --- jit, vmap, torch.compile -----------------------------------------------------------------


def test_jit_and_vmap(backend, rng):
    arr = rng.normal(size=(5, 3))
    x = rng.uniform(-1, 5, size=(4, 2))
    f = lambda i: softops.lookup(backend.asarray(arr), i, mode="cubic", padding="reflect", hard=True)
    expected = softops.lookup(arr, x, mode="cubic", padding="reflect", hard=True)
    np.testing.assert_allclose(backend.to_numpy(backend.jit(f)(backend.asarray(x))), expected, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(backend.vmap(f)(backend.asarray(x))), expected, rtol=1e-12)
    w = lambda i: softops.soft_assign(backend.asarray(arr), softops.soft_index(i, 5, kernel="gaussian", padding="zeros"), backend.asarray(np.ones(3)))
    expected = softops.soft_assign(arr, softops.soft_index(x[0], 5, kernel="gaussian", padding="zeros"), np.ones(3))
    np.testing.assert_allclose(backend.to_numpy(backend.jit(w)(backend.asarray(x[0]))), expected, rtol=1e-12)
    g = lambda i: softops.assign(backend.asarray(arr), i, backend.asarray(np.ones(3)))
    expected = softops.assign(arr, x[0], np.ones(3))
    np.testing.assert_allclose(backend.to_numpy(backend.jit(g)(backend.asarray(x[0]))), expected, rtol=1e-12)


def test_torch_compile_inductor_fwd_bwd(rng):
    torch = pytest.importorskip("torch")
    arr = torch.tensor(rng.normal(size=(6, 2)), requires_grad=True)
    x = torch.tensor([0.3, 2.7, 5.5], requires_grad=True, dtype=torch.float64)

    def loss(a, i):
        return (softops.lookup(a, i, mode="cubic", padding="wrap") ** 2).sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True)
    compiled(arr, x).backward()
    ga, gx = arr.grad.clone(), x.grad.clone()
    arr.grad, x.grad = None, None
    loss(arr, x).backward()
    torch.testing.assert_close(ga, arr.grad)
    torch.testing.assert_close(gx, x.grad)


def test_result_layout_matches_numpy(backend, rng):
    """Shaped like numpy.take for one axis; for adjacent axes like arr[:, i, j]."""
    arr = rng.normal(size=(2, 3, 4, 5))
    i = rng.integers(0, 3, size=(6, 7))
    j = rng.integers(0, 4, size=(6, 7))
    one = softops.lookup(backend.asarray(arr), backend.asarray(i, "int64"), axis=-3)
    np.testing.assert_array_equal(backend.to_numpy(one), np.take(arr, i, axis=1))
    both = softops.lookup(backend.asarray(arr), backend.asarray(np.stack([i, j], -1), "int64"), axis=(1, 2))
    np.testing.assert_array_equal(backend.to_numpy(both), arr[:, i, j])
    fractional = softops.lookup(backend.asarray(arr), backend.asarray(np.stack([i, j], -1) * 1.0), axis=(1, 2), mode="cubic")
    np.testing.assert_allclose(backend.to_numpy(fractional), arr[:, i, j], rtol=1e-14)


@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
@pytest.mark.parametrize("bandwidth", [1e-30, 1e-200, 2.2250738585072014e-308, 5e-324])
def test_tiny_bandwidths_give_the_nearest_limit(diff_backend, kernel, bandwidth):
    """As the bandwidth goes to 0 the weights are one-hot at the nearest sample
    (0.5 / 0.5 at a midpoint), in every dtype and padding, with finite or
    infinite but never NaN gradients (the derivative at a midpoint diverges)."""
    x = np.array([0.3, 2.5, 3.9])
    want = np.zeros((3, 5))
    want[0, 0], want[1, 2], want[1, 3], want[2, 4] = 1.0, 0.5, 0.5, 1.0
    for dtype in ("float32", "float64"):
        for padding in PADDINGS:
            f = lambda i: softops.soft_index(i, 5, kernel=kernel, bandwidth=bandwidth, padding=padding)
            got = diff_backend.to_numpy(f(diff_backend.asarray(x, dtype)))
            np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"{dtype} {padding}")
            g = diff_backend.vjp(f, x, np.arange(15.0).reshape(3, 5), dtype)
            assert not np.isnan(g).any(), (dtype, padding, g)
            np.testing.assert_array_equal(g[[0, 2]], 0.0)


def test_nan_index_writes_nothing_in_linear_mode(diff_backend):
    arr = np.arange(10.0).reshape(5, 2)
    index = np.array([np.nan, 1.5])
    value = diff_backend.asarray(np.ones((2, 2)))
    got = diff_backend.to_numpy(softops.assign(diff_backend.asarray(arr), diff_backend.asarray(index), value, mode="linear"))
    want = arr.copy()
    want[1:3] = 0.5 * arr[1:3] + 0.5
    np.testing.assert_allclose(got, want, rtol=1e-12)
    g = diff_backend.vjp(lambda i: softops.assign(diff_backend.asarray(arr), i, value, mode="linear"), index,
                         np.ones((5, 2)))
    assert np.isfinite(g[1]) and g[0] == 0.0


@pytest.mark.parametrize("kernel", ["gaussian"])
def test_clamped_end_samples_take_the_inside_derivative(diff_backend, kernel):
    """Reading exactly the first or last sample (clamp padding): the gradient
    is the one-sided derivative from inside the axis, in every framework
    (audit R19: JAX gave half of PyTorch's there).  (Laplace has a kink at
    every sample; there both frameworks take the mean of the two sides, see
    test_laplace_kinks_agree_across_frameworks.)"""
    arr = np.array([0.0, 1.0, 3.0, 2.0, 5.0])

    def read(i, xp_arr):
        return softops.soft_take(xp_arr, softops.soft_index(i, 5, kernel=kernel, bandwidth=0.8))

    for x0, side in ((4.0, -1.0), (0.0, 1.0)):
        g = diff_backend.vjp(lambda i: read(i, diff_backend.asarray(arr)), np.array(x0), np.array(1.0))
        h = 1e-7
        value = lambda v: float(diff_backend.to_numpy(read(diff_backend.asarray(np.array(v)), diff_backend.asarray(arr))))
        want = (value(x0 + side * h) - value(x0)) / (side * h)
        np.testing.assert_allclose(g, want, rtol=1e-5)


def test_laplace_kinks_agree_across_frameworks():
    """At a sample (Laplace's kink) every framework returns the same gradient."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)  # as the test harness does
    arr = np.array([0.0, 1.0, 3.0, 2.0, 5.0])
    for padding in PADDINGS:
        for x0 in (0.0, 2.0, 4.0):
            t = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
            softops.soft_take(torch.tensor(arr), softops.soft_index(t, 5, kernel="laplace", bandwidth=0.8,
                                                                     padding=padding)).backward()
            g = jax.grad(lambda v: softops.soft_take(jnp.asarray(arr), softops.soft_index(
                v, 5, kernel="laplace", bandwidth=0.8, padding=padding)))(jnp.asarray(x0, jnp.float64))
            np.testing.assert_allclose(float(g), t.grad.item(), rtol=1e-9, atol=1e-12, err_msg=f"{padding} {x0}")
