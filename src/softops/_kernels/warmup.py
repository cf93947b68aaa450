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

from softops._kernels import _tiers, isotonic, lapsum, network, rowsort

__all__ = ["tasks", "warmup"]


def _variants(module, variants, dtype):
    def thunk():
        with _tiers.warming():
            for variant in variants:
                module._warm(*variant, dtype)
    return thunk


def tasks():
    """``(name, thunk)`` for every kernel and dtype."""
    out = []
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        out += [(f"permutahedron {name}", _variants(isotonic, itertools.product((False, True), isotonic._UNSORT), dtype)),
                (f"lapsum {name}", _variants(lapsum, itertools.product(lapsum.OPS, (False, True)), dtype)),
                (f"sorting network {name}",
                 _variants(network, itertools.product(range(network.KINDS), (network.SORT, network.COLUMNS)), dtype)),
                (f"row sort {name}", lambda d=dtype: rowsort.sort_rows(np.array([[0.3, -1.2, 2.0, 0.5]], d)))]
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
