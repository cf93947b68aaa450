"""JAX backend: jax.custom_jvp for custom derivatives, PRNG keys for noise.

Everything here is traceable: operations work under ``jax.jit``, ``jax.vmap`` and
``jax.grad`` with no host round trip.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from softops._backend import Backend


@functools.lru_cache(maxsize=None)
def _custom_function(fwd, bwd, smooth):
    """A ``jax.custom_jvp``: the value from ``fwd`` (a kernel callback, evaluated
    on stop-gradient inputs so that no callback is ever differentiated), the
    tangent from ``smooth``.  The tangent is linear in the input tangents and
    built from JAX operations, so JAX transposes it for reverse mode and
    differentiates the rule itself for higher orders: one rule serves ``jvp``,
    ``grad``, ``jacfwd``, ``jacrev``, ``hessian``, ``linearize`` and ``vmap``.
    (``bwd`` is the fast reverse rule of the other frameworks; JAX cannot
    combine a custom VJP with forward mode.)"""

    # The value-only fwd is compiled once per shape and reused by every
    # transform (eager JAX would dispatch each of its operations, and a
    # solver's while_loop would compile anew on every call).
    value = jax.jit(lambda *arrays: fwd(jnp, *arrays))

    @jax.custom_jvp
    def function(*arrays):
        return value(*arrays)[0]

    @jax.jit
    def rule(primals, tangents):
        # One program too: eager transforms (jax.grad, jax.jvp) would compile
        # every operation of smooth's tangent separately for each new shape.
        out, residuals = value(*(jax.lax.stop_gradient(a) for a in primals))
        s, t = jax.jvp(lambda *a: smooth(jnp, a, out, residuals), tuple(primals), tuple(tangents))
        infinite = jnp.isinf(out)  # an infinite output is a constant
        delta = s - jax.lax.stop_gradient(s)  # value 0: out keeps the kernel's value
        return out + jnp.where(infinite, 0.0, delta), jnp.where(infinite, 0.0, t)

    @function.defjvp
    def function_jvp(primals, tangents):
        return rule(tuple(primals), tuple(tangents))

    return function


def _is_prng_key(key) -> bool:
    if not isinstance(key, jax.Array):
        return False
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return True
    # Legacy raw keys: uint32 arrays of shape (2,).
    return key.dtype == jnp.uint32 and key.shape == (2,)


class JaxBackend(Backend):
    name = "jax"
    xp = jnp
    differentiable = True

    def stop_gradient(self, x):
        return jax.lax.stop_gradient(x)

    def device(self, x):
        return None  # tracers have no device; JAX places new arrays with their users

    def custom_derivative(self, fwd, bwd, smooth):
        return _custom_function(fwd, bwd, smooth)

    def segment_sum(self, values, ids):
        shape = ids.shape
        n = shape[-1]
        rows = 1
        for d in shape[:-1]:
            rows *= d
        values = jnp.broadcast_to(values, shape).reshape(rows, n)
        offsets = (jnp.arange(rows, dtype=ids.dtype) * n)[:, None]
        flat = (ids.reshape(rows, n) + offsets).reshape(-1)
        return jax.ops.segment_sum(values.reshape(-1), flat, num_segments=rows * n).reshape(shape)

    def gumbel(self, key, shape, dtype, like):
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            key = jax.random.key(int(key))
        elif not _is_prng_key(key):
            raise TypeError(
                "key must be a JAX PRNG key (jax.random.key(seed)) or an int seed for "
                f"JAX input, got {type(key).__name__}"
            )
        return jax.random.gumbel(key, shape, dtype)

    def while_loop(self, cond, body, state):
        return tuple(jax.lax.while_loop(lambda s: cond(*s), lambda s: tuple(body(*s)), tuple(state)))

    def opaque(self, kernel, arrays, static=()):
        if not self._on_cpu(arrays[0]):
            return tuple(kernel(jnp, *arrays, *static))
        # On CPU the solver runs on the host buffers (NumPy), with nothing for
        # XLA to compile; "broadcast_all" hands a vmapped call its batch as
        # leading axes, which the solvers take.
        import array_api_compat.numpy as xp_numpy
        import numpy as np

        from softops._backend import OPAQUE_LIKE

        def host(*values):
            return tuple(kernel(xp_numpy, *(np.asarray(v) for v in values), *static))

        shapes = tuple(jax.ShapeDtypeStruct(arrays[i].shape, arrays[i].dtype) for i in OPAQUE_LIKE[kernel])
        return tuple(jax.pure_callback(host, shapes, *arrays, vmap_method="broadcast_all"))

    @staticmethod
    def _on_cpu(x) -> bool:
        if isinstance(x, jax.core.Tracer):
            return jax.default_backend() == "cpu"
        return all(d.platform == "cpu" for d in x.devices())

    def softmax(self, z):
        return jax.nn.softmax(z, axis=-1)

    def logsumexp(self, z, axis):
        return jax.nn.logsumexp(z, axis=axis)

    def inverse_permutation(self, order):
        positions = jnp.broadcast_to(jnp.arange(order.shape[-1], dtype=order.dtype), order.shape)
        return jnp.put_along_axis(jnp.empty_like(order), order, positions, axis=-1, inplace=False)

    def isotonic_forward(self, z, w, scale, kl, unsort=None):
        from softops._kernels import jax_ops

        return jax_ops.isotonic_forward(z, w, scale, kl, unsort)

    def isotonic_backward(self, z, w, scale, start, g, kl, order=None, unsort=None, need=(True, True)):
        from softops._kernels import jax_ops

        return jax_ops.isotonic_backward(z, w, scale, start, g, kl, order, unsort, need)

    def cpu_kernels(self, x):
        from softops._kernels.lapsum import HAVE_NUMBA

        return HAVE_NUMBA and self._on_cpu(x)

    def kernel(self, host, arrays, static=()):
        import numpy as np

        from softops._backend import KERNEL_NAMES, KERNELS

        shapes = KERNELS[KERNEL_NAMES[host]][1]([tuple(a.shape) for a in arrays], *static)
        results = tuple(jax.ShapeDtypeStruct(shape, arrays[d].dtype if isinstance(d, int) else jnp.dtype(d))
                        for shape, d in shapes)

        def on_host(*values):
            return tuple(host(*(np.asarray(v) for v in values), *static))

        return tuple(jax.pure_callback(on_host, results, *arrays, vmap_method="expand_dims"))

    def lapsum_forward(self, op, x, t, k=None, need_t=True):
        from softops._kernels import jax_ops

        return jax_ops.lapsum_forward(op, x, t, k, need_t)

    def lapsum_backward(self, op, y, order, t, aux, gaps, g, k=None, need_t=True):
        from softops._kernels import jax_ops

        return jax_ops.lapsum_backward(op, y, order, t, aux, gaps, g, k, need_t)


JAX = JaxBackend()
