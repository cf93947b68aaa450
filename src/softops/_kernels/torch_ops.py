"""The isotonic and LapSum kernels as PyTorch custom operators.

``torch.library.custom_op`` makes the numba call opaque to ``torch.compile``
(dynamo never traces into it; ``register_fake`` gives it shapes) and
``register_vmap`` lets ``torch.func.vmap`` batch it by adding the vmapped
dimension to the batch axes (the kernel broadcasts them).  CPU tensors are
handed to numba zero-copy (``Tensor.numpy()`` of the contiguous detached
tensor).  Tensors on an accelerator go through ``_on_device``, the slot for a
GPU kernel (Triton); until one lands they copy to the host and run the numba
kernel there (O(n) work, one round trip), since the pure-torch twin needs
O(n^3) memory and is only an oracle.  The backends call the ops through
``call``, which in plain eager code runs an op's Python body directly: there
the custom op's dispatch adds only a fixed cost per call.

The arguments are those of ``softops._kernels.isotonic.forward_numpy`` /
``backward_numpy``; ``unsort`` is ``""`` for none, and cotangents that are not
needed come back as empty tensors.  The LapSum operators take the arguments of
``softops._kernels.lapsum.forward`` / ``backward`` and run on CPU tensors only
(LapSum uses its vectorised twin on accelerators, with no host round trip).
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from softops._kernels import _threads, isotonic, lapsum


# The Python body of each custom op: in plain eager code the backends call it
# directly (``call``), since the op's dispatch adds only a fixed cost per call
# there, which at n = 16 is a visible part of a soft_rank.
_BODIES = {}


def _custom_op(name):
    def register(body):
        @functools.wraps(body)
        def threaded(*args):
            # The kernels follow torch's thread setting (softops._kernels._threads).
            with _threads.framework_threads(torch.get_num_threads()):
                return body(*args)

        op = torch.library.custom_op(name, mutates_args=())(threaded)
        _BODIES[op] = threaded
        return op

    return register


def _plain(args) -> bool:
    """Whether every tensor among ``args`` is a plain CPU tensor and nothing
    records or transforms the call (``torch.compile`` or ``torch.jit.trace``
    tracing, a ``torch.func`` transform such as vmap or grad): then the op's
    body runs as is."""
    if (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch._C._are_functorch_transforms_active()):
        return False
    return all(type(a) is torch.Tensor and a.device.type == "cpu" for a in args if isinstance(a, torch.Tensor))


def call(op, *args):
    """``op(*args)``, or its Python body directly where nothing needs the op."""
    return _BODIES[op](*args) if _plain(args) else op(*args)


def _host(t):
    return None if t is None else t.detach().cpu().contiguous().numpy()


def _to_torch(arrays, device):
    return tuple(torch.from_numpy(a).to(device) for a in arrays)


def _on_device(kernel, device, *args):
    """Run ``kernel`` on host copies of tensors on ``device`` (the GPU slot)."""
    out = kernel(*(_host(a) if isinstance(a, torch.Tensor) else a for a in args))
    return _to_torch(out, device)


def _batch_shape(z, w, scale):
    return torch.broadcast_shapes(z.shape[:-1], w.shape[:-1], scale.shape)


def _forward_kernel(z, w, scale, kl, unsort):
    p, start, order = isotonic.forward_numpy(z, w, scale, kl, unsort or None)
    return p, start, (np.empty(0, np.int32) if order is None else order)


def _backward_kernel(z, w, scale, start, g, kl, order, unsort, need_gz, need_gw):
    gz, gw, gc = isotonic.backward_numpy(z, w, scale, start, g, kl, order, unsort or None,
                                         (need_gz, need_gw))
    empty = np.empty(0, gc.dtype)
    return (empty if gz is None else gz), (empty if gw is None else gw), gc


@_custom_op("softops::isotonic_forward")
def isotonic_forward(
    z: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, kl: bool, unsort: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if z.device.type != "cpu":
        p, start, order = _on_device(_forward_kernel, z.device, z, w, scale, kl, unsort)
        return p, start, order
    p, start, order = _forward_kernel(_host(z), _host(w), _host(scale), kl, unsort)
    return torch.from_numpy(p), torch.from_numpy(start), torch.from_numpy(order)


@isotonic_forward.register_fake
def _(z, w, scale, kl, unsort):
    shape = (*_batch_shape(z, w, scale), z.shape[-1])
    order = z.new_empty(shape if unsort else (0,), dtype=torch.int32)
    return z.new_empty(shape), z.new_empty(shape, dtype=torch.int32), order


@_custom_op("softops::isotonic_backward")
def isotonic_backward(
    z: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, start: torch.Tensor,
    g: torch.Tensor, kl: bool, order: Optional[torch.Tensor], unsort: str,
    need_gz: bool, need_gw: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    args = (kl, order, unsort, need_gz, need_gw)
    if z.device.type != "cpu":
        gz, gw, gc = _on_device(_backward_kernel, z.device, z, w, scale, start, g, *args)
        return gz, gw, gc
    gz, gw, gc = _backward_kernel(_host(z), _host(w), _host(scale), _host(start), _host(g), kl,
                                  _host(order), unsort, need_gz, need_gw)
    return torch.from_numpy(gz), torch.from_numpy(gw), torch.from_numpy(gc)


@isotonic_backward.register_fake
def _(z, w, scale, start, g, kl, order, unsort, need_gz, need_gw):
    batch = _batch_shape(z, w, scale)
    grad = lambda need: z.new_empty((*batch, z.shape[-1]) if need else (0,))
    return grad(need_gz), grad(need_gw), z.new_empty(batch)


def _setup_context(ctx, inputs, output):
    z, w, scale, kl, unsort = inputs
    ctx.kl, ctx.unsort = kl, unsort
    ctx.save_for_backward(z, w, scale, output[1], output[2])


def _backward(ctx, grad_p, grad_start, grad_order):
    z, w, scale, start, order = ctx.saved_tensors
    need_gz, need_gw, need_gc = ctx.needs_input_grad[:3]
    gz, gw, gc = isotonic_backward(z, w, scale, start, grad_p.contiguous(), ctx.kl,
                                   order if ctx.unsort else None, ctx.unsort, need_gz, need_gw)
    return (
        gz.sum_to_size(z.shape) if need_gz else None,
        gw.sum_to_size(w.shape) if need_gw else None,
        gc.to(scale.dtype).sum_to_size(scale.shape) if need_gc else None,
        None, None,
    )


# The op is normally called inside softops' own custom VJP (in no-grad mode), but
# torch.func.vmap of an autograd.Function re-enters it with autograd active:
# give it the same exact derivative.
isotonic_forward.register_autograd(_backward, setup_context=_setup_context)


def _batch_first(arrays, in_dims):
    """Move each vmapped dimension to the front; unbatched arrays get a leading
    size-1 dimension (the kernel broadcasts it)."""
    return [
        a if a is None else (a.unsqueeze(0) if d is None else a.movedim(d, 0))
        for a, d in zip(arrays, in_dims)
    ]


def _vmap_forward(info, in_dims, z, w, scale, kl, unsort):
    z, w, scale = _batch_first((z, w, scale), in_dims[:3])
    return isotonic_forward(z, w, scale, kl, unsort), (0, 0, 0 if unsort else None)


def _vmap_backward(info, in_dims, z, w, scale, start, g, kl, order, unsort, need_gz, need_gw):
    z, w, scale, start, g, order = _batch_first((z, w, scale, start, g, order), in_dims[:5] + in_dims[6:7])
    out = isotonic_backward(z, w, scale, start, g, kl, order, unsort, need_gz, need_gw)
    return out, (0 if need_gz else None, 0 if need_gw else None, 0)


torch.library.register_vmap("softops::isotonic_forward", _vmap_forward)
torch.library.register_vmap("softops::isotonic_backward", _vmap_backward)


# --- LapSum (softops._kernels.lapsum) ---------------------------------------------
# CPU only: on an accelerator the methods module runs its vectorised twin.
# ``k`` is None but for the mask.


def _lapsum_batch(y, t, k):
    return torch.broadcast_shapes(y.shape[:-1], t.shape, () if k is None else k.shape)


@_custom_op("softops::lapsum_forward")
def lapsum_forward(x: torch.Tensor, t: torch.Tensor, k: Optional[torch.Tensor], op: str,
                   need_t: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    arrays = lapsum.forward(op, _host(x), _host(t), _host(k), need_t)
    return tuple(torch.from_numpy(a) for a in arrays)


@lapsum_forward.register_fake
def _(x, t, k, op, need_t):
    batch, n = _lapsum_batch(x, t, k), x.shape[-1]
    aux, gaps = lapsum.aux_shapes(op, batch, n)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (x.new_empty((*batch, n)), x.new_empty(aux, dtype=work), x.new_empty(gaps, dtype=torch.int32),
            x.new_empty((*batch, n), dtype=work), x.new_empty((*batch, n), dtype=torch.int32))


@_custom_op("softops::lapsum_backward")
def lapsum_backward(
    y: torch.Tensor, order: torch.Tensor, t: torch.Tensor, aux: torch.Tensor, gaps: torch.Tensor,
    g: torch.Tensor, k: Optional[torch.Tensor], op: str, need_t: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = lapsum.backward(op, _host(y), _host(order), _host(t), _host(aux), _host(gaps), _host(g), _host(k),
                            need_t)
    return tuple(torch.from_numpy(a) for a in grads)


@lapsum_backward.register_fake
def _(y, order, t, aux, gaps, g, k, op, need_t):
    batch = _lapsum_batch(y, t, k)
    return y.new_empty((*batch, y.shape[-1])), y.new_empty(batch), y.new_empty(batch)


def _lapsum_setup_context(ctx, inputs, output):
    x, t, k, op, need_t = inputs
    ctx.op, ctx.need_t, ctx.x_shape = op, need_t, x.shape
    ctx.save_for_backward(t, k, *output[1:])


def _lapsum_backward(ctx, grad, *unused):
    # Only reached when torch.func.vmap re-enters the op with autograd active
    # (see isotonic_forward); the kernel's gx is in the caller's order already.
    t, k, aux, gaps, y, order = ctx.saved_tensors
    need_t = ctx.need_t and ctx.needs_input_grad[1]
    gx, gt, gk = lapsum_backward(y, order, t, aux, gaps, grad.contiguous(), k, ctx.op, need_t)
    return (
        gx.sum_to_size(ctx.x_shape),
        gt.sum_to_size(t.shape),
        None if k is None else gk.sum_to_size(k.shape),
        None,
        None,
    )


lapsum_forward.register_autograd(_lapsum_backward, setup_context=_lapsum_setup_context)


def _lapsum_vmap_forward(info, in_dims, x, t, k, op, need_t):
    x, t, k = _batch_first((x, t, k), in_dims[:3])
    return lapsum_forward(x, t, k, op, need_t), (0, 0, 0, 0, 0)


def _lapsum_vmap_backward(info, in_dims, y, order, t, aux, gaps, g, k, op, need_t):
    y, order, t, aux, gaps, g, k = _batch_first((y, order, t, aux, gaps, g, k), in_dims[:7])
    return lapsum_backward(y, order, t, aux, gaps, g, k, op, need_t), (0, 0, 0)


torch.library.register_vmap("softops::lapsum_forward", _lapsum_vmap_forward)
torch.library.register_vmap("softops::lapsum_backward", _lapsum_vmap_backward)


# --- host kernels (Backend.kernel, softops._backend.register_kernel) -----------------
# One operator for every registered NumPy host kernel, looked up by name: the
# kernel's shape function gives register_fake its outputs, and vmap adds the
# vmapped axis in front of every input (the host kernels broadcast it).


def _kernel_entry(name):
    from softops._backend import KERNELS

    return KERNELS[name]


@_custom_op("softops::kernel")
def kernel(name: str, arrays: list[torch.Tensor], static: list[float]) -> list[torch.Tensor]:
    host, _ = _kernel_entry(name)
    device = arrays[0].device
    out = host(*(_host(a) for a in arrays), *static)
    return [torch.from_numpy(o).to(device) for o in out]


@kernel.register_fake
def _(name, arrays, static):
    _, shapes = _kernel_entry(name)
    specs = shapes([tuple(a.shape) for a in arrays], *static)
    return [arrays[0].new_empty(shape, dtype=arrays[d].dtype if isinstance(d, int) else getattr(torch, d))
            for shape, d in specs]


def _kernel_vmap(info, in_dims, name, arrays, static):
    out = kernel(name, _batch_first(arrays, in_dims[1]), static)
    return out, [0] * len(out)


torch.library.register_vmap("softops::kernel", _kernel_vmap)


def call_kernel(name, arrays, static):
    """``kernel(name, arrays, static)``, its body directly in plain eager code."""
    return _BODIES[kernel](name, arrays, static) if _plain(arrays) else kernel(name, arrays, static)


# --- opaque solvers (Backend.opaque) ------------------------------------------------
# A value-only solver registered by name: under torch.compile it runs as one
# opaque operator (dynamo does not trace its data-dependent loop); the outputs
# take the shapes and dtypes of the inputs named by ``like``.

OPAQUE = {}


def register_opaque(name, kernel, like):
    """Make ``kernel(xp, *arrays, *static)`` callable through ``opaque``."""
    OPAQUE[name] = (kernel, tuple(like))


def _register_known():
    from softops._backend import _OPAQUE

    for name, kernel, like in _OPAQUE:
        register_opaque(name, kernel, like)


@torch.library.custom_op("softops::opaque", mutates_args=())
def opaque(name: str, arrays: list[torch.Tensor], static: list[float]) -> list[torch.Tensor]:
    from softops._backend._torch import xp_torch

    kernel, _ = OPAQUE[name]
    return [o.clone() for o in kernel(xp_torch, *arrays, *static)]


@opaque.register_fake
def _(name, arrays, static):
    _, like = OPAQUE[name]
    return [torch.empty_like(arrays[i]) for i in like]


_register_known()  # those registered before this module was loaded
