"""The README's contract on every backend: infinities, NaN rows, plain inputs, empty batches."""

from __future__ import annotations

import numpy as np
import pytest

import softops

INF = np.inf
from harness import MASK_METHODS, SORT_CONFIGS

KL = softops.Permutahedron(regularization="kl")
# Every sort method; kl's ranks are the exception documented in soft_rank.
METHODS = SORT_CONFIGS


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


@pytest.mark.parametrize("method", MASK_METHODS)
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


@pytest.mark.parametrize("method", list(METHODS))
def test_quantiles_next_to_infinities(backend, method):
    """The linear rule's value at an integer position is that slot's (never
    ``(1 - 0) s + 0 inf = NaN``); a position that reaches an infinity is it."""
    x = backend.asarray(np.array([[-INF, 1.0, 2.0, INF], [1.0, 2.0, 3.0, INF]]))
    got = backend.to_numpy(softops.soft_quantile(x, [0.0, 0.2, 2 / 3, 0.9, 1.0], temperature=1e-4,
                                                 method=METHODS[method]))
    np.testing.assert_allclose(got.T, [[-INF, -INF, 2.0, INF, INF], [1.0, 1.6, 3.0, INF, INF]], rtol=1e-6)
    # The mechanism: a linear read's zero-weight tap adds nothing at an infinite sample.
    row = backend.asarray(np.array([1.0, 2.0, 3.0, INF]))
    np.testing.assert_array_equal(backend.to_numpy(softops.lookup(row, 2.0)), 3.0)


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
    assert out.dtype == backend.dtype("float32")
    np.testing.assert_allclose(backend.to_numpy(softops.lookup(arr, [1, 3])), [1.0, 3.0])
    np.testing.assert_allclose(backend.to_numpy(softops.assign(arr, 2, 9.0)), [0, 1, 9, 3, 4])
    np.testing.assert_allclose(backend.to_numpy(softops.soft_take(arr, [0, 0, 1.0, 0, 0])), 2.0)
    np.testing.assert_allclose(backend.to_numpy(softops.soft_assign(arr, [0, 1.0, 0, 0, 0], 7.0)), [0, 7, 2, 3, 4])


def test_plain_input_errors_are_clear():
    with pytest.raises(TypeError, match="numbers"):
        softops.soft_rank(["a", "b"])


# --- mask= : padded / ragged rows are handled as if each row held only its present entries

MASK_OPS = {
    "rank": lambda x, m, **k: softops.soft_rank(x, mask=m, **k),
    "rank-desc": lambda x, m, **k: softops.soft_rank(x, mask=m, descending=True, **k),
    "sort": lambda x, m, **k: softops.soft_sort(x, mask=m, **k),
    "sort-desc": lambda x, m, **k: softops.soft_sort(x, mask=m, descending=True, **k),
    "topk": lambda x, m, **k: softops.soft_topk(x, 2, mask=m, **k),
    "topk-smallest": lambda x, m, **k: softops.soft_topk(x, 2, mask=m, largest=False, **k),
    "topk_mask": lambda x, m, **k: softops.soft_topk_mask(x, 2, mask=m, **k),
    "topk_mask-smallest": lambda x, m, **k: softops.soft_topk_mask(x, 2, mask=m, largest=False, **k),
    "quantile": lambda x, m, **k: softops.soft_quantile(x, [0.1, 0.5, 1.0], mask=m, **k),
}
# Where each op's output rows keep the input's positions (else: sorted slots).
POSITIONAL = {"rank", "rank-desc", "topk_mask", "topk_mask-smallest"}


def _ragged(rng, rows=3, n=6):
    x = rng.normal(size=(rows, n))
    mask = np.ones((rows, n), bool)
    mask[0, [1, 4]] = False          # two holes
    mask[1, 3:] = False              # right padding
    return x, mask


def _mask_case(method, name):
    if method == "kl" and name.startswith("topk_mask"):
        pytest.skip("no kl top-k mask")


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", list(MASK_OPS))
def test_mask_is_the_op_on_the_present_entries(backend, rng, method, name):
    _mask_case(method, name)
    op, kw = MASK_OPS[name], dict(temperature=0.6, method=METHODS[method])
    x, mask = _ragged(rng)
    got = backend.to_numpy(op(backend.asarray(x), backend.asarray(mask, "bool"), **kw))
    for r in range(x.shape[0]):
        present = x[r, mask[r]]
        want = backend.to_numpy(op(backend.asarray(present), None, **kw))
        if name == "quantile":
            np.testing.assert_allclose(got[:, r], want, rtol=1e-6, atol=1e-9)
        elif name in POSITIONAL:
            np.testing.assert_allclose(got[r, mask[r]], want, rtol=1e-6, atol=1e-9)
            np.testing.assert_array_equal(got[r, ~mask[r]], 0.0)
        else:
            k = min(present.size, got.shape[-1])
            np.testing.assert_allclose(got[r, :k], want[:k], rtol=1e-6, atol=1e-9)
            np.testing.assert_array_equal(got[r, k:], 0.0)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", list(MASK_OPS))
def test_mask_gradients_are_those_of_the_present_entries(diff_backend, rng, method, name):
    _mask_case(method, name)
    op, kw = MASK_OPS[name], dict(temperature=0.6, method=METHODS[method])
    x, mask = _ragged(rng, rows=2)
    m = diff_backend.asarray(mask, "bool")
    out = backend_out = diff_backend.to_numpy(op(diff_backend.asarray(x), m, **kw))
    cot = np.cos(np.arange(out.size)).reshape(out.shape)
    g = diff_backend.vjp(lambda t: op(t, m, **kw), x, cot)
    assert np.all(np.isfinite(g)) and np.all(g[~mask] == 0.0)
    for r in range(x.shape[0]):
        present = x[r, mask[r]]
        if name == "quantile":
            c = cot[:, r]
        elif name in POSITIONAL:
            c = cot[r, mask[r]]
        else:
            c = cot[r, : min(present.size, backend_out.shape[-1])]
        want = diff_backend.vjp(lambda t: op(t, None, **kw), present, c)
        np.testing.assert_allclose(g[r, mask[r]], want, rtol=1e-6, atol=1e-9)


def test_mask_broadcasts_and_follows_axis(backend, rng):
    x = rng.normal(size=(4, 3))
    keep = np.array([True, False, True, True])  # along axis 0, for every column
    got = backend.to_numpy(softops.soft_rank(backend.asarray(x), axis=0, mask=backend.asarray(keep[:, None], "bool")))
    for c in range(3):
        want = backend.to_numpy(softops.soft_rank(backend.asarray(x[keep, c])))
        np.testing.assert_allclose(got[keep, c], want, rtol=1e-9)
    np.testing.assert_array_equal(got[~keep], 0.0)


def test_mask_keeps_present_infinities_exact(backend):
    x = backend.asarray([1.0, INF, 0.0, INF, 2.0])
    m = backend.asarray([True, True, False, False, True], "bool")
    got = backend.to_numpy(softops.soft_rank(x, mask=m, temperature=1e-3))
    np.testing.assert_allclose(got, [1.0, 3.0, 0.0, 0.0, 2.0], atol=1e-6)  # ranks of [1, inf, 2]


def test_fully_masked_rows(backend):
    x = backend.asarray(np.arange(8.0).reshape(2, 4))
    m = backend.asarray([[False] * 4, [True] * 4], "bool")
    np.testing.assert_array_equal(backend.to_numpy(softops.soft_rank(x, mask=m))[0], 0.0)
    np.testing.assert_array_equal(backend.to_numpy(softops.soft_sort(x, mask=m))[0], 0.0)
    np.testing.assert_array_equal(backend.to_numpy(softops.soft_topk_mask(x, 2, mask=m))[0], 0.0)
    q = backend.to_numpy(softops.soft_quantile(x, 0.5, mask=m))
    assert np.isnan(q[0]) and np.isfinite(q[1])


def test_mask_accepts_lists_and_rejects_bad_masks(backend):
    x = backend.asarray([3.0, 1.0, 2.0])
    got = backend.to_numpy(softops.soft_rank(x, mask=[True, False, True], temperature=1e-3))
    np.testing.assert_allclose(got, [2.0, 0.0, 1.0], atol=1e-6)
    with pytest.raises(TypeError, match="boolean"):
        softops.soft_rank(x, mask=backend.asarray([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="broadcast"):
        softops.soft_rank(x, mask=[True, False])
    got = backend.to_numpy(softops.soft_rank(x, mask=np.array([True, False, True]), temperature=1e-3))
    np.testing.assert_allclose(got, [2.0, 0.0, 1.0], atol=1e-6)  # a NumPy mask works for every framework
    torch = pytest.importorskip("torch")
    if backend.name != "torch":
        with pytest.raises(TypeError, match="framework"):
            softops.soft_rank(x, mask=torch.tensor([True, False, True]))


# --- k = 0, messages, 0-d results (audit R20, R21)


@pytest.mark.parametrize("method", MASK_METHODS)
def test_k_zero_is_the_empty_selection(diff_backend, method):
    m = METHODS[method]
    x = np.random.default_rng(0).normal(size=(3, 5))
    got = diff_backend.to_numpy(softops.soft_topk(diff_backend.asarray(x), 0, method=m))
    assert got.shape == (3, 0)
    mask = diff_backend.to_numpy(softops.soft_topk_mask(diff_backend.asarray(x), 0, method=m))
    np.testing.assert_array_equal(mask, 0.0)
    g = diff_backend.vjp(lambda t: softops.soft_topk_mask(t, 0, method=m), x, np.cos(np.arange(15.0)).reshape(3, 5))
    np.testing.assert_array_equal(g, 0.0)


def test_messages_name_the_fix(backend):
    with pytest.raises(ValueError, match="0-d"):
        softops.soft_max(backend.asarray(3.0))
    with pytest.raises(ValueError, match="length 0"):
        softops.soft_topk(backend.asarray(np.zeros((2, 0))), 1)
    with pytest.raises(TypeError, match="positive real number, an array"):
        softops.soft_argmax(backend.asarray([1.0, 2.0]), temperature="hot")
    fix = {"torch": r"x\.float\(\)", "jax": r"x\.astype\(jax\.numpy\.float32\)", "numpy": r"x\.astype\(float\)",
           "tensorflow": r"tf\.cast\(x, tf\.float32\)"}
    with pytest.raises(TypeError, match=fix[backend.name]):
        softops.soft_rank(backend.asarray([[3, 1, 2]], "int64"))


def test_numpy_bfloat16_is_refused_clearly():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(TypeError, match="NumPy has no bfloat16"):
        softops.soft_rank(np.asarray([[1.0, 2.0]], dtype=ml_dtypes.bfloat16))


def test_reductions_return_0d_arrays_on_numpy():
    for f in (softops.soft_max, softops.soft_min):
        out = f(np.array([1.0, 2.0, 3.0]))
        assert isinstance(out, np.ndarray) and out.shape == ()


# JAX without x64 (its default): every sorting operation and method runs with
# no warning (asking for int64 there warns and truncates to int32).
_NO_X64 = r"""
import warnings
warnings.simplefilter("error")
import jax, jax.numpy as jnp
import softops
from softops.sort import SORT_METHODS
x = jnp.array([[0.3, -jnp.inf, 2.0, 0.5, 0.5], [1.0, 3.0, -2.0, jnp.inf, 0.0]])
mask = jnp.array([True, True, False, True, True])
for name, config in SORT_METHODS.items():
    ops = [lambda v: softops.soft_sort(v, method=name), lambda v: softops.soft_rank(v, method=name),
           lambda v: softops.soft_topk_mask(v, 2, method=name), lambda v: softops.soft_quantile(v, 0.3, method=name),
           lambda v: softops.soft_rank(v, method=name, mask=mask)]
    if getattr(config, "has_matrix", False):
        ops.append(lambda v: softops.soft_permutation(v, method=name))
    for op in ops:
        jax.grad(lambda v: jnp.sum(jnp.where(jnp.isfinite(op(v)), op(v), 0.0)))(x)
print("OK")
"""


def test_jax_without_x64_gives_no_warning():
    pytest.importorskip("jax")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _NO_X64], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
