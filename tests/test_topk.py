"""soft_topk, soft_topk_mask, soft_quantile and soft_median on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import softops
import softops.sort
from harness import finite_difference_vjp

QS = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]


def capped_simplex_oracle(z, k):
    """clip(z - tau, 0, 1) summing to k, tau by bisection (one row)."""
    lo, hi = z.min() - 1.0, z.max()
    for _ in range(200):
        tau = (lo + hi) / 2
        if np.clip(z - tau, 0, 1).sum() > k:
            lo = tau
        else:
            hi = tau
    return np.clip(z - (lo + hi) / 2, 0, 1)


# --- exact limits ------------------------------------------------------------------


@pytest.mark.parametrize("largest", [True, False])
def test_zero_temperature_is_exact(backend, rng, largest):
    x = rng.normal(size=(3, 17))
    bx = backend.asarray(x)
    srt = -np.sort(-x, -1) if largest else np.sort(x, -1)
    for k in (1, 5, 17):
        top = softops.soft_topk(bx, k, largest=largest, temperature=1e-9)
        assert np.array_equal(backend.to_numpy(top), srt[:, :k])
        mask = softops.soft_topk_mask(bx, k, largest=largest, temperature=1e-9)
        want = (x >= srt[:, k - 1 : k]) if largest else (x <= srt[:, k - 1 : k])
        assert np.array_equal(backend.to_numpy(mask), want.astype(float))
    q = softops.soft_quantile(bx, QS, temperature=1e-9)
    np.testing.assert_allclose(backend.to_numpy(q), np.quantile(x, QS, axis=-1), rtol=1e-12)
    med = softops.soft_median(bx, temperature=1e-9)
    np.testing.assert_allclose(backend.to_numpy(med), np.median(x, -1), rtol=1e-12)
    if backend.name == "torch":
        import torch

        t = torch.as_tensor(x)
        assert torch.equal(softops.soft_topk(t, 4, largest=largest, temperature=1e-9),
                           torch.topk(t, 4, largest=largest).values)
        qt = torch.tensor(QS, dtype=t.dtype)
        torch.testing.assert_close(softops.soft_quantile(t, qt, temperature=1e-9), torch.quantile(t, qt, dim=-1))


def test_hard_is_exact_with_soft_gradient(diff_backend):
    b = diff_backend
    x = np.array([[3.0, 1.0, 3.0, 0.5, 2.0]])  # a tie at the top
    top = softops.soft_topk(b.asarray(x), 2, hard=True)
    assert np.array_equal(b.to_numpy(top), [[3.0, 3.0]])
    mask = softops.soft_topk_mask(b.asarray(x), 1, hard=True)
    assert np.array_equal(b.to_numpy(mask), [[1, 0, 0, 0, 0]])  # first of the tie
    mask = softops.soft_topk_mask(b.asarray(x), 2.5, largest=False, hard=True)
    assert np.array_equal(b.to_numpy(mask), [[0, 1, 0, 1, 0.5]])
    q = softops.soft_quantile(b.asarray(x), [0.3, 0.5], hard=True)
    np.testing.assert_allclose(b.to_numpy(q), np.quantile(x, [0.3, 0.5], axis=-1), rtol=1e-12)
    # The soft gradients (a constant cotangent would see the constant sum k).
    for f, cot in ((lambda t: softops.soft_topk_mask(t, 2, hard=True, temperature=3.0), np.arange(5.0)[None]),
                   (lambda t: softops.soft_topk(t, 2, hard=True, temperature=3.0), np.ones((1, 2)))):
        g = b.vjp(f, x, cot)
        assert np.abs(g).sum() > 0


# --- the mask against an oracle -----------------------------------------------------


@pytest.mark.parametrize("k", [1, 2.5, 3, 6.99, 7])
@pytest.mark.parametrize("t", [0.05, 0.7, 5.0])
def test_mask_matches_capped_simplex_oracle(backend, rng, k, t):
    x = rng.normal(size=(4, 7))
    for largest in (True, False):
        got = backend.to_numpy(softops.soft_topk_mask(backend.asarray(x), k, temperature=t, largest=largest))
        z = (x if largest else -x) / t
        want = np.stack([capped_simplex_oracle(row, k) for row in z])
        np.testing.assert_allclose(got, want, atol=1e-9)


# --- invariants ---------------------------------------------------------------------

ROWS = st.integers(1, 10).flatmap(
    lambda n: arrays(np.float64, (2, n), elements=st.floats(-100, 100).map(lambda v: round(v, 1)))
)


@settings(max_examples=15)
@given(x=ROWS, t=st.sampled_from([1e-3, 0.3, 10.0]), frac=st.floats(0.01, 1.0))
def test_invariants(backend, x, t, frac):
    n = x.shape[-1]
    bx = backend.asarray(x)
    k = max(frac * n, 1e-3)
    mask = backend.to_numpy(softops.soft_topk_mask(bx, k, temperature=t))
    assert np.all((mask >= 0) & (mask <= 1))
    np.testing.assert_allclose(mask.sum(-1), k, rtol=1e-9)
    perm = np.random.default_rng(n).permutation(n)
    mask_perm = backend.to_numpy(softops.soft_topk_mask(backend.asarray(x[:, perm]), k, temperature=t))
    np.testing.assert_allclose(mask_perm, mask[:, perm], atol=1e-9)
    kk = max(1, int(frac * n))
    top = backend.to_numpy(softops.soft_topk(bx, kk, temperature=t))
    assert np.all(np.diff(top, axis=-1) <= 1e-9 * (1 + np.abs(top[..., 1:])))
    quant = backend.to_numpy(softops.soft_quantile(bx, np.linspace(0, 1, 7).tolist(), temperature=t))
    assert np.all(np.diff(quant, axis=0) >= -1e-9 * (1 + np.abs(quant[1:])))


# --- gradients against finite differences --------------------------------------------


def _fd_check(b, f, f_np, x, cot):
    np.testing.assert_allclose(b.vjp(f, x, cot), finite_difference_vjp(f_np, x, cot), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("t", [0.3, 3.0])
def test_gradients_match_finite_differences(diff_backend, rng, t):
    b = diff_backend
    x = rng.normal(size=(2, 6))
    cases = [
        (lambda a: softops.soft_topk(a, 3, temperature=t), (2, 3)),
        (lambda a: softops.soft_topk(a, 2, largest=False, temperature=t), (2, 2)),
        (lambda a: softops.soft_topk_mask(a, 2.5, temperature=t), (2, 6)),
        (lambda a: softops.soft_quantile(a, [0.2, 0.5], temperature=t), (2, 2)),
    ]
    for op, shape in cases:
        cot = rng.normal(size=shape)
        _fd_check(b, op, lambda a: op(np.asarray(a)), x, cot)
    # With respect to k (mask) and q (quantile), as 0-d / 1-D arrays.
    bx = b.asarray(x)
    mask_k = lambda k: softops.soft_topk_mask(bx, k, temperature=t)
    mask_k_np = lambda k: softops.soft_topk_mask(x, float(k), temperature=t)
    _fd_check(b, mask_k, mask_k_np, np.array(2.4), rng.normal(size=(2, 6)))
    quant_q = lambda q: softops.soft_quantile(bx, q, temperature=t)
    quant_q_np = lambda q: softops.soft_quantile(x, np.asarray(q).tolist(), temperature=t)
    _fd_check(b, quant_q, quant_q_np, np.array([0.13, 0.55, 0.71]), rng.normal(size=(3, 2)))


# --- hostile inputs -----------------------------------------------------------------

HOSTILE = {
    "scaled": np.random.default_rng(0).normal(size=(2, 9)) * 1e4,
    "ties": np.array([[1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 2.0, 1.0]] * 2),
    "constant": np.full((2, 9), 3.5),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_hostile_inputs_stay_finite(diff_backend, case, dtype):
    b = diff_backend
    x = HOSTILE[case]
    ops = [
        lambda a: softops.soft_topk(a, 3, temperature=0.5),
        lambda a: softops.soft_topk_mask(a, 3.5, temperature=0.5),
        lambda a: softops.soft_quantile(a, [0.0, 0.3, 1.0], temperature=0.5),
        lambda a: softops.soft_median(a, temperature=1e-3),
    ]
    for op in ops:
        out = op(b.asarray(x, dtype))
        assert out.dtype == diff_backend.dtype(dtype)
        g = b.vjp(op, x, np.ones(tuple(out.shape)), dtype)
        assert np.all(np.isfinite(b.to_numpy(out))) and np.all(np.isfinite(g))
    mask = b.to_numpy(softops.soft_topk_mask(b.asarray(x, dtype), 3.5, temperature=0.5))
    np.testing.assert_allclose(mask.sum(-1), 3.5, rtol=1e-2)


def test_length_one(backend):
    x = backend.asarray([[2.0], [-1.0]])
    assert np.array_equal(backend.to_numpy(softops.soft_topk(x, 1)), [[2.0], [-1.0]])
    np.testing.assert_allclose(backend.to_numpy(softops.soft_topk_mask(x, 0.4)), [[0.4], [0.4]])
    np.testing.assert_allclose(backend.to_numpy(softops.soft_quantile(x, [0.0, 0.7])), [[2, -1], [2, -1]])


# --- layout -------------------------------------------------------------------------


def test_layout(backend, rng):
    x = rng.normal(size=(3, 5, 4))
    bx = backend.asarray(x)
    t = 1e-9
    top = backend.to_numpy(softops.soft_topk(bx, 2, axis=1, temperature=t))
    np.testing.assert_array_equal(top, -np.sort(-x, axis=1)[:, :2])
    top = backend.to_numpy(softops.soft_topk(bx, 3, axis=(0, 2), temperature=t))
    flat = np.moveaxis(x, 1, 0).reshape(5, 12)
    np.testing.assert_array_equal(top, np.moveaxis(-np.sort(-flat, -1)[:, :3], 1, 0))
    mask = backend.to_numpy(softops.soft_topk_mask(bx, 2, axis=1, temperature=t))
    assert mask.shape == x.shape
    np.testing.assert_allclose(mask.sum(1), 2)
    for q in (0.3, [0.3, 0.8]):
        for keepdims in (False, True):
            got = backend.to_numpy(softops.soft_quantile(bx, q, axis=1, temperature=t, keepdims=keepdims))
            np.testing.assert_allclose(got, np.quantile(x, q, axis=1, keepdims=keepdims), rtol=1e-12)
    got = backend.to_numpy(softops.soft_median(bx, axis=(0, 2), temperature=t))
    np.testing.assert_allclose(got, np.median(np.moveaxis(x, 1, 0).reshape(5, 12), -1), rtol=1e-12)


# --- bad arguments ------------------------------------------------------------------


def test_bad_arguments(backend):
    x = backend.asarray([[1.0, 2.0, 3.0]])
    with pytest.raises(TypeError, match="k must be an int"):
        softops.soft_topk(x, 1.5)
    for k in (-1, 4):  # k = 0 is the empty selection (tests/test_contract.py)
        with pytest.raises(ValueError, match="k must be between 0 and n = 3"):
            softops.soft_topk(x, k)
    for k in (-0.5, 3.5, -1, float("nan")):
        with pytest.raises(ValueError, match=r"k must be in \[0, n\]"):
            softops.soft_topk_mask(x, k)
    with pytest.raises(TypeError, match="k must be"):
        softops.soft_topk_mask(x, "2")
    for q in (1.5, [0.5, -0.1]):
        with pytest.raises(ValueError, match=r"q must lie in \[0, 1\]"):
            softops.soft_quantile(x, q)
    with pytest.raises(ValueError, match="q must lie"):
        softops.soft_quantile(x, backend.asarray([0.2, 1.2]))
    with pytest.raises(ValueError, match="1-D"):
        softops.soft_quantile(x, [[0.5]])
    with pytest.raises(TypeError, match="real floating"):
        softops.soft_topk(backend.asarray([[1, 2, 3]], "int64"), 1)
    with pytest.raises(ValueError, match="method must be one of"):
        softops.soft_topk_mask(x, 1, method="bogus")
    with pytest.raises(ValueError, match="regularization"):
        softops.soft_topk_mask(x, 1, method=softops.Permutahedron(regularization="kl"))
    with pytest.raises(ValueError, match="regularization"):
        softops.Permutahedron(regularization="l3")
    with pytest.raises(TypeError, match="largest"):
        softops.soft_topk(x, 1, largest=1)


def test_method_with_its_own_mask_is_used(backend, monkeypatch):
    class Fake(softops.Permutahedron):
        def topk_mask_rows(self, backend, x, k, temperature, largest):
            return backend.xp.full(x.shape, k / x.shape[-1], dtype=x.dtype)

    monkeypatch.setitem(softops.sort.SORT_METHODS, "fake", Fake)
    mask = softops.soft_topk_mask(backend.asarray([[1.0, 2.0, 3.0, 4.0]]), 1.0, method="fake")
    np.testing.assert_allclose(backend.to_numpy(mask), [[0.25] * 4])


# --- transforms and agreement ---------------------------------------------------------


def test_jit_and_vmap(backend, rng):
    x = rng.normal(size=(3, 8))
    ops = [
        lambda a: softops.soft_topk(a, 3, temperature=0.5),
        lambda a: softops.soft_topk_mask(a, 2.5, temperature=0.5),
        lambda a: softops.soft_quantile(a, 0.3, temperature=0.5),
        lambda a: softops.soft_median(a, temperature=0.5),
    ]
    for op in ops:
        want = backend.to_numpy(op(backend.asarray(x)))
        np.testing.assert_allclose(backend.to_numpy(backend.jit(op)(backend.asarray(x))), want, rtol=1e-12)
        np.testing.assert_allclose(backend.to_numpy(backend.vmap(op)(backend.asarray(x))), want, rtol=1e-12)


def test_backends_agree(backend, rng):
    x = rng.normal(size=(2, 11))
    bx = backend.asarray(x)
    for op in (
        lambda a: softops.soft_topk(a, 4, largest=False, temperature=0.7),
        lambda a: softops.soft_topk_mask(a, 3.3, temperature=0.7),
        lambda a: softops.soft_quantile(a, [0.1, 0.75], temperature=0.7),
    ):
        np.testing.assert_allclose(backend.to_numpy(op(bx)), op(x), rtol=1e-12, atol=1e-12)
