"""softops: differentiable relaxations of discrete array operations.

Native in PyTorch, JAX and NumPy: the caller's arrays go in, arrays of the same
framework, device and dtype come out, and the framework's own autodiff, ``jit``,
``vmap`` and ``torch.compile`` see through every operation.
"""

from softops.index import (
    assign,
    lookup,
    lookup_along_axis,
    soft_assign,
    soft_index,
    soft_scatter_add,
    soft_take,
)
from softops.methods.lapsum import LapSum
from softops.methods.permutahedron import Permutahedron
from softops.select import argmax_weights, soft_argmax, soft_argmin, soft_max, soft_min
from softops.sort import soft_rank, soft_sort
from softops.temperature import Relative
from softops.topk import soft_median, soft_quantile, soft_topk, soft_topk_mask

__version__ = "0.1.0"

__all__ = [
    # select
    "argmax_weights",
    "soft_argmax",
    "soft_argmin",
    "soft_max",
    "soft_min",
    # index
    "assign",
    "lookup",
    "lookup_along_axis",
    "soft_assign",
    "soft_index",
    "soft_scatter_add",
    "soft_take",
    # sort
    "LapSum",
    "Permutahedron",
    "Relative",
    "soft_rank",
    "soft_sort",
    # top-k and quantiles
    "soft_median",
    "soft_quantile",
    "soft_topk",
    "soft_topk_mask",
]
