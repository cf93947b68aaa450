"""One interface to every array framework, so that each test runs on all of them.

A ``Harness`` converts NumPy test data into the framework's arrays and back, and
knows how to take gradients, jit and vmap there.  ``HARNESSES`` holds one for each
framework that imports; ``conftest.py`` turns them into the ``backend`` fixture.
"""

from __future__ import annotations

import importlib.util

import numpy as np


class Harness:
    name: str
    differentiable = True
    has_bfloat16 = True

    def asarray(self, a, dtype="float64"):
        raise NotImplementedError

    def to_numpy(self, a) -> np.ndarray:
        raise NotImplementedError

    def dtype(self, name: str):
        raise NotImplementedError

    def vjp(self, f, x: np.ndarray, cotangent: np.ndarray, dtype="float64") -> np.ndarray:
        """Gradient of ``sum(f(x) * cotangent)`` with respect to ``x``."""
        raise NotImplementedError

    def value_and_grads(self, f, args, cotangent):
        """``f(*args)`` and the gradients of ``sum(f(*args) * cotangent)`` with
        respect to each of ``args`` (NumPy float64 arrays in and out; zeros
        for an argument the output does not depend on)."""
        raise NotImplementedError

    def jit(self, f):
        raise NotImplementedError

    def vmap(self, f):
        raise NotImplementedError

    def __repr__(self):
        return self.name


class NumpyHarness(Harness):
    name = "numpy"
    differentiable = False
    has_bfloat16 = False

    def __init__(self):
        self.xp = np

    def asarray(self, a, dtype="float64"):
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a)

    def dtype(self, name):
        return np.dtype(name)

    def jit(self, f):
        return f

    def vmap(self, f):
        def mapped(x, *args):
            return np.stack([f(row, *args) for row in x])

        return mapped


class TorchHarness(Harness):
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.xp = torch

    def dtype(self, name):
        return getattr(self.torch, name)

    def asarray(self, a, dtype="float64"):
        return self.torch.as_tensor(np.asarray(a, dtype=np.float64)).to(self.dtype(dtype))

    def to_numpy(self, a):
        if isinstance(a, self.torch.Tensor):
            a = a.detach()
            return (a.double() if a.is_floating_point() else a).numpy()
        return np.asarray(a)

    def vjp(self, f, x, cotangent, dtype="float64"):
        t = self.asarray(x, dtype).requires_grad_(True)
        out = f(t)
        (g,) = self.torch.autograd.grad(out, t, self.asarray(cotangent, str(out.dtype)[6:]))
        return self.to_numpy(g)

    def value_and_grads(self, f, args, cotangent):
        torch = self.torch
        args = [torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in args]
        out = f(*args)
        grads = torch.autograd.grad((out * torch.as_tensor(cotangent)).sum(), args, allow_unused=True)
        return out.detach().numpy(), [np.zeros(a.shape) if g is None else g.numpy() for a, g in zip(args, grads)]

    def jit(self, f):
        # Tests compile many closures of one code object: start each from a clean
        # cache so that dynamo's recompile limit never trips.
        self.torch._dynamo.reset()
        return self.torch.compile(f, fullgraph=True, backend="aot_eager")

    def vmap(self, f):
        return self.torch.func.vmap(f)


class JaxHarness(Harness):
    name = "jax"

    def __init__(self):
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        self.jax = jax
        self.xp = jnp

    def dtype(self, name):
        return getattr(self.xp, name)

    def asarray(self, a, dtype="float64"):
        return self.xp.asarray(np.asarray(a, dtype=np.float64), dtype=self.dtype(dtype))

    def to_numpy(self, a):
        a = np.asarray(a)
        return a.astype(np.float64) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a

    def vjp(self, f, x, cotangent, dtype="float64"):
        out, pullback = self.jax.vjp(f, self.asarray(x, dtype))
        (g,) = pullback(self.xp.asarray(cotangent, dtype=out.dtype))
        return self.to_numpy(g)

    def value_and_grads(self, f, args, cotangent):
        jnp = self.xp
        out, pullback = self.jax.vjp(f, *(jnp.asarray(a, dtype=jnp.float64) for a in args))
        return np.asarray(out), [np.asarray(g) for g in pullback(jnp.asarray(cotangent))]

    def jit(self, f):
        return self.jax.jit(f)

    def vmap(self, f):
        return self.jax.vmap(f)


class TfHarness(Harness):
    name = "tensorflow"

    def __init__(self):
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        from softops._backend._tf import xp_tf

        self.tf = tf
        self.xp = xp_tf

    def dtype(self, name):
        return getattr(self.tf, name)

    def asarray(self, a, dtype="float64"):
        a = np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind != "b" else np.asarray(a)
        return self.tf.cast(self.tf.constant(a), self.dtype(dtype))

    def to_numpy(self, a):
        if isinstance(a, (self.tf.Tensor, self.tf.Variable)):
            a = a.numpy()
        a = np.asarray(a)
        return a.astype(np.float64) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a

    def vjp(self, f, x, cotangent, dtype="float64"):
        t = self.asarray(x, dtype)
        with self.tf.GradientTape() as tape:
            tape.watch(t)
            out = f(t)
        g = tape.gradient(out, t, output_gradients=self.tf.cast(self.tf.constant(cotangent), out.dtype))
        return self.to_numpy(g)

    def value_and_grads(self, f, args, cotangent):
        tf = self.tf
        args = [tf.constant(np.asarray(a, dtype=np.float64)) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = f(*args)
            loss = tf.reduce_sum(out * tf.constant(cotangent, out.dtype))
        grads = tape.gradient(loss, args)
        return out.numpy(), [np.zeros(a.shape) if g is None else g.numpy() for a, g in zip(args, grads)]

    def jit(self, f):
        return self.tf.function(f, jit_compile=True)

    def vmap(self, f):
        return lambda x: self.tf.vectorized_map(f, x)


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def make_harnesses():
    harnesses = [NumpyHarness()]
    if _available("torch"):
        harnesses.append(TorchHarness())
    if _available("jax"):
        harnesses.append(JaxHarness())
    if _available("tensorflow"):
        harnesses.append(TfHarness())
    return harnesses


HARNESSES = make_harnesses()


def assert_transforms_agree(harness, f, x: np.ndarray, cotangent: np.ndarray, rtol=1e-12):
    """``f`` under the harness's jit and vmap gives the eager values and gradients."""
    eager = harness.to_numpy(f(harness.asarray(x)))
    for transform in (harness.jit, harness.vmap):
        np.testing.assert_allclose(harness.to_numpy(transform(f)(harness.asarray(x))), eager, rtol=rtol)
    g_eager = harness.vjp(f, x, cotangent)
    for transform in (harness.jit, harness.vmap):
        # JAX reverse mode transposes the op's smooth re-expression, the eager
        # call runs the kernel's backward: equal up to rounding.
        np.testing.assert_allclose(harness.vjp(transform(f), x, cotangent), g_eager, rtol=rtol,
                                   atol=1e-13 * max(1.0, np.abs(g_eager).max(initial=0.0)))


def finite_difference_vjp(f, x: np.ndarray, cotangent: np.ndarray, step=1e-6) -> np.ndarray:
    """Central differences of ``sum(f(x) * cotangent)`` in float64 (``f`` on NumPy)."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += step
        down[i] -= step
        grad[i] = np.sum((np.asarray(f(up)) - np.asarray(f(down))) * cotangent) / (2 * step)
    return grad


def sort_configs():
    """Every registered sort method (``softops.sort.SORT_METHODS``) by a short
    name, plus the permutahedron's kl regulariser: the tables that the sorting
    family's harnesses parametrise over, so a new method joins every one."""
    import softops

    configs = {"l2": "permutahedron", "kl": softops.Permutahedron(regularization="kl")}
    configs.update({name: name for name in softops.sort.SORT_METHODS if name != "permutahedron"})
    return configs


SORT_CONFIGS = sort_configs()
# Those with a top-k mask (all but kl) and those with a soft permutation matrix.
MASK_METHODS = [name for name in SORT_CONFIGS if name != "kl"]
MATRIX_METHODS = [name for name, m in SORT_CONFIGS.items()
                  if hasattr(m if not isinstance(m, str) else __import__("softops").sort.SORT_METHODS[m],
                             "permutation_rows")]
