#!/usr/bin/env python
"""Time the operations against the peer libraries: ``python -m softops bench
speed`` (``softops.bench.speed``), with results in benchmarks/results/.

    python benchmarks/bench_sort.py                  # full run, writes benchmarks/results/bench_sort.*
    python benchmarks/bench_sort.py --quick          # smoke run in seconds, writes nothing
    python benchmarks/bench_sort.py --ops rank --sizes 1024 --frameworks jax
"""

import sys

from softops.bench.speed import script

if __name__ == "__main__":
    sys.exit(script())
