"""The isotonic kernels as PyTorch custom operators.

``torch.library.custom_op`` makes the numba call opaque to ``torch.compile``
(dynamo never traces into it; ``register_fake`` gives it shapes) and
``register_vmap`` lets ``torch.func.vmap`` batch it by folding the vmapped
dimension into the rows.  CPU tensors are handed to numba zero-copy
(``Tensor.numpy()`` of the contiguous detached tensor).  Tensors on an
accelerator go through ``_forward_on_device`` / ``_backward_on_device``, the
slot for a GPU kernel (Triton); until one lands they copy to the host and run
the numba kernel there (O(n) work, one round trip), since the pure-torch twin
needs O(n^3) memory and is only an oracle.
"""

from __future__ import annotations

import torch

from softops._kernels import isotonic


def _cpu(t):
    return t.detach().cpu().contiguous().numpy()


def _forward_on_device(z, w, scale, kl):
    p, start = isotonic.forward_numpy(_cpu(z), _cpu(w), _cpu(scale.double()), kl)
    return torch.from_numpy(p).to(z.device), torch.from_numpy(start).to(z.device)


def _backward_on_device(z, w, scale, start, g, kl):
    grads = isotonic.backward_numpy(_cpu(z), _cpu(w), _cpu(scale.double()), _cpu(start), _cpu(g), kl)
    return tuple(torch.from_numpy(a).to(z.device) for a in grads)


@torch.library.custom_op("softops::isotonic_forward", mutates_args=())
def isotonic_forward(
    z: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, kl: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if z.device.type != "cpu":
        p, start = _forward_on_device(z, w, scale, kl)
        return p, start
    p, start = isotonic.forward_numpy(_cpu(z), _cpu(w), _cpu(scale.double()), kl)
    return torch.from_numpy(p), torch.from_numpy(start)


@isotonic_forward.register_fake
def _(z, w, scale, kl):
    return torch.empty_like(z), torch.empty_like(z, dtype=torch.int32)


@torch.library.custom_op("softops::isotonic_backward", mutates_args=())
def isotonic_backward(
    z: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, start: torch.Tensor,
    g: torch.Tensor, kl: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if z.device.type != "cpu":
        gz, gw, gc = _backward_on_device(z, w, scale, start, g, kl)
        return gz, gw, gc
    gz, gw, gc = isotonic.backward_numpy(
        _cpu(z), _cpu(w), _cpu(scale.double()), _cpu(start), _cpu(g), kl
    )
    return torch.from_numpy(gz), torch.from_numpy(gw), torch.from_numpy(gc)


@isotonic_backward.register_fake
def _(z, w, scale, start, g, kl):
    return torch.empty_like(z), torch.empty_like(z), z.new_empty(z.shape[:-1])


def _setup_context(ctx, inputs, output):
    z, w, scale, kl = inputs
    ctx.kl = kl
    ctx.save_for_backward(z, w, scale, output[1])


def _backward(ctx, grad_p, grad_start):
    z, w, scale, start = ctx.saved_tensors
    gz, gw, gc = isotonic_backward(z, w, scale, start, grad_p.contiguous(), ctx.kl)
    return gz, gw, gc.to(scale.dtype), None


# The op is normally called inside softops' own custom VJP (in no-grad mode), but
# torch.func.vmap of an autograd.Function re-enters it with autograd active:
# give it the same exact derivative.
isotonic_forward.register_autograd(_backward, setup_context=_setup_context)


def _batch_first(size, arrays, in_dims):
    """Move each vmapped dimension to the front (expanding unbatched arrays)."""
    out = []
    for a, d in zip(arrays, in_dims):
        if d is None:
            a = a.unsqueeze(0).expand(size, *a.shape)
        else:
            a = a.movedim(d, 0)
        out.append(a)
    return out


def _vmap_forward(info, in_dims, z, w, scale, kl):
    z, w, scale = _batch_first(info.batch_size, (z, w, scale), in_dims[:3])
    return isotonic_forward(z, w, scale, kl), (0, 0)


def _vmap_backward(info, in_dims, z, w, scale, start, g, kl):
    z, w, scale, start, g = _batch_first(info.batch_size, (z, w, scale, start, g), in_dims[:5])
    return isotonic_backward(z, w, scale, start, g, kl), (0, 0, 0)


torch.library.register_vmap("softops::isotonic_forward", _vmap_forward)
torch.library.register_vmap("softops::isotonic_backward", _vmap_backward)
