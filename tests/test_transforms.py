"""Every autodiff transform, for every operation and method, against finite differences.

One table of operations (``CASES``: every public operation x method, each as a
function of one float64 array, with its other arguments fixed) and one table
of transforms per framework (``TORCH_TRANSFORMS``, ``JAX_TRANSFORMS``,
``TF_TRANSFORMS``).  Each
(case, transform) pair is one test, so a new operation or method added to
``CASES`` cannot skip a transform.  The loss is non-linear,
``L(x) = sum(c * f(x)) + sum(f(x)^2) / 2``, so that second derivatives are
not trivially zero and ``torch.func.grad`` of a non-linear loss is exercised.

References (float64, central differences on the NumPy backend, which runs the
same kernels forward only): the Jacobian ``J``, so ``jvp = J v``,
``vjp = J^T c``, ``grad L = J^T (c + f)``.  Hessian-vector products are
checked against central differences of the framework's own first-order
gradient (itself checked against ``J`` by the first-order transforms).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import softops
from harness import HARNESSES, MASK_METHODS, MATRIX_METHODS, SORT_CONFIGS, NumpyHarness

NP = NumpyHarness()
KL = softops.Permutahedron(regularization="kl")
SORT_METHODS = SORT_CONFIGS
SHAPE = (2, 5)
STEP = 1e-6
RTOL = 1e-6


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=SHAPE) * 1.5


def _const(h, a):
    return h.asarray(np.asarray(a, dtype=np.float64))


_MASK = np.array([[True, False, True, True, True], [True, True, True, False, False]])


def _mask(h):
    return h.asarray(_MASK, "bool")


def _given(a, f):
    """``f`` with its first argument fixed to the (framework) constant ``a``."""
    return lambda x: f(a, x)


# Each case: name -> (make(h) -> f(x), x).  ``make`` builds the constants in
# the harness's framework; f maps a float64 array to a float64 array.
CASES = {}


def case(name, x=None):
    def register(make):
        CASES[name] = (make, _x() if x is None else x)
        return make

    return register


for _m in ("softmax", "sparsemax", "entmax15"):
    case(f"argmax_weights-{_m}")(lambda h, m=_m: lambda x: softops.argmax_weights(x, temperature=0.7, method=m))
    case(f"soft_argmax-{_m}")(lambda h, m=_m: lambda x: softops.soft_argmax(x, temperature=0.7, method=m))
    case(f"soft_argmax2d-{_m}")(
        lambda h, m=_m: lambda x: softops.soft_argmax(x, axis=(0, 1), temperature=0.7, method=m))
for _m in ("softmax", "sparsemax", "entmax15", "logsumexp"):
    case(f"soft_max-{_m}")(lambda h, m=_m: lambda x: softops.soft_max(x, temperature=0.7, method=m))
case("soft_argmax-relative-softmax")(lambda h: lambda x: softops.soft_argmax(x, temperature=softops.Relative(0.7)))
case("soft_min-entmax15")(lambda h: lambda x: softops.soft_min(x, temperature=0.7, method="entmax15"))

_ARR = np.cos(np.arange(7.0) * 1.3) * 2.0
_IDX = np.array([[0.3, 1.6, 2.45, 4.7, 5.2], [6.1, 0.9, 3.3, 2.2, 4.05]])
for _mode in ("linear", "cubic"):
    case(f"lookup-{_mode}-index", _IDX)(
        lambda h, mode=_mode: lambda i: softops.lookup(_const(h, _ARR), i, mode=mode))
    case(f"lookup-{_mode}-arr", _ARR)(
        lambda h, mode=_mode: lambda a: softops.lookup(a, _const(h, _IDX), mode=mode, padding="reflect"))
for _k in ("linear", "cubic", "gaussian", "laplace"):
    case(f"soft_index-{_k}", _IDX)(lambda h, k=_k: lambda i: softops.soft_index(i, 7, kernel=k, bandwidth=0.8))
case("lookup_along_axis-index", _IDX[:, :3])(
    lambda h: lambda i: softops.lookup_along_axis(_const(h, np.stack([_ARR, -_ARR])), i))
case("lookup_along_axis-axis0-index", _IDX[:, :3].T)(  # a moved axis (torch.func.vmap: permute_dims)
    lambda h: lambda i: softops.lookup_along_axis(_const(h, np.stack([_ARR, -_ARR]).T), i, axis=0))
case("soft_take-weights", np.abs(_x(1)))(lambda h: lambda w: softops.soft_take(_const(h, _ARR[:5]), w, axis=0))
case("assign-linear-index", np.array([0.4, 2.7]))(
    lambda h: lambda i: softops.assign(_const(h, _ARR), i, _const(h, [1.5, -2.0]), mode="linear"))
case("soft_assign-weights", np.abs(_x(2)[:, :5]) / 3)(
    lambda h: lambda w: softops.soft_assign(_const(h, _ARR[:5]), w, _const(h, [0.5, -1.0])))

for _name, _m in SORT_METHODS.items():
    case(f"soft_sort-{_name}")(lambda h, m=_m: lambda x: softops.soft_sort(x, temperature=0.6, method=m))
    case(f"soft_sort-desc-{_name}")(
        lambda h, m=_m: lambda x: softops.soft_sort(x, temperature=0.6, method=m, descending=True))
    case(f"soft_rank-{_name}")(lambda h, m=_m: lambda x: softops.soft_rank(x, temperature=0.8, method=m))
    case(f"soft_rank-desc-{_name}")(
        lambda h, m=_m: lambda x: softops.soft_rank(x, temperature=0.8, method=m, descending=True))
    case(f"soft_rank-temperature-{_name}", np.array(0.9))(
        lambda h, m=_m: _given(_const(h, _x(3)), lambda a, t: softops.soft_rank(a, temperature=t, method=m)))
    case(f"soft_sort-temperature-{_name}", np.array(0.7))(
        lambda h, m=_m: _given(_const(h, _x(3)), lambda a, t: softops.soft_sort(a, temperature=t, method=m)))
    case(f"soft_topk-{_name}")(lambda h, m=_m: lambda x: softops.soft_topk(x, 2, temperature=0.6, method=m))
    case(f"soft_quantile-{_name}")(
        lambda h, m=_m: lambda x: softops.soft_quantile(x, 0.3, temperature=0.6, method=m))
    case(f"soft_quantile-list-q-{_name}")(
        lambda h, m=_m: lambda x: softops.soft_quantile(x, [0.2, 0.9], temperature=0.6, method=m))
    case(f"soft_median-{_name}")(lambda h, m=_m: lambda x: softops.soft_median(x, temperature=0.6, method=m))
    # Relative(tau): the spacing of x is differentiated with the rest.
    case(f"soft_rank-relative-{_name}")(
        lambda h, m=_m: lambda x: softops.soft_rank(x, temperature=softops.Relative(0.8), method=m))
    case(f"soft_sort-relative-{_name}")(
        lambda h, m=_m: lambda x: softops.soft_sort(x, temperature=softops.Relative(0.6), method=m))
    # One temperature per row (shape (2,)), differentiated.
    case(f"soft_rank-row-temperature-{_name}", np.array([0.9, 0.4]))(
        lambda h, m=_m: _given(_const(h, _x(3)), lambda a, t: softops.soft_rank(a, temperature=t, method=m)))
    case(f"soft_sort-row-temperature-{_name}", np.array([0.7, 1.3]))(
        lambda h, m=_m: _given(_const(h, _x(3)), lambda a, t: softops.soft_sort(a, temperature=t, method=m)))
for _m in ("softmax", "entmax15"):
    case(f"argmax_weights-row-temperature-{_m}", np.array([[0.7], [1.6]]))(  # keepdims form
        lambda h, m=_m: _given(_const(h, _x(3)), lambda a, t: softops.argmax_weights(a, temperature=t, method=m)))
case("soft_max-row-temperature-logsumexp", np.array([0.7, 1.6]))(
    lambda h: _given(_const(h, _x(3)), lambda a, t: softops.soft_max(a, temperature=t, method="logsumexp")))
case("soft_index-gaussian-bandwidth", np.array([0.8, 0.5, 1.7, 0.9, 1.1]))(
    lambda h: _given(_const(h, _IDX), lambda i, b: softops.soft_index(i, 7, kernel="gaussian", bandwidth=b)))
for _name in MASK_METHODS:
    case(f"soft_topk_mask-row-temperature-{_name}", np.array([0.8, 1.5]))(
        lambda h, m=SORT_METHODS[_name]: _given(
            _const(h, _x(4)), lambda a, t: softops.soft_topk_mask(a, 2, temperature=t, method=m)))
    case(f"soft_topk_mask-{_name}")(
        lambda h, m=SORT_METHODS[_name]: lambda x: softops.soft_topk_mask(x, 2, temperature=0.8, method=m))
    case(f"soft_topk_mask-k-{_name}", np.array(2.4))(
        lambda h, m=SORT_METHODS[_name]: _given(
            _const(h, _x(4)), lambda a, k: softops.soft_topk_mask(a, k, temperature=0.8, method=m)))
    # mask=: ragged rows (a hole in row 0, padding in row 1).
    case(f"soft_rank-mask-{_name}")(
        lambda h, m=SORT_METHODS[_name]: lambda x: softops.soft_rank(x, temperature=0.8, method=m, mask=_mask(h)))
    case(f"soft_sort-mask-{_name}")(
        lambda h, m=SORT_METHODS[_name]: lambda x: softops.soft_sort(x, temperature=0.6, method=m, mask=_mask(h)))
    case(f"soft_topk_mask-mask-{_name}")(
        lambda h, m=SORT_METHODS[_name]: lambda x: softops.soft_topk_mask(x, 2, temperature=0.8, method=m,
                                                                          mask=_mask(h)))
    case(f"soft_quantile-mask-{_name}")(
        lambda h, m=SORT_METHODS[_name]: lambda x: softops.soft_quantile(x, [0.3, 1.0], temperature=0.6, method=m,
                                                                         mask=_mask(h)))
for _name in MATRIX_METHODS:
    case(f"soft_permutation-{_name}")(
        lambda h, m=_name: lambda x: softops.soft_permutation(x, temperature=0.7, method=m))
    case(f"soft_permutation-desc-k-{_name}")(
        lambda h, m=_name: lambda x: softops.soft_permutation(x, temperature=0.7, method=m, descending=True, k=2))
    case(f"soft_sort_by-keys-{_name}")(
        lambda h, m=_name: lambda x: softops.soft_sort_by(x, _const(h, np.arange(20.0).reshape(2, 5, 2) / 3),
                                                          temperature=0.7, method=m))
    case(f"soft_sort_by-values-{_name}", np.cos(np.arange(20.0)).reshape(2, 5, 2))(
        lambda h, m=_name: _given(_const(h, _x(5)), lambda k, v: softops.soft_sort_by(k, v, temperature=0.7,
                                                                                      method=m)))

# Sinkhorn: every operation once and each of its differentiable inputs once (all
# of them reach one transport solve, whose derivatives are implicit), not the
# whole table: each case is a few XLA compilations of a Newton solve per
# transform, and the method's remaining options (descending, ties, row layout)
# share the MatrixMethod code that the other matrix methods run through every
# case here.
_SINKHORN_CASES = {"soft_sort", "soft_rank", "soft_sort-row-temperature", "soft_topk", "soft_quantile",
                   "soft_quantile-mask",
                   "soft_topk_mask", "soft_topk_mask-k", "soft_topk_mask-mask", "soft_permutation-desc-k",
                   "soft_sort_by-values"}
for _case in [c for c in CASES if c.endswith("-sinkhorn") and c[: -len("-sinkhorn")] not in _SINKHORN_CASES]:
    del CASES[_case]

# --- references ------------------------------------------------------------------


def _loss_np(f, c, x):
    y = np.asarray(f(x))
    return np.sum(c * y) + 0.5 * np.sum(y * y)


@functools.lru_cache(maxsize=None)
def reference(name):
    """``(x, v, c, f(x), J)`` for case ``name`` (J of shape out + in)."""
    make, x = CASES[name]
    f = make(NP)
    y = np.asarray(f(x))
    jac = np.zeros(y.shape + x.shape)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += STEP
        down[i] -= STEP
        jac[(...,) + i] = (np.asarray(f(up)) - np.asarray(f(down))) / (2 * STEP)
    rng = np.random.default_rng(7)
    v = rng.normal(size=x.shape)
    c = rng.normal(size=y.shape)
    return x, v, c, y, jac


def _contract_out(jac, w, y):
    """``J^T w``: sum over the output axes."""
    return np.tensordot(w, jac, axes=(list(range(y.ndim)), list(range(y.ndim))))


def _contract_in(jac, v):
    return np.tensordot(jac, v, axes=(list(range(jac.ndim - v.ndim, jac.ndim)), list(range(v.ndim))))


def close(got, want, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-7 * scale, err_msg=what)


# --- PyTorch -----------------------------------------------------------------------

TORCH = next((h for h in HARNESSES if h.name == "torch"), None)
JAX = next((h for h in HARNESSES if h.name == "jax"), None)
TF = next((h for h in HARNESSES if h.name == "tensorflow"), None)


def _torch_transforms():
    import torch
    import torch.autograd.forward_ad as fwAD
    from torch import func

    def loss(f, c):
        def L(x):
            y = f(x)
            return (c * y).sum() + 0.5 * (y * y).sum()
        return L

    def backward(f, x, v, c):
        t = x.clone().requires_grad_(True)
        loss(f, c)(t).backward()
        return "grad", t.grad

    def double_backward(f, x, v, c):
        t = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(f, c)(t), t, create_graph=True)
        (hv,) = torch.autograd.grad((g * v).sum(), t)
        return "hvp", hv

    def func_grad(f, x, v, c):
        return "grad", func.grad(loss(f, c))(x)

    def func_vjp(f, x, v, c):
        y, pullback = func.vjp(f, x)
        return "vjp", pullback(c)[0]

    def func_jvp(f, x, v, c):
        return "jvp", func.jvp(f, (x,), (v,))[1]

    def func_jacrev(f, x, v, c):
        return "jac", func.jacrev(f)(x)

    def func_jacfwd(f, x, v, c):
        return "jac", func.jacfwd(f)(x)

    def func_hessian(f, x, v, c):
        hess = func.hessian(loss(f, c))(x)
        return "hvp", torch.tensordot(hess, v, dims=v.ndim)

    def func_vmap_grad(f, x, v, c):
        g = func.vmap(func.grad(loss(f, c)))(torch.stack([x, x]))
        return "grad", g[1]

    def func_jvp_of_grad(f, x, v, c):
        return "hvp", func.jvp(func.grad(loss(f, c)), (x,), (v,))[1]

    def forward_ad(f, x, v, c):
        with fwAD.dual_level():
            y = f(fwAD.make_dual(x, v))
            return "jvp", fwAD.unpack_dual(y).tangent

    return {name: fn for name, fn in locals().items() if callable(fn) and name not in ("loss", "fwAD", "func")}


def _loss(f, c, total):
    """The test loss ``L(x) = total(c * f(x)) + total(f(x)^2) / 2`` (``total``: the framework's sum)."""
    def L(x):
        y = f(x)
        return total(c * y) + 0.5 * total(y * y)
    return L


def _jax_transforms():
    import jax
    import jax.numpy as jnp

    def loss(f, c):
        return _loss(f, c, jnp.sum)

    def grad(f, x, v, c):
        return "grad", jax.grad(loss(f, c))(x)

    def jit_grad(f, x, v, c):
        return "grad", jax.jit(jax.grad(loss(f, c)))(x)

    def vjp(f, x, v, c):
        return "vjp", jax.vjp(f, x)[1](c)[0]

    def jvp(f, x, v, c):
        return "jvp", jax.jvp(f, (x,), (v,))[1]

    def linearize(f, x, v, c):
        return "jvp", jax.linearize(f, x)[1](v)

    def jacfwd(f, x, v, c):
        return "jac", jax.jacfwd(f)(x)

    def jacrev(f, x, v, c):
        return "jac", jax.jacrev(f)(x)

    def hessian(f, x, v, c):
        return "hvp", jnp.tensordot(jax.hessian(loss(f, c))(x), v, axes=v.ndim)

    def vmap_grad(f, x, v, c):
        return "grad", jax.vmap(jax.grad(loss(f, c)))(jnp.stack([x, x]))[1]

    def fwd_over_rev(f, x, v, c):
        return "hvp", jax.jvp(jax.grad(loss(f, c)), (x,), (v,))[1]

    def rev_over_rev(f, x, v, c):
        g = jax.grad(loss(f, c))
        return "hvp", jax.grad(lambda t: jnp.sum(g(t) * v))(x)

    transforms = {name: fn for name, fn in locals().items() if callable(fn) and name not in ("loss", "jax", "jnp")}
    # Eager JAX compiles every primitive separately: all but the eager grad and
    # jvp run under jax.jit -- all of a case's at once, in one program
    # (``_jax_jitted``): one compilation per case, not one per transform.
    eager = ("grad", "jvp")

    return {name: (fn if name in eager else _jitted(name, fn)) for name, fn in transforms.items()}


_KINDS = {"jit_grad": "grad", "vjp": "vjp", "linearize": "jvp", "jacfwd": "jac", "jacrev": "jac",
          "hessian": "hvp", "vmap_grad": "grad", "fwd_over_rev": "hvp", "rev_over_rev": "hvp"}
_JITTED = {}


def _jitted(name, fn):
    """The transform ``name`` read from its case's one compiled program of
    every jitted transform (``_jax_jitted``), with the kind of its result."""
    _JITTED[name] = fn

    def run(f, x, v, c, case=None):
        if case is None:  # not through the test table: compile this one alone
            import jax

            return _KINDS[name], jax.jit(lambda x, v, c: fn(f, x, v, c)[1])(x, v, c)
        return _KINDS[name], _jax_jitted(case)[name]

    return run


@functools.lru_cache(maxsize=None)
def _jax_jitted(case):
    """Every jitted JAX transform of ``case`` from one ``jax.jit`` program
    (where that fails, each in its own, a failing one returned as its
    exception for its own test to raise)."""
    import jax

    make, _ = CASES[case]
    x, v, c, _, _ = reference(case)
    f = make(JAX)
    args = (JAX.asarray(x), JAX.asarray(v), JAX.asarray(c))
    try:
        return jax.jit(lambda x, v, c: {name: fn(f, x, v, c)[1] for name, fn in _JITTED.items()})(*args)
    except Exception:  # noqa: BLE001 - then each alone, so that a failure is its transform's own
        results = {}
        for name, fn in _JITTED.items():
            try:
                results[name] = jax.jit(lambda x, v, c, fn=fn: fn(f, x, v, c)[1])(*args)
            except Exception as e:  # noqa: BLE001 - re-raised in the transform's own test
                results[name] = e
    return results


def _tf_transforms():
    import tensorflow as tf

    def loss(f, c):
        return _loss(f, c, tf.reduce_sum)

    def gradient(L, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = L(x)
        return tape.gradient(value, x)

    def tape_grad(f, x, v, c):
        return "grad", gradient(loss(f, c), x)

    def tape_vjp(f, x, v, c):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
        return "vjp", tape.gradient(y, x, output_gradients=c)

    def nested_tape_hvp(f, x, v, c):
        with tf.GradientTape() as outer:
            outer.watch(x)
            g = gradient(loss(f, c), x)
            gv = tf.reduce_sum(g * v)
        return "hvp", outer.gradient(gv, x)

    def forward_accumulator(f, x, v, c):
        with tf.autodiff.ForwardAccumulator(x, v) as acc:
            y = f(x)
        return "jvp", acc.jvp(y)

    def fwd_over_rev(f, x, v, c):
        with tf.autodiff.ForwardAccumulator(x, v) as acc:
            g = gradient(loss(f, c), x)
        return "hvp", acc.jvp(g)

    def tape_jacobian(f, x, v, c):  # pfor over the output entries
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
        return "jac", tape.jacobian(y, x)

    def function_grad(f, x, v, c):
        return "grad", tf.function(lambda t: gradient(loss(f, c), t))(x)

    def xla_grad(f, x, v, c):
        return "grad", tf.function(lambda t: gradient(loss(f, c), t), jit_compile=True)(x)

    def vectorized_map_grad(f, x, v, c):
        return "grad", tf.vectorized_map(lambda t: gradient(loss(f, c), t), tf.stack([x, x]))[1]

    return {name: fn for name, fn in locals().items() if callable(fn) and name not in ("loss", "gradient")}


TORCH_TRANSFORMS = _torch_transforms() if TORCH else {}
JAX_TRANSFORMS = _jax_transforms() if JAX else {}
TF_TRANSFORMS = _tf_transforms() if TF else {}


def _first_order_grad(h, f, name):
    """The framework's plain reverse-mode gradient of the loss, ``(x, c) -> grad``
    (for central differences of HVPs; JAX's is compiled once per case)."""
    if h.name == "torch":
        return lambda x, c: TORCH_TRANSFORMS["backward"](f, x, None, c)[1]
    if h.name == "tensorflow":
        return lambda x, c: TF_TRANSFORMS["tape_grad"](f, x, None, c)[1]
    return _jax_first_order_grad(name)


@functools.lru_cache(maxsize=None)
def _jax_first_order_grad(name):
    import jax
    import jax.numpy as jnp

    f = CASES[name][0](JAX)
    return jax.jit(jax.grad(lambda x, c: _loss(f, c, jnp.sum)(x)))


def _expected(h, kind, f, name):
    x, v, c, y, jac = reference(name)
    if kind == "jvp":
        return _contract_in(jac, v)
    if kind == "vjp":
        return _contract_out(jac, c, y)
    if kind == "grad":
        return _contract_out(jac, c + y, y)
    if kind == "jac":
        return jac
    # hvp: central differences of the framework's own gradient along v
    h_step = 1e-5
    grad = _first_order_grad(h, f, name)
    gp = h.to_numpy(grad(h.asarray(x + h_step * v), h.asarray(c)))
    gm = h.to_numpy(grad(h.asarray(x - h_step * v), h.asarray(c)))
    return (gp - gm) / (2 * h_step)


def _run(h, transforms, name, transform):
    make, _ = CASES[name]
    x, v, c, y, _ = reference(name)
    f = make(h)
    if h is JAX and transform in _JITTED:
        kind, got = transforms[transform](f, None, None, None, case=name)
        if isinstance(got, Exception):
            raise got
    else:
        kind, got = transforms[transform](f, h.asarray(x), h.asarray(v), h.asarray(c))
    close(h.to_numpy(got), _expected(h, kind, f, name), f"{name} under {h.name} {transform}")


@pytest.mark.skipif(TORCH is None, reason="torch is not installed")
@pytest.mark.parametrize("transform", list(TORCH_TRANSFORMS))
@pytest.mark.parametrize("name", list(CASES))
def test_torch_transform(name, transform):
    _run(TORCH, TORCH_TRANSFORMS, name, transform)


# Sinkhorn under JAX: each case compiles its Newton solves for every transform
# (5-10 s a test on 2 cores); the operations' other inputs run under torch.
_SINKHORN_JAX = {"soft_sort", "soft_rank", "soft_topk_mask-k", "soft_quantile", "soft_sort_by-values"}
JAX_CASES = [name for name in CASES
             if not name.endswith("-sinkhorn") or name[: -len("-sinkhorn")] in _SINKHORN_JAX]


# Under a compiler (torch.compile, jax.jit, tf.function) each (operation, sort
# method) compiles once: a sort method's variants (descending, temperature
# arrays, masks, a list of q, a differentiable k) run every eager and
# functional transform (PyTorch's eleven, JAX's grad and jvp, TensorFlow's
# tapes and accumulators), and each compilation costs seconds.
_VARIANTS = ("-desc-", "-temperature-", "-mask-", "-list-q-", "-k-")
COMPILE_CASES = [name for name in CASES
                 if not (any(name.endswith("-" + m) for m in SORT_METHODS) and any(v in name for v in _VARIANTS))]


def _jax_cases(transform):
    return [name for name in JAX_CASES if transform not in _JITTED or name in COMPILE_CASES]


@pytest.mark.skipif(JAX is None, reason="jax is not installed")
@pytest.mark.parametrize("name,transform", [(n, t) for t in JAX_TRANSFORMS for n in _jax_cases(t)])
def test_jax_transform(name, transform):
    _run(JAX, JAX_TRANSFORMS, name, transform)


# TensorFlow: the eager transforms for every case; the graph ones (tf.function,
# XLA, vectorized_map and the tape's jacobian, both through pfor: a trace, and
# for XLA a compilation, per test) for each operation and method without its
# variants (as torch.compile below).
_TF_GRAPH = ("function_grad", "xla_grad", "vectorized_map_grad", "tape_jacobian")


# soft_topk, soft_quantile and soft_median are soft_sort's rows read off, and
# soft_sort_by's keys reach the matrix as soft_permutation's do: the graph
# transforms run their base operations.
_TF_GRAPH_SKIP = ("soft_topk-", "soft_quantile-", "soft_median-", "soft_sort_by-keys-")


def _tf_cases(transform):
    if transform in _TF_GRAPH:
        return [name for name in JAX_CASES if name in COMPILE_CASES and not name.startswith(_TF_GRAPH_SKIP)]
    if transform == "fwd_over_rev":  # a second order per case: the variants' is nested_tape_hvp's
        return [name for name in JAX_CASES if name in COMPILE_CASES]
    return JAX_CASES


@pytest.mark.skipif(TF is None, reason="tensorflow is not installed")
@pytest.mark.parametrize("name,transform", [(n, t) for t in TF_TRANSFORMS for n in _tf_cases(t)])
def test_tf_transform(name, transform):
    _run(TF, TF_TRANSFORMS, name, transform)


@pytest.mark.slow
@pytest.mark.skipif(TORCH is None, reason="torch is not installed")
@pytest.mark.parametrize("name", COMPILE_CASES)
def test_torch_compile_forward_backward(name):
    """``torch.compile(fullgraph=True)`` of forward + backward equals the FD gradient."""
    import torch

    make, _ = CASES[name]
    x, v, c, y, jac = reference(name)
    f = make(TORCH)
    ct = TORCH.asarray(c)

    def loss(t):
        out = f(t)
        return out, (ct * out).sum() + 0.5 * (out * out).sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    t = TORCH.asarray(x).requires_grad_(True)
    out, value = compiled(t)
    value.backward()
    close(TORCH.to_numpy(out), y, f"{name} compiled value")
    close(TORCH.to_numpy(t.grad), _contract_out(jac, c + y, y), f"{name} compiled gradient")


def test_every_public_operation_has_a_case():
    """A public operation missing from CASES fails here."""
    covered = {name.split("-")[0].replace("soft_argmax2d", "soft_argmax") for name in CASES}
    ops = set(softops.OPERATIONS)
    exempt = {"soft_argmin", "soft_scatter_add"}  # thin wrappers of soft_argmax / soft_assign
    assert ops - exempt <= covered, sorted(ops - exempt - covered)


# --- forward mode at tiny temperatures -------------------------------------------
# Below T ~ 1 / sqrt(max) (5e-20 in float32, 1e-154 in float64) 1 / T^2
# overflows.  Forward mode once multiplied it by a zero: by the zero tangent of a
# constant temperature (JAX's custom rules saw a Python float, traced by a jit
# inside the operation, as an input with a tangent: nan in x for LapSum, Sinkhorn
# and the networks), or by the zero derivative of a permutahedron block that does
# not depend on T (every block at such temperatures: nan in T).  Derivatives in T
# there are exact for the permutahedron only (README, known gaps: the other
# methods' tangents of x / T overflow before they meet a zero), and TensorFlow's
# forward accumulator, which differentiates every input of each operation (a
# constant temperature's 1 / T^2 included), gives nan in x for LapSum there.
_FORWARD = {"torch": ("func_jvp", "forward_ad"), "jax": ("jvp",), "tensorflow": ("forward_accumulator",)}
_TINY = {"float32": (1e-30,), "float64": (1e-300,)}
_SPREAD = np.array([[0.3, -1.2, 2.0, 0.5, 1.7, -0.4]])  # gaps of 0.2 and more: the limit is the exact op
_TIED = np.array([[0.3, -1.2, 2.0, 0.5, 0.5, -0.4]])
_EXACT_IN_T = ("l2", "kl")  # the permutahedron
_TF_NAN_IN_X = ("lapsum",)


def _tiny_ops(name, method):
    ops = {"soft_rank": lambda v, T: softops.soft_rank(v, temperature=T, method=method),
           "soft_sort": lambda v, T: softops.soft_sort(v, temperature=T, method=method),
           "soft_topk": lambda v, T: softops.soft_topk(v, 2, temperature=T, method=method)}
    if name != "kl":
        ops["soft_topk_mask"] = lambda v, T: softops.soft_topk_mask(v, 2, temperature=T, method=method)
    return ops


def _limit_tangent(name, dx):
    """The exact op's tangent along ``dx`` (ranks and masks are flat; sorts and
    top-k values move with their entries)."""
    order = np.argsort(_SPREAD, axis=-1)
    if name == "soft_sort":
        return np.take_along_axis(dx, order, -1)
    if name == "soft_topk":
        return np.take_along_axis(dx, order[..., ::-1][..., :2], -1)
    return np.zeros_like(dx)


@pytest.mark.parametrize("method", list(SORT_METHODS))
def test_forward_mode_at_tiny_temperatures_gives_the_limit(diff_backend, method):
    h = diff_backend
    if h.name == "tensorflow" and method in _TF_NAN_IN_X:
        pytest.skip("known gap (README): TensorFlow's forward accumulator, LapSum, T < 1/sqrt(max)")
    transforms = {"torch": TORCH_TRANSFORMS, "jax": JAX_TRANSFORMS, "tensorflow": TF_TRANSFORMS}[h.name]
    m = SORT_METHODS[method]
    dx = np.cos(np.arange(_SPREAD.size) * 1.7).reshape(_SPREAD.shape)
    for dtype, temps in _TINY.items():
        for t in temps:
            for name, op in _tiny_ops(method, m).items():
                for transform in _FORWARD[h.name]:
                    run = transforms[transform]
                    x = h.asarray(_SPREAD, dtype)
                    what = f"{name} {method} {dtype} T={t} {transform}"
                    _, got = run(lambda v: op(v, t), x, h.asarray(dx, dtype), None)
                    want = _limit_tangent(name, dx)
                    np.testing.assert_allclose(h.to_numpy(got), want, atol=1e-6, err_msg=f"d/dx {what}")
                    if method in _EXACT_IN_T:  # in T, with and without a tie: 0
                        for data in (_SPREAD, _TIED):
                            xd = h.asarray(data, dtype)
                            _, got_t = run(lambda T: op(xd, T), h.asarray(t, dtype), h.asarray(1.0, dtype), None)
                            np.testing.assert_array_equal(h.to_numpy(got_t), 0.0, err_msg=f"d/dT {what} {data}")
