r"""SoftSort: each sorted value's row is a softmax of distances to it.

Prillo & Eisenschlos 2020, "SoftSort: A Continuous Relaxation for the argsort
Operator" (ICML, arXiv:2006.16038), eq. (3): with ``sort(s)`` the exact sort
of a row,

    ``P[i, :] = softmax(-d(sort(s)_i, s) / T)``,  ``d(a, b) = |a - b|^p``

(``p = 1``, the paper's choice, by default; ``p = 2`` is its squared
variant).  Row ``i`` is a distribution over the entries, peaked at the entry
of rank ``i``; rows of tied values are equal.  The temperature is in units of
``s`` (``p = 1``; squared units for ``p = 2``): entries closer than about
``T`` to a sorted value share its row.  Cost ``O(n log n)`` for the sort plus
``O(n^2)`` time and memory for the matrix.  Gradients: the framework's own
autodiff of the closed form, through the values of the exact sort (as in the
paper); every transform and order.

Example::

    >>> import numpy as np, softops
    >>> softops.soft_sort(np.array([2.0, 0.0, 1.0]), temperature=0.5, method="softsort").round(4)
    array([0.1491, 1.    , 1.8509])
"""

from __future__ import annotations

from dataclasses import dataclass

from softops._backend import Backend
from softops._shared import index_dtype
from softops.methods._matrix import MatrixMethod, row_scale, scaled_softmax


@dataclass(frozen=True)
class SoftSort(MatrixMethod):
    """SoftSort (Prillo & Eisenschlos 2020): ``method="softsort"``; ``power``
    is the exponent ``p`` of the distance (1 or 2)."""

    power: int = 1

    def __post_init__(self):
        if isinstance(self.power, bool) or self.power not in (1, 2):
            raise ValueError(f"SoftSort(power=...) must be 1 or 2, got {self.power!r}")

    def present_matrix(self, backend: Backend, x, temperature, present):
        xp = backend.xp
        n = x.shape[-1]
        scale = row_scale(n)
        v = x / scale
        n_present = xp.sum(xp.astype(present, index_dtype(xp)), axis=-1, keepdims=True)
        slot = xp.arange(n, device=backend.device(x))
        ordered = xp.sort(xp.where(present, v, xp.inf), axis=-1)
        # Rows past the present count (never read) repeat the first, so that
        # every row has an entry at distance 0 (the softmax's maximum is 0).
        first = xp.where(n_present > 0, ordered[..., :1], 0.0)
        ordered = xp.where(slot < n_present, ordered, first)  # (*batch, n)
        # Absent columns get weight 0 from scaled_softmax's -inf bias (their
        # distances stay finite: an infinite one times a zero tangent is NaN
        # in forward modes that form every product, as TensorFlow's).
        d = xp.abs(ordered[..., :, None] - v[..., None, :])
        if self.power == 2:
            d, scale = d * d, scale * scale
        return scaled_softmax(backend, d, temperature, present[..., None, :], scale, top=0.0, negate=True)
