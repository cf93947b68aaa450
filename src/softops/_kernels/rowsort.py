r"""Sorting rows inside numba kernels: the permutation that sorts one row.

The kernels that need a sorted row (the permutahedron's PAV, LapSum) sort it themselves
instead of calling the framework's sort: on a CPU a row sort tuned to the row
length is several times faster than ``torch.sort`` / ``jnp.sort`` on the same
rows, and it saves a pass over memory.  Floats are sorted through integer keys
(the IEEE-754 bit pattern with the sign handled, Knuth TAOCP vol. 3, 5.2.5;
the usual "float radix sort" key), which order every float (NaN included: a
positive NaN above ``+inf``, a negative one below ``-inf``) so that the
permutation is always complete:

* rows of up to ``SMALL`` entries: counting sort by comparisons,
  ``pos_i = #{j : key_j < key_i} + #{j < i : key_j = key_i}`` (O(n^2)
  branch-free work, which beats everything else at these lengths);
* longer rows: least-significant-digit radix sort on 8-bit digits (stable; one
  counting pass per byte of the key, passes whose digit is the same for every
  entry skipped).

Both are stable: tied entries keep their order.  ``x_bits`` is the row array
viewed as unsigned integers of the float's width (``uint32`` for float32,
``uint64`` for float64) and ``bits`` that width; scratch arrays have ``n``
entries (``count``: 256).
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from softops._kernels import _threads
from softops._kernels._rows import readonly

__all__ = ["SMALL", "compiled_sort_row", "key_bits", "sort_row", "sort_rows"]

SMALL = 64


def key_bits(x):
    """The unsigned-integer view of a float32 / float64 array, and its width."""
    if x.dtype == np.float32:
        return x.view(np.uint32), 32
    if x.dtype == np.float64:
        return x.view(np.uint64), 64
    raise TypeError(f"rows must be float32 or float64, got {x.dtype}")


def sort_row(x_bits, r, bits, descending, key, key_b, idx, idx_b, count):
    """Fill ``idx[:n]`` with the permutation that sorts row ``r`` of the float
    array whose bits are ``x_bits`` ascending, or descending (ties in row
    order either way)."""
    n = x_bits.shape[1]
    ones = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - bits)
    sign = np.uint64(1) << np.uint64(bits - 1)
    for i in range(n):
        b = np.uint64(x_bits[r, i])
        # Ascending key: flip all bits of negatives, set the sign bit of the
        # rest; complemented for a descending order.
        asc = (b ^ ones) if (b & sign) else (b | sign)
        key[i] = (asc ^ ones) if descending else asc
    if n <= SMALL:
        if bits <= 32:
            # Key and index in one word: one comparison orders and breaks ties.
            for i in range(n):
                key[i] = (key[i] << np.uint64(32)) | np.uint64(i)
            for i in range(n):
                k = key[i]
                pos = 0
                for j in range(n):
                    pos += key[j] < k
                idx[pos] = i
            return
        for i in range(n):
            k = key[i]
            pos = 0
            for j in range(n):
                pos += (key[j] < k) | ((key[j] == k) & (j < i))
            idx[pos] = i
        return
    for i in range(n):
        idx[i] = i
    src_k, dst_k, src_i, dst_i = key, key_b, idx, idx_b
    swapped = False
    for shift in range(0, bits, 8):
        s = np.uint64(shift)
        count[:] = 0
        for i in range(n):
            count[(src_k[i] >> s) & np.uint64(255)] += 1
        if count[(src_k[0] >> s) & np.uint64(255)] == n:
            continue  # every entry has this digit: the pass would not move anything
        total = 0
        for d in range(256):
            c = count[d]
            count[d] = total
            total += c
        for i in range(n):
            d = (src_k[i] >> s) & np.uint64(255)
            dst_k[count[d]] = src_k[i]
            dst_i[count[d]] = src_i[i]
            count[d] += 1
        src_k, dst_k = dst_k, src_k
        src_i, dst_i = dst_i, src_i
        swapped = not swapped
    if swapped:
        for i in range(n):
            idx[i] = src_i[i]


# --- sorting whole arrays of rows (for kernels that take sorted rows) ------------


def _sort_rows_kernel(x, x_bits, bits, descending, values, order, row_lo, row_hi, keys, ints, count):
    n = x.shape[1]
    key, key_b, idx, idx_b = keys[0], keys[1], ints[0], ints[1]
    for r in range(row_lo, row_hi):
        _sort_row(x_bits, r, bits, descending, key, key_b, idx, idx_b, count)
        for i in range(n):
            order[r, i] = idx[i]
            values[r, i] = x[r, idx[i]]


_sort_row = sort_row


@functools.cache
def compiled_sort_row():
    """``sort_row`` as one numba function shared by every kernel that sorts its
    rows (compiled once per process, cached on disk), or the plain function
    without numba."""
    try:
        import numba
    except ImportError:
        return sort_row
    return numba.njit(cache=True, nogil=True)(sort_row)


@functools.cache
def _compiled():
    """The compiled row-sorting kernel, or None when numba is not installed."""
    global _sort_row
    try:
        import numba
    except ImportError:
        return None
    _sort_row = compiled_sort_row()
    return numba.njit(cache=True, nogil=True)(_sort_rows_kernel)


class _Scratch(threading.local):
    """Per-thread scratch of one chunk, reused across calls (fresh pages cost a
    page fault each): two uint64 and two int32 rows and 256 counters; rows
    beyond ``LIMIT`` bytes are not kept."""

    LIMIT = 64 << 20

    def __init__(self):
        self.arrays = None

    def get(self, n):
        if self.arrays is not None and self.arrays[0].shape[1] == n:
            return self.arrays
        arrays = (np.empty((2, n), np.uint64), np.empty((2, n), np.int32), np.empty(256, np.int64))
        if sum(a.nbytes for a in arrays) <= self.LIMIT:
            self.arrays = arrays
        return arrays


_SCRATCH = _Scratch()


def sort_rows(x, descending: bool = False):
    """``(values, order)``: each row of the float32 / float64 array ``x`` (shape
    ``(..., n)``) sorted, and the int32 permutation (``values[i] = x[order[i]]``);
    stable.  Rows in parallel with numba; numpy's stable argsort without it."""
    x = np.ascontiguousarray(x)
    kernel = _compiled()
    if kernel is None:
        order = np.argsort(-x if descending else x, axis=-1, kind="stable").astype(np.int32)
        return np.take_along_axis(x, order, axis=-1), order
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    values = np.empty(rows.shape, x.dtype)
    order = np.empty(rows.shape, np.int32)
    x_bits, bits = key_bits(rows)
    rows, x_bits = readonly(rows, x_bits)
    _threads.run(lambda lo, hi: kernel(rows, x_bits, bits, bool(descending), values, order, lo, hi, *_SCRATCH.get(n)),
                 rows.shape[0], n)
    return values.reshape(x.shape), order.reshape(x.shape)
