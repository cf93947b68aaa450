"""NumPy backend: forward values only (NumPy has no autodiff)."""

from __future__ import annotations

import numbers

import array_api_compat.numpy as xp_numpy
import numpy as np

from softops._backend import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = xp_numpy
    differentiable = False

    def stop_gradient(self, x):
        return x

    def device(self, x):
        return "cpu"  # NumPy 1.x arrays have no .device

    def segment_sum(self, values, ids):
        n = ids.shape[-1]
        rows = ids.size // n if n else 0
        values = np.broadcast_to(values, ids.shape).reshape(rows, n)
        flat = (ids.reshape(rows, n) + np.arange(rows)[:, None] * n).reshape(-1)
        return np.bincount(flat, values.reshape(-1), minlength=rows * n).astype(values.dtype).reshape(ids.shape)

    def custom_derivative(self, fwd, bwd, smooth):
        def forward_only(*arrays):
            return fwd(xp_numpy, *arrays)[0]

        return forward_only

    def logsumexp(self, z, axis):
        with np.errstate(divide="ignore"):  # an all -inf slice gives -inf
            return super().logsumexp(z, axis)

    def gumbel(self, key, shape, dtype, like):
        if isinstance(key, np.random.Generator):
            rng = key
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
            rng = np.random.default_rng(int(key))
        else:
            raise TypeError(
                "key must be a numpy.random.Generator or an int seed for NumPy input, "
                f"got {type(key).__name__}"
            )
        return rng.gumbel(size=shape).astype(dtype, copy=False)

    def isotonic_forward(self, z, w, scale, kl, unsort=None):
        from softops._kernels.isotonic import forward_numpy

        return forward_numpy(z, w, scale, kl, unsort)

    def isotonic_backward(self, z, w, scale, start, g, kl, order=None, unsort=None, need=(True, True)):
        from softops._kernels.isotonic import backward_numpy

        return backward_numpy(z, w, scale, start, g, kl, order, unsort, need)


    def cpu_kernels(self, x):
        from softops._kernels.lapsum import HAVE_NUMBA

        return HAVE_NUMBA

    def lapsum_forward(self, op, x, t, k=None, need_t=True):
        from softops._kernels.lapsum import forward

        return forward(op, x, t, k, need_t)

    def lapsum_backward(self, op, y, order, t, aux, gaps, g, k=None, need_t=True):
        from softops._kernels.lapsum import backward

        return backward(op, y, order, t, aux, gaps, g, k, need_t)


NUMPY = NumpyBackend()
