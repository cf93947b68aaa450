"""``python -m softops bench``: benchmarks anyone can rerun offline.

``bench learn [TASK]`` trains through the relaxations on PyTorch (every task
when TASK is left out):

- ``digits-sort`` (``softops.bench.digits_sort``): ranking supervision on
  multi-digit numbers of scikit-learn's digits, every sorting method and the
  peers installed;
- ``quartiles`` (``softops.bench.quartiles``): seed 001 at N up to 10^5;
- ``keypoints`` (``softops.bench.keypoints``): locate a blob through the N-D
  soft-argmax;
- ``topk-classification`` (``softops.bench.topk_classification``): top-k
  cross-entropy on the digits.

``bench speed`` (``softops.bench.speed``) times the operations against the
peers installed.  ``--quick`` runs a tiny version of each (what the test suite
runs).  Bad options and missing optional dependencies exit with status 2 and
one error line naming what to install."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import time

from softops.bench._common import BenchError


@dataclasses.dataclass(frozen=True)
class Task:
    module: str
    help: str
    sizes: tuple
    quick_sizes: tuple
    steps: int
    quick_steps: int
    size_name: str  # what --sizes counts
    min_size: int
    seeds: int = 3


TASKS = {
    "digits-sort": Task("digits_sort", "rank sets of n multi-digit numbers (NeuralSort / diffsort benchmark)",
                        (3, 5, 7, 9, 15), (3,), 500, 40, "n, items per set", 2),
    "quartiles": Task("quartiles", "seed 001's quartile objective at N up to 10^5", (10, 1000, 10_000, 100_000),
                      (10, 100), 100, 5, "N, rows of the seed's data", 2, seeds=1),
    "keypoints": Task("keypoints", "locate a blob in noisy images through the N-D soft-argmax", (32,), (16,), 400,
                      30, "image side in pixels", 8),
    "topk-classification": Task("topk_classification", "top-k cross-entropy, 100 classes of two-digit numbers",
                                (5,), (5,), 400, 30, "k of the top-k loss", 1),
}


def add_parser(commands):
    bench = commands.add_parser("bench", help="learning and speed benchmarks (python -m softops bench learn)",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = bench.add_subparsers(dest="kind", required=True)
    learn = kinds.add_parser("learn", help="train through the relaxations and report what was learnt")
    learn.add_argument("task", nargs="?", choices=tuple(TASKS), help="the benchmark (default: all of them)")
    learn.add_argument("--quick", action="store_true", help="a tiny version (what the test suite runs)")
    learn.add_argument("--sizes", default=None,
                       help="comma-separated sizes: " + "; ".join(f"{k}: {t.size_name}" for k, t in TASKS.items()))
    learn.add_argument("--steps", type=int, default=None, help="optimiser steps per run")
    learn.add_argument("--methods", default=None, help="comma-separated methods or peers (default: all installed)")
    learn.add_argument("--seeds", type=int, default=None, help="seeds per configuration (default 3; --quick 1)")
    learn.add_argument("--tau", type=float, default=1.0, help="the fixed Relative(tau) run without search")
    learn.add_argument("--workers", type=int, default=None,
                       help="worker processes, one thread each (0: this process; default 2, --quick 0)")
    learn.add_argument("--out", default="softops-bench", help="folder for the results (default ./softops-bench/)")
    learn.add_argument("--no-progress", action="store_true", help="no progress bar")
    learn.set_defaults(parser=learn)
    from softops.bench import speed

    speed.add_parser(kinds)
    return bench


def _options(args, task):
    spec = TASKS[task]
    if args.sizes is None:
        sizes = spec.quick_sizes if args.quick else spec.sizes
    else:
        try:
            sizes = tuple(int(n) for n in args.sizes.split(","))
        except ValueError:
            raise BenchError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from None
        if any(n < spec.min_size for n in sizes):
            raise BenchError(f"{task}: every size ({spec.size_name}) in --sizes must be at least {spec.min_size}, "
                             f"got {args.sizes}")
    steps = (spec.quick_steps if args.quick else spec.steps) if args.steps is None else args.steps
    if steps < 1:
        raise BenchError(f"--steps must be at least 1, got {steps}")
    seeds = (1 if args.quick else spec.seeds) if args.seeds is None else args.seeds
    if seeds < 1:
        raise BenchError(f"--seeds must be at least 1, got {seeds}")
    workers = (0 if args.quick else 2) if args.workers is None else args.workers
    if workers < 0:
        raise BenchError(f"--workers must be at least 0, got {workers}")
    if not (math.isfinite(args.tau) and args.tau > 0):
        raise BenchError(f"--tau must be finite and > 0, got {args.tau}")
    methods = None if args.methods is None else tuple(args.methods.split(","))
    return dict(sizes=sizes, steps=steps, seeds=seeds, methods=methods, tau=args.tau,
                workers=workers, out=args.out, quick=args.quick,
                progress=not args.no_progress)


def main(args, parser) -> int:
    sub = args.parser if args.kind == "learn" else args.speed_parser
    try:
        if args.kind == "speed":
            from softops.bench import speed

            try:
                return speed.main(args)
            except speed.OptionError as e:
                raise BenchError(str(e)) from None
        from softops.bench._common import require

        require("torch", "torch", "the learning benchmarks run on PyTorch and")
        tasks = [args.task] if args.task else list(TASKS)
        if args.sizes is not None and len(tasks) > 1:
            raise BenchError("--sizes means something else for each task: give a TASK with it")
        options = {t: _options(args, t) for t in tasks}  # every option checked before anything runs
        for task in tasks:
            module = importlib.import_module(f"softops.bench.{TASKS[task].module}")
            module.check(**options[task])
        for task in tasks:
            start = time.perf_counter()
            importlib.import_module(f"softops.bench.{TASKS[task].module}").main(**options[task])
            print(f"{task}: done in {time.perf_counter() - start:.0f} s\n")
    except BenchError as e:
        sub.error(str(e))
    return 0
