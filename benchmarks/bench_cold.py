#!/usr/bin/env python
"""Cold start: what the first call costs in a fresh environment.

Each measurement is a fresh Python process with an empty numba cache
(``NUMBA_CACHE_DIR`` set to a new temporary folder), so every kernel it needs
compiles.  Per operation and method (PyTorch, float32, shape (8, 16)): the
import of softops (with torch), the first forward + backward, the second, how
long after the first call began the kernels are compiled (the background
compile, ``softops._kernels._tiers``), a call after that, and in a second
fresh process the first call with ``SOFTOPS_COMPILE=blocking`` (it waits for
the compile).  Then ``python -m softops demo`` cold and warm, and ``python -m
softops warmup`` cold and warm.

    python benchmarks/bench_cold.py            # writes benchmarks/results/bench_cold.{md,json}
    python benchmarks/bench_cold.py --quick    # soft_rank only, writes nothing
    python benchmarks/bench_cold.py --methods network --output benchmarks/results/bench_cold-network
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OPS = ("soft_rank", "soft_sort", "soft_topk", "soft_topk_mask", "soft_quantile")

PROBE = r"""
import json, sys, threading, time
t0 = time.perf_counter()
import torch, softops
t1 = time.perf_counter()
op, method = sys.argv[1], sys.argv[2]
f = getattr(softops, op)
args = (2,) if op in ("soft_topk", "soft_topk_mask") else (0.3,) if op == "soft_quantile" else ()
def call():
    x = torch.randn(8, 16, requires_grad=True)
    f(x, *args, method=method).sum().backward()
t2 = time.perf_counter(); call(); t3 = time.perf_counter(); call(); t4 = time.perf_counter()
for thread in threading.enumerate():
    if thread.name.startswith("softops-compile"):
        thread.join()
t5 = time.perf_counter(); call(); t6 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t3 - t2, "second": t4 - t3, "compiled": t5 - t2,
                  "compiled_call": t6 - t5}))
"""


def _fresh_env(**extra):
    env = dict(os.environ, **extra)
    env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="softops-cold-")
    return env


def _timed(cmd, env):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return time.perf_counter() - t0, out.stdout


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--methods", default="permutahedron,lapsum,network",
                   help="comma-separated sort methods whose kernels are timed cold")
    p.add_argument("--output", default=os.path.join(HERE, "results", "bench_cold"))
    a = p.parse_args(argv)
    ops = OPS[:1] if a.quick else OPS
    rows = []
    for op in ops:
        for method in a.methods.split(","):
            _, out = _timed([sys.executable, "-c", PROBE, op, method], _fresh_env(SOFTOPS_COMPILE="background"))
            _, blocking = _timed([sys.executable, "-c", PROBE, op, method], _fresh_env(SOFTOPS_COMPILE="blocking"))
            rows.append(dict(op=op, method=method, **json.loads(out), blocking=json.loads(blocking)["first"]))
            print(rows[-1], file=sys.stderr)
    commands = {}
    for name, cmd in (("demo", ["-m", "softops", "demo"]), ("warmup", ["-m", "softops", "warmup", "--quiet"])):
        env = _fresh_env()
        cold, _ = _timed([sys.executable, *cmd], env)
        warm, _ = _timed([sys.executable, *cmd], env)
        commands[name] = dict(cold=cold, warm=warm)
        print(name, commands[name], file=sys.stderr)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"# bench_cold: {datetime.date.today().isoformat()}", "",
             f"Machine: {platform.machine()}, {cores} cores; Python {platform.python_version()}. "
             f"Command: `python benchmarks/bench_cold.py{' --quick' if a.quick else ''} --methods {a.methods}`.", "",
             "Fresh process, empty numba cache; PyTorch, float32 (8, 16), forward + backward; seconds.", "",
             "| op | method | import softops + torch | first call | second call | compiled after | call then "
             "| first call, `SOFTOPS_COMPILE=blocking` |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['op']} | {r['method']} | {r['import']:.2f} | {r['first']:.2f} | {r['second']:.4f} "
              f"| {r['compiled']:.2f} | {r['compiled_call']:.4f} | {r['blocking']:.2f} |" for r in rows]
    lines += ["", "| command | cold (empty cache) | warm |", "|---|---:|---:|"]
    lines += [f"| `python -m softops {k}` | {v['cold']:.1f} | {v['warm']:.1f} |" for k, v in commands.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.quick:
        with open(a.output + ".md", "w") as f:
            f.write(text)
        with open(a.output + ".json", "w") as f:
            json.dump(dict(ops=rows, commands=commands), f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
