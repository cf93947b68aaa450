"""The backend layer: everything that differs between array frameworks.

Algorithms in softops are written once against the Python Array API
(``xp = backend.xp``).  What the Array API lacks lives here, one small module per
framework:

* ``stop_gradient(x)``: the value of ``x`` with no gradient flowing back;
* ``custom_derivative(fwd, bwd, smooth)``: a function of arrays computed by
  ``fwd`` (often a kernel), with a fast hand-written vector-Jacobian product
  ``bwd`` and a differentiable local re-expression ``smooth`` that serves every
  other transform (forward mode, higher orders, ``torch.func``);
* ``take(x, index)`` / ``segment_sum(values, ids)``: gather and scatter-add
  along the last axis (the Array API has no scatter);
* ``gumbel(key, shape, dtype, like)``: standard Gumbel noise from the caller's kind
  of random key;
* ``while_loop(cond, body, state)``: a loop that stops when ``cond`` turns
  False (``jax.lax.while_loop`` on the device; a Python loop elsewhere), and
  ``opaque(kernel, arrays, static)``: such a solver called where tracing
  cannot enter it (an opaque custom operator under ``torch.compile``), for
  iterative solvers that run to a tolerance in a value-only ``fwd``;
* ``cond(pred, true_fn, false_fn, operands)``: a branch inside such a loop's body
  (``jax.lax.cond`` on the device, Python's ``if`` elsewhere);
* ``logsumexp(z, axis)``: ``log sum exp`` along ``axis`` (``-inf`` for an
  all ``-inf`` slice), the framework's fused one where it has it;
* ``isotonic_forward`` / ``isotonic_backward``: the pool-adjacent-violators
  kernel of ``softops._kernels.isotonic`` on the framework's arrays (numba on
  CPU, called without a copy; accelerator arrays make a host round trip until
  a device kernel fills that slot);
* ``cpu_kernels(x)`` / ``kernel(host, arrays, static)``: whether softops' numba
  kernels run for ``x`` (CPU arrays, numba installed), and a host kernel
  registered with ``register_kernel`` called on the framework's arrays (NumPy
  in, NumPy out: zero-copy on CPU; a ``torch.library`` custom operator with
  shapes and a vmap rule for PyTorch, ``jax.pure_callback`` for JAX);
* ``lapsum_kernel(x)``, ``lapsum_forward`` / ``lapsum_backward``: whether the
  LapSum kernels of ``softops._kernels.lapsum`` run for ``x`` (numba, CPU
  arrays only; elsewhere LapSum uses its vectorised twin), and the kernels on
  the framework's arrays.

``backend_of(x)`` picks the backend from the type of ``x`` by looking it up in
``sys.modules``: a framework that the caller has not imported is never imported.
"""

from __future__ import annotations

import abc
import sys
from typing import Any, Callable

__all__ = ["Backend", "backend_of", "register_kernel", "register_opaque"]


def register_opaque(kernel, like):
    """Register ``kernel`` for ``Backend.opaque`` (outputs shaped as
    ``arrays[i]`` for ``i`` in ``like``): PyTorch's opaque operator looks it up
    by name when it is loaded."""
    OPAQUE_NAMES[kernel] = name = f"{kernel.__module__}.{kernel.__qualname__}"
    OPAQUE_LIKE[kernel] = tuple(like)
    _OPAQUE.append((name, kernel, tuple(like)))
    torch_ops = sys.modules.get("softops._kernels.torch_ops")
    if torch_ops is not None:
        torch_ops.register_opaque(name, kernel, like)


def register_kernel(host, shapes):
    """Register the NumPy function ``host(*arrays, *static) -> tuple of arrays``
    for ``Backend.kernel``.  ``shapes(array_shapes, *static)`` gives each
    output's ``(shape, dtype)``, the dtype as the index of the input whose
    dtype it takes or a NumPy dtype name.  ``host`` must accept a leading
    size-1 or vmapped axis on any input (inputs share their number of batch
    axes and broadcast them) and return new arrays."""
    KERNEL_NAMES[host] = name = f"{host.__module__}.{host.__qualname__}"
    KERNELS[name] = (host, shapes)
    return host


KERNELS: dict = {}
KERNEL_NAMES: dict = {}
_OPAQUE: list = []
OPAQUE_NAMES: dict = {}
OPAQUE_LIKE: dict = {}


class Backend(abc.ABC):
    """Interface of a framework backend (see the module docstring)."""

    name: str
    xp: Any
    differentiable: bool

    @abc.abstractmethod
    def stop_gradient(self, x):
        ...

    def constant(self, *arrays) -> bool:
        """Whether no derivative with respect to ``arrays`` can be asked for here
        (so that a term of value 0 carrying only their derivatives can be left
        out).  Conservative: only PyTorch, whose arrays say so, answers True for
        a differentiable framework."""
        return not self.differentiable

    def canonical(self, x):
        """The caller's array as the framework's plain array type (TensorFlow:
        a ``tf.Variable`` read as a tensor, whose gradient reaches the variable)."""
        return x

    def device(self, x):
        """What to pass as ``device=`` to make an array next to ``x``."""
        return x.device

    @abc.abstractmethod
    def custom_derivative(self, fwd: Callable, bwd: Callable, smooth: Callable) -> Callable:
        """Return ``f(*arrays)`` whose value is ``fwd(xp, *arrays)[0]``, exact
        under every transform of the framework.

        * ``fwd(xp, *arrays) -> (out, residuals)`` computes the output and a
          tuple of further arrays (integer structure such as a sort order or a
          block partition, or coefficients) for the derivatives;
        * ``bwd(xp, arrays, out, residuals, g) -> grads`` maps the cotangent
          ``g`` of ``out`` to one cotangent per input array: the fast path of
          reverse mode (torch's ``backward``; in JAX the transpose of the
          tangent map, so second-order reverse mode uses it too);
        * ``smooth(xp, arrays, out, residuals) -> array`` re-expresses ``out``
          as a differentiable function of ``arrays`` with ``out`` and
          ``residuals`` held constant (the discrete structure is locally
          constant, so its derivatives of every order are the op's).  It
          serves every other transform: forward mode (``jax.jvp``,
          ``torch.func.jvp``, ``torch.autograd.forward_ad``), Hessians,
          double backward, the ``torch.func`` transforms and ``jax.vmap`` of
          a gradient.  Its value must agree with ``out``
          up to rounding; the value returned is always ``out``.

        The three must be hashable (module-level functions, or closures built
        once), so that the registered framework function is built once and
        reused (jit caches and ``torch.compile`` graphs stay valid).
        """
        ...

    def take(self, x, index):
        """``x[..., index]`` along the last axis (``index`` an int array; ``x``'s
        batch axes broadcast to ``index``'s)."""
        xp = self.xp
        x = xp.broadcast_to(x, tuple(index.shape[:-1]) + tuple(x.shape[-1:]))
        return xp.take_along_axis(x, index, axis=-1)

    @abc.abstractmethod
    def segment_sum(self, values, ids):
        """``out[..., j] = sum of values[..., i] over i with ids[..., i] == j``,
        shaped like ``ids`` (``values`` broadcast to it; ids in ``[0, n)``)."""
        ...

    @abc.abstractmethod
    def gumbel(self, key, shape: tuple[int, ...], dtype, like):
        """Standard Gumbel noise of ``shape`` and ``dtype`` on the device of ``like``."""
        ...

    def inverse_permutation(self, order):
        """Inverse of the permutations along the last axis of the int array ``order``."""
        return self.xp.argsort(order, axis=-1)

    def while_loop(self, cond, body, state: tuple) -> tuple:
        """``while cond(*state): state = body(*state)``; ``cond`` returns a 0-d
        boolean array, ``body`` a tuple of arrays shaped as ``state``.  Not
        differentiable: for value-only computations (``custom_derivative``'s
        ``fwd``), called inside ``opaque``."""
        while bool(cond(*state)):
            state = tuple(body(*state))
        return tuple(state)

    def cond(self, pred, true_fn, false_fn, operands: tuple) -> tuple:
        """``true_fn(*operands) if pred else false_fn(*operands)`` (``pred`` a
        0-d boolean array; both branches return tuples of arrays of the same
        shapes): ``jax.lax.cond`` on the device, a Python branch elsewhere.
        For value-only loops (``while_loop``) that take an expensive step
        only when some row needs it: the true branch must be valid for every
        row (a vmapped call takes it for all members when one needs it)."""
        return tuple((true_fn if bool(pred) else false_fn)(*operands))

    def opaque(self, kernel, arrays: tuple, static: tuple = ()) -> tuple:
        """``kernel(xp, *arrays, *static)``, a value-only solver with a
        data-dependent loop (``while_loop``), registered once with
        ``register_opaque(kernel, like)`` (its outputs shaped as
        ``arrays[i]`` for ``i`` in ``like``; ``static`` numbers).  Under
        ``torch.compile`` it runs as one opaque operator; JAX on CPU runs it
        on the host (NumPy, no compilation of the loop), on an accelerator
        as ``jax.lax.while_loop``."""
        return tuple(kernel(self.xp, *arrays, *static))

    def cpu_kernels(self, x) -> bool:
        """Whether softops' numba kernels run for ``x`` (else the array code does)."""
        return False

    def kernel(self, host, arrays: tuple, static: tuple = ()) -> tuple:
        """``host(*arrays, *static)`` (``register_kernel``) on the framework's
        arrays, value only; works under the framework's jit, vmap and compile."""
        return tuple(host(*arrays, *static))

    def softmax(self, z):
        """``exp(z) / sum(exp(z))`` along the last axis, every slice holding a
        finite entry (``-inf`` entries get 0); differentiable, the
        framework's fused operation where it has one (one pass forward, one
        backward)."""
        xp = self.xp
        e = xp.exp(z - self.stop_gradient(xp.max(z, axis=-1, keepdims=True)))
        return e / xp.sum(e, axis=-1, keepdims=True)

    def logsumexp(self, z, axis: int):
        """``log(sum(exp(z), axis))`` computed stably; ``-inf`` where every
        entry of the slice is ``-inf``.  Value only (used inside ``fwd``)."""
        xp = self.xp
        top = xp.max(z, axis=axis, keepdims=True)
        top = xp.where(xp.isfinite(top), top, 0.0)
        return xp.log(xp.sum(xp.exp(z - top), axis=axis)) + xp.squeeze(top, axis=axis)

    @abc.abstractmethod
    def isotonic_forward(self, z, w, scale, kl: bool, unsort=None):
        """``(p, start, order)``: see ``softops._kernels.isotonic.forward_numpy``."""
        ...

    @abc.abstractmethod
    def isotonic_backward(self, z, w, scale, start, g, kl: bool, order=None, unsort=None,
                          need=(True, True)):
        """``(gz, gw, gc)``: see ``softops._kernels.isotonic.backward_numpy``."""
        ...

    def lapsum_kernel(self, x) -> bool:
        """Whether the LapSum kernels run for ``x`` (else LapSum uses its twin)."""
        return self.cpu_kernels(x)

    @abc.abstractmethod
    def lapsum_forward(self, op: str, x, t, k=None, need_t=True):
        """``(out, aux, gaps, y, order)``: see ``softops._kernels.lapsum.forward``."""
        ...

    @abc.abstractmethod
    def lapsum_backward(self, op: str, y, order, t, aux, gaps, g, k=None, need_t=True):
        """``(gx, gt, gk)``: see ``softops._kernels.lapsum.backward``."""
        ...


def _is_instance_of_loaded(x, module: str, attribute: str) -> bool:
    mod = sys.modules.get(module)
    if mod is None:
        return False
    cls = getattr(mod, attribute, None)
    return cls is not None and isinstance(x, cls)


def backend_of(x) -> Backend:
    """The backend of array ``x``; raises TypeError for anything else."""
    if _is_instance_of_loaded(x, "torch", "Tensor"):
        from softops._backend._torch import TORCH

        return TORCH
    if _is_instance_of_loaded(x, "jax", "Array"):
        from softops._backend._jax import JAX

        return JAX
    if _is_instance_of_loaded(x, "numpy", "ndarray") or _is_instance_of_loaded(
        x, "numpy", "generic"
    ):
        from softops._backend._numpy import NUMPY

        return NUMPY
    if _is_instance_of_loaded(x, "tensorflow", "Tensor") or _is_instance_of_loaded(x, "tensorflow", "Variable"):
        from softops._backend._tf import TF

        return TF
    raise TypeError(
        f"x must be a PyTorch tensor, a JAX array, a TensorFlow tensor or a NumPy array, got {type(x).__name__}"
    )
