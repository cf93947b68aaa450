"""``python -m softops warmup``: compile and cache every numba kernel.

numba compiles a kernel on its first call for each dtype and caches the
machine code on disk (next to the package in ``__pycache__``, or under
``NUMBA_CACHE_DIR``), so a fresh environment pays the compile once: seconds
per kernel (the README's "First call" table).  ``warmup`` pays it up front,
for images and CI: it calls each kernel's forward and backward once on a tiny
float32 and float64 input (float16 and bfloat16 run in float32), which
compiles exactly the specialisations the operations use
(``tests/test_warmup.py`` checks that no operation compiles anything after it).
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from softops._kernels import isotonic, lapsum, network, rowsort

__all__ = ["tasks", "warmup"]


def _isotonic(dtype):
    z = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 0.0, 2.0]], dtype)
    w = np.array([4.0, 3.0, 2.0, 1.0], dtype)
    scale = np.ones(2, dtype)
    g = np.ones_like(z)
    for kl in (False, True):
        for unsort in (None, "z", "w"):
            p, start, order = isotonic.forward_numpy(z, w, scale, kl, unsort)
            isotonic.backward_numpy(z, w, scale, start, g, kl, order, unsort)


def _lapsum(dtype):
    x = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 0.0, 2.0]], dtype)
    t = np.ones(2, dtype)
    for op in lapsum.OPS:
        k = np.full(2, 2.0, dtype) if op == "mask" else None
        for need_t in (False, True):
            out, aux, gaps, y, order = lapsum.forward(op, x, t, k, need_t)
            lapsum.backward(op, y, order, t, aux, gaps, np.ones_like(out), k, need_t)


def _network(dtype):
    y = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 0.0, 2.0]], dtype)
    t = np.ones(2, dtype)
    for net, kind in itertools.product((0, 1), range(network.KINDS)):
        out, zs = network.sort_forward(y, t, net, kind)
        network.sort_backward(y, t, zs, np.ones_like(out), net, kind, True)
        out, zs, ds = network.columns_forward(y, t, np.ones_like(y), net, kind)
        network.columns_backward(y, t, np.ones_like(y), zs, ds, np.ones_like(out), net, kind, True)


def _rowsort(dtype):
    rowsort.sort_rows(np.array([[0.3, -1.2, 2.0, 0.5]], dtype))


def tasks():
    """``(name, thunk)`` for every kernel and dtype."""
    out = []
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        out += [(f"permutahedron {name}", lambda d=dtype: _isotonic(d)),
                (f"lapsum {name}", lambda d=dtype: _lapsum(d)),
                (f"sorting network {name}", lambda d=dtype: _network(d)),
                (f"row sort {name}", lambda d=dtype: _rowsort(d))]
    return out


def warmup(progress: bool = True) -> dict:
    """Compile (or load from the cache) every kernel; returns seconds per task."""
    if not isotonic.numba_available():
        print("numba is not installed: nothing to compile (the kernels run as pure-array twins)")
        return {}
    todo = tasks()
    bar = None
    if progress:
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            bar = tqdm(total=len(todo), desc="softops warmup", unit="kernel")
    seconds = {}
    for name, thunk in todo:
        if bar is not None:
            bar.set_postfix_str(name)
        t0 = time.perf_counter()
        thunk()
        seconds[name] = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
        elif progress:
            print(f"{name}: {seconds[name]:.1f} s")
    if bar is not None:
        bar.close()
    return seconds
