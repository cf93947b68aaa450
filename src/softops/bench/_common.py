"""Plumbing the benchmark tasks share: one-line errors for missing optional
dependencies, a pool of single-threaded worker processes, mean and standard
deviation, and the markdown + JSON + plot outputs."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys


class BenchError(Exception):
    """A bad option or a missing dependency: the command prints the message
    on one line and exits with status 2."""


def require(module: str, extra: str, why: str):
    """Import ``module`` or raise ``BenchError`` naming what installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BenchError(f"{why} needs {module.split('.')[0]}: pip install 'softops[{extra}]'") from None


def mean_sd(values):
    """(mean, sample standard deviation; 0 for one value) of ``values``."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def versions(*names):
    """``{distribution: version}`` of those installed (for the JSON record)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def by_seed(rows, size, metric):
    """``{(method, size): (mean, sd, mean seconds)}`` of ``metric`` over the
    rows (seeds) that share a method and a size."""
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r[size]), []).append(r)
    return {key: (*mean_sd(r[metric] for r in rs), sum(r["seconds"] for r in rs) / len(rs))
            for key, rs in groups.items()}


def _one_thread():
    """Worker initialiser: one thread per process for every pool (PyTorch,
    OpenMP, numba), so that ``workers`` processes share the cores evenly."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["NUMBA_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    import softops

    softops.set_num_threads(1)


def run_jobs(fn, jobs, workers, desc, progress=True):
    """``[fn(job) for job in jobs]``: in this process when ``workers`` is 0,
    else in ``workers`` fresh single-threaded processes (spawned, so no
    framework state is forked).  A tqdm bar on stderr counts finished jobs."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, file=sys.stderr)
    try:
        if workers == 0 or len(jobs) <= 1:
            out = []
            for job in jobs:
                out.append(fn(job))
                bar.update()
            return out
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as pool:
            futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
            out = [None] * len(jobs)
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                bar.update()
            return out
    finally:
        bar.close()


def write_results(out, name, table, payload, plot=None):
    """Print ``table`` and write ``{name}.md``, ``{name}.json`` and, with
    matplotlib, ``{name}.png`` (``plot(plt, path)``) under ``out``; print and
    return the paths."""
    print(table)
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f"{name}.md"), os.path.join(out, f"{name}.json")]
    with open(paths[0], "w") as f:
        f.write(table + "\n")
    with open(paths[1], "w") as f:
        json.dump(payload, f, indent=1)
    if plot is not None:
        from softops.demo import pyplot

        plt = pyplot()
        if plt is not None:
            paths.append(os.path.join(out, f"{name}.png"))
            plot(plt, paths[-1])
    print("written: " + ", ".join(paths))
    return paths


class Training:
    """The optimiser every task and contender trains with: Adam under a
    one-cycle schedule peaking at ``lr`` over ``steps`` (Smith & Topin 2019,
    ``torch.optim.lr_scheduler.OneCycleLR``).  ``step(loss)`` records the
    loss and skips (and counts) a non-finite one."""

    def __init__(self, torch, model, lr, steps):
        self.torch = torch
        self.optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimiser, max_lr=lr, total_steps=steps)
        self.losses, self.nonfinite = [], 0

    def step(self, loss):
        self.optimiser.zero_grad()
        if bool(self.torch.isfinite(loss)):
            loss.backward()
            self.optimiser.step()
        else:
            self.nonfinite += 1
        self.schedule.step()
        self.losses.append(float(loss.detach()))

    def ends(self):
        """(mean of the first tenth, mean of the last tenth) of the finite losses."""
        finite = [v for v in self.losses if math.isfinite(v)]
        if not finite:
            return math.nan, math.nan
        k = max(1, len(finite) // 10)
        return sum(finite[:k]) / k, sum(finite[-k:]) / k
