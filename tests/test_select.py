"""argmax_weights, soft_argmax/argmin, soft_max/min on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import softops
from harness import finite_difference_vjp

METHODS = ["softmax", "sparsemax", "entmax15"]
ALL_WEIGHT_METHODS = METHODS + ["gumbel"]
MAX_METHODS = METHODS + ["logsumexp"]
POINT = [-2.0, 0.0, 0.5]


def method_kwargs(method, seed=7):
    return {"method": method, "key": seed} if method == "gumbel" else {"method": method}


# --- published values ------------------------------------------------------------


@pytest.mark.parametrize(
    "method, expected",
    [
        # softmax: closed form exp(x) / sum exp(x).
        ("softmax", [0.0486, 0.3592, 0.5922]),
        # Martins & Astudillo 2016, sparsemax; Peters et al. 2019, 1.5-entmax: the
        # values of the entmax package's README example at this point.
        ("sparsemax", [0.0, 0.25, 0.75]),
        ("entmax15", [0.0, 0.3260, 0.6740]),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_published_values(backend, method, expected, dtype):
    w = softops.argmax_weights(backend.asarray(POINT, dtype), method=method)
    np.testing.assert_allclose(backend.to_numpy(w), expected, atol=5e-5)


def test_softmax_closed_form(backend, rng):
    x = rng.normal(size=(4, 7)) * 3
    w = softops.argmax_weights(backend.asarray(x), temperature=0.7)
    e = np.exp(x / 0.7)
    np.testing.assert_allclose(backend.to_numpy(w), e / e.sum(-1, keepdims=True), rtol=1e-12)


def test_sparsemax_jacobian_published(diff_backend):
    """Martins & Astudillo 2016, eq. 12: J = diag(s) - s s^T / |S| at [-2, 0, 0.5]."""
    f = lambda t: softops.argmax_weights(t, method="sparsemax")
    rows = [diff_backend.vjp(f, np.array(POINT), e) for e in np.eye(3)]
    np.testing.assert_allclose(
        np.array(rows), [[0, 0, 0], [0, 0.5, -0.5], [0, -0.5, 0.5]], atol=1e-12
    )


def test_entmax15_jacobian_closed_form(diff_backend):
    """Peters et al. 2019, Prop. 1: J = diag(g) - g g^T / sum(g), g = sqrt(p)."""
    f = lambda t: softops.argmax_weights(t, method="entmax15")
    rows = np.array([diff_backend.vjp(f, np.array(POINT), e) for e in np.eye(3)])
    g = np.sqrt([0.0, 0.32600736, 0.67399264])
    np.testing.assert_allclose(rows, np.diag(g) - np.outer(g, g) / g.sum(), atol=1e-6)


def test_entmax15_matches_bisection(backend, rng):
    """Exact sort-based 1.5-entmax against a bisection on tau of sum max(x/2 - tau, 0)^2 = 1."""
    x = rng.normal(size=(6, 9)) * 2
    lo, hi = x.max(-1, keepdims=True) / 2 - 1, x.max(-1, keepdims=True) / 2
    for _ in range(200):
        mid = (lo + hi) / 2
        too_much = (np.clip(x / 2 - mid, 0, None) ** 2).sum(-1, keepdims=True) > 1
        lo, hi = np.where(too_much, mid, lo), np.where(too_much, hi, mid)
    expected = np.clip(x / 2 - lo, 0, None) ** 2
    got = softops.argmax_weights(backend.asarray(x), method="entmax15")
    np.testing.assert_allclose(backend.to_numpy(got), expected, atol=1e-12)


def test_sparsemax_matches_simplex_projection(backend, rng):
    """Sparsemax is the Euclidean projection onto the simplex (scipy SLSQP as oracle)."""
    from scipy.optimize import minimize

    x = rng.normal(size=6)
    res = minimize(
        lambda p: np.sum((p - x) ** 2),
        np.full(6, 1 / 6),
        bounds=[(0, 1)] * 6,
        constraints={"type": "eq", "fun": lambda p: p.sum() - 1},
        method="SLSQP",
        options={"ftol": 1e-14},
    )
    got = softops.argmax_weights(backend.asarray(x), method="sparsemax")
    np.testing.assert_allclose(backend.to_numpy(got), res.x, atol=1e-6)


# --- hard limit and ties ----------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_zero_temperature_limit_is_exact(backend, rng, method):
    x = rng.normal(size=(5, 8))
    t = 1e-9
    bx = backend.asarray(x)
    assert np.array_equal(backend.to_numpy(softops.soft_argmax(bx, temperature=t, method=method)), x.argmax(-1))
    assert np.array_equal(backend.to_numpy(softops.soft_argmin(bx, temperature=t, method=method)), x.argmin(-1))
    assert np.array_equal(backend.to_numpy(softops.soft_max(bx, temperature=t, method=method)), x.max(-1))
    assert np.array_equal(backend.to_numpy(softops.soft_min(bx, temperature=t, method=method)), x.min(-1))
    one_hot = np.eye(8)[x.argmax(-1)]
    assert np.array_equal(backend.to_numpy(softops.argmax_weights(bx, temperature=t, method=method)), one_hot)


def test_logsumexp_limit_and_bound(backend, rng):
    x = rng.normal(size=(5, 8))
    bx = backend.asarray(x)
    for t in (1e-9, 0.3, 2.0):
        v = backend.to_numpy(softops.soft_max(bx, temperature=t, method="logsumexp"))
        np.testing.assert_allclose(v, t * np.log(np.exp(x / t - x.max(-1, keepdims=True) / t).sum(-1)) + x.max(-1), rtol=1e-12)
        assert np.all(v >= x.max(-1)) and np.all(v <= x.max(-1) + t * np.log(8) + 1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_ties_give_mean_index(backend, method):
    x = backend.asarray([0.0, 0.0, 0.0, 0.0])
    for t in (1e-9, 1.0):
        assert backend.to_numpy(softops.soft_argmax(x, temperature=t, method=method)) == 1.5
    assert backend.to_numpy(softops.soft_argmax(x, method=method, hard=True)) == 0.0
    y = backend.asarray([1.0, 5.0, 2.0, 5.0])
    assert backend.to_numpy(softops.soft_argmax(y, temperature=1e-9, method=method)) == 2.0
    assert backend.to_numpy(softops.soft_argmax(y, method=method, hard=True)) == 1.0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("method", METHODS)
def test_seed_notebook_failures_are_fixed(backend, dtype, method):
    """Seed 003 returns NaN for [8,8,8,9] and [-11,-12,-12,-12]; the answers are 3 and 0."""
    if dtype == "bfloat16" and not backend.has_bfloat16:
        pytest.skip("NumPy has no bfloat16")
    for values, expected in (([8.0, 8.0, 8.0, 9.0], 3.0), ([-11.0, -12.0, -12.0, -12.0], 0.0)):
        x = backend.asarray(values, dtype)
        assert backend.to_numpy(softops.soft_argmax(x, temperature=1e-3, method=method)) == expected
        soft = backend.to_numpy(softops.soft_argmax(x, method=method))
        assert np.isfinite(soft) and 0 <= soft <= 3


# --- hard=True (straight-through) --------------------------------------------------


@pytest.mark.parametrize("method", ALL_WEIGHT_METHODS)
def test_hard_forward_exact_backward_soft(diff_backend, rng, method):
    x = rng.normal(size=(3, 5))
    kw = method_kwargs(method)
    hard = softops.argmax_weights(diff_backend.asarray(x), hard=True, **kw)
    h = diff_backend.to_numpy(hard)
    assert set(np.unique(h)) <= {0.0, 1.0} and np.all(h.sum(-1) == 1)
    if method != "gumbel":
        assert np.array_equal(h, np.eye(5)[x.argmax(-1)])
    cot = rng.normal(size=(3, 5))
    for op in (softops.argmax_weights, softops.soft_argmax):
        c = cot if op is softops.argmax_weights else cot[:, 0]
        g_hard = diff_backend.vjp(lambda t: op(t, hard=True, **kw), x, c)
        g_soft = diff_backend.vjp(lambda t: op(t, **kw), x, c)
        np.testing.assert_allclose(g_hard, g_soft, rtol=1e-12, atol=1e-15)
    idx = diff_backend.to_numpy(softops.soft_argmax(diff_backend.asarray(x), hard=True, **kw))
    assert np.array_equal(idx, h.argmax(-1))


@pytest.mark.parametrize("method", MAX_METHODS)
def test_hard_soft_max_is_exact_max(diff_backend, rng, method):
    x = rng.normal(size=(3, 5))
    v = softops.soft_max(diff_backend.asarray(x), hard=True, method=method)
    assert np.array_equal(diff_backend.to_numpy(v), x.max(-1))
    c = rng.normal(size=3)
    g_hard = diff_backend.vjp(lambda t: softops.soft_max(t, hard=True, method=method), x, c)
    g_soft = diff_backend.vjp(lambda t: softops.soft_max(t, method=method), x, c)
    np.testing.assert_allclose(g_hard, g_soft, rtol=1e-12)


# --- gradients against finite differences ----------------------------------------

OPS = {
    "argmax_weights": (softops.argmax_weights, ALL_WEIGHT_METHODS),
    "soft_argmax": (softops.soft_argmax, ALL_WEIGHT_METHODS),
    "soft_argmin": (softops.soft_argmin, ALL_WEIGHT_METHODS),
    "soft_max": (softops.soft_max, MAX_METHODS),
    "soft_min": (softops.soft_min, MAX_METHODS),
}
OP_METHOD_CASES = [(name, m) for name, (_, methods) in OPS.items() for m in methods]


@pytest.mark.parametrize("op_name, method", OP_METHOD_CASES)
@pytest.mark.parametrize("axis", [-1, 0, (0, 2)])
def test_gradient_matches_finite_differences(diff_backend, rng, op_name, method, axis):
    op, _ = OPS[op_name]
    x = rng.normal(size=(4, 3, 5))
    kw = dict(method_kwargs(method), axis=axis, temperature=0.8)
    if op_name in ("soft_max", "soft_min"):
        kw.pop("key", None)
    # Differences of the backend's own forward (Gumbel noise is backend-specific).
    f_np = lambda a: diff_backend.to_numpy(op(diff_backend.asarray(a), **kw))
    cot = rng.normal(size=np.shape(f_np(x)))
    expected = finite_difference_vjp(f_np, x, cot)
    got = diff_backend.vjp(lambda t: op(t, **kw), x, cot)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


def test_gradient_with_respect_to_temperature(diff_backend, rng):
    x = rng.normal(size=6)
    for method in MAX_METHODS:
        f = lambda t: softops.soft_max(diff_backend.asarray(x), temperature=t, method=method)
        t0 = np.array(0.7)
        expected = (
            softops.soft_max(x, temperature=0.7 + 1e-6, method=method)
            - softops.soft_max(x, temperature=0.7 - 1e-6, method=method)
        ) / 2e-6
        got = diff_backend.vjp(f, t0, np.array(1.0))
        np.testing.assert_allclose(got, expected, rtol=1e-6)


# --- hostile inputs ---------------------------------------------------------------


def _all_finite(backend, *arrays):
    return all(np.all(np.isfinite(backend.to_numpy(a))) for a in arrays)


HOSTILE = {
    "huge": [1e30, -1e30, 3e29, 0.0],
    "huge_ties": [1e30, 1e30, -1e30, 1e30],
    "constant": [2.5, 2.5, 2.5, 2.5],
    "near_ties": [1.0, 1.0 + 1e-7, 1.0 - 1e-7, 1.0],
    "masked": [-np.inf, 1.0, -np.inf, 0.5],
    "single": [3.0],
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("method", ALL_WEIGHT_METHODS)
@pytest.mark.parametrize("temperature", [1e-6, 1.0, 1e6])
def test_hostile_inputs_stay_finite(backend, case, method, temperature):
    values = np.array(HOSTILE[case])
    for dtype in ["float16", "bfloat16", "float32", "float64"]:
        if dtype == "bfloat16" and not backend.has_bfloat16:
            continue
        if dtype == "float16" and case.startswith("huge"):
            values_d = np.clip(values, -6e4, 6e4)
        else:
            values_d = values
        x = backend.asarray(values_d, dtype)
        kw = dict(method_kwargs(method), temperature=temperature)
        w = softops.argmax_weights(x, **kw)
        idx = softops.soft_argmax(x, **kw)
        assert _all_finite(backend, w, idx), (dtype, backend.to_numpy(w))
        w64 = backend.to_numpy(w)
        np.testing.assert_allclose(w64.sum(), 1.0, atol=1e-2 if dtype in ("float16", "bfloat16") else 1e-5)
        if case == "masked":
            assert w64[0] == 0 and w64[2] == 0
        if method != "gumbel":
            kw.pop("key", None)
            v = backend.to_numpy(softops.soft_max(x, **kw))
            represented = backend.to_numpy(x)
            finite = represented[np.isfinite(represented)]
            assert finite.min() <= v <= finite.max()
        if backend.differentiable and dtype != "float16":
            g = backend.vjp(lambda t: softops.soft_argmax(t, **method_kwargs(method), temperature=temperature), values_d, np.array(1.0), dtype)
            assert np.all(np.isfinite(g)), (dtype, g)
            if case == "masked":
                assert g[0] == 0 and g[2] == 0


@pytest.mark.parametrize("op", ["soft_max", "soft_min", "soft_argmax", "soft_argmin", "argmax_weights"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("temperature", [1e-30, 1e-4])
def test_half_precision_gradients_at_tiny_temperatures(diff_backend, op, method, temperature):
    """Audit R12: float16 / bfloat16 gradients at tiny temperatures on rows with
    ties are the float64 gradient rounded, wherever that fits the dtype (an exact
    0 stays 0; cancellation noise of the float32 computation never becomes an
    infinity), and an infinity of the right sign where it does not."""
    backend = diff_backend
    rows = [[1.0, 1.0, 0.0, -2.0], [2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, -1.0], [0.5, -1.0, 0.5, 3.0],
            [-1.0, 0.0, -1.0, 0.0]]
    weights = np.array([0.0, 1.0, -2.0, 3.0])
    f = getattr(softops, op)

    def fn(t):
        return f(t, method=method, temperature=temperature)

    for dtype in ("float16", "bfloat16"):
        if dtype == "bfloat16" and not backend.has_bfloat16:
            continue
        big = float(np.finfo(np.float16).max) if dtype == "float16" else 3.3e38
        for row in rows:
            x = np.array(row)
            cot = weights if op == "argmax_weights" else np.array(1.0)
            ref = backend.vjp(fn, x, cot, "float64")
            got = backend.vjp(fn, x, cot, dtype).astype(np.float64)
            fits = np.abs(ref) < big
            np.testing.assert_allclose(got[fits], ref[fits], rtol=2e-2, atol=1e-2, err_msg=f"{dtype} {row}")
            assert np.all(got[~fits] == np.sign(ref[~fits]) * np.inf), (dtype, row, got, ref)


@pytest.mark.parametrize("method", MAX_METHODS)
def test_fully_masked_row(backend, method):
    x = backend.asarray([[-np.inf, -np.inf, -np.inf], [1.0, -np.inf, 3.0]])
    w = backend.to_numpy(softops.argmax_weights(x, method=method if method != "logsumexp" else "softmax"))
    np.testing.assert_allclose(w[0], [1 / 3] * 3)
    v = backend.to_numpy(softops.soft_max(x, method=method, temperature=1e-9))
    assert v[0] == -np.inf and v[1] == 3.0
    if backend.differentiable:
        g = backend.vjp(lambda t: softops.soft_max(t, method=method), backend.to_numpy(x), np.ones(2))
        assert np.all(g[0] == 0) and np.all(np.isfinite(g))


def test_half_precision_accuracy(backend, rng):
    """float16/bfloat16 are computed in float32: results match float32 to output precision."""
    x = rng.normal(size=(8, 16)) * 4
    ref = backend.to_numpy(softops.argmax_weights(backend.asarray(x, "float32")))
    for dtype, tol in (("float16", 2e-3), ("bfloat16", 1e-2)):
        if dtype == "bfloat16" and not backend.has_bfloat16:
            continue
        half_input = backend.to_numpy(backend.asarray(x, dtype))
        ref = backend.to_numpy(softops.argmax_weights(backend.asarray(half_input, "float32")))
        got = backend.to_numpy(softops.argmax_weights(backend.asarray(x, dtype)))
        np.testing.assert_allclose(got, ref, atol=tol)


# --- axes, shapes, spatial soft-argmax ---------------------------------------------


def test_axis_moves_like_numpy(backend, rng):
    x = rng.normal(size=(2, 3, 4))
    for axis in (0, 1, 2, -1, -2):
        w = backend.to_numpy(softops.argmax_weights(backend.asarray(x), axis=axis))
        ref = np.exp(x) / np.exp(x).sum(axis, keepdims=True)
        np.testing.assert_allclose(w, ref, rtol=1e-12)
        idx = backend.to_numpy(softops.soft_argmax(backend.asarray(x), axis=axis, keepdims=True))
        positions = np.arange(x.shape[axis]).reshape([-1 if i == axis % 3 else 1 for i in range(3)])
        np.testing.assert_allclose(idx, (ref * positions).sum(axis, keepdims=True), rtol=1e-12)


def test_spatial_soft_argmax(backend, rng):
    """Heatmaps (batch, channels, H, W): coordinates (i, j) in a trailing axis."""
    heat = rng.normal(size=(2, 3, 5, 7))
    b = backend.asarray(heat)
    coords = backend.to_numpy(softops.soft_argmax(b, axis=(-2, -1), temperature=0.5))
    assert coords.shape == (2, 3, 2)
    w = np.exp(heat / 0.5)
    w /= w.sum(axis=(-2, -1), keepdims=True)
    ii, jj = np.meshgrid(np.arange(5), np.arange(7), indexing="ij")
    np.testing.assert_allclose(coords[..., 0], (w * ii).sum((-2, -1)), rtol=1e-12)
    np.testing.assert_allclose(coords[..., 1], (w * jj).sum((-2, -1)), rtol=1e-12)
    hard = backend.to_numpy(softops.soft_argmax(b, axis=(2, 3), temperature=1e-9))
    flat = heat.reshape(2, 3, -1).argmax(-1)
    np.testing.assert_array_equal(hard, np.stack(np.unravel_index(flat, (5, 7)), -1))
    # axis order decides coordinate order; keepdims keeps size-1 spatial axes.
    swapped = backend.to_numpy(softops.soft_argmax(b, axis=(-1, -2), temperature=0.5))
    np.testing.assert_allclose(swapped, coords[..., ::-1], rtol=1e-12)
    kept = backend.to_numpy(softops.soft_argmax(b, axis=(-2, -1), keepdims=True))
    assert kept.shape == (2, 3, 1, 1, 2)
    three_d = backend.to_numpy(softops.soft_argmax(backend.asarray(rng.normal(size=(4, 3, 2, 5))), axis=(0, 1, 3)))
    assert three_d.shape == (2, 3)
    weights = backend.to_numpy(softops.argmax_weights(b, axis=(-2, -1)))
    np.testing.assert_allclose(weights.sum((-2, -1)), 1.0, rtol=1e-12)


def test_keepdims_and_zero_d_results(backend):
    x = backend.asarray([[1.0, 2.0], [4.0, 3.0]])
    assert backend.to_numpy(softops.soft_max(x, axis=0, keepdims=True)).shape == (1, 2)
    assert backend.to_numpy(softops.soft_argmax(backend.asarray([1.0, 2.0]))).shape == ()


# --- invariants (hypothesis) ---------------------------------------------------------

finite_rows = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(1, 9)),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False),  # XLA flushes subnormals
)
temperatures = st.floats(1e-3, 1e3)


@given(x=finite_rows, t=temperatures, method=st.sampled_from(METHODS), data=st.data())
def test_invariants(backend, x, t, method, data):
    bx = backend.asarray(x)
    w = backend.to_numpy(softops.argmax_weights(bx, temperature=t, method=method))
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-9)
    # Permutation equivariance.
    perm = data.draw(st.permutations(range(x.shape[-1])))
    wp = backend.to_numpy(softops.argmax_weights(backend.asarray(x[:, perm]), temperature=t, method=method))
    np.testing.assert_allclose(wp, w[:, perm], atol=1e-12)
    # Shift invariance of the weights; soft_max shifts along.
    c = data.draw(st.floats(-100, 100))
    ws = backend.to_numpy(softops.argmax_weights(backend.asarray(x + c), temperature=t, method=method))
    np.testing.assert_allclose(ws, w, atol=1e-9)
    v = backend.to_numpy(softops.soft_max(bx, temperature=t, method=method))
    assert np.all(v >= x.min(-1)) and np.all(v <= x.max(-1))
    idx = backend.to_numpy(softops.soft_argmax(bx, temperature=t, method=method))
    assert np.all(idx >= 0) and np.all(idx <= x.shape[-1] - 1)
    # argmin/min mirror argmax/max.
    np.testing.assert_allclose(backend.to_numpy(softops.soft_argmin(bx, temperature=t, method=method)),
                               backend.to_numpy(softops.soft_argmax(backend.asarray(-x), temperature=t, method=method)))


@given(x=finite_rows, t1=temperatures, t2=temperatures)
def test_soft_max_falls_as_temperature_rises(backend, x, t1, t2):
    """d/dT sum_i softmax(x/T)_i x_i = -Var_w(x) / T^2 <= 0."""
    lo, hi = sorted((t1, t2))
    bx = backend.asarray(x)
    v_lo = backend.to_numpy(softops.soft_max(bx, temperature=lo))
    v_hi = backend.to_numpy(softops.soft_max(bx, temperature=hi))
    assert np.all(v_hi <= v_lo + 1e-9 * (1 + np.abs(x).max()))


# --- agreement between backends ------------------------------------------------------


@pytest.mark.parametrize("op_name, method", [c for c in OP_METHOD_CASES if c[1] != "gumbel"])
def test_backends_agree(backend, rng, op_name, method):
    op, _ = OPS[op_name]
    x = rng.normal(size=(3, 4, 6))
    ref = op(x, axis=(1, 2) if op_name == "soft_argmax" else 1, method=method, temperature=0.6)
    got = op(backend.asarray(x), axis=(1, 2) if op_name == "soft_argmax" else 1, method=method, temperature=0.6)
    np.testing.assert_allclose(backend.to_numpy(got), ref, rtol=1e-12, atol=1e-14)


def test_backends_agree_float32(backend, rng):
    x = rng.normal(size=(3, 50)).astype(np.float32)
    for method in METHODS:
        ref = softops.argmax_weights(x.astype(np.float64), method=method)
        got = backend.to_numpy(softops.argmax_weights(backend.asarray(x, "float32"), method=method))
        np.testing.assert_allclose(got, ref, atol=2e-6)


# --- Gumbel -----------------------------------------------------------------------------


def test_gumbel_needs_and_uses_key(backend):
    x = backend.asarray([1.0, 2.0, 0.5])
    with pytest.raises(ValueError, match="key"):
        softops.argmax_weights(x, method="gumbel")
    a = backend.to_numpy(softops.argmax_weights(x, method="gumbel", key=3))
    b = backend.to_numpy(softops.argmax_weights(x, method="gumbel", key=3))
    c = backend.to_numpy(softops.argmax_weights(x, method="gumbel", key=4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(TypeError, match="key"):
        softops.argmax_weights(x, method="gumbel", key="seed")


def test_gumbel_native_keys():
    import importlib.util

    rng = np.random.default_rng(0)
    assert softops.argmax_weights(np.array([1.0, 2.0]), method="gumbel", key=rng).shape == (2,)
    if importlib.util.find_spec("torch"):
        import torch

        g = torch.Generator().manual_seed(0)
        assert softops.argmax_weights(torch.tensor([1.0, 2.0]), method="gumbel", key=g).shape == (2,)
    if importlib.util.find_spec("jax"):
        import jax

        key = jax.random.key(0)
        assert softops.argmax_weights(jax.numpy.array([1.0, 2.0]), method="gumbel", key=key).shape == (2,)
        with pytest.raises(TypeError, match="key"):
            softops.argmax_weights(jax.numpy.array([1.0, 2.0]), method="gumbel", key=rng)


def test_gumbel_max_samples_the_softmax(backend):
    """Gumbel-max trick (Gumbel 1954; Maddison et al. 2014): argmax(x + g) ~ softmax(x)."""
    logits = np.array([0.5, -1.0, 1.5, 0.0])
    x = backend.asarray(np.tile(logits, (40000, 1)))
    one_hot = backend.to_numpy(softops.argmax_weights(x, method="gumbel", key=11, hard=True))
    p = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(one_hot.mean(0), p, atol=0.01)


# --- jit, vmap, torch.compile ----------------------------------------------------------


@pytest.mark.parametrize("op_name, method", [c for c in OP_METHOD_CASES if c[1] != "gumbel"])
def test_jit_and_vmap(backend, rng, op_name, method):
    op, _ = OPS[op_name]
    x = rng.normal(size=(3, 5))
    f = lambda t: op(t, method=method, temperature=0.5)
    expected = op(x, method=method, temperature=0.5)
    np.testing.assert_allclose(backend.to_numpy(backend.jit(f)(backend.asarray(x))), expected, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(backend.vmap(f)(backend.asarray(x))), expected, rtol=1e-12)


def test_jax_grad_under_jit_with_gumbel_key():
    jax = pytest.importorskip("jax")
    f = jax.jit(lambda t, k: softops.soft_argmax(t, method="gumbel", key=k, hard=True))
    x = jax.numpy.array([0.1, 0.5, 0.2])
    g = jax.grad(f)(x, jax.random.key(2))
    assert np.all(np.isfinite(np.asarray(g))) and abs(float(g.sum())) < 1e-6


def test_torch_compile_inductor_fwd_bwd(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(4, 6))

    def loss(t):
        return (
            softops.soft_argmax(t, method="sparsemax").sum()
            + softops.soft_max(t, method="entmax15").sum()
            + softops.argmax_weights(t, hard=True)[:, 0].sum()
        )

    compiled = torch.compile(loss, fullgraph=True)
    t1 = torch.tensor(x, requires_grad=True)
    t2 = torch.tensor(x, requires_grad=True)
    compiled(t1).backward()
    loss(t2).backward()
    torch.testing.assert_close(t1.grad, t2.grad)


def test_learnable_temperature_tensor(diff_backend):
    x = diff_backend.asarray([1.0, 2.0, 0.0])
    t = diff_backend.asarray(0.5)
    v = softops.soft_max(x, temperature=t)
    np.testing.assert_allclose(diff_backend.to_numpy(v), softops.soft_max(np.array([1.0, 2.0, 0.0]), temperature=0.5))


# --- bad arguments ---------------------------------------------------------------------


@pytest.mark.parametrize("op", [softops.argmax_weights, softops.soft_argmax, softops.soft_argmin, softops.soft_max, softops.soft_min])
def test_bad_arguments(backend, op):
    x = backend.asarray([[1.0, 2.0, 3.0]])
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        op(backend.asarray([1, 2, 3], "int32") if backend.name != "jax" else backend.xp.asarray([1, 2]))
    bools = backend.xp.asarray([True, False])
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        op(bools)
    for bad_t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            op(x, temperature=bad_t)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        op(x, temperature=backend.asarray(0.0))
    with pytest.raises(TypeError, match="temperature"):
        op(x, temperature=True)
    with pytest.raises(TypeError, match="temperature"):
        op(x, temperature="1")
    with pytest.raises(ValueError, match="must broadcast to the batch shape"):
        op(x, temperature=backend.asarray([1.0, 2.0]))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        op(x, axis=2)
    with pytest.raises(ValueError, match="repeats an axis"):
        op(x, axis=(1, -1))
    with pytest.raises(TypeError, match="axis must be an int"):
        op(x, axis=1.0)
    with pytest.raises(ValueError, match="has length 0"):
        op(backend.asarray(np.zeros((2, 0))))
    with pytest.raises(ValueError, match="method must be one of"):
        op(x, method="argmax")
    with pytest.raises(TypeError, match="hard must be True or False"):
        op(x, hard=1)


def test_soft_max_rejects_gumbel(backend):
    with pytest.raises(ValueError, match="method must be one of .*logsumexp"):
        softops.soft_max(backend.asarray([1.0, 2.0]), method="gumbel")


def test_inputs_are_not_mutated(backend, rng):
    x = rng.normal(size=(3, 4))
    bx = backend.asarray(x)
    for op in (softops.argmax_weights, softops.soft_argmax, softops.soft_max, softops.soft_min):
        op(bx, axis=0, hard=True)
    np.testing.assert_array_equal(backend.to_numpy(bx), x)


@pytest.mark.parametrize("method", ["softmax", "sparsemax", "entmax15", "logsumexp"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_soft_max_at_the_float_maximum(diff_backend, method, dtype):
    """A constant row at the dtype's maximum: value M, gradient 1/n (audit R5:
    5e291 each in float64); a row spanning [-M, M]: finite value and gradients."""
    big = float(np.finfo(dtype).max)
    const = np.full(5, big)
    got = diff_backend.to_numpy(softops.soft_max(diff_backend.asarray(const, dtype), method=method))
    assert got == np.float64(np.asarray(big, dtype))
    g = diff_backend.vjp(lambda t: softops.soft_max(t, method=method), const, np.array(1.0), dtype)
    np.testing.assert_allclose(g, 0.2, rtol=1e-6)
    spread = np.array([big, -big, 0.0, big / 2])
    g = diff_backend.vjp(lambda t: softops.soft_min(t, method=method), spread, np.array(1.0), dtype)
    assert np.all(np.isfinite(g)), g
    np.testing.assert_allclose(g, [0.0, 1.0, 0.0, 0.0], atol=1e-6)
