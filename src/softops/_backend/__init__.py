"""The backend layer: everything that differs between array frameworks.

Algorithms in softops are written once against the Python Array API
(``xp = backend.xp``).  What the Array API lacks lives here, one small module per
framework:

* ``stop_gradient(x)``: the value of ``x`` with no gradient flowing back;
* ``custom_vjp(fwd, bwd)``: register a hand-written vector-Jacobian product for a
  function of arrays (``torch.autograd.Function`` / ``jax.custom_vjp``);
* ``gumbel(key, shape, dtype, like)``: standard Gumbel noise from the caller's kind
  of random key;
* ``isotonic_forward`` / ``isotonic_backward``: the pool-adjacent-violators
  kernel of ``softops._kernels.isotonic`` on the framework's arrays (numba on
  CPU, called without a copy; accelerator arrays make a host round trip until
  a device kernel fills that slot);
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

__all__ = ["Backend", "backend_of"]


class Backend(abc.ABC):
    """Interface of a framework backend (see the module docstring)."""

    name: str
    xp: Any
    differentiable: bool

    @abc.abstractmethod
    def stop_gradient(self, x):
        ...

    def device(self, x):
        """What to pass as ``device=`` to make an array next to ``x``."""
        return x.device

    @abc.abstractmethod
    def custom_vjp(self, fwd: Callable, bwd: Callable) -> Callable:
        """Return ``f(*arrays)`` whose value is ``fwd(xp, *arrays)[0]``.

        ``fwd(xp, *arrays) -> (out, residuals)`` computes the output and a tuple of
        further arrays kept for the backward pass (not ``out`` itself, which is
        always kept); ``bwd(xp, out, residuals, g) -> grads`` maps the cotangent
        ``g`` of ``out`` to one cotangent per input array.  Both are
        written against the Array API namespace ``xp`` and must be hashable
        (module-level functions, or ``functools.partial`` of them), so that the
        registered framework function is built once and reused (jit caches and
        ``torch.compile`` graphs stay valid).
        """
        ...

    @abc.abstractmethod
    def gumbel(self, key, shape: tuple[int, ...], dtype, like):
        """Standard Gumbel noise of ``shape`` and ``dtype`` on the device of ``like``."""
        ...

    def inverse_permutation(self, order):
        """Inverse of the permutations along the last axis of the int array ``order``."""
        return self.xp.argsort(order, axis=-1)

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
        return False

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
    raise TypeError(
        f"x must be a PyTorch tensor, a JAX array or a NumPy array, got {type(x).__name__}"
    )
