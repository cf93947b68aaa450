"""The LapSum method (Struski et al. 2025): soft_sort, soft_rank and the top-k mask
on every backend, against direct O(n^2) float64 NumPy oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import softops
from harness import assert_transforms_agree, finite_difference_vjp
from softops._backend import backend_of

LAPSUM = softops.LapSum()
OPS = {
    "sort": lambda x, **kw: softops.soft_sort(x, method="lapsum", **kw),
    "rank": lambda x, **kw: softops.soft_rank(x, method="lapsum", **kw),
}


def mask(x, k, temperature=1.0, largest=True):
    return LAPSUM.topk_mask_rows(backend_of(x), x, k, temperature, largest)


# --- float64 NumPy oracles ------------------------------------------------------------


def cdf(u, t):
    """Laplace CDF of scale t."""
    return np.where(u <= 0, 0.5 * np.exp(np.minimum(u, 0) / t), 1 - 0.5 * np.exp(-np.maximum(u, 0) / t))


def lapsum(b, x, t):
    """F(b) = sum_j cdf(b - x_j), directly (b: (*batch, m), x: (*batch, n))."""
    return cdf(b[..., :, None] - x[..., None, :], t).sum(-1)


def oracle_ranks(x, t):
    return 0.5 + lapsum(x, x, t)


def oracle_inverse(x, target, t, iters=200):
    """Bisection for F(b) = target."""
    lo = np.broadcast_to(x.min(-1, keepdims=True) - 60 * t - 1, target.shape).copy()
    hi = np.broadcast_to(x.max(-1, keepdims=True) + 60 * t + 1, target.shape).copy()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        up = lapsum(mid, x, t) < target
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    return 0.5 * (lo + hi)


# --- closed forms and oracles ---------------------------------------------------------


def test_two_values_closed_form(backend):
    """n = 2, x = (0, g): rank_2 = 2 - exp(-g/T) / 2; sort_1 solves
    F(b) = 1/2 on [0, g]: 1 - e^{-b/T}/2 + e^{(b-g)/T}/2 = 1/2."""
    g, t = 1.3, 0.7
    x = backend.asarray([[0.0, g]])
    e = np.exp(-g / t)
    np.testing.assert_allclose(backend.to_numpy(OPS["rank"](x, temperature=t)), [[1 + e / 2, 2 - e / 2]], rtol=1e-13)
    # e^{-b/T} = u solves 1 - u/2 + e^{-g/T}/(2u) = 1/2 -> u^2 - u - e = 0 (b < 0 side: F(0) > 1/2).
    # Here F(0) = 1/2 + e/2 > 1/2, so b < 0: F(b) = e^{b/T}/2 (1 + e) = 1/2.
    b1 = -t * np.log1p(e)
    np.testing.assert_allclose(backend.to_numpy(OPS["sort"](x, temperature=t))[0, 0], b1, rtol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(OPS["sort"](x, temperature=t))[0, 1], g - b1, rtol=1e-13)


@pytest.mark.parametrize("t", [1e-3, 0.3, 1.0, 30.0])
def test_against_direct_sums(backend, rng, t):
    x = np.round(rng.normal(size=(3, 11)), 1)  # rounded: some ties
    bx = backend.asarray(x)
    np.testing.assert_allclose(backend.to_numpy(OPS["rank"](bx, temperature=t)), oracle_ranks(x, t), rtol=1e-12)
    s = backend.to_numpy(OPS["sort"](bx, temperature=t))
    target = np.broadcast_to(np.arange(11) + 0.5, x.shape)
    np.testing.assert_allclose(lapsum(s, x, t), target, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s, oracle_inverse(x, target, t), rtol=1e-9, atol=1e-9 * (1 + t))
    desc = backend.to_numpy(OPS["sort"](bx, temperature=t, descending=True))
    np.testing.assert_allclose(desc, s[:, ::-1], rtol=1e-14)
    rdesc = backend.to_numpy(OPS["rank"](bx, temperature=t, descending=True))
    np.testing.assert_allclose(rdesc, 12 - oracle_ranks(x, t), rtol=1e-12)
    for largest in (True, False):
        for k in (1, 2.5, 10.9):
            p = backend.to_numpy(mask(bx, k, t, largest))
            target = np.full((3, 1), 11 - k if largest else k)
            b = oracle_inverse(x, target, t)
            want = cdf(x - b, t) if largest else cdf(b - x, t)
            np.testing.assert_allclose(p, want, rtol=1e-8, atol=1e-10)


# --- invariants --------------------------------------------------------------------

# A few row lengths only: JAX compiles once per shape.
ROWS = st.sampled_from([1, 2, 7, 12]).flatmap(
    lambda n: arrays(np.float64, (2, n), elements=st.floats(-100, 100).map(lambda v: round(v, 1)))
)


@settings(max_examples=25)
@given(x=ROWS, t=st.sampled_from([1e-3, 0.1, 1.0, 10.0, 1e3]), k=st.floats(0.0, 1.0))
def test_invariants(backend, x, t, k):
    n = x.shape[-1]
    bx = backend.asarray(x)
    sort = backend.to_numpy(OPS["sort"](bx, temperature=t))
    rank = backend.to_numpy(OPS["rank"](bx, temperature=t))
    assert np.all(np.isfinite(sort)) and np.all(np.isfinite(rank))
    assert np.all(np.diff(sort, axis=-1) >= -1e-9 * (1 + np.abs(sort[..., 1:])))
    np.testing.assert_allclose(rank.sum(-1), n * (n + 1) / 2, rtol=1e-12)
    assert np.all(rank >= 1 - 1e-12) and np.all(rank <= n + 1e-12)
    perm = np.random.default_rng(n).permutation(n)
    rank_perm = backend.to_numpy(OPS["rank"](backend.asarray(x[:, perm]), temperature=t))
    np.testing.assert_allclose(rank_perm, rank[:, perm], rtol=1e-12)
    sort_perm = backend.to_numpy(OPS["sort"](backend.asarray(x[:, perm]), temperature=t))
    np.testing.assert_allclose(sort_perm, sort, rtol=1e-12, atol=1e-12)
    kk = k * n
    p = backend.to_numpy(mask(bx, kk, t))
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(-1), kk, rtol=1e-9, atol=1e-9 * n)
    p_perm = backend.to_numpy(mask(backend.asarray(x[:, perm]), kk, t))
    np.testing.assert_allclose(p_perm, p[:, perm], rtol=1e-9, atol=1e-12)


# --- limits ------------------------------------------------------------------------


def test_small_temperature_is_exact(backend, rng):
    x = rng.normal(size=(4, 33))
    bx = backend.asarray(x)
    ranks = np.argsort(np.argsort(x, -1), -1) + 1.0
    for descending in (False, True):
        sort = OPS["sort"](bx, temperature=1e-9, descending=descending)
        want = -np.sort(-x, -1) if descending else np.sort(x, -1)
        np.testing.assert_allclose(backend.to_numpy(sort), want, rtol=1e-14, atol=1e-14)
        rank = OPS["rank"](bx, temperature=1e-9, descending=descending)
        np.testing.assert_allclose(backend.to_numpy(rank), 34 - ranks if descending else ranks, rtol=1e-14)
    top = np.argsort(-x, -1)[:, :5]
    want = np.zeros_like(x)
    np.put_along_axis(want, top, 1.0, -1)
    np.testing.assert_allclose(backend.to_numpy(mask(bx, 5, 1e-9)), want, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(mask(bx, 28, 1e-9, largest=False)), 1 - want, atol=1e-14)


def test_ties(backend):
    x = backend.asarray([[3.0, 1.0, 3.0, 3.0, 0.0]])
    # Average ranks at every temperature for exact ties (small T: 4, 2, 4, 4, 1).
    np.testing.assert_allclose(backend.to_numpy(OPS["rank"](x, temperature=1e-6)), [[4, 2, 4, 4, 1]], rtol=1e-12)
    r = backend.to_numpy(OPS["rank"](x, temperature=0.5))
    assert r[0, 0] == r[0, 2] == r[0, 3]
    assert np.array_equal(backend.to_numpy(OPS["rank"](x, hard=True)), [[3, 2, 4, 5, 1]])
    np.testing.assert_allclose(backend.to_numpy(OPS["sort"](x, temperature=1e-9)), [[0, 1, 3, 3, 3]], atol=1e-8)
    # k splits a tie: the tied values share the remainder equally.
    np.testing.assert_allclose(backend.to_numpy(mask(x, 2.0, 1e-9)), [[2 / 3, 0, 2 / 3, 2 / 3, 0]], rtol=1e-9)


def test_mask_edges(backend):
    x = backend.asarray([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]])
    for largest in (True, False):
        np.testing.assert_array_equal(backend.to_numpy(mask(x, 3, 0.3, largest)), np.ones((2, 3)))
        np.testing.assert_array_equal(backend.to_numpy(mask(x, 0, 0.3, largest)), np.zeros((2, 3)))
    np.testing.assert_allclose(backend.to_numpy(mask(x, 1.2, 0.3))[1], [0.4] * 3, rtol=1e-12)
    # k per row
    p = backend.to_numpy(mask(x, backend.asarray([1.0, 2.0]), 0.3))
    np.testing.assert_allclose(p.sum(-1), [1.0, 2.0], rtol=1e-12)


# --- precision and robustness --------------------------------------------------------


@pytest.mark.parametrize("t", [1e-3, 1e-1, 10.0])
def test_float32_matches_float64(backend, rng, t):
    x = rng.normal(size=(2, 1024))
    for op in ("sort", "rank"):
        r64 = backend.to_numpy(OPS[op](backend.asarray(x), temperature=t))
        r32 = backend.to_numpy(OPS[op](backend.asarray(x, "float32"), temperature=t))
        np.testing.assert_allclose(r32, r64, atol=2e-5 * np.abs(r64).max())
    p64 = backend.to_numpy(mask(backend.asarray(x), 100.5, t))
    p32 = backend.to_numpy(mask(backend.asarray(x, "float32"), 100.5, t))
    np.testing.assert_allclose(p32, p64, atol=1e-4)


# Rows scaled by 1e4, ties, a constant row; and n = 1.
HOSTILE = [
    np.concatenate(
        [
            np.random.default_rng(0).normal(size=(2, 16)) * 1e4,
            np.repeat([[1.0, 1.0, 2.0, 2.0]], 4, axis=0).reshape(1, 16),
            np.full((1, 16), 3.5),
        ]
    ),
    np.array([[4.2]]),
]


def test_no_nan_on_hostile_inputs(diff_backend):
    # sort, rank and mask in one function (one compilation per shape and dtype
    # under JAX); a NaN or inf in any part's gradient shows in the sum's.
    def f(a, temp):
        return OPS["sort"](a, temperature=temp) + OPS["rank"](a, temperature=temp) + mask(a, 0.4 * a.shape[-1], temp)

    for x in HOSTILE:
        for temp in (1e-4, 1.0, 1e4):
            cot = np.cos(np.arange(x.size)).reshape(x.shape)
            for dtype in ("float64", "float32"):
                g = diff_backend.vjp(lambda t: f(t, temp), x, cot, dtype)
                assert np.all(np.isfinite(g)), (x, temp, dtype)
    for dtype in ("float16", "bfloat16", "float32"):
        x = diff_backend.asarray(HOSTILE[0] / 1e2, dtype)
        for op in OPS.values():
            y = op(x, temperature=0.01)
            assert y.dtype == diff_backend.dtype(dtype)
            assert np.all(np.isfinite(diff_backend.to_numpy(y)))


# --- gradients -------------------------------------------------------------------


@pytest.mark.parametrize("op", ["sort", "rank"])
@pytest.mark.parametrize("axis, descending", [(-1, False), (0, True)])
def test_gradient_matches_finite_differences(diff_backend, rng, op, axis, descending):
    x = np.concatenate([rng.permutation(12) * 0.37, [1.11]]).reshape(1, 13)  # 1.11 = 3 * 0.37: a tie
    x = np.concatenate([x, rng.normal(size=(1, 13))])
    kw = dict(axis=axis, descending=descending, temperature=0.6)
    f = lambda t: OPS[op](t, **kw)
    cot = rng.normal(size=x.shape)
    got = diff_backend.vjp(f, x, cot)
    want = finite_difference_vjp(lambda a: f(np.asarray(a)), x, cot)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("largest", [True, False])
def test_mask_gradient_x_and_k(diff_backend, rng, largest):
    x = rng.normal(size=(2, 9))
    cot = rng.normal(size=x.shape)
    f = lambda a, k=3.3: mask(a, k, 0.4, largest)
    got = diff_backend.vjp(f, x, cot)
    want = finite_difference_vjp(lambda a: f(np.asarray(a)), x, cot)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    bx = diff_backend.asarray(x)
    k = np.array([3.3, 6.0])
    got_k = diff_backend.vjp(lambda kk: f(bx, kk), k, cot)
    want_k = finite_difference_vjp(lambda kk: f(np.asarray(x), np.asarray(kk)), k, cot)
    np.testing.assert_allclose(got_k, want_k, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("op", ["sort", "rank", "mask"])
def test_temperature_gradient(diff_backend, op):
    x = np.array([[0.3, -1.2, 2.0, 0.9, 1.1]])
    cot = np.array([[0.5, -1.0, 2.0, 0.3, 1.0]])
    bx = diff_backend.asarray(x)
    f = (lambda t: mask(bx, 2.2, t)) if op == "mask" else (lambda t: OPS[op](bx, temperature=t))
    got = diff_backend.vjp(f, np.array(0.7), cot)
    want = finite_difference_vjp(lambda t: f(np.asarray(t)) if False else _numpy_value(op, x, t), np.array(0.7), cot)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _numpy_value(op, x, t):
    t = float(t)
    return mask(x, 2.2, t) if op == "mask" else OPS[op](x, temperature=t)


def test_hard_forward_exact_backward_soft(diff_backend, rng):
    x = rng.normal(size=(3, 6))
    cot = rng.normal(size=x.shape)
    for op, want in (("sort", np.sort(x, -1)), ("rank", np.argsort(np.argsort(x, -1), -1) + 1.0)):
        assert np.array_equal(diff_backend.to_numpy(OPS[op](diff_backend.asarray(x), hard=True)), want)
        g_hard = diff_backend.vjp(lambda t: OPS[op](t, hard=True, temperature=0.5), x, cot)
        g_soft = diff_backend.vjp(lambda t: OPS[op](t, temperature=0.5), x, cot)
        np.testing.assert_allclose(g_hard, g_soft, rtol=1e-12, atol=1e-15)


# --- transformations and backends ------------------------------------------------------


@pytest.mark.slow
def test_jit_vmap_and_grad(diff_backend, rng):
    x = rng.normal(size=(3, 2, 7))
    cot = rng.normal(size=x.shape)
    # One function for all three operations: one compilation per transformation.
    def f(t):
        return OPS["sort"](t, temperature=0.4) + OPS["rank"](t, temperature=0.3) * mask(t, 2.5, 0.4)

    assert_transforms_agree(diff_backend, f, x, cot)


def test_backends_agree(backend, rng):
    x = rng.normal(size=(2, 3, 20))
    bx = backend.asarray(x)
    for op in OPS:
        want = OPS[op](x, temperature=0.2, axis=(1, 2))
        np.testing.assert_allclose(backend.to_numpy(OPS[op](bx, temperature=0.2, axis=(1, 2))), want, rtol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(mask(bx, 4.5, 0.2)), mask(x, 4.5, 0.2), rtol=1e-13)


def test_public_topk_family_with_lapsum(backend, rng):
    """soft_topk_mask / soft_topk / soft_quantile dispatch to LapSum; Relative works."""
    x = rng.normal(size=(3, 20))
    bx = backend.asarray(x)
    for k in (1, 4.5, 20):
        m = backend.to_numpy(softops.soft_topk_mask(bx, k, method="lapsum", temperature=0.3))
        assert np.all((m >= 0) & (m <= 1))
        np.testing.assert_allclose(m.sum(-1), k, rtol=1e-9)
    exact = backend.to_numpy(softops.soft_topk_mask(bx, 4, method="lapsum", temperature=1e-6))
    top4 = np.argsort(-x, axis=-1)[:, :4]
    np.testing.assert_array_equal(exact, _mask(x, top4))
    values = backend.to_numpy(softops.soft_topk(bx, 3, method="lapsum", temperature=1e-6))
    np.testing.assert_allclose(values, -np.sort(-x, axis=-1)[:, :3], rtol=1e-9)
    q = backend.to_numpy(softops.soft_quantile(bx, 0.3, method="lapsum", temperature=1e-6))
    np.testing.assert_allclose(q, np.quantile(x, 0.3, axis=-1), rtol=1e-9)
    relative = backend.to_numpy(softops.soft_topk_mask(bx, 4, method="lapsum", temperature=softops.Relative(0.5)))
    np.testing.assert_allclose(relative.sum(-1), 4, rtol=1e-9)


def _mask(x, top):
    mask = np.zeros_like(x)
    np.put_along_axis(mask, top, 1.0, axis=-1)
    return mask


# --- the numba kernel against its vectorised twin -------------------------------------
# On CPU the methods run softops._kernels.lapsum (hand-written backward); the
# module-level rank_rows / sort_rows / topk_mask_rows are the twin (autodiff).

from softops._kernels import lapsum as lapsum_kernel  # noqa: E402
from softops.methods import lapsum as lapsum_module  # noqa: E402

needs_numba = pytest.mark.skipif(not lapsum_kernel.HAVE_NUMBA, reason="numba is not installed")

def _row_ops(rank_rows, sort_rows, topk_mask_rows):
    """The six row operations as ``f(backend, x, t, k)``."""
    return {
        "rank": lambda b, x, t, k: rank_rows(b, x, t, False),
        "rank_desc": lambda b, x, t, k: rank_rows(b, x, t, True),
        "sort": lambda b, x, t, k: sort_rows(b, x, t, False),
        "sort_desc": lambda b, x, t, k: sort_rows(b, x, t, True),
        "mask": lambda b, x, t, k: topk_mask_rows(b, x, k, t, True),
        "mask_small": lambda b, x, t, k: topk_mask_rows(b, x, k, t, False),
    }


KERNEL = _row_ops(LAPSUM.rank_rows, LAPSUM.sort_rows, LAPSUM.topk_mask_rows)
TWIN = _row_ops(lapsum_module.rank_rows, lapsum_module.sort_rows, lapsum_module.topk_mask_rows)


def _value_and_grads(harness, f, x, t, k, cot):
    """``f(x, t, k)`` and the gradients of ``sum(f * cot)`` for x, t (0-d) and k
    (per row), as NumPy float64."""
    return harness.value_and_grads(f, (x, t, k), cot)


KERNEL_ROWS = st.sampled_from([1, 2, 3, 8, 17]).flatmap(
    lambda n: arrays(np.float64, (3, n), elements=st.floats(-50, 50).map(lambda v: round(v, 1)))
)


@needs_numba
@settings(max_examples=20)
@given(x=KERNEL_ROWS, t=st.sampled_from([1e-3, 0.05, 0.7, 20.0]),
       frac=st.sampled_from([0.0, 0.13, 0.37, 0.71, 1.0]), op=st.sampled_from(sorted(KERNEL)))
def test_kernel_matches_twin(diff_backend, x, t, frac, op):
    # No integer k inside (0, n): see test_kernel_mask_mid_gap.
    n = x.shape[-1]
    k = np.array([frac * n, 0.5 * n + 0.25, min(n - 0.3, 1.3)])
    cot = np.cos(np.arange(x.size) * 1.7).reshape(x.shape)
    b = backend_of(diff_backend.asarray(x))
    want, want_g = _value_and_grads(diff_backend, lambda a, tt, kk: TWIN[op](b, a, tt, kk), x, np.array(t), k, cot)
    got, got_g = _value_and_grads(diff_backend, lambda a, tt, kk: KERNEL[op](b, a, tt, kk), x, np.array(t), k, cot)
    scale = 1 + np.abs(x).max()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * scale)
    for name, g, w in zip(("x", "T", "k"), got_g, want_g):
        tol = 1e-8 * (1 + np.abs(w).max())
        np.testing.assert_allclose(g, w, rtol=1e-7, atol=tol, err_msg=name)


@needs_numba
def test_kernel_mask_mid_gap(diff_backend):
    """k = 1 of x = (0, 1) at T = 1e-3: F(b) = 1 puts b mid-gap, where F is flat
    to within e^{-500}; p = (0, 1) and, b being equally far from both values,
    dp_i/dk = 1/2 each (the mean of the one-sided derivatives (1, 0) and
    (0, 1)).  The kernel gets it; the twin's autodiff underflows to 0 (which is
    why test_kernel_matches_twin avoids integer k).  Reverse mode runs the
    kernel's backward in every framework (JAX: the transpose of the custom
    tangent map)."""
    x = np.array([[0.0, 1.0]])
    cot = np.array([[0.3, -0.9]])
    b = backend_of(diff_backend.asarray(x))
    p, (gx, gt, gk) = _value_and_grads(diff_backend, lambda a, tt, kk: KERNEL["mask"](b, a, tt, kk),
                                       x, np.array(1e-3), np.array([1.0]), cot)
    np.testing.assert_allclose(p, [[0.0, 1.0]], atol=1e-200)
    np.testing.assert_allclose(gk, [-0.3], rtol=1e-12)
    assert np.all(np.isfinite(gx)) and np.isfinite(gt)


@needs_numba
def test_kernel_numpy_matches_twin(rng):
    x = np.concatenate([rng.normal(size=(2, 40)), np.round(rng.normal(size=(2, 40)), 1) * 1e4])
    b = backend_of(x)
    for t in (1e-4, 0.3, 1e3):
        for op in KERNEL:
            k = np.array([3.5, 20.0, 39.9, 0.2])
            np.testing.assert_allclose(KERNEL[op](b, x, t, k), TWIN[op](b, x, t, k), rtol=1e-9, atol=1e-9 * 1e4)


@needs_numba
def test_kernel_per_row_temperature_and_k(diff_backend, rng):
    """A per-row temperature (shape (batch, 1), as Relative makes) and per-row k."""
    x = rng.normal(size=(4, 9))
    t = np.array([[0.1], [0.5], [2.0], [1e-3]])
    k = np.array([1.5, 4.0, 8.9, 3.0])
    cot = rng.normal(size=x.shape)
    b = backend_of(diff_backend.asarray(x))
    for op in ("rank", "sort", "mask"):
        want, want_g = _value_and_grads(diff_backend, lambda a, tt, kk: TWIN[op](b, a, tt, kk), x, t, k, cot)
        got, got_g = _value_and_grads(diff_backend, lambda a, tt, kk: KERNEL[op](b, a, tt, kk), x, t, k, cot)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        for g, w in zip(got_g, want_g):
            np.testing.assert_allclose(g, w, rtol=1e-7, atol=1e-9)


@needs_numba
@pytest.mark.parametrize("op", ["soft_rank", "soft_sort", "soft_topk_mask"])
def test_kernel_skips_temperature_coefficients_for_a_float(diff_backend, monkeypatch, op):
    """A Python-float temperature needs no derivative: the kernel skips its
    coefficients on every framework, also where softops jit-compiles the row
    functions (JAX, where the float becomes a traced array inside), while a
    temperature array keeps them and its gradient matches the twin's."""
    calls = []
    forward = lapsum_kernel.forward

    def spy(op_, x, t, k=None, need_t=True):
        calls.append(need_t)
        return forward(op_, x, t, k, need_t)

    monkeypatch.setattr(lapsum_kernel, "forward", spy)
    x = np.array([[0.3, -1.2, 2.0, 0.9, 1.1]])
    cot = np.array([[0.5, -1.0, 2.0, 0.3, 1.0]])
    kw = {"k": 2.2} if op == "soft_topk_mask" else {}
    f = getattr(softops, op)
    diff_backend.vjp(lambda a: f(a, temperature=0.7, method="lapsum", **kw), x, cot)
    assert calls and not any(calls), calls
    calls.clear()
    bx = diff_backend.asarray(x)
    got = diff_backend.vjp(lambda t: f(bx, temperature=t, method="lapsum", **kw), np.array(0.7), cot)
    assert calls and all(calls), calls
    want = finite_difference_vjp(lambda t: f(x, temperature=float(t), method="lapsum", **kw), np.array(0.7), cot)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@needs_numba
@pytest.mark.parametrize("op", ["rank", "sort", "mask"])
def test_kernel_gradients_match_finite_differences(op, rng):
    """The kernel's own backward (NumPy level) against central differences of its
    forward: x, T and k, rows without ties (the Laplace density has a kink)."""
    x = rng.normal(size=(3, 10))
    k = np.array([2.5, 7.0, 9.5])
    t = np.array([0.4])
    g = rng.normal(size=x.shape)

    def forward(xx, tt, kk):
        return lapsum_kernel.forward(op, xx, tt, kk if op == "mask" else None)[0]

    kk = k if op == "mask" else None
    _, aux, gaps, y, order = lapsum_kernel.forward(op, x, t, kk)
    np.testing.assert_array_equal(order, np.argsort(x, -1, kind="stable"))
    np.testing.assert_array_equal(y, np.sort(x, -1))
    gx, gt, gk = lapsum_kernel.backward(op, y, order, t, aux, gaps, g, kk)
    np.testing.assert_allclose(gx, finite_difference_vjp(lambda a: forward(a, t, k), x, g), rtol=1e-6, atol=1e-8)
    fd_t = finite_difference_vjp(lambda a: forward(x, a, k), t, g)
    np.testing.assert_allclose(gt.sum(), fd_t[0], rtol=1e-6, atol=1e-8)
    if op == "mask":
        fd_k = finite_difference_vjp(lambda a: forward(x, t, a), k, g)
        np.testing.assert_allclose(gk, fd_k, rtol=1e-6, atol=1e-8)


@needs_numba
@pytest.mark.parametrize("t", [1e-300, 1e-6, 1.0, 1e6])
def test_kernel_hostile(t):
    """1e4-scaled rows, ties, a constant row, n = 1 and 2, an integer k that puts
    b mid-gap (the sums D underflow for tiny T): finite values and gradients."""
    rows = [
        np.random.default_rng(1).normal(size=(2, 16)) * 1e4,
        np.repeat([[1.0, 1.0, 2.0, 2.0]], 4, axis=0).reshape(1, 16),
        np.full((1, 16), 3.5),
        np.arange(16.0)[None] * 1e4,
    ]
    for x in (np.concatenate(rows), np.array([[4.2]]), np.array([[0.0, 1e4]])):
        n = x.shape[-1]
        for op, k in (("rank", None), ("sort", None), ("mask", np.array(0.4 * n)), ("mask", np.array(n // 2 + 0.0))):
            out, aux, gaps, y, order = lapsum_kernel.forward(op, x, np.array([t]), k)
            grads = lapsum_kernel.backward(op, y, order, np.array([t]), aux, gaps,
                                           np.cos(np.arange(x.size)).reshape(x.shape), k)
            assert np.all(np.isfinite(out)), (op, t, x)
            for g in grads:
                assert np.all(np.isfinite(g)), (op, t, x)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_mask(diff_backend, dtype):
    x = diff_backend.asarray(HOSTILE[0] / 1e2, dtype)
    m = softops.soft_topk_mask(x, 5.5, method="lapsum", temperature=0.05)
    assert m.dtype == diff_backend.dtype(dtype)
    m = diff_backend.to_numpy(m)
    assert np.all(np.isfinite(m))
    np.testing.assert_allclose(m.sum(-1), 5.5, rtol=2e-2)
    g = diff_backend.vjp(lambda a: softops.soft_topk_mask(a, 5.5, method="lapsum", temperature=0.05),
                         HOSTILE[0] / 1e2, np.ones(HOSTILE[0].shape), dtype)
    assert np.all(np.isfinite(g))


def test_without_numba_the_twin_runs(backend, rng, monkeypatch):
    """``HAVE_NUMBA = False`` (numba missing) routes every backend to the twin."""
    x = backend.asarray(rng.normal(size=(3, 12)))
    kernel = [backend.to_numpy(f(backend_of(x), x, 0.3, 4.5)) for f in KERNEL.values()]
    monkeypatch.setattr(lapsum_kernel, "HAVE_NUMBA", False)
    assert not backend_of(x).lapsum_kernel(x)
    twin = [backend.to_numpy(f(backend_of(x), x, 0.3, 4.5)) for f in KERNEL.values()]
    for a, b in zip(kernel, twin):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@needs_numba
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_kernel_dtypes(dtype, rng):
    """The kernel takes any float dtype and answers in it (float16 computed in
    float32), within that dtype's rounding of the float64 result."""
    x = rng.normal(size=(2, 30))
    t, k = np.array([0.3]), np.array([7.5])
    for op in ("rank", "sort", "mask"):
        kk = k if op == "mask" else None
        want, *_ = lapsum_kernel.forward(op, x, t, kk)
        xd = x.astype(dtype)
        got, *_ = lapsum_kernel.forward(op, xd, t.astype(dtype), None if kk is None else kk.astype(dtype))
        assert got.dtype == np.dtype(dtype)
        eps = float(np.finfo(dtype).eps)
        np.testing.assert_allclose(got, want, atol=40 * eps * (1 + np.abs(want).max()))
