"""Temperatures: softops.Relative(tau) (scale-aware) in every family, and one temperature per row."""

from __future__ import annotations

import numpy as np
import pytest

import softops
from softops.temperature import Relative


def spacing(x):
    return np.sqrt(12) * x.std(-1, keepdims=True) / x.shape[-1]


@pytest.mark.parametrize("op", [softops.soft_rank, softops.soft_sort])
def test_relative_equals_explicit_temperature(backend, rng, op):
    """Permutahedron: T = tau * spacing for ranks, tau / spacing for sorts."""
    x = rng.normal(size=(3, 40)) * 5
    for tau in (0.1, 1.0, 4.0):
        got = backend.to_numpy(op(backend.asarray(x), temperature=Relative(tau)))
        for row in range(3):
            t = tau * spacing(x[row]) if op is softops.soft_rank else tau / spacing(x[row])
            expected = op(x[row], temperature=float(t[0]))
            np.testing.assert_allclose(got[row], expected, rtol=1e-10, atol=1e-12)


def test_ranks_invariant_and_sorts_equivariant_under_affine_maps(backend, rng):
    x = rng.normal(size=(2, 64))
    for tau in (0.3, 2.0):
        r = backend.to_numpy(softops.soft_rank(backend.asarray(x), temperature=Relative(tau)))
        s = backend.to_numpy(softops.soft_sort(backend.asarray(x), temperature=Relative(tau)))
        for a, b in ((1e-3, 5.0), (1e3, -2.0)):
            y = backend.asarray(a * x + b)
            np.testing.assert_allclose(backend.to_numpy(softops.soft_rank(y, temperature=Relative(tau))), r, rtol=1e-9)
            np.testing.assert_allclose(backend.to_numpy(softops.soft_sort(y, temperature=Relative(tau))), a * s + b, rtol=1e-9, atol=1e-9 * abs(b))


def test_one_tau_behaves_alike_for_sort_and_rank(rng):
    """Fraction of outputs within half a neighbour gap of the exact result: small
    tau is nearly exact for both, tau = 3 flattens both (docs/temperature.py)."""
    x = rng.normal(size=1024)
    gap = spacing(x)[0]
    exact_ranks = np.argsort(np.argsort(x)) + 1
    for tau, low, high in ((0.01, 0.99, 1.0), (0.3, 0.7, 0.95), (3.0, 0.0, 0.02)):
        r = softops.soft_rank(x, temperature=Relative(tau))
        s = softops.soft_sort(x, temperature=Relative(tau))
        assert low <= np.mean(np.abs(r - exact_ranks) < 0.5) <= high
        assert low <= np.mean(np.abs(s - np.sort(x)) < gap / 2) <= high


def test_constant_rows_and_single_elements(backend):
    for values in ([2.0, 2.0, 2.0], [5.0]):
        x = backend.asarray(values)
        r = backend.to_numpy(softops.soft_rank(x, temperature=Relative(1.0)))
        s = backend.to_numpy(softops.soft_sort(x, temperature=Relative(1.0)))
        np.testing.assert_allclose(r, np.full(len(values), (len(values) + 1) / 2))
        np.testing.assert_allclose(s, values)


def _relative_ops():
    from harness import MASK_METHODS, MATRIX_METHODS, SORT_CONFIGS

    ops = {}
    for name, m in SORT_CONFIGS.items():
        ops[f"rank-{name}"] = (lambda a, m=m: softops.soft_rank(a, temperature=Relative(0.7), method=m), 0)
        ops[f"sort-{name}"] = (lambda a, m=m: softops.soft_sort(a, temperature=Relative(0.7), method=m), 1)
    for name in MASK_METHODS:
        m = SORT_CONFIGS[name]
        ops[f"topk_mask-{name}"] = (lambda a, m=m: softops.soft_topk_mask(a, 3, temperature=Relative(0.7),
                                                                            method=m), 0)
    for name in MATRIX_METHODS:
        ops[f"permutation-{name}"] = (lambda a, m=name: softops.soft_permutation(a, temperature=Relative(0.7),
                                                                                 method=m), 0)
    ops["argmax_weights-softmax"] = (lambda a: softops.argmax_weights(a, temperature=Relative(0.7)), 0)
    return ops


RELATIVE_OPS = _relative_ops()


@pytest.mark.parametrize("name", sorted(RELATIVE_OPS))
def test_relative_gradient_is_the_gradient_of_the_invariant_function(diff_backend, rng, name):
    """The spacing is differentiated: the reverse-mode gradient of
    ``sum(op(x, Relative(tau)) * cot)`` equals central finite differences
    (float64), and the operation's invariance shows in it.  Ranks, masks,
    permutation matrices and weights do not change when a row is shifted or
    scaled (degree 0), sorts move with it (degree 1), so by Euler's theorem
    ``x . g = degree * sum(out * cot)`` and ``1 . g = degree * sum(cot)``.
    (Holding the spacing constant broke both: that gradient is not the
    function's, and it shrank learnt scores to float rounding.)"""
    op, degree = RELATIVE_OPS[name]
    x = rng.normal(size=(2, 7)) * 3 + 1
    probe = np.asarray(op(x))
    cot = rng.normal(size=probe.shape)
    got = diff_backend.vjp(op, x, cot)
    from harness import finite_difference_vjp

    want = finite_difference_vjp(op, x, cot)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())
    value = (probe * cot).reshape(2, -1).sum(-1)
    total = cot.reshape(2, -1).sum(-1) if degree else 0.0
    scale_err = (got * x).sum(-1) - degree * value
    shift_err = got.sum(-1) - degree * total
    if name != "sort-kl":  # the KL projection's sorted values are not homogeneous in x: no scale identity
        np.testing.assert_allclose(scale_err, 0.0, atol=1e-8 * np.abs(got * x).sum())
    np.testing.assert_allclose(shift_err, 0.0, atol=1e-8 * np.abs(got).sum())


_FINITE_CASES = {
    **{f"{name}-mask": (lambda a, m=m: softops.soft_rank(a, temperature=Relative(1.0), method=m,
                                                         mask=np.array([[True] * 4, [True, False, True, True]])))
       for name, m in __import__("harness").SORT_CONFIGS.items()},
    **{f"rank-{name}": (lambda a, m=m: softops.soft_rank(a, temperature=Relative(1.0), method=m))
       for name, m in __import__("harness").SORT_CONFIGS.items()},
    **{f"argmax_weights-{m}": (lambda a, m=m: softops.argmax_weights(a, temperature=Relative(1.0), method=m))
       for m in ("softmax", "sparsemax", "entmax15")},
    **{f"soft_max-{m}": (lambda a, m=m: softops.soft_max(a, temperature=Relative(1.0), method=m))
       for m in ("softmax", "sparsemax", "entmax15", "logsumexp")},
    "soft_argmax": lambda a: softops.soft_argmax(a, temperature=Relative(1.0)),
}


@pytest.mark.parametrize("name", sorted(_FINITE_CASES))
def test_relative_gradient_is_finite_and_zero_on_constant_rows(diff_backend, name):
    """A constant row uses spacing 1 (the derivative of its square root is
    never taken at 0), and ``-inf`` or masked entries never reach the
    spacing's derivative: finite gradients everywhere, 0 at ``-inf``, in
    every family and method."""
    x = np.array([[2.0, 2.0, 2.0, 2.0], [1.0, -np.inf, 3.0, 0.5]])
    op = _FINITE_CASES[name]
    cot = np.ones(np.asarray(op(np.where(np.isfinite(x), x, 0.0))).shape)
    cot = cot * np.linspace(-1.0, 1.3, cot.size).reshape(cot.shape)
    g = diff_backend.vjp(op, x, cot)
    assert np.all(np.isfinite(g)), g
    if not name.endswith("-mask"):
        assert g[1, 1] == 0.0


@pytest.mark.parametrize("tau, error", [(0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), (True, TypeError), ("1", TypeError)])
def test_bad_tau(tau, error):
    with pytest.raises(error, match="tau must be"):
        Relative(tau)


def test_relative_reaches_topk_and_quantiles(backend, rng):
    """soft_topk and soft_quantile follow soft_sort; soft_topk_mask follows soft_rank."""
    x = rng.normal(size=(2, 30)) * 3
    bx = backend.asarray(x)
    tau = Relative(0.8)
    sorted_desc = backend.to_numpy(softops.soft_sort(bx, descending=True, temperature=tau))
    np.testing.assert_allclose(backend.to_numpy(softops.soft_topk(bx, 5, temperature=tau)), sorted_desc[:, :5], rtol=1e-10)
    ascending = backend.to_numpy(softops.soft_sort(bx, temperature=tau))
    q = backend.to_numpy(softops.soft_quantile(bx, 0.5, temperature=tau))
    np.testing.assert_allclose(q, (ascending[:, 14] + ascending[:, 15]) / 2, rtol=1e-10)
    for row in range(2):
        t = 0.8 * spacing(x[row])[0]
        expected = softops.soft_topk_mask(x[row], 7, temperature=float(t))
        got = backend.to_numpy(softops.soft_topk_mask(bx, 7, temperature=tau))[row]
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-45, 1e-300, 1e20, 1e30, "max"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relative_on_extreme_magnitudes(backend, scale, dtype):
    """Relative(tau) measures the data's own spacing: at any magnitude that the
    dtype holds the ranks are those of the unit-scale data, the sort is the
    unit-scale sort scaled, finite; on subnormal data (below any temperature)
    every rank ties."""
    info = np.finfo(dtype)
    s = float(info.max) / 4 if scale == "max" else scale
    if not (float(info.smallest_subnormal) <= s <= float(info.max) / 4):
        pytest.skip("not representable")
    base = np.array([[0.1, -0.9, 0.5, 0.8, -0.3]])
    unit = backend.to_numpy(softops.soft_rank(backend.asarray(base, dtype), temperature=softops.Relative(0.5)))
    got = backend.to_numpy(softops.soft_rank(backend.asarray(base * s, dtype), temperature=softops.Relative(0.5)))
    assert np.all(np.isfinite(got))
    if s * 0.2 < float(info.smallest_normal):  # gaps below the smallest temperature: ties
        np.testing.assert_allclose(got, 3.0, rtol=1e-6)
    else:
        np.testing.assert_allclose(got, unit, rtol=1e-3, atol=1e-3)
        srt = backend.to_numpy(softops.soft_sort(backend.asarray(base * s, dtype), temperature=softops.Relative(0.5)))
        ref = backend.to_numpy(softops.soft_sort(backend.asarray(base, dtype), temperature=softops.Relative(0.5)))
        assert np.all(np.isfinite(srt))
        np.testing.assert_allclose(srt / s, ref, rtol=1e-3, atol=1e-3)


# --- one temperature per row, and Relative(tau), in every family --------------------

from harness import SORT_CONFIGS  # noqa: E402

_SORT = tuple(SORT_CONFIGS.items())
# name -> f(x, t, axis); every output keeps the batch axes in x's order.
_ROW_OPS = {
    **{f"argmax_weights-{m}": (lambda x, t, a, m=m: softops.argmax_weights(x, a, temperature=t, method=m))
       for m in ("softmax", "sparsemax", "entmax15")},
    "soft_argmax-softmax": lambda x, t, a: softops.soft_argmax(x, a, temperature=t),
    "soft_argmin-sparsemax": lambda x, t, a: softops.soft_argmin(x, a, temperature=t, method="sparsemax"),
    **{f"soft_max-{m}": (lambda x, t, a, m=m: softops.soft_max(x, a, temperature=t, method=m))
       for m in ("softmax", "entmax15", "logsumexp")},
    "soft_min-softmax": lambda x, t, a: softops.soft_min(x, a, temperature=t),
    **{f"soft_rank-{label}": (lambda x, t, a, m=m: softops.soft_rank(x, a, temperature=t, method=m))
       for label, m in _SORT},
    **{f"soft_sort-{label}": (lambda x, t, a, m=m: softops.soft_sort(x, a, temperature=t, method=m))
       for label, m in _SORT},
    **{f"soft_topk-{label}": (lambda x, t, a, m=m: softops.soft_topk(x, 2, a, temperature=t, method=m))
       for label, m in _SORT},
    **{f"soft_median-{label}": (lambda x, t, a, m=m: softops.soft_median(x, a, temperature=t, method=m))
       for label, m in _SORT},
    **{f"soft_topk_mask-{label}": (lambda x, t, a, m=m: softops.soft_topk_mask(x, 2, a, temperature=t, method=m))
       for label, m in _SORT if label != "kl"},
}


@pytest.mark.parametrize("op", list(_ROW_OPS))
def test_one_temperature_per_row(backend, rng, op):
    """A temperature array with one value per row (batch-shaped, or with x's
    dimensions and size 1 on the axis) is the same as calling each row with
    its own number, also along axis 0 (the batch is then the other axis); a
    (1,) array is one temperature for every row."""
    f = _ROW_OPS[op]
    x = rng.normal(size=(3, 6)) * 2
    t = np.array([0.3, 1.0, 4.0])
    want = np.stack([backend.to_numpy(f(backend.asarray(x[i]), float(t[i]), -1)) for i in range(3)])
    for shaped in (t, t[:, None]):
        got = backend.to_numpy(f(backend.asarray(x), backend.asarray(shaped), -1))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    for shaped in (t, t[None, :]):
        got = backend.to_numpy(f(backend.asarray(x.T.copy()), backend.asarray(shaped), 0))
        np.testing.assert_allclose(got, want.T if got.ndim == 2 else want, rtol=1e-9, atol=1e-12)
    one = backend.to_numpy(f(backend.asarray(x), backend.asarray(t[1:2]), -1))
    np.testing.assert_allclose(one, backend.to_numpy(f(backend.asarray(x), 1.0, -1)), rtol=1e-12, atol=1e-14)


def test_temperature_shapes_are_checked(backend):
    x = backend.asarray(np.zeros((3, 4)))
    for bad in (np.ones(4), np.ones((3, 4)), np.ones((2, 3, 1))):
        with pytest.raises(ValueError, match="batch shape|size 1"):
            softops.soft_rank(x, temperature=backend.asarray(bad))
        with pytest.raises(ValueError, match="batch shape|size 1"):
            softops.soft_argmax(x, temperature=backend.asarray(bad))
    with pytest.raises(ValueError, match="> 0"):
        softops.soft_max(x, temperature=backend.asarray([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="must broadcast to index"):
        softops.soft_index(backend.asarray([0.5, 1.5]), 4, kernel="gaussian", bandwidth=backend.asarray([1.0, 2, 3]))


@pytest.mark.parametrize("op", ["argmax_weights", "soft_argmax", "soft_max", "soft_min"])
def test_relative_in_the_select_family(backend, rng, op):
    """Relative(tau) for the select family: T = tau * spacing(x) per row over the
    finite entries (-inf masked), so the result is invariant to shifting and
    scaling x (equivariant for soft_max / soft_min, which return values)."""
    f = getattr(softops, op)
    x = rng.normal(size=(3, 9))
    x[1, 4] = -np.inf if op != "soft_min" else np.inf
    finite = np.where(np.isfinite(x), x, np.nan)
    spacing_rows = np.sqrt(12) * np.nanstd(finite, axis=-1) / np.isfinite(x).sum(-1)
    for tau in (0.2, 1.0, 5.0):
        got = backend.to_numpy(f(backend.asarray(x), temperature=Relative(tau)))
        want = backend.to_numpy(f(backend.asarray(x), temperature=backend.asarray(tau * spacing_rows)))
        np.testing.assert_allclose(got, want, rtol=1e-12)
        for a, b in ((1e-3, 4.0), (250.0, -3.0)):
            moved = backend.to_numpy(f(backend.asarray(a * x + b), temperature=Relative(tau)))
            expect = a * got + b if op in ("soft_max", "soft_min") else got
            np.testing.assert_allclose(moved, expect, rtol=1e-9, atol=1e-9 * abs(b))


def test_relative_bandwidth_is_grid_spacings(backend):
    """soft_index's Relative(tau) bandwidth is tau grid spacings (the spacing is one index unit)."""
    i = backend.asarray([0.3, 2.6])
    for kernel in ("gaussian", "laplace"):
        got = backend.to_numpy(softops.soft_index(i, 5, kernel=kernel, bandwidth=Relative(0.7)))
        np.testing.assert_array_equal(got, backend.to_numpy(softops.soft_index(i, 5, kernel=kernel, bandwidth=0.7)))
