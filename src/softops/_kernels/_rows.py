"""Kernel arguments as 2-D rows, with a row step instead of a broadcast copy."""

from __future__ import annotations

import math

import numpy as np


def as_rows(a, batch, full_batch, n):
    """``a`` (batch axes ``batch``, then ``n`` entries per row, or none if ``n``
    is None) as a contiguous ``(rows, n)`` (or ``(rows,)``) array for a kernel,
    and its row step: 0 when ``a`` has one row, which every row of
    ``full_batch`` shares in place; 1 otherwise (a partial broadcast is
    materialised to ``full_batch``)."""
    tail = (n,) if n else ()
    if math.prod(batch) == 1:
        return np.ascontiguousarray(a).reshape((1,) + tail), 0
    if tuple(batch) != tuple(full_batch):
        a = np.broadcast_to(a, tuple(full_batch) + tail)
    return np.ascontiguousarray(a).reshape((math.prod(full_batch),) + tail), 1


def readonly(*arrays):
    """Read-only views of the kernel's inputs.  numba compiles one
    specialisation per read-only flag, and inputs arrive either way (JAX's
    buffers are read-only, torch's and NumPy's writable): handing every input
    over read-only keeps it to one per dtype (fewer compiles on a cold start,
    and ``python -m softops warmup`` covers them all)."""
    views = []
    for a in arrays:
        v = a.view()
        v.flags.writeable = False
        views.append(v)
    return views
