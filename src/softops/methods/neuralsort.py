r"""NeuralSort: the unimodal row-stochastic relaxation of the sorting permutation.

Grover, Wang, Zweig & Ermon 2019, "Stochastic Optimization of Sorting Networks
via Continuous Relaxations" (ICLR, arXiv:1903.08850), eq. (5): for a row ``s``
of ``n`` scores, with ``A_s 1`` the vector ``(sum_l |s_j - s_l|)_j``, row ``i``
(``1``-based) of the descending relaxation is

    ``P[i, :] = softmax(((n + 1 - 2 i) s - A_s 1) / T)``.

Each row is a distribution over the entries whose argmax is the entry of
rank ``i`` (the paper's Theorem: ``P`` is unimodal, and ``P -> `` the exact
permutation as ``T -> 0``); columns need not sum to 1.  The temperature is in
units of ``s``: entries closer than about ``T`` share the rows of their
slots.  The ascending matrix here is that of ``-s`` (the same ``A_s``).
Cost ``O(n^2)`` time and memory per row.  Gradients: the framework's own
autodiff of the closed form (every transform and order).

Example::

    >>> import numpy as np, softops
    >>> softops.soft_permutation(np.array([2.0, 0.0, 1.0]), temperature=0.1, method="neuralsort").round(3)
    array([[0., 1., 0.],
           [0., 0., 1.],
           [1., 0., 0.]])
"""

from __future__ import annotations

from dataclasses import dataclass

from softops._backend import Backend
from softops.methods._matrix import MatrixMethod, row_scale, scaled_softmax


@dataclass(frozen=True)
class NeuralSort(MatrixMethod):
    """NeuralSort (Grover et al. 2019): ``method="neuralsort"``; see the module doc."""

    def present_matrix(self, backend: Backend, x, temperature, present):
        xp = backend.xp
        n = x.shape[-1]
        scale = row_scale(n)
        v = x / scale
        n_present = xp.sum(xp.astype(present, x.dtype), axis=-1, keepdims=True)[..., None]  # (*batch, 1, 1)
        # (A_v 1)_j over the present entries: the absent ones stand at v = 0,
        # each adding |v_j| to the sum over all entries.
        spread = xp.sum(xp.abs(v[..., :, None] - v[..., None, :]), axis=-1) - (n - n_present[..., 0]) * xp.abs(v)
        i = xp.arange(1, n + 1, dtype=x.dtype, device=backend.device(x))[:, None]  # rows, (n, 1)
        # Ascending: the descending relaxation of -v.
        u = (n_present + 1.0 - 2.0 * i) * (-v[..., None, :]) - spread[..., None, :]
        return scaled_softmax(backend, u, temperature, present[..., None, :], scale)
