"""``python -m softops bench learn quartiles``: seed 001 (``softops._seed001``) at N up to 10^5 for every
relaxation x sorting method: the final and best *hard* objective after a
fixed Adam budget, the wall time, and the peak resident memory of a fresh
process per run (``--quick``: small N, a few steps, in this process, no
memory figure; what the test suite runs).  Results: a markdown table on
stdout and in ``--out``, the same as JSON, and a plot of time against N.
"""

from __future__ import annotations

import sys

from softops.bench._common import BenchError, write_results

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

    def plot(plt, path):
        fig, ax = plt.subplots(figsize=(8, 5))
        for key in sorted({(r["select"], r["method"]) for r in rows}):
            mine = [r for r in rows if (r["select"], r["method"]) == key]
            ax.loglog([r["N"] for r in mine], [r["seconds"] for r in mine], "o-", label=" / ".join(key))
        ax.set_xlabel("N")
        ax.set_ylabel(f"seconds for {steps} Adam steps")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    write_results(out, "quartiles", "\n".join(lines), {"steps": steps, "sizes": list(sizes), "rows": rows,
                                                        "skipped": [list(s) for s in skipped]}, plot)
    return rows


def check(methods, **_):
    from softops._seed001 import method_configs

    known = [label for label, _ in method_configs()]
    if methods and any(m not in known for m in methods):
        bad = next(m for m in methods if m not in known)
        raise BenchError(f"quartiles: unknown method {bad!r}; choose from {', '.join(known)}")


def main(sizes, steps, methods, out, quick, progress, **_):
    learn_quartiles(sizes, steps, methods, out, quick, progress=progress)
