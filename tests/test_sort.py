"""soft_sort and soft_rank (permutahedron, l2 and kl) on every backend."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import softops
from harness import assert_transforms_agree, finite_difference_vjp

KL = softops.Permutahedron(regularization="kl")
METHODS = {"l2": "permutahedron", "kl": KL}
OPS = {"sort": softops.soft_sort, "rank": softops.soft_rank}
X9 = [8.0, 0.0, 5.0, 3.0, 2.0, 1.0, 6.0, 7.0, 9.0]


# --- reference values and closed forms --------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reference_values(backend, dtype):
    """fast-soft-sort / torchsort results (their README and issue 4)."""
    a = lambda v: backend.asarray(v, dtype)
    out = lambda y: backend.to_numpy(y)
    np.testing.assert_allclose(out(softops.soft_sort(a(X9))), 41 / 9 - 4 + np.arange(9), atol=1e-5)
    rows = [[5.0, 1.0, 2.0], [2.0, 1.0, 5.0]]
    np.testing.assert_allclose(out(softops.soft_sort(a(rows))), [[5 / 3, 8 / 3, 11 / 3]] * 2, atol=1e-5)
    np.testing.assert_allclose(out(softops.soft_sort(a(rows), temperature=0.1)), [[1, 2, 5]] * 2, atol=1e-5)
    np.testing.assert_allclose(
        out(softops.soft_rank(a(rows), temperature=2.0)), [[3, 1.25, 1.75], [1.75, 1.25, 3]], atol=1e-5
    )
    np.testing.assert_allclose(out(softops.soft_rank(a(rows))), [[3, 1, 2], [2, 1, 3]], atol=1e-5)


@pytest.mark.parametrize("descending", [False, True])
def test_one_block_closed_forms(backend, rng, descending):
    x = rng.normal(size=(3, 7))
    n, t, sign = 7, 50.0, -1 if descending else 1
    mean = x.mean(-1, keepdims=True)
    k = np.arange(1, n + 1)
    bx = backend.asarray(x)
    rank = softops.soft_rank(bx, temperature=t, descending=descending)
    np.testing.assert_allclose(backend.to_numpy(rank), (n + 1) / 2 + sign * (x - mean) / t, rtol=1e-12)
    sort = softops.soft_sort(bx, temperature=t, descending=descending)
    np.testing.assert_allclose(backend.to_numpy(sort), mean + sign * (k - (n + 1) / 2) / t, rtol=1e-12)
    # kl, one block: ranks are n (n + 1) / 2 * softmax(x / T).
    e = np.exp(sign * x / t)
    kl_rank = softops.soft_rank(bx, temperature=t, descending=descending, method=KL)
    np.testing.assert_allclose(backend.to_numpy(kl_rank), n * (n + 1) / 2 * e / e.sum(-1, keepdims=True), rtol=1e-12)


def test_kl_sort_blocks_formula(backend):
    """kl sort on one block (large T): descending LSE(x) - log sum_j exp((k - j) / T),
    ascending -LSE(-x) + log sum_j exp((k - j) / T)."""
    x = np.array([0.3, -1.0, 2.0, 0.5])
    t = 30.0
    k = np.arange(1, 5)
    spread = np.log(np.exp((k[:, None] - k[None, :]) / t).sum(-1))
    lse = lambda a: np.log(np.exp(a).sum())
    bx = backend.asarray(x)
    got = softops.soft_sort(bx, temperature=t, method=KL, descending=True)
    np.testing.assert_allclose(backend.to_numpy(got), lse(x) - spread, rtol=1e-12)
    got = softops.soft_sort(bx, temperature=t, method=KL)
    np.testing.assert_allclose(backend.to_numpy(got), -lse(-x) + spread, rtol=1e-12)


# --- invariants --------------------------------------------------------------------

ROWS = st.integers(1, 12).flatmap(
    lambda n: arrays(np.float64, (2, n), elements=st.floats(-100, 100).map(lambda v: round(v, 1)))
)


@pytest.mark.parametrize("reg", ["l2", "kl"])
@settings(max_examples=20)
@given(x=ROWS, t=st.sampled_from([1e-3, 0.1, 1.0, 10.0]))
def test_invariants(backend, reg, x, t):
    n = x.shape[-1]
    bx = backend.asarray(x)
    method = METHODS[reg]
    sort = backend.to_numpy(softops.soft_sort(bx, temperature=t, method=method))
    rank = backend.to_numpy(softops.soft_rank(bx, temperature=t, method=method))
    assert np.all(np.isfinite(sort)) and np.all(np.isfinite(rank))
    assert np.all(np.diff(sort, axis=-1) >= -1e-9 * (1 + np.abs(sort[..., 1:])))
    # Block means of x are rounded, then scaled by 1 / t.
    rounding = 1e-14 * n * (n + np.abs(x).max() / t)
    np.testing.assert_allclose(rank.sum(-1), n * (n + 1) / 2, rtol=1e-12, atol=rounding)
    if reg == "l2":
        np.testing.assert_allclose(sort.sum(-1), x.sum(-1), rtol=1e-9, atol=1e-9)
    perm = np.random.default_rng(n).permutation(n)
    rank_perm = backend.to_numpy(softops.soft_rank(backend.asarray(x[:, perm]), temperature=t, method=method))
    np.testing.assert_allclose(rank_perm, rank[:, perm], rtol=1e-12, atol=rounding)


@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_zero_temperature_is_exact(backend, rng, reg):
    x = rng.normal(size=(4, 33))
    bx = backend.asarray(x)
    ranks = np.argsort(np.argsort(x, -1), -1) + 1.0
    for descending in (False, True):
        sort = softops.soft_sort(bx, temperature=1e-9, method=METHODS[reg], descending=descending)
        want = -np.sort(-x, -1) if descending else np.sort(x, -1)
        assert np.array_equal(backend.to_numpy(sort), want)
        rank = softops.soft_rank(bx, temperature=1e-9, method=METHODS[reg], descending=descending)
        np.testing.assert_allclose(backend.to_numpy(rank), 34 - ranks if descending else ranks, rtol=1e-14)
    if backend.name == "torch":
        import torch

        t = torch.as_tensor(x)
        assert torch.equal(softops.soft_sort(t, temperature=1e-9, method=METHODS[reg]), torch.sort(t).values)


@pytest.mark.parametrize("reg", ["l2", "kl"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_smallest_normal_temperature_is_the_limit(diff_backend, reg, dtype):
    """Audit R9: at the dtype's smallest normal temperature the KL projection
    formed ``z / T`` past the float maximum (NaN); now every sorting operation
    is its exact limit, with the limit's gradient in ``x`` and a zero one in
    ``T``, also for values of magnitude 1e30."""
    t = float(np.finfo(dtype).tiny)
    for row in ([0.3, -1.2, 2.5, 0.9, -0.4], [1e30, -1e30, 0.0, 5.0, 5.0]):
        x = np.array([row])
        order = np.argsort(x, -1, kind="stable")
        ranks = np.argsort(order, -1) + 1.0
        if row[-1] == row[-2]:  # the tie shares its average rank
            ranks[0, 3:] = 3.5
        cases = {"soft_sort": (lambda v, T: softops.soft_sort(v, temperature=T, method=METHODS[reg]),
                               np.sort(x, -1)),
                 "soft_rank": (lambda v, T: softops.soft_rank(v, temperature=T, method=METHODS[reg]), ranks),
                 "soft_topk": (lambda v, T: softops.soft_topk(v, 2, temperature=T, method=METHODS[reg]),
                               -np.sort(-x, -1)[:, :2])}
        for name, (f, want) in cases.items():
            out = diff_backend.to_numpy(f(diff_backend.asarray(x, dtype), t))
            np.testing.assert_allclose(out, want, rtol=1e-6, err_msg=name)
            g = diff_backend.vjp(lambda v: f(v, t), x, np.ones_like(want), dtype=dtype)
            # The limit's gradient: the sort moves each value to its slot (1 each;
            # a tie at the top-k boundary goes to the first, as in the stable sort), ranks are flat.
            expected = np.zeros_like(x) if name == "soft_rank" else (
                np.isin(np.arange(5), np.argsort(-x[0], kind="stable")[:2]).astype(float)[None]
                if name == "soft_topk" else np.ones_like(x))
            np.testing.assert_allclose(g, expected, atol=1e-6, err_msg=name)
            gt = diff_backend.vjp(lambda T: f(diff_backend.asarray(x, dtype), T), np.array(t), np.ones_like(want),
                                  dtype=dtype)
            assert np.all(gt == 0), (name, gt)


@pytest.mark.parametrize("method", ["permutahedron", softops.Permutahedron("kl"), "lapsum"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ties_share_their_rank_at_every_temperature(backend, method, dtype):
    """Tied entries share one block however small the temperature: at T below
    about |x| * eps the permutahedron's pooling compared values whose
    differences rounding had erased (ranks 3 and 2 for a tie at T = 1e-16),
    and its KL block values lost log m (2.514 for 2.5 at T = 1e-14).  The
    compiled kernel and its plain-Python tier (a first call while compiling)
    alike."""
    from softops._kernels import _tiers

    x = backend.asarray([[0.0, 5.0, 5.0, 1e3, -7.0, 5.0]], dtype)
    want = [[2.0, 4.0, 4.0, 6.0, 1.0, 4.0]]
    tiny = float(np.finfo(dtype).tiny)
    for t in (1e-6, 1e-14, 1e-20, 1e-30, tiny):
        for tier in (_tiers.warming, _tiers.interpreting):
            with tier():
                rank = backend.to_numpy(softops.soft_rank(x, temperature=t, method=method))
                sort = backend.to_numpy(softops.soft_sort(x, temperature=t, method=method))
            np.testing.assert_allclose(rank, want, rtol=1e-6, err_msg=f"T={t} {tier.__name__}")
            np.testing.assert_allclose(sort, [[-7.0, 0.0, 5.0, 5.0, 5.0, 1e3]], rtol=1e-6, err_msg=f"T={t}")


def test_ties_share_average_rank(backend):
    x = backend.asarray([[3.0, 1.0, 3.0, 3.0, 0.0]])
    rank = softops.soft_rank(x, temperature=1e-6)
    np.testing.assert_allclose(backend.to_numpy(rank), [[4, 2, 4, 4, 1]], rtol=1e-12)
    hard = softops.soft_rank(x, hard=True)
    assert np.array_equal(backend.to_numpy(hard), [[3, 2, 4, 5, 1]])


# --- precision -------------------------------------------------------------------


@pytest.mark.parametrize("reg", ["l2", "kl"])
@pytest.mark.parametrize("t", [1e-3, 1e-1, 10.0])
def test_float32_sort_matches_float64(backend, rng, reg, t):
    x = rng.normal(size=(2, 1024))
    s64 = backend.to_numpy(softops.soft_sort(backend.asarray(x), temperature=t, method=METHODS[reg]))
    s32 = backend.to_numpy(softops.soft_sort(backend.asarray(x, "float32"), temperature=t, method=METHODS[reg]))
    scale = np.abs(s64).max()
    np.testing.assert_allclose(s32, s64, atol=1e-6 * scale)


# --- robustness ------------------------------------------------------------------


@pytest.mark.parametrize("reg", ["l2", "kl"])
@pytest.mark.parametrize("op", ["sort", "rank"])
def test_no_nan_on_hard_inputs(diff_backend, reg, op):
    f = lambda t, temp=1.0: OPS[op](t, temperature=temp, method=METHODS[reg])
    cases = [
        np.random.default_rng(0).normal(size=(3, 16)) * 1e4,
        np.array([[1.0, 1.0, 2.0, 2.0, 2.0]]),
        np.full((2, 6), 3.5),
        np.array([[4.2]]),
    ]
    for x in cases:
        for temp in (1e-3, 1.0, 1e3):
            g = diff_backend.vjp(lambda t: f(t, temp), x, np.cos(np.arange(x.size)).reshape(x.shape))
            assert np.all(np.isfinite(g))
    for dtype in ("float16", "bfloat16", "float32"):
        x = diff_backend.asarray(cases[0] / 1e2, dtype)
        y = f(x)
        assert y.dtype == diff_backend.dtype(dtype)
        assert np.all(np.isfinite(diff_backend.to_numpy(y)))


def test_bad_input(backend):
    x = backend.asarray([1.0, 2.0])
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        softops.soft_sort(backend.asarray([1, 2], "int64"))
    with pytest.raises(ValueError, match="method must be one of"):
        softops.soft_rank(x, method="bogus")
    with pytest.raises(ValueError, match="regularization must be one of"):
        softops.Permutahedron(regularization="l1")
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        softops.soft_sort(x, temperature=0.0)
    with pytest.raises(TypeError, match="descending must be True or False"):
        softops.soft_sort(x, descending=1)


# --- gradients -------------------------------------------------------------------


@pytest.mark.parametrize("reg", ["l2", "kl"])
@pytest.mark.parametrize("op", ["sort", "rank"])
@pytest.mark.parametrize("axis, descending", [(-1, False), (0, True), ((0, 2), False)])
def test_gradient_matches_finite_differences(diff_backend, rng, reg, op, axis, descending):
    # Integers spaced by 1 with T = 0.6: several merged blocks, no near-ties.
    x = rng.permutation(24).reshape(2, 3, 4) * 0.37
    kw = dict(axis=axis, descending=descending, temperature=0.6, method=METHODS[reg])
    f = lambda t: OPS[op](t, **kw)
    cot = rng.normal(size=x.shape)
    got = diff_backend.vjp(f, x, cot)
    want = finite_difference_vjp(lambda a: f(np.asarray(a)), x, cot)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("reg", ["l2", "kl"])
@pytest.mark.parametrize("op", ["sort", "rank"])
def test_temperature_gradient(diff_backend, reg, op):
    x = np.array([[0.3, -1.2, 2.0, 0.9, 1.1]])
    cot = np.array([[0.5, -1.0, 2.0, 0.3, 1.0]])
    xp = diff_backend.xp

    def value(temp, like):
        return float(np.sum(diff_backend.to_numpy(OPS[op](like, temperature=temp, method=METHODS[reg])) * cot))

    bx = diff_backend.asarray(x)
    want = (value(0.7 + 1e-6, bx) - value(0.7 - 1e-6, bx)) / 2e-6
    got = diff_backend.vjp(lambda t: OPS[op](bx, temperature=t, method=METHODS[reg]), np.array(0.7), cot)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)


@pytest.mark.parametrize("op", ["sort", "rank"])
def test_hard_forward_exact_backward_soft(diff_backend, rng, op):
    x = rng.normal(size=(3, 6))
    hard = diff_backend.to_numpy(OPS[op](diff_backend.asarray(x), hard=True))
    want = np.sort(x, -1) if op == "sort" else np.argsort(np.argsort(x, -1), -1) + 1.0
    assert np.array_equal(hard, want)
    cot = rng.normal(size=x.shape)
    g_hard = diff_backend.vjp(lambda t: OPS[op](t, hard=True, temperature=0.5), x, cot)
    g_soft = diff_backend.vjp(lambda t: OPS[op](t, temperature=0.5), x, cot)
    np.testing.assert_allclose(g_hard, g_soft, rtol=1e-12, atol=1e-15)


# --- transformations ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_jit_vmap_and_grad(diff_backend, rng, reg):
    x = rng.normal(size=(3, 2, 7))
    cot = rng.normal(size=x.shape)
    for op in OPS.values():
        assert_transforms_agree(diff_backend, lambda t: op(t, temperature=0.4, method=METHODS[reg]), x, cot)


@pytest.mark.parametrize("method", ["permutahedron", "lapsum"])
def test_torch_kernels_run_their_op_body_only_in_plain_eager_code(rng, method, monkeypatch):
    """In eager code the kernels' custom ops are bypassed (their dispatch is pure
    overhead there); under torch.jit.trace, torch.func and on tensor subclasses
    the op itself runs, so a trace records it instead of constants."""
    torch = pytest.importorskip("torch")
    from softops._kernels import torch_ops

    calls = []
    monkeypatch.setattr(torch_ops, "_plain", lambda args, _p=torch_ops._plain: calls.append(_p(args)) or calls[-1])
    f = lambda t: softops.soft_rank(t, temperature=0.5, method=method)
    x, y = (torch.as_tensor(rng.normal(size=(3, 6))) for _ in range(2))
    want = f(y)
    assert calls and all(calls)
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow
        traced = torch.jit.trace(f, x, check_trace=False)
    assert calls and not any(calls)
    torch.testing.assert_close(traced(y), want, rtol=1e-12, atol=1e-12)
    calls.clear()
    torch.testing.assert_close(torch.func.vmap(f)(y), want, rtol=1e-12, atol=1e-12)
    assert calls and not any(calls)
    assert not torch_ops._plain((y.as_subclass(type("Sub", (torch.Tensor,), {})),))


@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_agrees_with_torchsort(rng, reg):
    """Temperature = torchsort's regularization_strength: identical results."""
    torch = pytest.importorskip("torch")
    torchsort = pytest.importorskip("torchsort")
    x = torch.as_tensor(rng.normal(size=(4, 40)))
    for t in (0.01, 0.3, 1.0, 5.0):
        kw = dict(regularization_strength=t, regularization=reg)
        for ours, theirs in ((softops.soft_rank, torchsort.soft_rank), (softops.soft_sort, torchsort.soft_sort)):
            got = ours(x, temperature=t, method=METHODS[reg])
            torch.testing.assert_close(got, theirs(x, **kw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_permutahedron_blocks_near_the_float_maximum(backend, dtype):
    """Pooled blocks of values near the dtype's maximum keep finite means
    (audit R10: float64 block sums overflowed to -inf for the whole row)."""
    big = float(np.finfo(dtype).max)
    x = backend.asarray([[-big, -big, big, 0.0, -1.0]], dtype)
    want = np.sum(np.asarray([-big, -big, big, 0.0, -1.0], dtype).astype(np.float64) / 5)  # a sum would overflow
    for out in (softops.soft_sort(x), softops.soft_topk(x, 2), softops.soft_quantile(x, 0.5)):
        got = backend.to_numpy(out)
        assert np.all(np.isfinite(got)), got
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("dtype,scale", [("float32", 1e7), ("float64", 1e20)])
def test_kl_forward_mode_under_xla_matches_eager(dtype, scale):
    """The KL projection's re-expression under ``jax.jit``: XLA fuses ``c z -
    c z_first`` into one multiply-add, which leaves the rounding error of ``c
    z_first`` (not 0) for a block's first entry; exponentiated it was inf or 0
    once ``c z`` reached about 1e9 (float32) or 1e17 (float64): nan or wrong
    tangents that eager JAX did not show.  Scaled values now enter as ``c (z -
    z_first)``."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    x = jnp.asarray(np.array([[0.3, -1.2, 2.0, 0.5, 1.7, -0.4, 0.5]]) * scale, dtype)
    dx = jnp.asarray(np.cos(np.arange(7.0))[None], dtype)
    kl = softops.Permutahedron("kl")
    for op in (softops.soft_rank, softops.soft_sort):
        for t in (1e-3, 1.0):
            f = lambda v, op=op, t=t: op(v, temperature=t, method=kl)
            jitted = np.asarray(jax.jit(lambda v, d: jax.jvp(f, (v,), (d,))[1])(x, dx), float)
            with jax.disable_jit():
                eager = np.asarray(jax.jvp(f, (x,), (dx,))[1], float)
            assert np.all(np.isfinite(jitted)), (op.__name__, t, jitted)
            np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5 * np.abs(eager).max(),
                                       err_msg=f"{op.__name__} T={t}")


@pytest.mark.parametrize("method", ["permutahedron", softops.Permutahedron("kl")])
def test_temperature_floor_under_xla_matches_eager(method):
    """The permutahedron floors the temperature at ``max|x| / max``; XLA turned
    that division by a constant into a product with ``1 / max``, subnormal in
    float32 and flushed to 0, so under ``jax.jit`` the floor was 0 and a tie's
    gradient at a smaller temperature followed ``1 / T`` (-1.7e29) where eager
    JAX followed the floor (-2.9e25)."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    x = jnp.asarray(np.array([[0.3, -1.2, 2.0, 0.5, 0.5, 1.7]]) * 1e12, "float32")
    w = jnp.asarray(np.cos(np.arange(6.0))[None], "float32")
    for op in (softops.soft_rank, softops.soft_sort):
        f = lambda v, op=op: jnp.sum(op(v, temperature=1e-30, method=method) * w)
        eager = np.asarray(jax.grad(f)(x), float)
        jitted = np.asarray(jax.jit(jax.grad(f))(x), float)
        assert np.all(np.isfinite(eager)), eager
        np.testing.assert_allclose(jitted, eager, rtol=1e-5, err_msg=op.__name__)
