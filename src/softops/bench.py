"""``python -m softops bench learn TASK``: learning benchmarks that anyone can
rerun offline, on PyTorch.

``quartiles``: seed 001 (``softops._seed001``) at N up to 10^5 for every
relaxation x sorting method: the final and best *hard* objective after a
fixed Adam budget, the wall time, and the peak resident memory of a fresh
process per run (``--quick``: small N, a few steps, in this process, no
memory figure; what the test suite runs).  Results: a markdown table on
stdout and in ``--out``, the same as JSON, and a plot of time against N.
"""

from __future__ import annotations

import json
import os
import sys
import time

TASKS = ("quartiles",)


def _peak_rss_mb() -> float:
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024.0


def _quartiles_one(N, select, label, steps, measure):
    """One run: a result row (in a fresh process when ``measure``)."""
    import torch

    import softops
    from softops import _seed001

    torch.manual_seed(0)
    methods = {lbl: m for lbl, m in _seed001.method_configs()}
    A, B, theta = (torch.as_tensor(a) for a in _seed001.make_problem(N))
    k = _seed001.quartile_size(N)
    losses = []
    curve, seconds = _seed001.optimise(torch, softops, select, methods[label], A, B, theta, k, steps,
                                       tau=3.0, losses=losses)
    return {"N": N, "select": select, "method": label, "steps": steps, "start": curve[0], "final": curve[-1],
            "best": min(curve), "seconds": seconds, "soft_loss_start": losses[0], "soft_loss_end": losses[-1],
            "peak_rss_mb": _peak_rss_mb() if measure else None}


def learn_quartiles(sizes, steps, methods, out, quick, progress=True):
    from tqdm import tqdm

    from softops import _seed001

    jobs, skipped = [], []
    for N in sizes:
        for select in _seed001.SELECTS:
            for label, _, why in _seed001.methods_for(select, N):
                if methods and label not in methods:
                    continue
                (skipped if why else jobs).append((N, select, label, why))
    rows = []
    pool = None
    if not quick:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   max_tasks_per_child=1)
    try:
        for N, select, label, _ in tqdm(jobs, desc="quartiles", disable=not progress, file=sys.stderr):
            if pool is None:
                rows.append(_quartiles_one(N, select, label, steps, False))
            else:
                rows.append(pool.submit(_quartiles_one, N, select, label, steps, True).result())
    finally:
        if pool is not None:
            pool.shutdown()
    lines = [f"seed 001 quartiles: Adam (lr 0.05) for {steps} steps, temperature Relative(3); "
             "hard f = mean(A_low) - mean(A_high) (lower is better)", "",
             "| N | select | method | hard f start | hard f end | best | time (s) | peak RSS (MB) |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        rss = "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}"
        lines.append(f"| {r['N']} | {r['select']} | {r['method']} | {r['start']:+.4f} | {r['final']:+.4f} | "
                     f"{r['best']:+.4f} | {r['seconds']:.2f} | {rss} |")
    if skipped:
        lines.append("")
        lines.append("skipped: " + "; ".join(f"N = {N} {select} {label} ({why})" for N, select, label, why in skipped))
    table = "\n".join(lines)
    print(table)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "quartiles.json"), "w") as f:
        json.dump({"steps": steps, "sizes": list(sizes), "rows": rows,
                   "skipped": [list(s) for s in skipped]}, f, indent=1)
    with open(os.path.join(out, "quartiles.md"), "w") as f:
        f.write(table + "\n")
    paths = [os.path.join(out, "quartiles.json"), os.path.join(out, "quartiles.md")]
    from softops.demo import pyplot

    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(8, 5))
        for key in sorted({(r["select"], r["method"]) for r in rows}):
            mine = [r for r in rows if (r["select"], r["method"]) == key]
            ax.loglog([r["N"] for r in mine], [r["seconds"] for r in mine], "o-", label=" / ".join(key))
        ax.set_xlabel("N")
        ax.set_ylabel(f"seconds for {steps} Adam steps")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        paths.append(os.path.join(out, "quartiles.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    print("written: " + ", ".join(paths))
    return rows


def add_parser(commands):
    bench = commands.add_parser("bench", help="learning benchmarks (python -m softops bench learn quartiles)")
    kinds = bench.add_subparsers(dest="kind", required=True)
    learn = kinds.add_parser("learn", help="train through the relaxations and report the hard objective")
    learn.add_argument("task", choices=TASKS, help="the benchmark")
    learn.add_argument("--quick", action="store_true", help="a tiny version (what the test suite runs)")
    learn.add_argument("--sizes", default=None, help="comma-separated N (each >= 2)")
    learn.add_argument("--steps", type=int, default=None, help="Adam steps per run")
    learn.add_argument("--methods", default=None, help="comma-separated sorting methods (default: all)")
    learn.add_argument("--out", default="softops-bench", help="folder for the results (default ./softops-bench/)")
    learn.add_argument("--no-progress", action="store_true", help="no progress bar")
    return bench


def main(args, parser) -> int:
    from softops._seed001 import method_configs

    quick = args.quick
    try:
        sizes = ((10, 100) if quick else (10, 1000, 10_000, 100_000)) if args.sizes is None else tuple(
            int(n) for n in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if any(n < 2 for n in sizes):
        parser.error(f"every N in --sizes must be at least 2 (a quartile of one entry is the entry), got {args.sizes}")
    steps = (5 if quick else 100) if args.steps is None else args.steps
    if steps < 1:
        parser.error(f"--steps must be at least 1, got {steps}")
    known = [label for label, _ in method_configs()]
    methods = None if args.methods is None else args.methods.split(",")
    if methods and any(m not in known for m in methods):
        bad = next(m for m in methods if m not in known)
        parser.error(f"unknown method {bad!r}; choose from {', '.join(known)}")
    try:
        import torch  # noqa: F401
    except ImportError:
        parser.error("the learning benchmarks run on PyTorch: pip install 'softops[torch]'")
    start = time.perf_counter()
    learn_quartiles(sizes, steps, methods, args.out, quick, progress=not args.no_progress)
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0
