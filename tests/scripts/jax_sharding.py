"""Every operation of softops under ``jax.jit`` on a batch-sharded array (4
CPU devices): the value, and the gradient of a loss, come out sharded as the
input, equal to the unsharded result, and the compiled program gathers
nothing (no all-gather, no all-to-all, no collective-permute); the same inside
``jax.shard_map``.  Run in its own process (the device count is fixed before
JAX starts): ``python tests/scripts/jax_sharding.py [auto]`` prints one JSON
line per case; ``auto`` uses a mesh of ``Auto`` axes instead of ``Explicit``
ones, for soft_rank of each method and the select and index families (what
softops does there is the README's "Distributed" section).
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
os.environ.setdefault("SOFTOPS_COMPILE", "blocking")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import softops  # noqa: E402
from softops.sort import SORT_METHODS  # noqa: E402

GATHERS = ("all-gather", "all-to-all", "collective-permute", "all-reduce")


def cases():
    """``(name, f)``: ``f`` maps the (8, 16) batch of rows to an array whose
    leading axis is the batch."""
    table = np.linspace(-1.0, 1.0, 16)
    yield "soft_argmax", lambda x: softops.soft_argmax(x, temperature=0.5)
    yield "argmax_weights", lambda x: softops.argmax_weights(x, temperature=0.5)
    yield "soft_max", lambda x: softops.soft_max(x, temperature=0.5)
    yield "lookup_along_axis", lambda x: softops.lookup_along_axis(
        x, jnp.abs(x[:, :3]) * 5, mode="cubic")
    yield "soft_take", lambda x: softops.soft_take(jnp.asarray(table), jax.nn.softmax(x, axis=-1), axis=0)
    for m in SORT_METHODS:
        yield f"soft_rank-{m}", lambda x, m=m: softops.soft_rank(x, temperature=0.3, method=m)
        yield f"soft_sort-{m}", lambda x, m=m: softops.soft_sort(x, temperature=0.3, method=m)
        yield f"soft_topk_mask-{m}", lambda x, m=m: softops.soft_topk_mask(x, 4, temperature=0.3, method=m)
        yield f"soft_topk-{m}", lambda x, m=m: softops.soft_topk(x, 4, temperature=0.3, method=m)
        yield f"soft_quantile-{m}", lambda x, m=m: softops.soft_quantile(x, 0.25, temperature=0.3, method=m)
        yield f"soft_permutation-{m}", lambda x, m=m: softops.soft_permutation(x, temperature=0.3, method=m)
        yield f"soft_sort_by-{m}", lambda x, m=m: softops.soft_sort_by(x, x * x, temperature=0.3, method=m)
        yield f"soft_rank-{m}-mask", lambda x, m=m: softops.soft_rank(
            x, temperature=0.3, method=m, mask=(x > -1.0) | (jnp.arange(16) < 8))


def loss(f):
    def L(x):
        y = f(x)
        return jnp.sum(jnp.sin(y) * y)
    return L


def main(kind):
    axis_type = jax.sharding.AxisType.Auto if kind == "auto" else jax.sharding.AxisType.Explicit
    mesh = jax.make_mesh((4,), ("batch",), axis_types=(axis_type,))
    spec = P("batch", None)
    x_host = np.random.default_rng(0).normal(size=(8, 16))
    x = jax.device_put(x_host, NamedSharding(mesh, spec))
    for name, f in cases():
        if kind == "auto" and not name.startswith(("soft_arg", "argmax", "soft_max", "lookup", "soft_take",
                                                      "soft_rank-")):
            continue  # with Auto axes: each method once (soft_rank, masked too) and the array families
        grad = jax.grad(loss(f))
        x_one = jnp.asarray(x_host)  # on one device
        try:
            want = (f(x_one), grad(x_one))
        except ValueError:  # soft_permutation and soft_sort_by need a matrix method
            continue
        parts = {"value": f, "grad": grad}
        if kind != "auto":
            parts["shard_map"] = jax.shard_map(f, mesh=mesh, in_specs=spec, out_specs=P("batch"))
            want += (want[0],)
        with jax.set_mesh(mesh):  # one program per case: value, gradient (and shard_map)
            compiled = jax.jit(lambda x: tuple(g(x) for g in parts.values())).lower(x).compile()
            got = compiled(x)
        record = {"case": name, "gathers": sorted({g for g in GATHERS if g in compiled.as_text()})}
        for what, g, w in zip(parts, got, want):
            record[what] = {
                "spec": str(g.sharding.spec) if isinstance(g.sharding, NamedSharding) else str(g.sharding),
                "error": float(np.max(np.abs(np.asarray(g) - np.asarray(w)))),
            }
        print(json.dumps(record), flush=True)

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "explicit")
