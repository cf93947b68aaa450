#!/usr/bin/env python
"""JAX reverse mode of the sorting family: ``jit(grad)`` of a non-linear loss.

One thread (``SOFTOPS_NUM_THREADS=1`` is set here), float32 ``(64, 1024)``,
loss ``sum(f(x) ** 2)``; median of 20 calls after one untimed call, for the
forward alone and for ``jit(grad)``.  The README's known-gaps figures for
JAX's reverse mode come from this script.

    python benchmarks/bench_jax_grad.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("SOFTOPS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import softops  # noqa: E402

CASES = {
    "lapsum soft_rank": lambda v: softops.soft_rank(v, method="lapsum"),
    "lapsum soft_sort": lambda v: softops.soft_sort(v, method="lapsum"),
    "lapsum soft_topk_mask (k = 100)": lambda v: softops.soft_topk_mask(v, 100, method="lapsum"),
    "permutahedron soft_rank": lambda v: softops.soft_rank(v),
    "permutahedron soft_sort": lambda v: softops.soft_sort(v),
    "network bitonic soft_sort": lambda v: softops.soft_sort(v, method=softops.SortingNetwork("bitonic")),
}


def _median_ms(f, x, repeats=20):
    f(x).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32))
    print("| operation | forward (ms) | jit(grad) (ms) |\n|---|---:|---:|")
    for name, f in CASES.items():
        forward = jax.jit(lambda v, f=f: jnp.sum(f(v) ** 2))
        grad = jax.jit(jax.grad(lambda v, f=f: jnp.sum(f(v) ** 2)))
        print(f"| {name} | {_median_ms(forward, x):.2f} | {_median_ms(grad, x):.2f} |")


if __name__ == "__main__":
    main()
