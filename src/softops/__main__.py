"""Command line: ``python -m softops demo`` learns seed 001 through every
relaxation, prints the seeds' numbers and a tour of the operations, and
writes two plots (``--out``); ``python -m softops bench learn [TASK]`` trains
through the relaxations (digits-sort, quartiles, keypoints,
topk-classification) and ``python -m softops bench speed`` times them
against the peers installed; ``python -m softops warmup`` compiles and caches every kernel (for images and CI)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from softops import __version__

    parser = argparse.ArgumentParser(prog="softops", description=__doc__)
    parser.add_argument("--version", action="version", version=f"softops {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="seed 001 end to end, the seeds' numbers, a tour of the operations, plots")
    demo.add_argument("--out", default="softops-demo", help="folder for the plots (default ./softops-demo/)")
    demo.add_argument("--quick", action="store_true", help="seed 001 at N = 10 only, fewer steps")
    from softops import bench

    bench.add_parser(commands)
    warm = commands.add_parser("warmup", help="compile and cache every numba kernel (seconds, once per environment)")
    warm.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.command == "warmup":
        import time

        from softops._kernels.warmup import warmup

        t0 = time.perf_counter()
        seconds = warmup(progress=not args.quiet)
        if not args.quiet:
            print(f"compiled or loaded {len(seconds)} kernels in {time.perf_counter() - t0:.1f} s")
        return 0
    if args.command == "bench":
        return bench.main(args, parser)
    if args.command == "demo":
        from softops.demo import run_demo

        return run_demo(out=args.out, quick=args.quick)
    return 2


if __name__ == "__main__":
    sys.exit(main())
