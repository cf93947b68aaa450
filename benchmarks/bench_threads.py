#!/usr/bin/env python
"""Thread settings and busy machines: softops' sorting family, forward + backward,
under the settings a training job runs with, each against a single-thread reference.

For every framework x op x method x n (float32, batch * n = --total) one timed
call is ``loss = (op(x) * g).sum(); backward`` (JAX: ``jit(grad(loss))``),
timed in long-lived worker processes, each with its own setting:

* ``reference``: one thread everywhere (``SOFTOPS_NUM_THREADS=1``,
  ``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, XLA's Eigen pool off);
  the machine otherwise quiet;
* ``default``: nothing set;
* ``threads=1``: the framework's own one-thread setting, made in the process
  (``torch.set_num_threads(1)``, what DataLoader workers and most DDP launchers
  set; JAX has none, so ``softops.set_num_threads(1)``);
* ``beside a twin``: ``default`` while a second process of the same kind (a
  second DDP rank on the same machine: default settings, the same case) runs
  the same call in a loop;
* ``beside matmul``: ``default`` while an unrelated multi-threaded job
  (``torch.matmul`` of 512 x 512 float32 in a loop, default threads) runs.

A ``floor`` row times the framework's own sort (forward + backward through
the sorted values) under the same settings: what the framework's thread pool
does on its own.  Each cell is the median of the calls made in ``--seconds`` (at least
``--min-calls``); the table gives each setting's ratio to the reference
(target: at most 1.5) and the reference in ms.  Cases run one at a time; the
loads start before a case is timed and stop after it, so every run is bounded.

    python benchmarks/bench_threads.py            # full grid, writes benchmarks/results/bench_threads.{md,json}
    python benchmarks/bench_threads.py --quick    # n = 16 and 1024, rank only, writes nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = ("reference", "default", "threads=1", "beside a twin", "beside matmul")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frameworks", default="torch,jax")
    p.add_argument("--ops", default="rank,sort,topk_mask", help="soft_<op> of softops")
    p.add_argument("--methods", default="permutahedron,lapsum")
    p.add_argument("--sizes", default="16,128,1024,8192,65536")
    p.add_argument("--total", type=int, default=65536, help="batch * n")
    p.add_argument("--seconds", type=float, default=0.6, help="timing budget per case and setting")
    p.add_argument("--min-calls", type=int, default=7)
    p.add_argument("--output", default=None, help="path stem (default benchmarks/results/bench_threads)")
    p.add_argument("--quick", action="store_true", help="n 16 and 1024, rank only, 0.2 s; writes nothing")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.ops, a.sizes, a.seconds, a.min_calls = "rank", "16,1024", 0.2, 3
    for name in ("frameworks", "ops", "methods"):
        setattr(a, name, [s for s in getattr(a, name).split(",") if s])
    a.sizes = [int(s) for s in a.sizes.split(",") if s]
    if a.output is None and not a.quick:
        a.output = os.path.join(HERE, "results", "bench_threads")
    return a


# --- worker processes ------------------------------------------------------------


def _worker_env(setting):
    env = dict(os.environ)
    if setting == "reference":
        env.update(SOFTOPS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   XLA_FLAGS=(env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip())
    return env


def _build(case):
    """A no-argument callable: one forward + backward of the case."""
    import numpy as np

    import softops

    fw, op, method, n, total = case["fw"], case["op"], case["method"], case["n"], case["total"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((max(1, total // n), n)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    if op == "floor":  # the framework's own sort, forward + backward through the values
        f, kwargs = (lambda v: _sort_values(fw, v)), {}
    else:
        f, kwargs = getattr(softops, f"soft_{op}"), {"method": method}
    if op in ("topk", "topk_mask"):
        kwargs["k"] = max(1, n // 4)
    if fw == "torch":
        import torch

        xt, gt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(g)
        if op == "topk":
            gt = gt[..., : kwargs["k"]]

        def step():
            xt.grad = None
            (f(xt, **kwargs) * gt).sum().backward()
        return step
    import jax
    import jax.numpy as jnp

    xj, gj = jnp.asarray(x), jnp.asarray(g[..., : kwargs["k"]] if op == "topk" else g)
    grad = jax.jit(jax.grad(lambda v, c: jnp.sum(f(v, **kwargs) * c)))
    return lambda: jax.block_until_ready(grad(xj, gj))


def _sort_values(fw, v):
    if fw == "torch":
        import torch

        return torch.sort(v, dim=-1).values
    import jax.numpy as jnp

    return jnp.sort(v, axis=-1)


def _matmul():
    import torch

    a = torch.randn(512, 512)
    return lambda: torch.matmul(a, a)


def worker(spec):
    """Serve JSON commands on stdin: ``time`` a case (reply: median ms and calls),
    or ``load`` one (reply ``ready`` once warm, then run it until the next line)."""
    setting, fw = spec.split(":")
    if setting == "threads=1" and fw == "jax":
        import softops

        softops.set_num_threads(1)
    elif setting in ("threads=1", "reference"):
        import torch

        torch.set_num_threads(1)
    steps = {}
    while line := sys.stdin.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            return
        key = json.dumps(cmd.get("case"), sort_keys=True)
        if key not in steps:
            steps[key] = _matmul() if cmd["case"] == "matmul" else _build(cmd["case"])
        step = steps[key]
        for _ in range(2):
            step()
        if cmd["cmd"] == "load":
            print(json.dumps({"ready": True}), flush=True)
            while not select.select([sys.stdin], [], [], 0)[0]:
                step()
            continue
        samples, t_end = [], time.perf_counter() + cmd["seconds"]
        while time.perf_counter() < t_end or len(samples) < cmd["min_calls"]:
            t0 = time.perf_counter()
            step()
            samples.append(time.perf_counter() - t0)
        print(json.dumps({"ms": statistics.median(samples) * 1e3, "calls": len(samples)}), flush=True)


class Worker:
    def __init__(self, setting, fw):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{setting}:{fw}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=_worker_env(setting))

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()}")
        return json.loads(line)

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)


def run(args):
    results = []
    cases = [dict(fw=fw, op=op, method=m, n=n, total=args.total)
             for fw in args.frameworks for op in args.ops for m in args.methods for n in args.sizes]
    # The framework's own sort under the same settings: what the framework does alone.
    cases += [dict(fw=fw, op="floor", method="-", n=n, total=args.total) for fw in args.frameworks for n in args.sizes]
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(cases), desc="cases", file=sys.stderr)
    except ImportError:
        bar = None
    for fw in args.frameworks:
        workers = {s: Worker(s, fw) for s in ("reference", "default", "threads=1")}
        twin, matmul = Worker("default", fw), Worker("default", "torch")
        try:
            for case in (c for c in cases if c["fw"] == fw):
                timing = dict(cmd="time", case=case, seconds=args.seconds, min_calls=args.min_calls)
                row = dict(case)
                for s, w in workers.items():
                    row[s] = w.ask(**timing)["ms"]
                for s, load, arg in (("beside a twin", twin, case), ("beside matmul", matmul, "matmul")):
                    load.ask(cmd="load", case=arg)
                    row[s] = workers["default"].ask(**timing)["ms"]
                    load.ask(cmd="time", case=arg, seconds=0.0, min_calls=1)  # stops the loop
                results.append(row)
                if bar:
                    bar.update(1)
        finally:
            for w in (*workers.values(), twin, matmul):
                w.close()
    if bar:
        bar.close()
    return results


def report(results, args):
    import softops

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"# bench_threads: {datetime.date.today().isoformat()}",
        "",
        f"Machine: {platform.machine()}, {cores} cores, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; softops {softops.__version__}.",
        f"Command: `python benchmarks/bench_threads.py {' '.join(sys.argv[1:])}`".replace(" `", "`", 0),
        "",
        "Forward + backward, float32, batch x n = " + str(args.total) + ". Each setting's median over the "
        "reference's (one thread everywhere, quiet machine); the reference in ms. Target: at most 1.5.",
        "",
        "| framework | op | method | n | reference ms | " + " | ".join(SETTINGS[1:]) + " |",
        "|---|---|---|---:|---:|" + "---:|" * (len(SETTINGS) - 1),
    ]
    worst = 0.0
    for r in results:
        ratios = [r[s] / r["reference"] for s in SETTINGS[1:]]
        worst = max(worst, *ratios)
        lines.append(f"| {r['fw']} | {r['op']} | {r['method']} | {r['n']} | {r['reference']:.3f} | "
                     + " | ".join(f"{q:.2f}" for q in ratios) + " |")
    lines += ["", f"Worst ratio: {worst:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker)
    t0 = time.perf_counter()
    results = run(args)
    text = report(results, args) + f"Run time: {time.perf_counter() - t0:.0f} s.\n"
    print(text)
    if args.output:
        with open(args.output + ".md", "w") as f:
            f.write(text)
        with open(args.output + ".json", "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
