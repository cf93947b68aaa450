#!/usr/bin/env python
"""Interpolated reads with the gradient to the array *and* the coordinates
(keypoints, spatial transformers): ``lookup`` forward + backward, PyTorch eager
and JAX ``jit(grad)``, float32.

* 2-D: an (64, 64, 8) image read at 16,384 points, ``axis=(0, 1)``;
* 1-D: ``lookup_along_axis`` of a (256, 512) array at (256, 512) positions;

linear and cubic.  Prints one JSON line of median ms (``--rounds`` calls after 3
warm-up calls).  For an A/B against another checkout, run it again with that
checkout's ``src`` first on ``PYTHONPATH``, interleaving the runs.

    python benchmarks/bench_read_gradients.py
    PYTHONPATH=/path/to/other/src python benchmarks/bench_read_gradients.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _median_ms(step, rounds):
    for _ in range(3):
        step()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1e3, 3)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    import jax
    import jax.numpy as jnp
    import torch

    import softops

    rng = np.random.default_rng(0)
    img = rng.standard_normal((64, 64, 8)).astype(np.float32)
    pts = rng.uniform(0, 63, size=(16384, 2)).astype(np.float32)
    rows = rng.standard_normal((256, 512)).astype(np.float32)
    pos = rng.uniform(0, 511, size=(256, 512)).astype(np.float32)
    out = {}
    for mode in ("linear", "cubic"):
        a, p2 = torch.tensor(img, requires_grad=True), torch.tensor(pts, requires_grad=True)
        out[f"torch 2-D {mode}"] = _median_ms(
            lambda: softops.lookup(a, p2, axis=(0, 1), mode=mode).sum().backward(), args.rounds)
        r, p1 = torch.tensor(rows, requires_grad=True), torch.tensor(pos, requires_grad=True)
        out[f"torch 1-D {mode}"] = _median_ms(
            lambda: softops.lookup_along_axis(r, p1, mode=mode).sum().backward(), args.rounds)
        grad2 = jax.jit(jax.grad(lambda a, p: softops.lookup(a, p, axis=(0, 1), mode=mode).sum(), argnums=(0, 1)))
        aj, pj = jnp.asarray(img), jnp.asarray(pts)
        out[f"jax 2-D {mode}"] = _median_ms(lambda: jax.block_until_ready(grad2(aj, pj)), args.rounds)
        grad1 = jax.jit(jax.grad(lambda a, p: softops.lookup_along_axis(a, p, mode=mode).sum(), argnums=(0, 1)))
        rj, qj = jnp.asarray(rows), jnp.asarray(pos)
        out[f"jax 1-D {mode}"] = _median_ms(lambda: jax.block_until_ready(grad1(rj, qj)), args.rounds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
