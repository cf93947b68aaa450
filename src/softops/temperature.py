r"""Scale-aware temperatures for the sorting family: ``temperature=softops.Relative(tau)``.

The raw temperature of a sorting method is tied to the units of ``x`` and means
different things for different operations.  For the permutahedron (Blondel et al.
2020) the isotonic solution pools sorted neighbours whose gap ``g`` is

* *smaller* than ``T`` for ``soft_rank`` (``x / T`` is projected): close values
  share their ranks;
* *larger* than ``1 / T`` for ``soft_sort`` (``(1..n) / T`` is projected onto the
  permutahedron of ``x``): wide gaps of the output are capped at ``1 / T``;

so one raw ``T`` is soft for ranks and nearly hard for sorts (or the reverse),
and no value transfers between data of different scale or size (torchsort issues
66 and 74 ask exactly this).

``Relative(tau)`` measures softness in *neighbour gaps* of the data instead.  Per
row,

    spacing(x) = sqrt(12) * std(x) / n,

the gap between ``n`` evenly spread values with the row's standard deviation
(exact for uniform data: ``std = (b - a) / sqrt(12)`` on ``[a, b]``), and the
method picks its temperature from ``tau`` and the spacing: for
``Permutahedron``, ``T = tau * spacing`` for ranks and top-k masks (values closer
than ``tau`` gaps blend) and ``T = tau / spacing`` for sorts, top-k values and
quantiles (gaps wider than ``1 / tau`` typical gaps are capped).  ``tau`` is
dimensionless and behaves alike across operations and scales; measured on 1024
standard-normal values (``docs/temperature.py``), the fraction of outputs within
half a gap of the exact result is

    tau          0.01   0.1    0.3    1      3
    soft_rank    1.00   0.99   0.90   0.10   0.00
    soft_sort    1.00   0.94   0.81   0.14   0.00

and it is the same for ``x`` scaled by 1e-2 or 1e2.  So ``tau`` well below 1
keeps the operation nearly exact with useful gradients between close values,
``tau`` near 1 is clearly soft, and ``tau`` of a few flattens everything.  The
spacing is differentiated with the rest (the operation is invariant to
shifting and scaling ``x``, and so is its gradient: holding the spacing
constant instead, as softops did until 2026-12-07, collapsed the scores of a
network trained through NeuralSort or SoftSort at n >= 7 to float rounding,
``python -m softops bench learn digits-sort``); a constant row (or ``n = 1``)
uses spacing 1, with zero derivative.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

__all__ = ["Relative", "data_spacing"]


@dataclass(frozen=True)
class Relative:
    """Temperature as ``tau`` typical neighbour gaps of the data (see module doc).

    Example::

        >>> import numpy as np, softops
        >>> x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
        >>> r1 = softops.soft_rank(x, temperature=softops.Relative(0.5))
        >>> r2 = softops.soft_rank(1000 * x + 7, temperature=softops.Relative(0.5))
        >>> bool(np.allclose(r1, r2))
        True
    """

    tau: float

    def __post_init__(self):
        if isinstance(self.tau, bool) or not isinstance(self.tau, numbers.Real):
            raise TypeError(f"Relative(tau): tau must be a positive real number, got {self.tau!r}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"Relative(tau): tau must be finite and > 0, got {self.tau}")

    def resolve(self, backend, x, method, op: str, mask=None):
        """The method's per-row temperature (shape ``(*batch, 1)``) for ``op``
        ("sort" or "rank") on rows ``x`` of shape ``(*batch, n)`` (of the present
        entries where ``mask`` is given), clamped like a raw temperature to
        ``[smallest normal, max]`` of the dtype."""
        xp = backend.xp
        info = xp.finfo(x.dtype)
        t = method.temperature_for(self.tau, data_spacing(backend, x, mask), op)
        return xp.clip(t, min=float(info.smallest_normal), max=float(info.max))


def data_spacing(backend, x, mask=None):
    """``sqrt(12) * std(x) / n`` along the last axis (keepdims) over the ``n``
    finite entries (and present ones, where ``mask`` is given); 1 where they
    are constant or absent.  Differentiable: with a ``Relative`` temperature,
    ranks, masks, permutation matrices and weights do not change when a row
    is shifted or scaled, and sorts move with it (the permutahedron's KL sort
    is not homogeneous in scale); the gradient is the gradient of that
    function (zero along the row's own direction and along ``(1, ..., 1)``
    for ranks and masks).  The
    standard deviation is taken of ``x / max|x|`` (the maximum held constant:
    the product does not depend on it) and scaled back, so it neither
    overflows near the dtype's maximum nor loses precision on subnormal data;
    the result is clamped to the dtype's finite range."""
    xp = backend.xp
    use = xp.isfinite(x) if mask is None else (mask & xp.isfinite(x))
    x = xp.where(use, x, 0.0)  # before any arithmetic: no inf * 0 in a derivative
    n = xp.astype(xp.sum(xp.astype(use, xp.int32), axis=-1, keepdims=True), x.dtype)
    count = xp.where(n > 0, n, 1.0)
    scale = backend.stop_gradient(xp.max(xp.abs(x), axis=-1, keepdims=True))
    scale = xp.where(scale > 0, scale, 1.0)
    y = x / scale
    mean = xp.sum(y, axis=-1, keepdims=True) / count
    var = xp.sum(xp.where(use, (y - mean) ** 2, 0.0), axis=-1, keepdims=True) / count
    spread = xp.where(var > 0, xp.sqrt(xp.where(var > 0, var, 1.0)), 0.0)  # sqrt's derivative stays finite at 0
    spacing = xp.clip(spread * (math.sqrt(12.0) / count) * scale, max=float(xp.finfo(x.dtype).max))
    return xp.where(spacing > 0, spacing, xp.ones_like(spacing))
