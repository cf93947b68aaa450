"""``python -m softops bench speed``: time the operations (forward +
backward) against the peer libraries installed.

Ops: ``rank`` and ``sort`` (every sorting method of the registry against
torchsort, softtorch, diffsort, ott-jax, jaxopt, softjax), and on PyTorch
the select and index families against their peers: ``argmax2d`` (the
spatial soft-argmax of (batch, 1, h, w) heatmaps, h * w = n, against
kornia's ``spatial_soft_argmax2d``), ``sparsemax`` and ``entmax15`` (the
relaxed one-hot ``argmax_weights`` against the entmax package) and
``lookup2d`` (a bilinear read of the same n points in each (h, w) image,
``softops.lookup(img, points, axis=(-2, -1))``, against
``torch.nn.functional.grid_sample``; gradient with respect to the image).

Every contender gets the same float32 input of shape (batch, n) with
batch * n = --total (65536) for each n in --sizes, and is timed as one
forward + backward pass: ``loss = (out * g).sum(); backward`` with a fixed
random cotangent ``g`` (JAX: ``jit(grad(loss))``).  The floors ``torch.sort``
and ``jnp.sort`` are timed forward only.  Warm-up calls (JIT compilation) are
not timed; contenders are timed round-robin (one call each per round, so load
spikes on a shared machine hit all of them alike) and the median of the rounds
is reported.  Peers that are not installed or fail are listed with the reason;
they never stop the run.

    python -m softops bench speed                    # full run, writes ./softops-bench/speed.{md,json,png}
    python -m softops bench speed --quick            # smoke run in seconds
    python -m softops bench speed --ops rank --sizes 1024 --device cuda
    python benchmarks/bench_sort.py                  # the same, writes benchmarks/results/bench_sort.*

``--device cuda`` runs the PyTorch contenders on the GPU (timing synchronised
with ``torch.cuda.synchronize``, peak memory per call from
``torch.cuda.max_memory_allocated``); JAX uses its default device.  See
benchmarks/README.md for installing the peers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

FULL_SIZES = (16, 128, 1024, 8192, 65536)
SORT_OPS = ("rank", "sort")
TORCH_OPS = ("argmax2d", "sparsemax", "entmax15", "lookup2d")  # select / index families, PyTorch only
OPS = SORT_OPS + TORCH_OPS


# --- command line and threads ------------------------------------------------------


def add_options(p, output):
    p.add_argument("--sizes", default=",".join(map(str, FULL_SIZES)),
                   help="comma-separated n (the sorted axis); batch = total // n")
    p.add_argument("--total", type=int, default=65536, help="batch * n (default 65536)")
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, of {', '.join(OPS)}")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds per size (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per contender and size")
    p.add_argument("--fixed-order", action="store_true",
                   help="time the contenders in the same order every round (default: a seeded "
                        "random order per round)")
    p.add_argument("--settle", type=int, default=1,
                   help="untimed calls of a contender right before each of its timed calls, so that "
                        "no timing pays for the caches and thread pools the previous contender left")
    p.add_argument("--budget", type=float, default=10.0,
                   help="seconds per contender and size: past it a slow contender stops warming "
                        "up, and stops timing once it has --min-repeats calls")
    p.add_argument("--min-repeats", type=int, default=3, help="timed calls even past --budget")
    p.add_argument("--max-quadratic-n", type=int, default=128,
                   help="skip contenders with O(n^2) memory (ott-jax, jaxopt, diffsort) above this n; "
                        "ott-jax at n = 1024 needs ~10 GB per op: run it alone, one op per process")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every framework")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softops temperature = torchsort regularization_strength = softness")
    p.add_argument("--frameworks", default="torch,jax", help="torch, jax or torch,jax")
    p.add_argument("--only", default="",
                   help="comma-separated substrings: run only contenders whose name contains one "
                        "(e.g. 'softops,torchsort,sort (fwd)'); default all")
    p.add_argument("--output", default=None,
                   help=f"path stem for STEM.md, STEM.json and STEM.png (default {output}; --quick writes "
                        "nothing unless given)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: n 16, batch 4, 1 repeat, 1 warm-up; writes nothing")
    p.add_argument("--device", default="cpu", help="PyTorch device: cpu (default) or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(default_output=output)
    return p


class OptionError(ValueError):
    """A bad option: one line, exit status 2."""


def check_args(a):
    """Parse the comma lists of ``a`` in place; ``OptionError`` for a bad one."""
    try:
        sizes = [int(s) for s in str(a.sizes).split(",") if s]
    except ValueError:
        raise OptionError(f"--sizes must be comma-separated integers, got {a.sizes!r}") from None
    if not sizes or any(n < 2 for n in sizes):
        raise OptionError(f"every n in --sizes must be at least 2, got {a.sizes}")
    if a.quick:
        sizes, a.total, a.repeats, a.warmup, a.budget, a.min_repeats = [16], 64, 1, 1, 2.0, 1
    a.sizes = sizes
    a.ops = [s for s in a.ops.split(",") if s]
    bad = [o for o in a.ops if o not in OPS]
    if bad:
        raise OptionError(f"unknown op {bad[0]!r}; choose from {', '.join(OPS)}")
    a.frameworks = [s for s in a.frameworks.split(",") if s]
    bad = [f for f in a.frameworks if f not in ("torch", "jax")]
    if bad:
        raise OptionError(f"unknown framework {bad[0]!r}; choose from torch, jax")
    if a.device not in ("cpu", "cuda") and not a.device.startswith("cuda:"):
        raise OptionError(f"--device must be cpu or cuda, got {a.device!r}")
    if a.threads < 1 or a.repeats < 1:
        raise OptionError("--threads and --repeats must be at least 1")
    a.only = [s for s in a.only.split(",") if s]
    if a.output is None and not a.quick:
        a.output = a.default_output
    return a


def parse_args(argv=None, output=os.path.join("benchmarks", "results", "bench_sort")):
    p = add_options(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), output)
    a = p.parse_args(argv)
    try:
        return check_args(a)
    except OptionError as e:
        p.error(str(e))


def limit_threads(n: int) -> str:
    """Limit every framework to ``n`` CPU threads; call before importing any of them.

    What limits what: CPU affinity (the first ``n`` allowed cores) bounds every
    thread pool, including XLA:CPU's, which sizes its pools from the affinity mask
    and has no flag for "n threads" (only --xla_cpu_multi_thread_eigen=false for 1);
    OMP_NUM_THREADS / torch.set_num_threads bound PyTorch and torchsort's OpenMP;
    NUMBA_NUM_THREADS / numba.set_num_threads bound numba's prange (softops,
    softtorch, jaxopt).
    """
    notes = []
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false").strip()
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < n:
            notes.append(f"only {len(cores)} cores available for {n} threads")
            os.environ["NUMBA_NUM_THREADS"] = str(len(cores))
        os.sched_setaffinity(0, cores[:n])
        notes.append(f"affinity cores {cores[:n]}")
    else:
        notes.append("no sched_setaffinity: XLA may use more threads")
    return "; ".join(notes)


def set_framework_threads(n: int, frameworks):
    if "torch" in frameworks:
        try:
            import torch
            torch.set_num_threads(n)
        except ImportError:
            pass
    try:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


# --- contenders --------------------------------------------------------------------


class Unavailable(Exception):
    """A contender that cannot run here (not installed, no such method, too large)."""


@dataclass
class Contender:
    framework: str          # "torch" or "jax"
    name: str
    op: str                 # "rank", "sort" or "floor" (hard sort, forward only)
    build: Callable         # build(n) -> fn(array) -> array; raises ImportError / Unavailable
    quadratic: bool = False  # O(n^2) memory: skipped above --max-quadratic-n

    @property
    def key(self):
        return f"{self.framework}: {self.name}"


def _softops(fw, op, method, T):
    def build(n):
        import softops
        f = getattr(softops, f"soft_{op}", None)
        if f is None:
            raise Unavailable(f"softops {softops.__file__} has no soft_{op}")
        probe = _tiny(fw)
        try:
            f(probe, temperature=T, method=method)
        except (ValueError, TypeError, NotImplementedError) as e:
            raise Unavailable(f"softops {softops.__file__}: {e}") from None
        return lambda v: f(v, axis=-1, temperature=T, method=method)
    return build


def _tiny(fw):
    if fw == "torch":
        import torch
        return torch.tensor([[3.0, 1.0, 2.0]])
    import jax.numpy as jnp
    return jnp.array([[3.0, 1.0, 2.0]])


def _torchsort(op, T):
    def build(n):
        import torchsort
        f = torchsort.soft_rank if op == "rank" else torchsort.soft_sort
        return lambda v: f(v, regularization="l2", regularization_strength=T)
    return build


def _softtorch(op, T, method="fast_soft_sort", mode="c0"):
    def build(n):
        import softtorch
        if op == "rank":
            return lambda v: softtorch.rank(v, dim=-1, softness=T, mode=mode, method=method,
                                            descending=False, standardize=False)
        return lambda v: softtorch.sort(v, dim=-1, softness=T, mode=mode, method=method,
                                        standardize=False, return_indices=False).values
    return build


def _diffsort(n):
    from diffsort import DiffSortNet
    if n & (n - 1):
        raise Unavailable("bitonic network needs n a power of 2")
    net = DiffSortNet("bitonic", n, steepness=10.0)
    return lambda v: net(v)[0]


def _torch_sort(n):
    import torch
    return lambda v: torch.sort(v, dim=-1).values


def _softjax(op, T):
    def build(n):
        import softjax
        if op == "rank":
            return lambda v: softjax.rank(v, axis=-1, softness=T, mode="c0", method="fast_soft_sort",
                                          descending=False, standardize=False)
        return lambda v: softjax.sort(v, axis=-1, softness=T, mode="c0", method="fast_soft_sort",
                                      standardize=False)
    return build


def _ott(op):
    """ott-jax's Sinkhorn soft sort / ranks (epsilon 1e-2, n targets), made reverse-differentiable.

    With ott's defaults, reverse mode fails here: the implicit-diff backward (a
    lineax solve) returns NaN for a random cotangent in float32, and soft_sort's
    default SortingInitializer is a while_loop that reverse mode rejects.  So the
    backward unrolls the Sinkhorn iterations, from the default initializer.
    """
    def build(n):
        from ott.initializers.linear.initializers import DefaultInitializer
        from ott.tools import soft_sort
        f = soft_sort.ranks if op == "rank" else soft_sort.sort
        return lambda v: f(v, axis=-1, implicit_diff=None, initializer=DefaultInitializer())
    return build


def _softops_sinkhorn_as_ott(op):
    """softops' Sinkhorn on ott-jax's own problem: values squashed to [0, 1]
    (sigmoid of the whitened row, ott's default squashing), targets j / (n - 1)
    at epsilon 1e-2 with masses 1 / n, which is softops' problem (unit masses,
    targets j, cost -x y) at T = (n - 1) epsilon / 2 (Cuturi et al. 2019: the
    squared-Euclidean cost's x^2 and y^2 terms go into the potentials); ott's
    threshold 1e-3 on the l1 marginal error is met by softops' tolerance 1e-3
    per unit mass."""
    def build(n):
        import jax
        import softops
        f = getattr(softops, f"soft_{op}")
        method = softops.Sinkhorn(tolerance=1e-3)
        T = (n - 1) * 1e-2 / 2

        def squashed(v):
            z = (v - v.mean(axis=-1, keepdims=True)) / (v.std(axis=-1, keepdims=True) + 1e-10)
            return f(jax.nn.sigmoid(z), axis=-1, temperature=T, method=method)
        return squashed
    return build


def _jaxopt(op, T):
    """Blondel et al.'s permutahedron projection, composed from jaxopt.isotonic.isotonic_l2_pav.

    jaxopt has no soft rank / sort function; its isotonic regression (numba PAV via
    pure_callback, 1-D only, JVP with an n x n one-hot) is the building block.
    """
    def build(n):
        import jax
        import jax.numpy as jnp
        import numpy as np
        from jaxopt._src import isotonic as iso
        from jaxopt.isotonic import isotonic_l2_pav

        # jax >= 0.10 hands pure_callback a buffer that jaxopt 0.8.5's numba kernel
        # cannot type; feed it an ndarray (no other change to jaxopt).
        kernel = iso._isotonic_l2_pav_numba
        if not getattr(kernel, "_bench_shim", False):
            def shim(y, _k=kernel):
                return _k(np.asarray(y))
            shim._bench_shim = True
            iso._isotonic_l2_pav_numba = shim

        w = jnp.arange(n, 0, -1, dtype=jnp.float32)       # n, ..., 1

        def rank_row(x):                                  # projection of x / T onto P(w)
            z = x / T
            perm = jnp.argsort(-z)
            s = z[perm]
            primal = s - isotonic_l2_pav(s - w, increasing=False)
            return jnp.zeros_like(z).at[perm].set(primal)

        def sort_row(x):                                  # projection of w / T onto P(x), ascending
            s = -jnp.sort(-x)                             # x sorted descending
            wt = w / T
            desc = wt - isotonic_l2_pav(wt - s, increasing=False)
            return desc[::-1]

        return jax.vmap(rank_row if op == "rank" else sort_row)
    return build


def _jnp_sort(n):
    import jax.numpy as jnp
    return lambda v: jnp.sort(v, axis=-1)


def _softops_methods(fw, op, T):
    """One contender per registered sort method (softops.sort.SORT_METHODS): a new
    method joins the benchmark with its registry entry.  Methods that build an
    n x n matrix (NeuralSort, SoftSort, Sinkhorn) are O(n^2) in memory."""
    try:
        from softops.sort import SORT_METHODS
    except ImportError:
        return []
    out = []
    for name, config in SORT_METHODS.items():
        quadratic = getattr(config, "has_matrix", False) and name != "network"
        out.append(Contender(fw, f"softops {name}", op, _softops(fw, op, name, T), quadratic=quadratic))
        if name == "network":  # the default is odd-even (O(n^2) work); diffsort's peer is bitonic
            out.append(Contender(fw, "softops network bitonic", op, _softops(fw, op, config("bitonic"), T)))
    return out


def _grid2d(n):
    """(h, w) with h * w = n, h <= w as close to square as powers of 2 allow."""
    h = 1
    while h * h * 4 <= n and n % (h * 2) == 0:
        h *= 2
    return h, n // h


def _select_index(op, T):
    """softops and its peer for one select / index op on PyTorch: (name, build) pairs."""
    def ours(n):
        import softops
        h, w = _grid2d(n)
        if op == "argmax2d":
            return lambda v: softops.soft_argmax(v.reshape(-1, 1, h, w), axis=(-2, -1), temperature=T)
        if op in ("sparsemax", "entmax15"):
            return lambda v: softops.argmax_weights(v, temperature=T, method=op)
        points = _on_device(_points(n, h, w))

        def read(v):  # every image read at the same n points: (batch, 1, n)
            return softops.lookup(v.reshape(-1, 1, h, w), points(v.device), axis=(-2, -1))
        return read

    def peer(n):
        h, w = _grid2d(n)
        if op == "argmax2d":
            from kornia.geometry.subpix import spatial_soft_argmax2d
            return lambda v: spatial_soft_argmax2d(v.reshape(-1, 1, h, w), temperature=T,
                                                   normalized_coordinates=False)
        if op in ("sparsemax", "entmax15"):
            import entmax
            f = getattr(entmax, op)
            return lambda v: f(v / T, dim=-1)
        import torch
        points = _points(n, h, w)
        # grid_sample's (x, y) in [-1, 1] with align_corners=True: x = 2 j / (w - 1) - 1
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
        grid = _on_device((points.flip(-1) * scale - 1.0)[None, :, None, :])  # (1, n, 1, 2)

        def read(v):
            img = v.reshape(-1, 1, h, w)
            g = grid(v.device).expand(img.shape[0], -1, -1, -1)
            return torch.nn.functional.grid_sample(img, g, mode="bilinear", padding_mode="border",
                                                   align_corners=True)
        return read

    names = {"argmax2d": "kornia spatial_soft_argmax2d", "sparsemax": "entmax sparsemax",
             "entmax15": "entmax entmax15", "lookup2d": "torch grid_sample"}
    return [("softops", ours), (names[op], peer)]


def _on_device(tensor):
    """``tensor`` on a device, copied there once (not inside a timed call)."""
    copies = {}

    def get(device):
        if device not in copies:
            copies[device] = tensor.to(device)
        return copies[device]
    return get


def _points(n, h, w):
    """n fixed random read positions (row, column) inside an (h, w) image."""
    import numpy as np
    import torch
    rng = np.random.default_rng(n)
    return torch.from_numpy(rng.uniform(0, 1, size=(n, 2)) * [h - 1, w - 1]).float()


def contenders(ops, frameworks, T):
    out = []
    for op in ops:
        if op in TORCH_OPS:
            if "torch" in frameworks:
                out += [Contender("torch", name, op, build) for name, build in _select_index(op, T)]
            continue
        if "torch" in frameworks:
            out += _softops_methods("torch", op, T) + [
                Contender("torch", "torchsort l2", op, _torchsort(op, T)),
                Contender("torch", "softtorch fast_soft_sort c0", op, _softtorch(op, T)),
                Contender("torch", "softtorch neuralsort", op, _softtorch(op, T, "neuralsort", "smooth"),
                          quadratic=True),
                Contender("torch", "softtorch softsort", op, _softtorch(op, T, "softsort", "smooth"),
                          quadratic=True),
            ]
            if op == "sort":
                out.append(Contender("torch", "diffsort bitonic", op, _diffsort, quadratic=True))
        if "jax" in frameworks:
            out += _softops_methods("jax", op, T) + [
                Contender("jax", "ott-jax", op, _ott(op), quadratic=True),
                Contender("jax", "softops sinkhorn at ott's epsilon", op, _softops_sinkhorn_as_ott(op),
                          quadratic=True),
                Contender("jax", "jaxopt isotonic", op, _jaxopt(op, T), quadratic=True),
                Contender("jax", "softjax fast_soft_sort c0", op, _softjax(op, T)),
            ]
    if "torch" in frameworks:
        out.append(Contender("torch", "torch.sort (fwd)", "floor", _torch_sort))
    if "jax" in frameworks:
        out.append(Contender("jax", "jnp.sort (fwd)", "floor", _jnp_sort))
    return out


# Ratios reported per op (same run); numerator / denominator contender keys.
RATIOS = [
    ("torch: softops permutahedron", "torch: torchsort l2", "<= 1.0"),
    ("torch: softops permutahedron", "torch: torch.sort (fwd)", "<= 2 for n >= 1024"),
    ("torch: softops lapsum", "torch: torch.sort (fwd)", "<= 3"),
    ("jax: softops permutahedron", "jax: jnp.sort (fwd)", "<= 3"),
    ("jax: ott-jax", "jax: softops permutahedron", ">= 100 at n = 1024 (speed-up)"),
    ("jax: jaxopt isotonic", "jax: softops permutahedron", ">= 100 at n = 1024 (speed-up)"),
    ("jax: softops lapsum", "jax: jnp.sort (fwd)", "<= 3"),
    ("torch: diffsort bitonic", "torch: softops network bitonic", ">= 20 at n = 128 (speed-up)"),
    ("jax: ott-jax", "jax: softops sinkhorn", ">= 10 at n = 128 and 1024 (speed-up)"),
    ("jax: ott-jax", "jax: softops sinkhorn at ott's epsilon", ">= 10 at n = 128 and 1024 (speed-up)"),
    ("torch: softops neuralsort", "torch: softtorch neuralsort", "<= 1.0 at n = 128 and 1024"),
    ("torch: softops softsort", "torch: softtorch softsort", "<= 1.0 at n = 128 and 1024"),
    ("torch: softops", "torch: kornia spatial_soft_argmax2d", "(below 1: softops faster)"),
    ("torch: softops", "torch: entmax sparsemax", "(below 1: softops faster)"),
    ("torch: softops", "torch: entmax entmax15", "(below 1: softops faster)"),
    ("torch: softops", "torch: torch grid_sample", "(below 1: softops faster)"),
]
TITLES = {"rank": "soft_rank", "sort": "soft_sort", "argmax2d": "spatial soft-argmax (select)",
          "sparsemax": "argmax_weights sparsemax (select)", "entmax15": "argmax_weights entmax15 (select)",
          "lookup2d": "bilinear lookup, 2-D (index)"}


# --- timing ------------------------------------------------------------------------


def make_step(c: Contender, fn, x, g, device="cpu"):
    """A no-argument callable running one timed call of ``fn`` on ``x``
    (forward, and backward of ``sum(out * g)``; ``g`` is redrawn in the
    output's shape where that differs from ``x``'s)."""
    if c.framework == "torch":
        import torch
        on_gpu = device.startswith("cuda")
        sync = (lambda: torch.cuda.synchronize(torch.device(device))) if on_gpu else (lambda: None)
        if c.op == "floor":
            xt = torch.from_numpy(x).to(device)

            def step():
                with torch.no_grad():
                    fn(xt)
                sync()
            return step
        xt = torch.from_numpy(x).to(device).requires_grad_(True)
        with torch.no_grad():
            shape = fn(xt).shape
        gt = torch.from_numpy(g).to(device)
        if tuple(shape) != tuple(gt.shape):
            gen = torch.Generator().manual_seed(0)
            gt = torch.randn(tuple(shape), generator=gen, dtype=gt.dtype).to(device)

        def step():
            xt.grad = None
            (fn(xt) * gt).sum().backward()
            sync()
        return step

    import jax
    import jax.numpy as jnp
    xj, gj = jnp.asarray(x), jnp.asarray(g)
    if c.op == "floor":
        f = jax.jit(fn)
        return lambda: jax.block_until_ready(f(xj))
    grad = jax.jit(jax.grad(lambda v, cot: jnp.sum(fn(v) * cot)))
    return lambda: jax.block_until_ready(grad(xj, gj))


def time_size(steps: dict, args, errors: dict, progress=None):
    """Round-robin timing: each round calls every step once, in a fresh random
    order (seeded), so that no contender always runs right after the same
    neighbour; returns medians in ms."""
    import random

    samples = {k: [] for k in steps}
    order = random.Random(args.seed)
    keys = list(steps)
    for _ in range(args.repeats):
        if not args.fixed_order:
            order.shuffle(keys)
        for k in keys:
            step = steps[k]
            if k in errors or (len(samples[k]) >= args.min_repeats and sum(samples[k]) > args.budget):
                continue
            try:
                for _ in range(args.settle):
                    step()
                t0 = time.perf_counter()
                step()
                samples[k].append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - a failing peer must not stop the run
                errors[k] = f"{type(e).__name__}: {e}"[:200]
        if progress is not None:
            progress.update(1)
    return {k: (statistics.median(v) * 1e3, len(v)) for k, v in samples.items() if v}


def _peak_memory(steps, args, errors):
    """Peak CUDA memory (MB) that one call of each PyTorch contender adds to
    what was allocated before it (every contender's inputs stay allocated)."""
    import torch
    device = torch.device(args.device)
    out = {}
    for cid, step in steps.items():
        if cid in errors or not cid[0].startswith("torch"):
            continue
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        out[cid] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return out


def run(args):
    import numpy as np

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    rng = np.random.default_rng(args.seed)
    cons = contenders(args.ops, args.frameworks, args.temperature)
    if args.only:
        cons = [c for c in cons if any(s in c.name for s in args.only)]
    status = {}     # (key, op) -> reason it did not run at all
    results = []    # dicts: framework, name, op, n, batch, median_ms, samples / error
    progress = (tqdm(total=len(args.sizes) * args.repeats, desc="rounds", file=sys.stderr)
                if tqdm and not getattr(args, "no_progress", False) else None)
    for n in args.sizes:
        batch = max(1, args.total // n)
        x = rng.standard_normal((batch, n)).astype(np.float32)
        g = rng.standard_normal((batch, n)).astype(np.float32)
        steps, errors, by_id = {}, {}, {}
        for c in cons:
            cid = (c.key, c.op)
            if cid in status:
                continue
            if c.quadratic and n > args.max_quadratic_n:
                errors[cid] = f"skipped: O(n^2) memory, n > --max-quadratic-n {args.max_quadratic_n}"
                by_id[cid] = c
                continue
            try:
                step = make_step(c, c.build(n), x, g, args.device)
                t0 = time.perf_counter()
                for _ in range(max(1, args.warmup)):
                    step()
                    if time.perf_counter() - t0 > args.budget:
                        break
            except ImportError as e:
                status[cid] = f"not installed ({e})"
                continue
            except Unavailable as e:
                status[cid] = f"unavailable ({e})"
                continue
            except Exception as e:  # noqa: BLE001
                errors[cid] = f"failed: {type(e).__name__}: {e}"[:200]
                by_id[cid] = c
                continue
            steps[cid], by_id[cid] = step, c
            if progress is not None:
                progress.set_postfix_str(f"n={n} warmed {c.key} {c.op}")
        medians = time_size(steps, args, errors, progress)
        peaks = _peak_memory(steps, args, errors) if args.device.startswith("cuda") else {}
        for cid, c in by_id.items():
            row = dict(framework=c.framework, name=c.name, op=c.op, n=n, batch=batch, device=args.device)
            if cid in medians:
                row.update(median_ms=medians[cid][0], samples=medians[cid][1], peak_mb=peaks.get(cid))
            else:
                row.update(median_ms=None, error=errors.get(cid, "no sample"))
            results.append(row)
    if progress is not None:
        progress.close()
    return results, status


# --- report ------------------------------------------------------------------------


def machine_info(args, thread_note):
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "threads": args.threads,
        "thread_limits": thread_note,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "total": args.total,
        "temperature": args.temperature,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "device": args.device,
    }
    if args.device.startswith("cuda"):
        import torch
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    from importlib import metadata
    versions = {}
    for mod, dist in (("numpy", "numpy"), ("torch", "torch"), ("jax", "jax"), ("numba", "numba"),
                      ("softops", "softops"), ("torchsort", "torchsort"), ("softtorch", "softtorch"),
                      ("softjax", "softjax"), ("ott", "ott-jax"), ("jaxopt", "jaxopt"),
                      ("diffsort", "diffsort"), ("kornia", "kornia"), ("entmax", "entmax")):
        m = sys.modules.get(mod)
        if m is not None:
            try:
                versions[dist] = getattr(m, "__version__", None) or metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = "?"
    if "softops" in sys.modules:
        versions["softops"] += f" ({os.path.dirname(sys.modules['softops'].__file__)})"
    info["versions"] = versions
    return info


def report(results, status, info, args) -> str:
    def cell(row):
        if row is None:
            return ""
        if row["median_ms"] is None:
            return "skipped" if row["error"].startswith("skipped") else "error"
        return f"{row['median_ms']:.3g}"

    by = {(r["framework"] + ": " + r["name"], r["op"], r["n"]): r for r in results}
    sizes = args.sizes
    head = "| contender | " + " | ".join(f"n={n} (b={max(1, args.total // n)})" for n in sizes) + " |"
    rule = "|---|" + "---:|" * len(sizes)
    load = info["loadavg_start"]
    lines = [
        "# softops speed benchmark",
        "",
        f"{info['date_utc']}; {info['cpu']}" + (f", GPU {info['gpu']}" if "gpu" in info else "")
        + f", nproc {info['nproc']}, {info['threads']} threads "
        f"({info['thread_limits']}); load average at start "
        + (", ".join(f"{v:.2f}" for v in load) if load else "?")
        + f", at end {info.get('loadavg_end', '?')}; Python {info['python']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".",
        "",
        f"Median ms of forward + backward (floors: forward only) on float32 (batch, n), "
        f"batch * n = {args.total}, temperature / regularization_strength / softness "
        f"{args.temperature}, {args.repeats} rounds after {args.warmup} warm-up calls.",
    ]
    floors = [k for k in dict.fromkeys(r["framework"] + ": " + r["name"] for r in results if r["op"] == "floor")]
    for op in args.ops:
        keys = list(dict.fromkeys(r["framework"] + ": " + r["name"] for r in results if r["op"] == op))
        lines += ["", f"## {TITLES[op]}", "", head, rule]
        for k, o in [(k, op) for k in keys] + [(k, "floor") for k in floors if op in SORT_OPS]:
            lines.append(f"| {k} | " + " | ".join(cell(by.get((k, o, n))) for n in sizes) + " |")
        lines += ["", f"Ratios ({TITLES[op]}, same run):", "",
                  "| ratio | " + " | ".join(f"n={n}" for n in sizes) + " | target |", rule + "---|"]
        for num, den, target in RATIOS:
            vals = []
            for n in sizes:
                a = by.get((num, op, n))
                b = by.get((den, "floor" if "sort (fwd)" in den else op, n))
                ok = a and b and a["median_ms"] and b["median_ms"]
                vals.append(f"{a['median_ms'] / b['median_ms']:.2f}" if ok else "")
            if any(vals):
                lines.append(f"| {num} / {den} | " + " | ".join(vals) + f" | {target} |")
    if any(r.get("peak_mb") for r in results):
        keys = list(dict.fromkeys((r["framework"] + ": " + r["name"], r["op"]) for r in results if r.get("peak_mb")))
        lines += ["", f"## Peak {args.device} memory of one call (MB)", "",
                  "| contender | op | " + " | ".join(f"n={n}" for n in sizes) + " |", "|---|---|" + "---:|" * len(sizes)]
        for k, o in keys:
            cells = [by.get((k, o, n), {}).get("peak_mb") for n in sizes]
            lines.append(f"| {k} | {o} | " + " | ".join("" if v is None else f"{v:.1f}" for v in cells) + " |")
    notes = sorted({f"{r['framework']}: {r['name']} (n={r['n']}): {r['error']}"
                    for r in results if r["median_ms"] is None and not r["error"].startswith("skipped")})
    skipped = sorted({f"{r['framework']}: {r['name']}" for r in results
                      if r["median_ms"] is None and r["error"].startswith("skipped")})
    if status or notes or skipped:
        lines += ["", "## Not run", ""]
        lines += [f"- {k} [{op}]: {why}" for (k, op), why in sorted(status.items())]
        lines += [f"- {s}" for s in notes]
        if skipped:
            lines.append(f"- skipped above n = {args.max_quadratic_n} (O(n^2) memory): " + ", ".join(skipped))
    return "\n".join(lines) + "\n"


def plot(results, args, plt, path):
    """Median ms against n, one panel per op, one line per contender."""
    ops = [o for o in args.ops if any(r["op"] == o and r["median_ms"] for r in results)]
    if not ops:
        return
    fig, axes = plt.subplots(1, len(ops), figsize=(5.2 * len(ops), 4.4), squeeze=False)
    for ax, op in zip(axes[0], ops):
        mine = (op, "floor") if op in SORT_OPS else (op,)
        for key in dict.fromkeys(r["framework"] + ": " + r["name"] for r in results if r["op"] in mine):
            pts = [(r["n"], r["median_ms"]) for r in results
                   if r["framework"] + ": " + r["name"] == key and r["op"] in mine and r["median_ms"]]
            if pts:
                ax.loglog(*zip(*pts), "o-" if "softops" in key else "s:", label=key, markersize=4)
        ax.set_title(TITLES[op], fontsize=9)
        ax.set_xlabel("n")
        ax.set_ylabel("median ms, forward + backward")
        ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_and_report(args):
    """Time, print the report, write STEM.md / .json / .png when ``args.output``."""
    thread_note = limit_threads(args.threads)
    set_framework_threads(args.threads, args.frameworks)
    info = machine_info(args, thread_note)
    results, status = run(args)
    info = {**machine_info(args, thread_note), "loadavg_start": info["loadavg_start"]}
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    text = report(results, status, info, args)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output + ".md", "w") as f:
            f.write(text)
        with open(args.output + ".json", "w") as f:
            json.dump({"meta": info, "results": results,
                       "not_run": {f"{k} [{op}]": why for (k, op), why in status.items()}}, f, indent=1)
        written = [args.output + ".md", args.output + ".json"]
        from softops.demo import pyplot

        plt = pyplot()
        if plt is not None:
            plot(results, args, plt, args.output + ".png")
            written.append(args.output + ".png")
        print("written: " + ", ".join(written))
    return 0


def add_parser(kinds):
    """``bench speed``: the options of ``benchmarks/bench_sort.py``."""
    speed = kinds.add_parser("speed", help="time the operations against the peers installed",
                             description=__doc__.split("\n\n")[0])
    add_options(speed, os.path.join("softops-bench", "speed"))
    speed.set_defaults(speed_parser=speed)
    return speed


def main(args):
    """``python -m softops bench speed``; ``OptionError`` for a bad option."""
    if args.device.startswith("cuda"):
        try:
            import torch
        except ImportError:
            raise OptionError("--device cuda times the PyTorch contenders: pip install 'softops[torch]' "
                              "(a CUDA build)") from None
        if not torch.cuda.is_available():
            raise OptionError(f"--device {args.device}: no CUDA device is visible to PyTorch here")
    return run_and_report(check_args(args))


def script(argv=None):
    """``python benchmarks/bench_sort.py``: the same, results in benchmarks/results/."""
    return run_and_report(parse_args(argv))
