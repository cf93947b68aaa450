"""JAX backend: jax.custom_vjp for custom gradients, PRNG keys for noise.

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
def _custom_vjp_function(fwd, bwd):
    @jax.custom_vjp
    def function(*arrays):
        return fwd(jnp, *arrays)[0]

    def function_fwd(*arrays):
        out, residuals = fwd(jnp, *arrays)
        return out, (out, residuals)

    def function_bwd(saved, g):
        out, residuals = saved
        return tuple(bwd(jnp, out, residuals, g))

    function.defvjp(function_fwd, function_bwd)
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

    def custom_vjp(self, fwd, bwd):
        return _custom_vjp_function(fwd, bwd)

    def gumbel(self, key, shape, dtype, like):
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            key = jax.random.key(int(key))
        elif not _is_prng_key(key):
            raise TypeError(
                "key must be a JAX PRNG key (jax.random.key(seed)) or an int seed for "
                f"JAX input, got {type(key).__name__}"
            )
        return jax.random.gumbel(key, shape, dtype)

    def inverse_permutation(self, order):
        positions = jnp.broadcast_to(jnp.arange(order.shape[-1], dtype=order.dtype), order.shape)
        return jnp.put_along_axis(jnp.empty_like(order), order, positions, axis=-1, inplace=False)

    def isotonic_forward(self, z, w, scale, kl, unsort=None):
        from softops._kernels import jax_ops

        return jax_ops.isotonic_forward(z, w, scale, kl, unsort)

    def isotonic_backward(self, z, w, scale, start, g, kl, order=None, unsort=None, need=(True, True)):
        from softops._kernels import jax_ops

        return jax_ops.isotonic_backward(z, w, scale, start, g, kl, order, unsort, need)

    def lapsum_kernel(self, x):
        from softops._kernels.lapsum import HAVE_NUMBA

        if not HAVE_NUMBA:
            return False
        if isinstance(x, jax.core.Tracer):
            return jax.default_backend() == "cpu"
        return all(d.platform == "cpu" for d in x.devices())

    def lapsum_forward(self, op, x, t, k=None, need_t=True):
        from softops._kernels import jax_ops

        return jax_ops.lapsum_forward(op, x, t, k, need_t)

    def lapsum_backward(self, op, y, order, t, aux, gaps, g, k=None, need_t=True):
        from softops._kernels import jax_ops

        return jax_ops.lapsum_backward(op, y, order, t, aux, gaps, g, k, need_t)


JAX = JaxBackend()
