"""Soft permutation matrices (NeuralSort, SoftSort): closed forms, limits, soft_permutation, soft_sort_by."""

from __future__ import annotations

import numpy as np
import pytest
from harness import MATRIX_METHODS

import softops


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_neuralsort_closed_form_by_hand(backend):
    """Grover et al. 2019, eq. 5, for s = (2, 0, 1): A_s 1 = (3, 3, 2) and row i
    of the descending relaxation is softmax(((n + 1 - 2i) s - A_s 1) / T)."""
    t = 0.7
    rows = np.array([[1.0, -3.0, 0.0],  # i = 1: 2 s - A 1
                     [-3.0, -3.0, -2.0],  # i = 2: 0 s - A 1
                     [-7.0, -3.0, -4.0]])  # i = 3: -2 s - A 1
    got = backend.to_numpy(softops.soft_permutation(backend.asarray([2.0, 0.0, 1.0]), temperature=t,
                                                    method="neuralsort", descending=True))
    np.testing.assert_allclose(got, _softmax(rows / t), rtol=1e-12)


@pytest.mark.parametrize("power", [1, 2])
def test_softsort_closed_form_by_hand(backend, power):
    """Prillo & Eisenschlos 2020, eq. 3, for s = (2, 0, 1): sorted descending
    (2, 1, 0), row i is softmax(-|sort(s)_i - s_j|^p / T)."""
    t = 0.6
    d = np.array([[0.0, 2.0, 1.0], [1.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    got = backend.to_numpy(softops.soft_permutation(backend.asarray([2.0, 0.0, 1.0]), temperature=t,
                                                    method=softops.SoftSort(power=power), descending=True))
    np.testing.assert_allclose(got, _softmax(-(d**power) / t), rtol=1e-12)


@pytest.mark.parametrize("method", MATRIX_METHODS)
def test_rows_sum_to_one_and_small_temperature_is_exact(backend, rng, method):
    x = rng.normal(size=(4, 7))
    for descending in (False, True):
        p = backend.to_numpy(softops.soft_permutation(backend.asarray(x), temperature=0.5, method=method,
                                                      descending=descending))
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)
        assert p.min() >= 0
        exact = backend.to_numpy(softops.soft_permutation(backend.asarray(x), temperature=1e-9, method=method,
                                                          descending=descending))
        order = np.argsort(-x if descending else x, axis=-1, kind="stable")
        np.testing.assert_array_equal(exact, (order[..., :, None] == np.arange(7)).astype(float))
        hard = backend.to_numpy(softops.soft_permutation(backend.asarray(x), temperature=0.5, method=method,
                                                         descending=descending, hard=True))
        np.testing.assert_array_equal(hard, exact)
    # The operations read off the matrix become exact too.
    t = 1e-9
    np.testing.assert_allclose(backend.to_numpy(softops.soft_sort(backend.asarray(x), temperature=t, method=method)),
                               np.sort(x), rtol=1e-12)
    ranks = np.argsort(np.argsort(x, axis=-1), axis=-1) + 1.0
    np.testing.assert_allclose(backend.to_numpy(softops.soft_rank(backend.asarray(x), temperature=t, method=method)),
                               ranks, rtol=1e-12)
    mask = backend.to_numpy(softops.soft_topk_mask(backend.asarray(x), 3, temperature=t, method=method))
    np.testing.assert_allclose(mask, (ranks > 4).astype(float), atol=1e-12)
    mask = backend.to_numpy(softops.soft_topk_mask(backend.asarray(x), 2.5, temperature=0.4, method=method))
    np.testing.assert_allclose(mask.sum(-1), 2.5, rtol=1e-12)


@pytest.mark.parametrize("method", MATRIX_METHODS)
def test_ties_share_their_slots(backend, method):
    p = backend.to_numpy(softops.soft_permutation(backend.asarray([1.0, 0.0, 1.0]), temperature=1e-9, method=method))
    np.testing.assert_allclose(p, [[0, 1, 0], [0.5, 0, 0.5], [0.5, 0, 0.5]], atol=1e-12)


@pytest.mark.parametrize("method", MATRIX_METHODS)
def test_first_k_rows(backend, rng, method):
    x = rng.normal(size=(3, 6))
    full = backend.to_numpy(softops.soft_permutation(backend.asarray(x), method=method, descending=True))
    top = backend.to_numpy(softops.soft_permutation(backend.asarray(x), method=method, descending=True, k=2))
    np.testing.assert_array_equal(top, full[:, :2])
    for bad in (0, 7, 1.5):
        with pytest.raises(ValueError, match="k must be an int"):
            softops.soft_permutation(backend.asarray(x), method=method, k=bad)


@pytest.mark.parametrize("method", MATRIX_METHODS)
def test_sort_by_carries_values(backend, rng, method):
    """soft_sort_by(keys, values) is P @ values: with feature dimensions, along
    axis 0, with a mask; as T -> 0 (and with hard=True) values in argsort order."""
    keys = rng.normal(size=(3, 5))
    values = rng.normal(size=(3, 5, 2, 4))
    p = backend.to_numpy(softops.soft_permutation(backend.asarray(keys), temperature=0.8, method=method))
    got = backend.to_numpy(softops.soft_sort_by(backend.asarray(keys), backend.asarray(values), temperature=0.8,
                                                method=method))
    np.testing.assert_allclose(got, np.einsum("bsj,bjfg->bsfg", p, values), rtol=1e-12, atol=1e-14)
    order = np.argsort(-keys, axis=-1, kind="stable")
    want = np.take_along_axis(values, order[..., None, None], axis=1)
    for kw in ({"temperature": 1e-9}, {"temperature": 0.8, "hard": True}):
        got = backend.to_numpy(softops.soft_sort_by(backend.asarray(keys), backend.asarray(values), descending=True,
                                                    method=method, **kw))
        np.testing.assert_allclose(got, want, rtol=1e-12)
    along0 = backend.to_numpy(softops.soft_sort_by(backend.asarray(keys.T.copy()), backend.asarray(values[..., 0, 0].T.copy()),
                                                   axis=0, temperature=0.8, method=method))
    row = backend.to_numpy(softops.soft_sort_by(backend.asarray(keys), backend.asarray(values[..., 0, 0]),
                                                temperature=0.8, method=method))
    np.testing.assert_allclose(along0, row.T, rtol=1e-12)
    mask = np.ones((3, 5), bool)
    mask[1, 3:] = False
    masked = backend.to_numpy(softops.soft_sort_by(backend.asarray(keys), backend.asarray(values[..., 0, 0]),
                                                   temperature=0.8, method=method, mask=backend.asarray(mask, "bool")))
    alone = backend.to_numpy(softops.soft_sort_by(backend.asarray(keys[1, :3]), backend.asarray(values[1, :3, 0, 0]),
                                                  temperature=0.8, method=method))
    np.testing.assert_allclose(masked[1, :3], alone, rtol=1e-12)
    np.testing.assert_array_equal(masked[1, 3:], 0.0)
    with pytest.raises(ValueError, match="must start with keys' shape"):
        softops.soft_sort_by(backend.asarray(keys), backend.asarray(values[:, :4]), method=method)


@pytest.mark.parametrize("method", ["permutahedron", "lapsum"])
def test_methods_without_a_matrix_are_refused(backend, method):
    x = backend.asarray([1.0, 3.0, 2.0])
    for call in (lambda: softops.soft_permutation(x, method=method), lambda: softops.soft_sort_by(x, x, method=method)):
        with pytest.raises(ValueError, match="'neuralsort', 'softsort'"):
            call()


@pytest.mark.parametrize("method", MATRIX_METHODS)
def test_hostile_values_stay_finite(diff_backend, method):
    """Values at the float32 maximum and +-1e30, at tiny and unit temperatures:
    finite sorts, ranks and gradients (a saturated row's gradient is its weights)."""
    for x in ([3e38, -3e38, 1e38], [1e30, -1e30, 5.0, 5.0]):
        for t in (1e-30, 1.0):
            for op in (softops.soft_sort, softops.soft_rank):
                f = lambda a, op=op, t=t: op(a, temperature=t, method=method)  # noqa: E731
                out = diff_backend.to_numpy(f(diff_backend.asarray(x, "float32")))
                g = diff_backend.vjp(f, np.array(x), np.ones(len(x)), dtype="float32")
                assert np.isfinite(out).all() and np.isfinite(g).all(), (x, t, op.__name__)
