"""Soft permutation matrices (NeuralSort, SoftSort): closed forms, limits, soft_permutation, soft_sort_by."""

from __future__ import annotations

import importlib.util

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


@pytest.mark.parametrize("method", MATRIX_METHODS)
def test_rows_with_infinities_at_tiny_temperatures_have_finite_gradients(diff_backend, method):
    """Rows whose present entries are fewer than n (infinities, masks) leave
    rows of the matrix unread; at T = 1e-30 those rows must still not turn
    the gradient NaN (a softmax over scores that are all -inf is NaN)."""
    x = np.array([[-np.inf, 1e30, 3e30, np.inf, 2e30], [np.inf, np.inf, -np.inf, np.inf, np.inf]])
    for t in (1e-30, 1.0):
        for op in (softops.soft_sort, softops.soft_rank):
            f = lambda a, op=op, t=t: op(a, temperature=t, method=method)  # noqa: E731
            cot = np.where(np.isinf(x), 0.0, 1.0) if op is softops.soft_sort else np.ones_like(x)
            g = diff_backend.vjp(f, x, cot, dtype="float32")
            assert np.isfinite(g).all(), (t, op.__name__, g)
            np.testing.assert_array_equal(g[np.isinf(x)], 0.0)


# --- sorting networks -------------------------------------------------------------

NETWORKS = [softops.SortingNetwork(network=net, sigmoid=sig)
            for net in ("odd_even", "bitonic") for sig in ("logistic", "cauchy", "reciprocal", "optimal")]
# diffsort's steepness s against softops' temperature, per sigmoid: diffsort
# evaluates f(s (b - a)) with its own scaling of each sigmoid (its
# functional.execute_sort), softops f((b - a) / T) in the paper's form.
_DIFFSORT_T = {"logistic": lambda s: 1 / s, "cauchy": lambda s: np.pi / s,
               "reciprocal": lambda s: 4 / s, "optimal": lambda s: 1 / s}


@pytest.mark.parametrize("sigmoid", ["logistic", "cauchy", "reciprocal", "optimal"])
def test_odd_even_network_matches_diffsort(sigmoid):
    """Petersen et al.'s own implementation (diffsort), odd-even network: the
    soft sort and the permutation matrix agree (skipped when it is absent)."""
    diffsort = pytest.importorskip("diffsort")
    import torch

    x = torch.tensor(np.random.default_rng(3).normal(size=(4, 7)), dtype=torch.float32)
    steepness = 3.0
    sorter = diffsort.DiffSortNet("odd_even", 7, steepness=steepness, distribution=sigmoid)
    want, want_p = sorter(x)
    method = softops.SortingNetwork("odd_even", sigmoid)
    t = float(_DIFFSORT_T[sigmoid](steepness))
    got = softops.soft_sort(x.double(), temperature=t, method=method)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    p = softops.soft_permutation(x.double(), temperature=t, method=method)
    # diffsort's X maps input lanes to output lanes: sorted = x @ X.
    np.testing.assert_allclose(p.transpose(-1, -2).numpy(), want_p.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", NETWORKS, ids=lambda m: f"{m.network}-{m.sigmoid}")
def test_networks_are_doubly_stochastic_and_exact_in_the_limit(backend, rng, method):
    for n in (1, 2, 5, 8, 13):
        x = rng.normal(size=(3, n))
        p = backend.to_numpy(softops.soft_permutation(backend.asarray(x), temperature=0.7, method=method))
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(p.sum(-2), 1.0, rtol=1e-12)
        s = backend.to_numpy(softops.soft_sort(backend.asarray(x), temperature=0.7, method=method))
        np.testing.assert_allclose(s, np.einsum("bsj,bj->bs", p, x), rtol=1e-10, atol=1e-12)
        r = backend.to_numpy(softops.soft_rank(backend.asarray(x), temperature=0.7, method=method))
        np.testing.assert_allclose(r, np.einsum("bsj,s->bj", p, np.arange(1.0, n + 1)), rtol=1e-10)
        exact = backend.to_numpy(softops.soft_sort(backend.asarray(x), temperature=1e-12, method=method))
        np.testing.assert_allclose(exact, np.sort(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", [m for m in NETWORKS if m.sigmoid != "logistic"],
                         ids=lambda m: f"{m.network}-{m.sigmoid}")
def test_monotonic_sigmoids_give_a_monotonic_sort(diff_backend, rng, method):
    """Petersen et al. 2022, Theorem 3: with the cauchy, reciprocal and optimal
    sigmoids d sort / d x >= 0 elementwise (the Jacobian, row by row)."""
    x = rng.normal(size=9)
    for i in range(9):
        e = np.zeros(9)
        e[i] = 1.0
        row = diff_backend.vjp(lambda a: softops.soft_sort(a, temperature=0.8, method=method), x, e)
        assert row.min() >= -1e-12, (i, row)


@pytest.mark.parametrize("method", NETWORKS[::3], ids=lambda m: f"{m.network}-{m.sigmoid}")
def test_network_rows_with_infinities_and_masks_are_their_finite_rows(backend, rng, method):
    """The finite entries run the network of their own count, so a row with
    -inf / +inf entries (or masked ones) is the row of its finite entries."""
    x = np.array([0.4, -np.inf, 1.9, -0.3, np.inf, -np.inf, 0.8])
    f = x[np.isfinite(x)]
    t = 0.6
    s = backend.to_numpy(softops.soft_sort(backend.asarray(x), temperature=t, method=method))
    sf = backend.to_numpy(softops.soft_sort(backend.asarray(f), temperature=t, method=method))
    np.testing.assert_allclose(s, np.concatenate([[-np.inf] * 2, sf, [np.inf]]), rtol=1e-12)
    r = backend.to_numpy(softops.soft_rank(backend.asarray(x), temperature=t, method=method))
    rf = backend.to_numpy(softops.soft_rank(backend.asarray(f), temperature=t, method=method))
    np.testing.assert_allclose(r[np.isfinite(x)], 2 + rf, rtol=1e-12)
    np.testing.assert_allclose(r[~np.isfinite(x)], [1.5, 7.0, 1.5])


def test_bitonic_network_at_n_8192_is_light():
    """(8, 8192) float32 soft sort and rank, forward and backward, by the bitonic
    network: finite, exact at a small temperature, and its autodiff graph
    holds O(n log^2 n) values (91 layers), not dense per-layer matrices."""
    torch = pytest.importorskip("torch")
    x = torch.randn(8, 8192, requires_grad=True)
    method = softops.SortingNetwork("bitonic", "cauchy")
    s = softops.soft_sort(x, temperature=1e-6, method=method)
    r = softops.soft_rank(x, temperature=1e-6, method=method)
    (s.sum() + (r * torch.linspace(0, 1, 8192)).sum()).backward()
    assert torch.isfinite(x.grad).all()
    np.testing.assert_allclose(s.detach().numpy(), np.sort(x.detach().numpy(), axis=-1), rtol=1e-4, atol=1e-4)


# --- Sinkhorn (entropic optimal transport onto sorted targets) ---------------------


def _threshold_mask(x, k, t):
    """Xie et al. 2020 with two targets: m_i = sigmoid((x_i - theta) / T), the
    threshold theta the root of sum m = k (scipy's brentq), and the implicit
    function theorem's Jacobian dm_i/dx_j = (s_i delta_ij - s_i s_j / sum s) / T,
    s = m (1 - m)."""
    from scipy.optimize import brentq
    from scipy.special import expit

    theta = brentq(lambda c: expit((x - c) / t).sum() - k, x.min() - 50 * t, x.max() + 50 * t, xtol=1e-15)
    m = expit((x - theta) / t)
    s = m * (1 - m)
    return m, (np.diag(s) - np.outer(s, s) / s.sum()) / t


def test_sinkhorn_top_k_mask_is_the_threshold_sigmoid(backend, rng):
    """Closed form and its implicit gradient (the method's gradient is implicit,
    not unrolled: it matches the Jacobian of the exact threshold)."""
    x = rng.normal(size=9)
    for k, t in ((3, 0.5), (2.5, 1.7)):
        want, jac = _threshold_mask(x, k, t)
        got = backend.to_numpy(softops.soft_topk_mask(backend.asarray(x), k, temperature=t, method="sinkhorn"))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
        if backend.differentiable:
            c = rng.normal(size=9)
            g = backend.vjp(lambda z: softops.soft_topk_mask(z, k, temperature=t, method="sinkhorn"), x, c)
            np.testing.assert_allclose(g, jac.T @ c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sinkhorn_is_doubly_stochastic_and_sums_to_k(backend, rng, dtype):
    x = rng.normal(size=(3, 40)) * 2
    tol = 1e-12 if dtype == "float64" else 2e-5
    for t in (3.0, 0.3, 0.01):
        p = backend.to_numpy(softops.soft_permutation(backend.asarray(x, dtype), temperature=t, method="sinkhorn"))
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=50 * tol)  # the targets' masses: exact
        np.testing.assert_allclose(p.sum(-2), 1.0, atol=50 * tol)  # the entries': within the tolerance
        for k in (1, 7, 12.5):
            m = backend.to_numpy(softops.soft_topk_mask(backend.asarray(x, dtype), k, temperature=t,
                                                        method="sinkhorn"))
            np.testing.assert_allclose(m.sum(-1), k, rtol=50 * tol)
            assert m.min() >= 0 and m.max() <= 1 + 50 * tol


def test_sinkhorn_quantiles_use_three_targets(backend, rng):
    """Three targets of masses ``(h, 1, p - 1 - h)`` (``h = (p - 1) q``).
    Closed form for two entries at ``q = 0`` (targets 1 and 2 of mass 1): the
    2 x 2 plan ``[[1 - s, s], [s, 1 - s]]`` has the cross ratio ``((1 - s) /
    s)^2 = exp((x_1 - x_0) / T)``, so the quantile is ``(1 - s) x_0 + s x_1``
    with ``s = sigmoid(-(x_1 - x_0) / (2 T))``; ``q = 1`` mirrors it."""
    from scipy.special import expit

    x0, x1, t = -0.3, 1.1, 0.8
    s = expit(-(x1 - x0) / (2 * t))
    got = backend.to_numpy(softops.soft_quantile(backend.asarray([x1, x0]), [0.0, 1.0], temperature=t,
                                                 method="sinkhorn"))
    np.testing.assert_allclose(got, [(1 - s) * x0 + s * x1, s * x0 + (1 - s) * x1], rtol=1e-12)
    # T -> 0: numpy.quantile's linear rule, with a mask and with infinities.
    x = rng.normal(size=(3, 17))
    q = [0.0, 0.13, 0.5, 0.77, 1.0]
    got = softops.soft_quantile(backend.asarray(x), q, temperature=1e-6, method="sinkhorn")
    np.testing.assert_allclose(backend.to_numpy(got), np.quantile(x, q, axis=-1), rtol=1e-9, atol=1e-9)
    keep = rng.random(size=x.shape) < 0.6
    got = backend.to_numpy(softops.soft_quantile(backend.asarray(x), q, temperature=1e-6, method="sinkhorn",
                                                 mask=backend.asarray(keep, "bool")))
    want = np.stack([np.quantile(r[k], q) for r, k in zip(x, keep)], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    inf = np.array([-np.inf, 1.0, 2.0, np.inf])
    got = backend.to_numpy(softops.soft_quantile(backend.asarray(inf), [0.0, 0.2, 0.5, 1 / 3, 1.0],
                                                 temperature=0.5, method="sinkhorn"))
    np.testing.assert_array_equal(got[[0, 1, 4]], [-np.inf, -np.inf, np.inf])
    assert 1.0 < got[2] < 2.0 and np.isfinite(got[3])
    # hard=True is numpy's quantile forward; the gradient in q is the soft one.
    got = softops.soft_quantile(backend.asarray(x), q, temperature=0.5, method="sinkhorn", hard=True)
    np.testing.assert_allclose(backend.to_numpy(got), np.quantile(x, q, axis=-1), rtol=1e-12)
    if backend.differentiable:
        def quantile(qq):
            return softops.soft_quantile(backend.asarray(x[0]), qq, temperature=0.4, method="sinkhorn")
        qq = np.array([0.21, 0.64])
        c = rng.normal(size=2)
        g = backend.vjp(quantile, qq, c)
        e = 1e-6 * np.eye(2)
        fd = [(backend.to_numpy(quantile(backend.asarray(qq + d))) - backend.to_numpy(quantile(backend.asarray(qq - d))))
              @ c / 2e-6 for d in e]
        np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_sinkhorn_small_temperature_float32_is_finite_and_exact(backend, rng):
    x = rng.normal(size=(4, 30)).astype(np.float32)
    xs = backend.asarray(x, "float32")
    for t in (1e-3, 1e-8, 1e-30):
        for op in (lambda z: softops.soft_sort(z, temperature=t, method="sinkhorn"),
                   lambda z: softops.soft_rank(z, temperature=t, method="sinkhorn"),
                   lambda z: softops.soft_topk_mask(z, 5, temperature=t, method="sinkhorn"),
                   lambda z: softops.soft_quantile(z, [0.1, 0.5], temperature=t, method="sinkhorn")):
            assert np.isfinite(backend.to_numpy(op(xs))).all()
        if backend.differentiable:
            g = backend.vjp(lambda z: softops.soft_sort(z, temperature=t, method="sinkhorn"), x,
                            rng.normal(size=x.shape), dtype="float32")
            assert np.isfinite(g).all()
    np.testing.assert_allclose(backend.to_numpy(softops.soft_sort(xs, temperature=1e-6, method="sinkhorn")),
                               np.sort(x), rtol=1e-6)


def test_sinkhorn_converges_in_few_iterations_at_every_temperature(rng):
    """The damped Newton solver from the hard matching's dual: a handful of
    iterations where plain Sinkhorn sweeps stall (the iteration cap is hit)."""
    from softops.methods import sinkhorn

    x = rng.normal(size=(2, 120))
    a, b = np.ones_like(x), np.ones_like(x)
    cost = sinkhorn._reduced_cost(np, x, a, b)
    import array_api_compat.numpy as xp

    for t in (10.0, 1.0, 0.05, 1e-3, 1e-6):
        logits = -cost / t
        steps = []
        backend = type(softops._backend.backend_of(x))
        original = backend.while_loop

        def counting(self, cond, body, state):
            out = original(self, cond, body, state)
            steps.append(int(out[0]))
            return out

        backend.while_loop = counting
        try:
            f, g = sinkhorn._potentials(xp, logits, a, b, 1e-12, 200, True)
        finally:
            backend.while_loop = original
        p = np.exp(logits + f[..., :, None] + g[..., None, :])
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-11)
        np.testing.assert_allclose(p.sum(-2), 1.0, atol=1e-11)
        assert steps[0] <= 20, (t, steps)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sinkhorn_scalings_far_from_one_are_absorbed(backend, rng, dtype):
    """Offsets ``r_i + s_j <= 0`` added to the logits leave the plan
    ``exp(logits + f + g)`` unchanged (the potentials absorb them).  With
    offsets down to -100 each, the scalings must reach ``exp(100)``, beyond
    float32's range, and the kernel ``exp(logits)`` underflows where two meet:
    only sweeps that move the scalings into the log potentials and recompute
    the kernel (Schmitzer 2019) find the plan.  The loop runs as the backend
    runs it (``lax.while_loop`` / ``lax.cond`` under JAX)."""
    from softops.methods import sinkhorn

    x = rng.normal(size=(3, 24))
    a = np.ones_like(x)
    cost = sinkhorn._reduced_cost(np, x, a, a)
    tolerance = 1e-12 if dtype == "float64" else 1e-5
    plans = []
    for shift in (0.0, 100.0):
        logits = -cost / 0.3 - shift * (rng.uniform(size=(3, 24, 1)) + rng.uniform(size=(3, 1, 24)))
        z, ones = backend.asarray(logits, dtype), backend.asarray(a, dtype)
        xp = softops._backend.backend_of(z).xp
        f, g = sinkhorn._potentials(xp, z, ones, ones, tolerance, 1000, True)
        f, g = backend.to_numpy(f).astype(np.float64), backend.to_numpy(g).astype(np.float64)
        plans.append(np.exp(logits + f[..., :, None] + g[..., None, :]))
    np.testing.assert_allclose(plans[1].sum(-1), 1.0, atol=30 * tolerance)
    np.testing.assert_allclose(plans[1].sum(-2), 1.0, atol=30 * tolerance)
    np.testing.assert_allclose(plans[1], plans[0], atol=30 * tolerance)


def test_sinkhorn_config_errors():
    for bad in (0.0, 1.5, -1e-3, True, "tight"):
        with pytest.raises(ValueError, match="tolerance"):
            softops.Sinkhorn(tolerance=bad)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="max_iterations"):
            softops.Sinkhorn(max_iterations=bad)
    with pytest.raises(TypeError, match="newton"):
        softops.Sinkhorn(newton=1)


def test_sinkhorn_without_newton_agrees_where_it_converges(backend, rng):
    x = rng.normal(size=(2, 8))
    for t in (2.0, 0.7):
        want = backend.to_numpy(softops.soft_rank(backend.asarray(x), temperature=t, method="sinkhorn"))
        got = backend.to_numpy(softops.soft_rank(backend.asarray(x), temperature=t,
                                                 method=softops.Sinkhorn(newton=False, max_iterations=5000)))
        np.testing.assert_allclose(got, want, rtol=1e-9)


# --- the sorting networks' kernel (softops._kernels.network) -----------------------


def _network_value_and_grads(harness, f, x, t, k, cot):
    """``f(x, t, k)`` and, in PyTorch (whose first-order reverse mode is the
    kernel's own backward; JAX transposes the array code), the gradients of
    ``sum(f * cot)`` for ``x``, the per-row ``t`` and the 0-d ``k``."""
    if harness.name != "torch":
        return harness.to_numpy(f(*(harness.asarray(a) for a in (x, t, k)))), []
    torch = harness.torch
    args = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, t, k)]
    out = f(*args)
    loss = (out * torch.as_tensor(cot)).sum()
    grads = torch.autograd.grad(loss, args, allow_unused=True) if loss.requires_grad else [None] * 3
    return out.detach().numpy(), [np.zeros(a.shape) if g is None else g.numpy() for a, g in zip(args, grads)]


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="the kernel needs numba")
@pytest.mark.parametrize("method", NETWORKS, ids=lambda m: f"{m.network}-{m.sigmoid}")
@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_network_kernel_is_its_array_code(backend, monkeypatch, rng, method, n):
    """On CPU the network runs as a numba kernel with a hand-written backward;
    the array code (which every other transform differentiates) computes the
    same function: sort, ranks and top-k masks, their gradients in x, the
    per-row temperature and k, to rounding.  Rows with ties, -inf / +inf,
    values at +-1e30 and temperatures down to 1e-30 (clipped comparators)."""
    x = rng.normal(size=(5, n))
    x[1] = np.round(x[1])  # ties
    x[2, : n // 2] = -np.inf
    x[2, n - 1] = np.inf if n > 2 else x[2, n - 1]
    x[3] *= 1e30
    t = np.array([0.7, 0.3, 1.1, 1.0, 1e-30])
    k = np.array(min(2.5, n - 0.3))
    cot = np.cos(np.arange(x.size) * 1.3).reshape(x.shape)
    ops = {"sort": lambda a, tt, kk: softops.soft_sort(a, temperature=tt, method=method),
           "rank": lambda a, tt, kk: softops.soft_rank(a, temperature=tt, method=method, descending=True),
           "mask": lambda a, tt, kk: softops.soft_topk_mask(a, kk, temperature=tt, method=method)}
    backend_class = type(softops._backend.backend_of(backend.asarray(x)))
    for name, op in ops.items():
        got, got_g = _network_value_and_grads(backend, op, x, t, k, np.where(np.isinf(x), 0, cot)
                                              if name == "sort" else cot)
        with monkeypatch.context() as m:
            m.setattr(backend_class, "cpu_kernels", lambda self, a: False)
            want, want_g = _network_value_and_grads(backend, op, x, t, k, np.where(np.isinf(x), 0, cot)
                                                    if name == "sort" else cot)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
        for what, g, w in zip(("x", "T", "k"), got_g, want_g):
            assert np.isfinite(g).all(), (name, what)
            for row in range(len(np.atleast_1d(w))):  # each row at its own scale
                g_row, w_row = np.atleast_1d(g)[row], np.atleast_1d(w)[row]
                np.testing.assert_allclose(g_row, w_row, rtol=1e-9, atol=1e-9 * (1 + np.abs(w_row).max()),
                                           err_msg=f"{name} d/d{what}, row {row}")
    if backend.name == "torch" and n > 1:  # NaN rows: NaN values and gradients, other rows untouched
        torch = backend.torch
        y = torch.tensor(np.stack([np.where(np.arange(n) == 0, np.nan, x[0]), x[0]]), requires_grad=True)
        s = softops.soft_rank(y, method=method)
        s.sum().backward()
        assert torch.isnan(s[0]).all() and torch.isnan(y.grad[0]).all()
        assert torch.isfinite(s[1]).all() and torch.isfinite(y.grad[1]).all()


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="the kernel needs numba")
def test_network_kernel_broadcasts_one_row_over_row_temperatures(backend):
    """One row against a temperature per row (the kernel reads the row in
    place) equals each temperature on its own."""
    x = np.array([0.3, -1.2, 2.0, 0.5, 0.5])
    t = np.array([0.1, 1.0, 3.0])
    for op in (softops.soft_sort, softops.soft_rank):
        got = backend.to_numpy(op(backend.asarray(np.tile(x, (3, 1))), temperature=backend.asarray(t),
                                  method="network"))
        for i, ti in enumerate(t):
            want = backend.to_numpy(op(backend.asarray(x), temperature=float(ti), method="network"))
            np.testing.assert_allclose(got[i], want, rtol=1e-13)


@pytest.mark.parametrize("method", NETWORKS, ids=lambda m: f"{m.network}-{m.sigmoid}")
def test_network_derivatives_at_exact_ties(method):
    """A network is smooth at a tie (each comparator is a convex combination),
    so every mode of every framework matches central differences there, in
    float64: forward and reverse, kernel and array code.  (JAX's derivative of
    |u| at 0 is 1 and PyTorch's 0; min + T h(|z|) must not depend on it.)"""
    x = np.array([1.0, 1.0, 0.5, 1.0, -2.0, 0.5])
    ops = {"sort": lambda v: softops.soft_sort(v, method=method),
           "rank": lambda v: softops.soft_rank(v, method=method),
           "mask": lambda v: softops.soft_topk_mask(v, 2, method=method)}
    for name, f in ops.items():
        step = 1e-6
        fd = np.stack([(np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * step) for e in np.eye(x.size) * step], -1)
        jacobians = {}
        if importlib.util.find_spec("jax") is not None:
            import jax
            import jax.numpy as jnp

            with jax.enable_x64(True):
                jacobians["jax jacfwd"] = jax.jacfwd(f)(jnp.asarray(x))
                jacobians["jax jacrev"] = jax.jacrev(f)(jnp.asarray(x))
                row = jax.jit(jax.grad(lambda v, i: f(v)[i]))  # reverse mode, one compilation
                jacobians["jax grad"] = np.stack([row(jnp.asarray(x), i) for i in range(x.size)])
        if importlib.util.find_spec("torch") is not None:
            import torch

            jacobians["torch.func.jacfwd"] = torch.func.jacfwd(f)(torch.tensor(x)).numpy()
            jacobians["torch backward"] = torch.autograd.functional.jacobian(f, torch.tensor(x)).numpy()
        assert jacobians
        for mode, jac in jacobians.items():
            # atol: a sigmoid's second derivative may jump at z = 0 (reciprocal,
            # optimal), which leaves central differences an O(step) error.
            np.testing.assert_allclose(np.asarray(jac), fd, atol=1e-5, err_msg=f"{name} {mode}")
