"""The isotonic kernels for JAX, through ``jax.pure_callback``.

On CPU the callback receives host buffers with no copy and runs the numba kernel;
``vmap_method="broadcast_all"`` batches it by adding leading row dimensions, which
the kernel folds into its rows.  Under ``jax.jit`` the callback is one opaque
node.  On an accelerator the same callback costs a device-host round trip;
that is where a device kernel (Pallas / Triton) would plug in.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from softops._kernels import isotonic


def _host_forward(z, w, scale, *, kl):
    return isotonic.forward_numpy(np.asarray(z), np.asarray(w), np.asarray(scale), kl)


def _host_backward(z, w, scale, start, g, *, kl):
    gz, gw, gc = isotonic.backward_numpy(
        np.asarray(z), np.asarray(w), np.asarray(scale), np.asarray(start), np.asarray(g), kl
    )
    return gz, gw, gc.astype(np.asarray(z).dtype)


def isotonic_forward(z, w, scale, kl):
    shapes = (jax.ShapeDtypeStruct(z.shape, z.dtype), jax.ShapeDtypeStruct(z.shape, jnp.int32))
    return jax.pure_callback(
        functools.partial(_host_forward, kl=kl), shapes, z, w, scale, vmap_method="broadcast_all"
    )


def isotonic_backward(z, w, scale, start, g, kl):
    shapes = (
        jax.ShapeDtypeStruct(z.shape, z.dtype),
        jax.ShapeDtypeStruct(z.shape, z.dtype),
        jax.ShapeDtypeStruct(z.shape[:-1], z.dtype),
    )
    return jax.pure_callback(
        functools.partial(_host_backward, kl=kl), shapes, z, w, scale, start, g,
        vmap_method="broadcast_all",
    )
