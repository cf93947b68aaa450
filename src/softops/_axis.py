"""Move the operated-on axes last and flatten them, then put the result back.

Every operation computes on a 2-or-more-d view ``(*batch, n)`` whose last axis is
the flattened product of the requested axes; batch axes keep their order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AxisLayout:
    """How ``x`` was rearranged: enough to restore an output's layout."""

    axes: tuple[int, ...]  # the operated-on axes, in the caller's order
    permutation: tuple[int, ...]  # batch axes, then ``axes``
    batch_shape: tuple[int, ...]
    axis_sizes: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.axis_sizes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The caller's shape."""
        shape = [0] * len(self.permutation)
        for size, source in zip(self.batch_shape + self.axis_sizes, self.permutation):
            shape[source] = size
        return tuple(shape)

    def restore(self, xp, y):
        """Inverse of ``flatten`` for an output of shape ``(*batch, n)``."""
        y = xp.reshape(y, self.batch_shape + self.axis_sizes)
        inverse = [0] * len(self.permutation)
        for position, source in enumerate(self.permutation):
            inverse[source] = position
        return xp.permute_dims(y, tuple(inverse))

    def restore_reduced(self, xp, y, *, keepdims: bool, trailing: int = 0):
        """Layout of a reduction ``(*batch, *tail)`` (``trailing`` tail dims).

        With ``keepdims`` the reduced axes come back as size-1 axes in their places
        (the tail stays last)."""
        if not keepdims:
            return y
        tail = tuple(y.shape[y.ndim - trailing :]) if trailing else ()
        shape = []
        batch = iter(self.batch_shape)
        for i in range(len(self.batch_shape) + len(self.axes)):
            shape.append(1 if i in self.axes else next(batch))
        return xp.reshape(y, tuple(shape) + tail)


def flatten_axes(xp, x, axes: tuple[int, ...]):
    """Return ``(y, layout)`` with ``y`` of shape ``(*batch, prod(sizes of axes))``."""
    batch_axes = tuple(i for i in range(x.ndim) if i not in axes)
    permutation = batch_axes + tuple(axes)
    layout = AxisLayout(
        axes=tuple(axes),
        permutation=permutation,
        batch_shape=tuple(x.shape[i] for i in batch_axes),
        axis_sizes=tuple(x.shape[i] for i in axes),
    )
    if permutation != tuple(range(x.ndim)):
        x = xp.permute_dims(x, permutation)
    if len(axes) != 1:
        x = xp.reshape(x, layout.batch_shape + (layout.size,))
    return x, layout


def move_axis(xp, a, source: int, destination: int):
    """``moveaxis`` as a ``permute_dims`` (which ``torch.func.vmap`` batches;
    its ``aten::moveaxis`` has no batching rule)."""
    source, destination = source % a.ndim, destination % a.ndim
    if source == destination:
        return a
    order = [i for i in range(a.ndim) if i != source]
    order.insert(destination, source)
    return xp.permute_dims(a, tuple(order))


def sum_to(xp, a, shape):
    """``a`` summed over the axes that broadcasting ``shape`` to ``a.shape`` added."""
    if tuple(a.shape) == tuple(shape):
        return a
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and a.shape[lead + i] != 1
    )
    return xp.reshape(xp.sum(a, axis=axes), shape)
