"""The isotonic and LapSum kernels for JAX, through ``jax.pure_callback``.

On CPU the callback receives host buffers with no copy and runs the numba kernel;
``vmap_method="expand_dims"`` batches it by adding a leading size-1 dimension to
unbatched arguments, which the kernel broadcasts.  Under ``jax.jit`` the
callback is one opaque node.  On an accelerator the same callback costs a
device-host round trip; that is where a device kernel (Pallas / Triton) would
plug in.  Arguments as in ``softops._kernels.isotonic`` and
``softops._kernels.lapsum`` (LapSum calls its callbacks on CPU only).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from softops._kernels import isotonic, lapsum


def _host(a):
    return None if a is None else np.asarray(a)


def _host_forward(z, w, scale, *, kl, unsort):
    p, start, order = isotonic.forward_numpy(_host(z), _host(w), _host(scale), kl, unsort)
    return (p, start) if order is None else (p, start, order)


def _host_backward(z, w, scale, start, g, order=None, *, kl, unsort, need):
    grads = isotonic.backward_numpy(
        _host(z), _host(w), _host(scale), _host(start), _host(g), kl, _host(order), unsort, need
    )
    return tuple(a for a in grads if a is not None)


def _shape(z, w, scale):
    return (*jnp.broadcast_shapes(z.shape[:-1], w.shape[:-1], scale.shape), z.shape[-1])


def _callback(host, shapes, *arrays):
    arrays = tuple(a for a in arrays if a is not None)
    return jax.pure_callback(host, shapes, *arrays, vmap_method="expand_dims")


def isotonic_forward(z, w, scale, kl, unsort=None):
    shape = _shape(z, w, scale)
    index = jax.ShapeDtypeStruct(shape, jnp.int32)
    shapes = (jax.ShapeDtypeStruct(shape, z.dtype), index) + ((index,) if unsort else ())
    host = functools.partial(_host_forward, kl=kl, unsort=unsort)
    out = _callback(host, shapes, z, w, scale)
    return (*out, None) if unsort is None else tuple(out)


def isotonic_backward(z, w, scale, start, g, kl, order=None, unsort=None, need=(True, True)):
    shape = _shape(z, w, scale)
    grad = jax.ShapeDtypeStruct(shape, z.dtype)
    shapes = (grad,) * sum(need) + (jax.ShapeDtypeStruct(shape[:-1], z.dtype),)
    host = functools.partial(_host_backward, kl=kl, unsort=unsort, need=tuple(need))
    out = list(_callback(host, shapes, z, w, scale, start, g, order))
    gz = out.pop(0) if need[0] else None
    gw = out.pop(0) if need[1] else None
    return gz, gw, out[0]


# --- LapSum (softops._kernels.lapsum): CPU only; ``k`` is None but for the mask ---


def _host_lapsum_forward(x, t, k=None, *, op, need_t):
    return lapsum.forward(op, _host(x), _host(t), _host(k), need_t)


def _host_lapsum_backward(y, order, t, aux, gaps, g, k=None, *, op, need_t):
    return lapsum.backward(op, _host(y), _host(order), _host(t), _host(aux), _host(gaps), _host(g), _host(k),
                           need_t)


def _lapsum_batch(y, t, k):
    return jnp.broadcast_shapes(y.shape[:-1], t.shape, () if k is None else k.shape)


def lapsum_forward(op, x, t, k=None, need_t=True):
    batch, n = _lapsum_batch(x, t, k), x.shape[-1]
    aux, gaps = lapsum.aux_shapes(op, batch, n)
    work = _lapsum_work(x.dtype)
    shapes = (jax.ShapeDtypeStruct((*batch, n), x.dtype), jax.ShapeDtypeStruct(aux, work),
              jax.ShapeDtypeStruct(gaps, jnp.int32), jax.ShapeDtypeStruct((*batch, n), work),
              jax.ShapeDtypeStruct((*batch, n), jnp.int32))
    return _callback(functools.partial(_host_lapsum_forward, op=op, need_t=need_t), shapes, x, t, k)


def lapsum_backward(op, y, order, t, aux, gaps, g, k=None, need_t=True):
    batch = _lapsum_batch(y, t, k)
    shapes = (jax.ShapeDtypeStruct((*batch, y.shape[-1]), y.dtype),) + (jax.ShapeDtypeStruct(batch, y.dtype),) * 2
    return _callback(functools.partial(_host_lapsum_backward, op=op, need_t=need_t), shapes,
                     y, order, t, aux, gaps, g, k)


def _lapsum_work(dtype):
    return jnp.float64 if dtype == jnp.float64 else jnp.float32
