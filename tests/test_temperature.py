"""temperature=softops.Relative(tau): scale-aware temperatures for the sorting family."""

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


def test_gradient_holds_the_spacing_constant(diff_backend, rng):
    x = rng.normal(size=12)
    cot = rng.normal(size=12)
    t = 0.7 * spacing(x)[0]
    g_relative = diff_backend.vjp(lambda a: softops.soft_rank(a, temperature=Relative(0.7)), x, cot)
    g_explicit = diff_backend.vjp(lambda a: softops.soft_rank(a, temperature=float(t)), x, cot)
    np.testing.assert_allclose(g_relative, g_explicit, rtol=1e-10)
    assert np.all(np.isfinite(g_relative))


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
