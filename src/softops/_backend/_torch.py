"""PyTorch backend: autograd.Function for custom gradients, torch.Generator keys.

The custom functions use the ``setup_context`` form with ``generate_vmap_rule``,
so they work under ``torch.func`` transforms and ``torch.compile`` as well as in
eager autograd.
"""

from __future__ import annotations

import numbers
import types

import array_api_compat.torch as compat_torch
import torch

from softops._backend import Backend

# array-api-compat's torch namespace, with the few functions whose wrappers
# re-inspect their argument replaced by direct calls (torch.compile traces them
# without detours).
xp_torch = types.ModuleType("softops._backend.xp_torch")
xp_torch.__dict__.update({k: v for k, v in vars(compat_torch).items() if not k.startswith("__")})
xp_torch.cumulative_sum = lambda x, /, *, axis=None: torch.cumsum(x, dim=-1 if axis is None else axis)
# torch.gather: take_along_dim also wraps negative indices (an extra pass).
xp_torch.take_along_axis = lambda x, indices, /, *, axis=-1: torch.gather(x, axis, indices)


class _CustomVJP(torch.autograd.Function):
    """One autograd.Function for every custom-gradient op; the op (a pair of
    hashable functions) is passed as a constant first argument, so no class is
    made at run time and torch.compile sees one stable function."""

    generate_vmap_rule = True

    @staticmethod
    def forward(op, *arrays):
        out, residuals = op[0](xp_torch, *arrays)
        return (out, *residuals)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.op = inputs[0]
        residuals = output[1:]
        ctx.mark_non_differentiable(*residuals)
        # The residuals get no cotangents: do not make zero tensors for them.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(output[0], *residuals)

    @staticmethod
    def backward(ctx, grad_out, *unused_residual_grads):
        out, *residuals = ctx.saved_tensors
        if grad_out is None:  # the output itself was not used
            grad_out = torch.zeros_like(out)
        grads = ctx.op[1](xp_torch, out, tuple(residuals), grad_out)
        return (None, *grads)


class TorchBackend(Backend):
    name = "torch"
    xp = xp_torch
    differentiable = True

    def stop_gradient(self, x):
        return x.detach()

    def custom_vjp(self, fwd, bwd):
        op = (fwd, bwd)

        def apply(*arrays):
            if not (torch.is_grad_enabled() and any(a.requires_grad for a in arrays)):
                # No gradient wanted: call fwd directly.  (torch.compile 2.13
                # mis-binds the constant op in autograd.Function's no-grad path
                # when there is more than one array argument.)
                return fwd(xp_torch, *arrays)[0]
            return _CustomVJP.apply(op, *arrays)[0]

        return apply

    def gumbel(self, key, shape, dtype, like):
        if isinstance(key, torch.Generator):
            generator = key
            if generator.device.type != like.device.type:
                raise ValueError(
                    f"key is a torch.Generator on {generator.device}, but x is on "
                    f"{like.device}; pass a generator on x's device or an int seed"
                )
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
            generator = torch.Generator(device=like.device).manual_seed(int(key))
        else:
            raise TypeError(
                "key must be a torch.Generator or an int seed for PyTorch input, "
                f"got {type(key).__name__}"
            )
        # Uniform on the open interval (0, 1): the Gumbel transform -log(-log(u))
        # is finite for every such u.
        tiny = torch.finfo(dtype).tiny
        u = torch.rand(shape, generator=generator, dtype=dtype, device=like.device)
        u = u.clamp(min=tiny, max=1.0 - torch.finfo(dtype).eps)
        return -torch.log(-torch.log(u))

    def inverse_permutation(self, order):
        positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
        return torch.scatter(torch.empty_like(order), -1, order, positions)

    def isotonic_forward(self, z, w, scale, kl, unsort=None):
        from softops._kernels import torch_ops

        p, start, order = torch_ops.call(torch_ops.isotonic_forward, z, w, scale, kl, unsort or "")
        return p, start, (order if unsort else None)

    def isotonic_backward(self, z, w, scale, start, g, kl, order=None, unsort=None, need=(True, True)):
        from softops._kernels import torch_ops

        gz, gw, gc = torch_ops.call(torch_ops.isotonic_backward, z, w, scale, start, g, kl, order, unsort or "", *need)
        return (gz if need[0] else None), (gw if need[1] else None), gc

    def lapsum_kernel(self, x):
        from softops._kernels.lapsum import HAVE_NUMBA

        return HAVE_NUMBA and x.device.type == "cpu"

    def lapsum_forward(self, op, x, t, k=None, need_t=True):
        from softops._kernels import torch_ops

        return torch_ops.call(torch_ops.lapsum_forward, x, t, k, op, need_t)

    def lapsum_backward(self, op, y, order, t, aux, gaps, g, k=None, need_t=True):
        from softops._kernels import torch_ops

        return torch_ops.call(torch_ops.lapsum_backward, y, order, t, aux, gaps, g, k, op, need_t)


TORCH = TorchBackend()
