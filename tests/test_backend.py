"""The backend layer: installed frameworks, dispatch, lazy imports, dtype/device."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

import softops
from conftest import REQUIRED_BACKENDS
from harness import HARNESSES
from softops._backend import backend_of


@pytest.mark.parametrize("name", REQUIRED_BACKENDS)
def test_backends_installed(name):
    """Guard: every framework CI asked for imports, so none is skipped silently."""
    module = {"numpy": "numpy", "torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}[name]
    importlib.import_module(module)
    assert name in [h.name for h in HARNESSES]


def test_numpy_call_imports_no_framework():
    code = (
        "import sys, numpy as np, softops\n"
        "softops.soft_argmax(np.array([1.0, 3.0, 2.0]))\n"
        "softops.argmax_weights(np.array([1.0, 3.0]), method='gumbel', key=0)\n"
        "print(sorted(m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_backend_of_rejects_non_arrays():
    with pytest.raises(TypeError, match="x must be"):
        softops.soft_argmax({"a": 1.0})  # (numbers and lists are accepted: test_contract.py)
    with pytest.raises(TypeError):
        backend_of(3.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_output_keeps_framework_and_dtype(backend, dtype):
    if dtype == "bfloat16" and not backend.has_bfloat16:
        pytest.skip("NumPy has no bfloat16")
    x = backend.asarray([[1.0, 3.0, 2.0], [0.5, -1.0, 4.0]], dtype)
    for op in (softops.argmax_weights, softops.soft_argmax, softops.soft_max):
        y = op(x)
        assert type(y) is type(x) or backend.name == "numpy"
        assert y.dtype == backend.dtype(dtype)
        if backend.name == "torch":
            assert y.device == x.device


@pytest.mark.parametrize("method", ["permutahedron", "lapsum", "network", "sinkhorn"])
def test_jax_reverse_mode_runs_the_kernel_backward(method):
    """JAX's reverse mode transposes the custom tangent map into the kernel's own
    backward (``softops_pullback``), so ``jax.grad`` never transposes the smooth
    re-expression; forward mode has no pullback; and the gradient equals the
    one that differentiates the smooth expression (``jax.vmap`` of the
    gradient, whose batching rule does)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.asarray([[0.3, -1.2, 2.0, 0.5, 0.4], [1.0, 1.1, -3.0, 2.0, 0.0]], jnp.float32)
    weights = jnp.cos(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape)

    def loss(v):
        return jnp.sum(softops.soft_rank(v, method=method) ** 2 * weights)

    assert "softops_pullback" in str(jax.make_jaxpr(jax.grad(loss))(x))
    tangent = jax.make_jaxpr(lambda v: jax.jvp(loss, (v,), (jnp.ones_like(v),)))(x)
    assert "softops_tangent" in str(tangent) and "softops_pullback" not in str(tangent)
    fast = jax.jit(jax.grad(loss))(x)
    smooth = jax.vmap(jax.grad(loss))(x[None])[0]
    np.testing.assert_allclose(np.asarray(fast), np.asarray(smooth), rtol=2e-4, atol=2e-5)


def test_cond_takes_the_branch_of_its_predicate(backend):
    """``Backend.cond``: the true branch where the predicate holds, the false
    one elsewhere, eagerly and under the framework's compiler (``lax.cond``
    under ``jax.jit``); under ``torch.func.vmap`` a predicate that holds for any
    member takes the true branch for all (its documented contract: the true
    branch is valid for every row)."""
    x = backend.asarray([1.0, 2.0])
    ops = backend_of(x)

    def pick(flag, z):
        return ops.cond(flag, lambda u: (u * 2.0,), lambda u: (u - 1.0,), (z,))[0]

    xp = ops.xp
    np.testing.assert_array_equal(backend.to_numpy(pick(xp.asarray(True), x)), [2.0, 4.0])
    np.testing.assert_array_equal(backend.to_numpy(pick(xp.asarray(False), x)), [0.0, 1.0])
    if backend.name == "jax":
        import jax

        jitted = jax.jit(lambda z: pick(z[0] > 1.5, z))
        np.testing.assert_array_equal(np.asarray(jitted(x)), [0.0, 1.0])
        np.testing.assert_array_equal(np.asarray(jitted(x + 1.0)), [4.0, 6.0])
    if backend.name == "torch":
        import torch

        rows = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
        got = torch.func.vmap(lambda z: pick(z[0] > 2.0, z))(rows)
        np.testing.assert_array_equal(got.numpy(), [[2.0, 4.0], [6.0, 8.0]])
        got = torch.func.vmap(lambda z: pick(z[0] > 5.0, z))(rows)
        np.testing.assert_array_equal(got.numpy(), [[0.0, 1.0], [2.0, 3.0]])


@pytest.mark.parametrize("method", ["permutahedron", "lapsum", "network", "sinkhorn", "softsort"])
def test_tensorflow_variables_graphs_and_xla(method):
    """TensorFlow: a ``tf.Variable`` in gives a ``tf.Tensor`` out whose
    gradient reaches the variable; the same values and gradients eagerly, in
    ``tf.function`` (host kernels through ``tf.numpy_function``) and under XLA
    (``jit_compile=True``: the array twins, no host call)."""
    tf = pytest.importorskip("tensorflow")
    x = np.array([[0.3, -1.2, 2.0, 0.5, 0.4], [1.0, 1.1, -3.0, 2.0, 0.0]])
    cot = tf.constant(np.cos(np.arange(10.0)).reshape(2, 5))
    v = tf.Variable(x)

    def value_and_grad(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = softops.soft_rank(t, temperature=0.7, method=method)
        return y, tape.gradient(y, t, output_gradients=cot)

    with tf.GradientTape() as tape:
        y = softops.soft_rank(v, temperature=0.7, method=method)
    g = tape.gradient(y, v, output_gradients=cot)
    assert isinstance(y, tf.Tensor) and not isinstance(y, tf.Variable) and y.dtype == tf.float64
    want = softops.soft_rank(x, temperature=0.7, method=method)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12)
    for run in (tf.function(value_and_grad), tf.function(value_and_grad, jit_compile=True)):
        yy, gg = run(tf.constant(x))
        np.testing.assert_allclose(yy.numpy(), want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(gg.numpy(), g.numpy(), rtol=1e-9, atol=1e-12)


def test_tensorflow_adapter_creation_functions_match_numpy():
    """xp_tf's eye (every diagonal k, square and not), arange and full_like
    give NumPy's arrays."""
    pytest.importorskip("tensorflow")
    from softops._backend._tf import xp_tf

    for args, kw in [((3,), {}), ((3, 5), {"k": 2}), ((4, 3), {"k": -1}), ((3,), {"k": 3}), ((2, 4), {"k": -5})]:
        np.testing.assert_array_equal(xp_tf.eye(*args, **kw).numpy(), np.eye(*args, **kw))
    np.testing.assert_array_equal(xp_tf.arange(1, 7, 2).numpy(), np.arange(1, 7, 2))
    np.testing.assert_array_equal(xp_tf.full_like(xp_tf.eye(2), 3.5).numpy(), np.full((2, 2), 3.5))
