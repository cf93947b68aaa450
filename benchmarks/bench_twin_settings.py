#!/usr/bin/env python
"""Which thread settings cure PyTorch next to a second busy process of the same
kind: one case (``--op`` x ``--method`` x ``--n``, float32, batch x n = 65536,
``(op(x) * g).sum().backward()``), timed for ``--seconds`` in this process while
a twin process runs the same case, with the same setting, in a loop.

Settings (``--setting``):

* ``reference``: one thread everywhere, and no twin (the quiet one-thread time);
* ``default``: nothing set;
* ``kernels1``: ``softops.set_num_threads(1)`` (softops' kernels on one thread);
* ``forward1``: softops' forward call under ``torch.set_num_threads(1)``
  (its own PyTorch operations on one thread; its kernels on the default);
* ``step1``: ``torch.set_num_threads(1); softops.set_num_threads(2)``: the
  whole step, the caller's loss and backward included, on one PyTorch thread,
  softops' kernels on two.

Prints one line: the setting, the case and the median ms.

    python benchmarks/bench_twin_settings.py --setting reference
    python benchmarks/bench_twin_settings.py --setting default --twin
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time

SETTINGS = ("reference", "default", "kernels1", "forward1", "step1")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", choices=SETTINGS, default="default")
    p.add_argument("--op", default="rank", choices=("rank", "sort", "topk_mask"))
    p.add_argument("--method", default="permutahedron")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--twin", action="store_true", help="run a twin process with the same setting beside it")
    p.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)  # the twin itself
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    import softops

    f = getattr(softops, "soft_" + args.op)
    if args.setting == "reference":
        torch.set_num_threads(1)
        softops.set_num_threads(1)
    elif args.setting == "kernels1":
        softops.set_num_threads(1)
    elif args.setting == "step1":
        torch.set_num_threads(1)
        softops.set_num_threads(2)
    elif args.setting == "forward1":
        inner = f

        @functools.wraps(inner)
        def f(*a, **k):
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            softops.set_num_threads(threads)
            try:
                return inner(*a, **k)
            finally:
                torch.set_num_threads(threads)
                softops.set_num_threads(None)

    x = torch.randn(65536 // args.n, args.n, requires_grad=True)
    g = torch.randn(65536 // args.n, args.n)
    kw = {"k": max(1, args.n // 4)} if args.op == "topk_mask" else {}

    def step():
        (f(x, method=args.method, **kw) * g).sum().backward()

    for _ in range(5):
        step()
    if args.loop:
        while True:
            step()
    twin = None
    if args.twin:
        twin = subprocess.Popen([sys.executable, __file__, *(argv or sys.argv[1:]), "--loop"])
        time.sleep(3)
    times = []
    end = time.perf_counter() + args.seconds
    try:
        while time.perf_counter() < end or len(times) < 7:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    finally:
        if twin is not None:
            twin.kill()
            twin.wait()
    print(f"{args.setting}{' beside a twin' if args.twin else ''}: soft_{args.op} {args.method} n={args.n}: "
          f"{statistics.median(times) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
