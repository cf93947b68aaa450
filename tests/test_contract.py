"""The README's contract on every backend: infinities, NaN rows, plain inputs, empty batches."""

from __future__ import annotations

import numpy as np
import pytest

import softops

INF = np.inf
KL = softops.Permutahedron(regularization="kl")
# Every sort method; kl's ranks are the exception documented in soft_rank.
METHODS = {"l2": "permutahedron", "kl": KL, "lapsum": "lapsum"}


def _row_with_infinities(rng, n_finite=5, m_low=2, m_high=1):
    x = np.concatenate([rng.normal(size=n_finite), [-INF] * m_low, [INF] * m_high])
    x = x[rng.permutation(x.size)]
    return x, x[np.isfinite(x)], None  # the finite entries in x's order


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("descending", [False, True])
def test_infinities_are_exact_extremes(backend, rng, method, descending):
    """With m entries at -inf (and some at +inf): the finite entries' ranks are
    m + their ranks among the finite entries, tied infinities share their
    average rank exactly, and the sort is the infinities around the finite sort."""
    m = METHODS[method]
    x, finite, _ = _row_with_infinities(rng)
    below = 2 if not descending else 1  # entries ranked before the finite ones
    t = 0.7
    got = backend.to_numpy(softops.soft_rank(backend.asarray(x), temperature=t, method=m, descending=descending))
    want = backend.to_numpy(softops.soft_rank(backend.asarray(finite), temperature=t, method=m,
                                              descending=descending))
    fin = np.isfinite(x)
    if method != "kl":
        np.testing.assert_allclose(got[fin], below + want, rtol=1e-6, atol=1e-9)
    else:
        # kl projects the finite entries onto the remaining positions: ranks in
        # (below, below + 5], same total, same order as the finite-only ranks.
        assert np.all(got[fin] > below) and np.all(got[fin] <= below + 5 + 1e-9)
        np.testing.assert_allclose(got[fin].sum(), sum(range(below + 1, below + 6)), rtol=1e-9)
        np.testing.assert_array_equal(np.argsort(got[fin]), np.argsort(want))
    low = (x == -INF) if not descending else (x == INF)
    high = ~fin & ~low
    np.testing.assert_allclose(got[low], (low.sum() + 1) / 2, rtol=1e-12)
    np.testing.assert_allclose(got[high], x.size - (high.sum() - 1) / 2, rtol=1e-12)

    s = backend.to_numpy(softops.soft_sort(backend.asarray(x), temperature=t, method=m, descending=descending))
    sf = backend.to_numpy(softops.soft_sort(backend.asarray(finite), temperature=t, method=m,
                                            descending=descending))
    ends = [-INF, -INF] if not descending else [INF]
    tail = [INF] if not descending else [-INF, -INF]
    np.testing.assert_allclose(s, np.concatenate([ends, sf, tail]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["l2", "lapsum"])
def test_topk_mask_never_selects_minus_inf(backend, rng, method):
    x, finite, _ = _row_with_infinities(rng, m_high=0)
    got = backend.to_numpy(softops.soft_topk_mask(backend.asarray(x), 2, temperature=0.5, method=METHODS[method]))
    want = backend.to_numpy(softops.soft_topk_mask(backend.asarray(finite), 2, temperature=0.5,
                                                   method=METHODS[method]))
    np.testing.assert_array_equal(got[~np.isfinite(x)], 0.0)
    np.testing.assert_allclose(got[np.isfinite(x)], want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", list(METHODS))
def test_infinite_entries_get_zero_gradient(diff_backend, rng, method):
    """Gradients through rows with infinities: zero at the infinities, equal to
    the finite-only row's at the finite entries (rank: shifted by a constant)."""
    x, finite, perm = _row_with_infinities(rng, m_high=0)
    fin = np.isfinite(x)
    f = lambda a: softops.soft_rank(a, temperature=0.8, method=METHODS[method])
    cot = np.cos(np.arange(x.size))
    g = diff_backend.vjp(f, x, cot)
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[~fin], 0.0)
    if method != "kl":
        np.testing.assert_allclose(g[fin], diff_backend.vjp(f, finite, cot[fin]), rtol=1e-6, atol=1e-9)
    sort_cot = np.where(np.arange(x.size) < 2, 0.0, cot)  # no cotangent on the -inf outputs
    h = lambda a: softops.soft_sort(a, temperature=0.6, method=METHODS[method])
    g = diff_backend.vjp(h, x, sort_cot)
    np.testing.assert_array_equal(g[~fin], 0.0)
    np.testing.assert_allclose(g[fin], diff_backend.vjp(h, finite, sort_cot[2:]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", list(METHODS))
def test_hard_keeps_infinities(backend, method):
    x = backend.asarray([[-INF, 1.0, 2.0, INF]])
    np.testing.assert_array_equal(backend.to_numpy(softops.soft_sort(x, method=METHODS[method], hard=True)),
                                  [[-INF, 1.0, 2.0, INF]])
    np.testing.assert_array_equal(backend.to_numpy(softops.soft_rank(x, method=METHODS[method], hard=True)),
                                  [[1.0, 2.0, 3.0, 4.0]])


@pytest.mark.parametrize("method", list(METHODS))
def test_nan_row_is_nan_and_other_rows_untouched(backend, method):
    x = np.array([[1.0, np.nan, 2.0], [3.0, 1.0, 2.0]])
    for op in (softops.soft_rank, softops.soft_sort):
        got = backend.to_numpy(op(backend.asarray(x), method=METHODS[method]))
        assert np.all(np.isnan(got[0]))
        np.testing.assert_allclose(got[1], backend.to_numpy(op(backend.asarray(x[1:]), method=METHODS[method]))[0])


def test_all_infinite_row(backend):
    x = backend.asarray([[-INF, -INF, -INF]])
    for m in METHODS.values():
        np.testing.assert_allclose(backend.to_numpy(softops.soft_rank(x, method=m)), [[2.0, 2.0, 2.0]])
        np.testing.assert_array_equal(backend.to_numpy(softops.soft_sort(x, method=m)), [[-INF] * 3])


# --- empty batches ------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_empty_batch_values_and_gradients(diff_backend, method):
    m = METHODS[method]
    for f in (lambda a: softops.soft_rank(a, method=m), lambda a: softops.soft_sort(a, method=m),
              lambda a: softops.soft_quantile(a, 0.3, method=m)):
        x = np.zeros((0, 5))
        out = f(diff_backend.asarray(x))
        assert diff_backend.to_numpy(out).size == 0
        g = diff_backend.vjp(f, x, np.zeros(diff_backend.to_numpy(out).shape))
        assert g.shape == (0, 5)


# --- plain Python inputs --------------------------------------------------------------


def test_lists_give_numpy():
    np.testing.assert_allclose(softops.soft_rank([3.0, 1.0, 2.0], temperature=1e-3), [3.0, 1.0, 2.0])
    np.testing.assert_allclose(softops.soft_rank([3, 1, 2], temperature=1e-3), [3.0, 1.0, 2.0])
    np.testing.assert_allclose(softops.soft_sort([[3.0, 1.0, 2.0]], temperature=1e-3), [[1.0, 2.0, 3.0]])
    assert isinstance(softops.soft_argmax([1.0, 3.0, 2.0]), (np.ndarray, np.generic))
    np.testing.assert_allclose(softops.soft_index(2.5, 5), [0, 0, 0.5, 0.5, 0])
    np.testing.assert_allclose(softops.soft_quantile([1.0, 2.0, 3.0, 4.0], [0.0, 1.0], temperature=1e-3),
                               [1.0, 4.0])


def test_scalars_and_lists_take_the_arrays_framework(backend):
    arr = backend.asarray(np.arange(5.0), "float32")
    out = softops.lookup(arr, 1.5)
    assert type(out) is type(arr) and backend.to_numpy(out) == pytest.approx(1.5)
    assert str(out.dtype).endswith("float32")
    np.testing.assert_allclose(backend.to_numpy(softops.lookup(arr, [1, 3])), [1.0, 3.0])
    np.testing.assert_allclose(backend.to_numpy(softops.assign(arr, 2, 9.0)), [0, 1, 9, 3, 4])
    np.testing.assert_allclose(backend.to_numpy(softops.soft_take(arr, [0, 0, 1.0, 0, 0])), 2.0)
    np.testing.assert_allclose(backend.to_numpy(softops.soft_assign(arr, [0, 1.0, 0, 0, 0], 7.0)), [0, 7, 2, 3, 4])


def test_plain_input_errors_are_clear():
    with pytest.raises(TypeError, match="numbers"):
        softops.soft_rank(["a", "b"])
