#!/usr/bin/env python
"""The JAX sorting family at small and middle n: ``jit(grad)`` of
``sum(op(x) * g)`` for soft_rank / soft_sort x permutahedron / lapsum and
``jnp.sort``'s floor, float32, batch x n = 65536, n = 16, 128, 1024.  Prints one
JSON line of median ms per case (a list over n).  For an A/B against another
checkout (the README's table compares with commit f5fa364), run it again with
that checkout's ``src`` first on ``PYTHONPATH`` and its own ``NUMBA_CACHE_DIR``,
interleaving the runs.

    python benchmarks/bench_jax_small.py
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np


def main():
    import jax
    import jax.numpy as jnp

    import softops

    out = {}
    for n in (16, 128, 1024):
        x = jnp.asarray(np.random.default_rng(0).standard_normal((65536 // n, n)), jnp.float32)
        g = jnp.asarray(np.random.default_rng(1).standard_normal((65536 // n, n)), jnp.float32)
        cases = {"jnp.sort": lambda x: jnp.sort(x, axis=-1)}
        for method in ("permutahedron", "lapsum"):
            for op in ("rank", "sort"):
                cases[f"{method} {op}"] = (lambda f, m: lambda x: f(x, method=m))(getattr(softops, "soft_" + op), method)
        for name, fn in cases.items():
            f = jax.jit(jax.grad(lambda x, fn=fn: (fn(x) * g).sum()))
            for _ in range(5):
                f(x).block_until_ready()
            times = []
            end = time.perf_counter() + 0.6
            while time.perf_counter() < end or len(times) < 15:
                t = time.perf_counter()
                f(x).block_until_ready()
                times.append(time.perf_counter() - t)
            out.setdefault(name, []).append(round(statistics.median(times) * 1e3, 3))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
