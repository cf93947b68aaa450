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
# torch.where takes Python scalars itself (as weak types, the Array API's
# promotion); the wrapper makes each a tensor constant, which torch.compile
# cannot lift out of a while_loop body.
xp_torch.where = lambda condition, x1, x2, /: (
    compat_torch.where(condition, x1, x2) if not isinstance(x1, torch.Tensor) and not isinstance(x2, torch.Tensor)
    else torch.where(condition, x1, x2))
# torch.gather: take_along_dim also wraps negative indices (an extra pass).
xp_torch.take_along_axis = lambda x, indices, /, *, axis=-1: torch.gather(x, axis, indices)


def _transformed() -> bool:
    """Whether forward-mode AD or a ``torch.func`` transform is active (then the
    smooth re-expression carries the derivatives; see ``custom_derivative``)."""
    return torch.autograd.forward_ad._current_level >= 0 or (
        not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()
    )


def _truth(flag) -> bool:
    """``bool(flag)`` of a 0-d boolean tensor; under ``torch.func.vmap`` (a
    batched tensor, whose value cannot steer Python) whether it holds for any
    member of the batch."""
    from torch._C import _functorch

    while _functorch.is_functorch_wrapped_tensor(flag):
        batched = _functorch.is_batchedtensor(flag)
        flag = _functorch.get_unwrapped(flag)
        flag = flag.any() if batched else flag
    return bool(flag)


def _finite_delta(out, s):
    """``s - stop_gradient(s)`` (value 0, the derivatives of ``s``), zero where
    ``out`` is infinite (an infinite output is a constant)."""
    delta = s - s.detach()
    return torch.where(torch.isinf(out), torch.zeros_like(delta), delta)


class _CustomOp(torch.autograd.Function):
    """One autograd.Function for every custom-derivative op; the op (a triple of
    hashable functions) is passed as a constant first argument, so no class is
    made at run time and torch.compile sees one stable function.

    ``backward`` runs the op's fast ``bwd`` in first-order reverse mode; with
    ``create_graph=True`` (grad mode on inside backward) it differentiates the
    op's ``smooth`` re-expression instead, so the gradient has a graph and
    double backward / Hessian-vector products are exact."""

    generate_vmap_rule = True

    @staticmethod
    def forward(op, *arrays):
        out, residuals = op[0](xp_torch, *arrays)
        return (out, *residuals)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.op = inputs[0]
        ctx.n_arrays = len(inputs) - 1
        residuals = output[1:]
        ctx.mark_non_differentiable(*residuals)
        # The residuals get no cotangents: do not make zero tensors for them.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*inputs[1:], output[0], *residuals)

    @staticmethod
    def backward(ctx, grad_out, *unused_residual_grads):
        saved = ctx.saved_tensors
        arrays, out, residuals = saved[: ctx.n_arrays], saved[ctx.n_arrays], saved[ctx.n_arrays + 1:]
        if grad_out is None:  # the output itself was not used
            grad_out = torch.zeros_like(out)
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
            needs = ctx.needs_input_grad[1:]
            with torch.enable_grad():
                # Differentiate with respect to aliases (views) of the inputs:
                # one input may be a function of another (a matrix of x and x),
                # and autograd.grad with respect to the inputs themselves would
                # add the path through that dependence (the caller's graph
                # already holds it); the aliases keep the result's graph to them.
                arrays = tuple(a.view_as(a) if need else a for a, need in zip(arrays, needs))
                wanted = [a for a, need in zip(arrays, needs) if need]
                s = ctx.op[2](xp_torch, arrays, out, residuals)
                s = torch.where(torch.isinf(out), torch.zeros_like(s), s)
            grads = iter(torch.autograd.grad(s, wanted, grad_out, create_graph=True, allow_unused=True))
            return (None, *(next(grads) if need else None for need in needs))
        grads = ctx.op[1](xp_torch, arrays, out, residuals, grad_out)
        return (None, *grads)


class TorchBackend(Backend):
    name = "torch"
    xp = xp_torch
    differentiable = True

    def stop_gradient(self, x):
        return x.detach()

    def constant(self, *arrays) -> bool:
        return not (_transformed() or (torch.is_grad_enabled() and any(a.requires_grad for a in arrays)))

    def custom_derivative(self, fwd, bwd, smooth):
        op = (fwd, bwd, smooth)

        def apply(*arrays):
            if _transformed():
                # Forward mode or torch.func: the kernel's value, the smooth
                # re-expression's derivatives (of every order).
                out, residuals = fwd(xp_torch, *(a.detach() for a in arrays))
                return out + _finite_delta(out, smooth(xp_torch, arrays, out, residuals))
            if not (torch.is_grad_enabled() and any(a.requires_grad for a in arrays)):
                # No gradient wanted: call fwd directly.  (torch.compile 2.13
                # mis-binds the constant op in autograd.Function's no-grad path
                # when there is more than one array argument.)
                return fwd(xp_torch, *arrays)[0]
            return _CustomOp.apply(op, *arrays)[0]

        return apply

    def take(self, x, index):
        index = index.long()
        x = x.expand(*index.shape[:-1], x.shape[-1])
        return torch.gather(x, -1, index)

    def segment_sum(self, values, ids):
        ids = ids.long()
        values = values.expand(ids.shape)
        return torch.zeros_like(values).scatter_add(-1, ids, values)

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

    def while_loop(self, cond, body, state):
        while _truth(cond(*state)):
            state = tuple(body(*state))
        return tuple(state)

    def cond(self, pred, true_fn, false_fn, operands):
        return tuple((true_fn if _truth(pred) else false_fn)(*operands))

    def opaque(self, kernel, arrays, static=()):
        if not torch.compiler.is_compiling():
            return tuple(kernel(xp_torch, *arrays, *static))
        # One opaque operator: torch's while_loop cannot hold a linear solve
        # inside an autograd.Function (torch 2.13, aot_autograd's "Unexpected
        # fake buffer"), and dynamo cannot trace a data-dependent loop.
        from softops._backend import OPAQUE_NAMES
        from softops._kernels import torch_ops

        return tuple(torch_ops.opaque(OPAQUE_NAMES[kernel], list(arrays), [float(s) for s in static]))

    def softmax(self, z):
        return torch.softmax(z, dim=-1)

    def logsumexp(self, z, axis):
        return torch.logsumexp(z, dim=axis)

    def inverse_permutation(self, order):
        positions = torch.arange(order.shape[-1], device=order.device, dtype=order.dtype).expand_as(order)
        return torch.scatter(torch.empty_like(order), -1, order.long(), positions)

    def isotonic_forward(self, z, w, scale, kl, unsort=None):
        from softops._kernels import torch_ops

        p, start, order = torch_ops.call(torch_ops.isotonic_forward, z, w, scale, kl, unsort or "")
        return p, start, (order if unsort else None)

    def isotonic_backward(self, z, w, scale, start, g, kl, order=None, unsort=None, need=(True, True)):
        from softops._kernels import torch_ops

        gz, gw, gc = torch_ops.call(torch_ops.isotonic_backward, z, w, scale, start, g, kl, order, unsort or "", *need)
        return (gz if need[0] else None), (gw if need[1] else None), gc

    def cpu_kernels(self, x):
        from softops._kernels.lapsum import HAVE_NUMBA

        return HAVE_NUMBA and x.device.type == "cpu"

    def kernel(self, host, arrays, static=()):
        from softops._backend import KERNEL_NAMES
        from softops._kernels import torch_ops

        return tuple(torch_ops.call_kernel(KERNEL_NAMES[host], list(arrays), [float(s) for s in static]))

    def lapsum_forward(self, op, x, t, k=None, need_t=True):
        from softops._kernels import torch_ops

        return torch_ops.call(torch_ops.lapsum_forward, x, t, k, op, need_t)

    def lapsum_backward(self, op, y, order, t, aux, gaps, g, k=None, need_t=True):
        from softops._kernels import torch_ops

        return torch_ops.call(torch_ops.lapsum_backward, y, order, t, aux, gaps, g, k, op, need_t)


TORCH = TorchBackend()
