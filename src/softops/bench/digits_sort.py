"""``python -m softops bench learn digits-sort``: the ranking-supervision
benchmark of NeuralSort (Grover et al., ICLR 2019) and diffsort (Petersen et
al., ICML 2021; ICLR 2022), rebuilt on scikit-learn's 8x8 digits.

Each item is a ``d``-digit number drawn as digit images side by side
(``softops.bench.digits``); a small CNN maps each item to one score; the
only supervision is the true order of each set of ``n`` items.  Every
contender trains the same network with the same optimiser, step budget and
data stream (per seed), through its own relaxation with its paper's loss:

- ``perm-ce``: cross-entropy of each row of the relaxed permutation matrix
  ``P`` (``P[s, j]``: weight of item ``j`` at sorted slot ``s``) against the
  true one, ``-mean_s log P[s, sigma(s)]`` (Grover et al. 2019, eq. 9;
  SoftSort, Prillo & Eisenschlos 2020; Sinkhorn sorting, Cuturi et al. 2019);
- ``perm-bce``: binary cross-entropy of every entry of ``P`` against the
  true permutation matrix (Petersen et al. 2021, section 5);
- ``rank-mse``: squared error of the soft ranks against the true ranks
  (Blondel et al., ICML 2020, the soft-rank regression of section 6), for the
  methods that give ranks without a permutation matrix.

Reported on held-out sets (test digit images, never seen in training):
exact match (the whole order right) and element-wise accuracy (the share
of items at their right slot), mean and standard deviation over seeds.
The temperature is searched per contender and ``n`` over its default times
(0.1, 1, 10) on the validation split with seed 0; ``Relative(tau)`` runs
at one fixed ``tau`` without any search."""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

from softops.bench import digits as _digits
from softops.bench._common import BenchError, Training, mean_sd, run_jobs, versions, write_results

GRID = (0.1, 1.0, 10.0)  # multiples of each contender's default temperature
PAPER_LOSS = {"network": "perm-bce"}  # softops methods whose paper used another loss than their kind's


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str  # softops method label, or the peer's name
    loss: str  # "perm-ce", "perm-bce" or "rank-mse"
    default_temperature: float
    peer: str | None = None  # the peer's import name; None for softops
    note: str = ""  # how the peer is called


def _softops_contenders():
    from softops._seed001 import method_configs
    from softops.sort import resolve_method

    out = []
    for label, method in method_configs():
        matrix = hasattr(resolve_method(method), "permutation_rows")
        out.append(Contender(label, PAPER_LOSS.get(label, "perm-ce" if matrix else "rank-mse"), 1.0))
    return out


PEERS = (
    Contender("torchsort", "rank-mse", 1.0, "torchsort",
              "torchsort.soft_rank(s, regularization_strength=T) (l2)"),
    Contender("diffsort", "perm-bce", 0.1, "diffsort",
              "diffsort.DiffSortNet('odd_even', n, steepness=1/T)(s)[1] (transposed)"),
    Contender("softtorch", "perm-ce", 0.1, "softtorch",
              "softtorch.argsort(s, dim=-1, softness=T) (neuralsort, smooth, standardize)"),
)
PEER_INSTALL = {
    "torchsort": "pip install --no-build-isolation torchsort (it compiles; hide nvcc for a CPU build)",
    "diffsort": "pip install 'softops[bench]'",
    "softtorch": "pip install --no-deps --ignore-requires-python softtorch pot torchopt",
}


def contenders():
    """Every softops sorting method (from the registry, the permutahedron in
    both regularisations) and the peers, installed or not."""
    return _softops_contenders() + list(PEERS)


def installed(contender) -> bool:
    if contender.peer is None:
        return True
    import importlib.util

    if importlib.util.find_spec(contender.peer) is None:
        return False
    try:
        __import__(contender.peer)
    except Exception:  # installed without its dependencies
        return False
    return True


@functools.lru_cache(maxsize=None)
def _diffsort_net(n, steepness):
    import diffsort

    return diffsort.DiffSortNet("odd_even", n, steepness=steepness)


def _relaxed(torch, contender, scores, temperature):
    """The contender's relaxation of the ascending order of ``scores``
    (batch, n): ``P`` (batch, n, n) for the permutation losses, soft ranks
    (1 .. n) for ``rank-mse``."""
    import softops

    name = contender.name
    if contender.peer is None:
        from softops._seed001 import method_configs

        method = dict(method_configs())[name]
        if contender.loss == "rank-mse":
            return softops.soft_rank(scores, temperature=temperature, method=method)
        return softops.soft_permutation(scores, temperature=temperature, method=method)
    if name == "torchsort":
        import torchsort

        return torchsort.soft_rank(scores, regularization_strength=temperature)
    if name == "diffsort":
        return _diffsort_net(scores.shape[-1], 1.0 / temperature)(scores)[1].transpose(-2, -1)
    if name == "softtorch":
        import softtorch

        return softtorch.argsort(scores, dim=-1, softness=temperature)
    raise ValueError(name)


def _loss(torch, kind, relaxed, order):
    """The paper's loss of ``relaxed`` against the true ascending ``order``
    (batch, n) (``order[b, s]``: the item at slot ``s``)."""
    if kind == "rank-mse":
        ranks = torch.argsort(order, dim=-1).to(relaxed.dtype) + 1.0
        return ((relaxed - ranks) ** 2).mean()
    if kind == "perm-ce":
        p = torch.take_along_dim(relaxed, order[..., None], dim=-1)[..., 0]
        return -torch.log(p.clamp_min(1e-9)).mean()
    if kind == "perm-bce":
        target = torch.nn.functional.one_hot(order, relaxed.shape[-1]).to(relaxed.dtype)
        return torch.nn.functional.binary_cross_entropy(relaxed.clamp(0.0, 1.0), target)
    raise ValueError(kind)


@dataclasses.dataclass(frozen=True)
class Job:
    contender: Contender
    n: int
    temperature: float | None  # None: Relative(tau)
    tau: float
    seed: int
    steps: int
    images: int  # images per step (sets = images // n, at least 2)
    digits: int
    eval_sets: int
    lr: float


def _accuracy(torch, model, images, values, digits):
    with torch.no_grad():
        count, n = values.shape
        scores = model(torch.from_numpy(images).reshape(count * n, 1, 8, 8 * digits)).reshape(count, n)
    right = torch.argsort(scores, dim=-1).numpy() == np.argsort(values, axis=-1)
    return float(right.all(axis=-1).mean()), float(right.mean())


@functools.lru_cache(maxsize=8)
def _eval_sets(split, count, n, digits):
    # The same held-out sets for every contender and seed.
    return _digits.numbers(np.random.default_rng(10_000 + 97 * n + digits), split, count, n, digits)


def train(job):
    """Train one network through one relaxation; its accuracies on the
    validation and test sets, the loss at the start and the end, the time."""
    import torch

    import softops

    torch.manual_seed(job.seed)
    rng = np.random.default_rng([job.seed, job.n, job.digits])  # the data stream: one per seed and n
    model = _digits.cnn(torch, 8 * job.digits, 1)
    training = Training(torch, model, job.lr, job.steps)
    temperature = softops.Relative(job.tau) if job.temperature is None else job.temperature
    sets = max(2, job.images // job.n)
    start = time.perf_counter()
    for _ in range(job.steps):
        images, values = _digits.numbers(rng, "train", sets, job.n, job.digits)
        scores = model(torch.from_numpy(images).reshape(sets * job.n, 1, 8, 8 * job.digits)).reshape(sets, job.n)
        order = torch.from_numpy(np.argsort(values, axis=-1))
        training.step(_loss(torch, job.contender.loss, _relaxed(torch, job.contender, scores, temperature), order))
    seconds = time.perf_counter() - start
    model.eval()
    result = {"method": job.contender.name, "n": job.n, "seed": job.seed, "temperature": job.temperature,
              "tau": None if job.temperature is not None else job.tau, "seconds": seconds,
              "nonfinite_steps": training.nonfinite}
    for split in ("val", "test"):
        exact, elementwise = _accuracy(torch, model, *_eval_sets(split, job.eval_sets, job.n, job.digits), job.digits)
        result[f"{split}_exact"], result[f"{split}_elementwise"] = exact, elementwise
    result["loss_start"], result["loss_end"] = training.ends()
    return result


def run(sizes, steps, methods, seeds, tau, workers, out, quick, digits=2, images=96, eval_sets=1000,
        lr=1e-2, progress=True):
    """The whole benchmark; returns the JSON payload."""
    for n in sizes:
        if n > 10**digits:
            raise BenchError(f"n = {n} distinct numbers need more than {digits} digits")
    everyone = contenders()
    chosen = [c for c in everyone if methods is None or c.name in methods]
    missing = [c for c in chosen if not installed(c)]
    if methods is not None and missing:
        c = missing[0]
        raise BenchError(f"peer {c.name!r} is not installed: {PEER_INSTALL[c.name]}")
    chosen = [c for c in chosen if c not in missing]
    grid = (1.0,) if quick else GRID
    base = dict(steps=steps, images=images, digits=digits, eval_sets=eval_sets, lr=lr, tau=tau)
    search = [Job(c, n, c.default_temperature * g, seed=0, **base) for c in chosen for n in sizes for g in grid]
    relative = [Job(c, n, None, seed=s, **base) for c in chosen if c.peer is None for n in sizes
                for s in range(seeds)]
    first = run_jobs(train, search + relative, workers, "digits-sort", progress)
    searched, relative_rows = first[: len(search)], first[len(search):]
    best = {}
    for job, row in zip(search, searched):
        key = (job.contender.name, job.n)
        if key not in best or (row["val_exact"], row["val_elementwise"]) > (best[key][1]["val_exact"],
                                                                            best[key][1]["val_elementwise"]):
            best[key] = (job, row)
    more = [dataclasses.replace(job, seed=s) for job, _ in best.values() for s in range(1, seeds)]
    final = [row for _, row in best.values()] + run_jobs(train, more, workers, "digits-sort seeds", progress)
    payload = {
        "task": "digits-sort", "versions": versions("softops", "torch", "numpy", "scikit-learn", "torchsort",
                                                   "diffsort", "softtorch"), "sizes": list(sizes), "steps": steps, "seeds": seeds, "tau": tau, "digits": digits,
        "images_per_step": images, "eval_sets": eval_sets, "lr": lr, "grid": list(grid),
        "contenders": [dataclasses.asdict(c) for c in chosen],
        "not_installed": [{"name": c.name, "install": PEER_INSTALL[c.name]} for c in missing],
        "search": searched, "final": final, "relative": relative_rows,
    }
    write_results(out, "digits_sort", table(payload), payload, functools.partial(plot, payload))
    return payload


def _summary(rows, metric):
    """{(method, n): (mean, sd, temperature, seconds)} over seeds."""
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["n"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        mean, sd = mean_sd(r[f"test_{metric}"] for r in rs)
        out[key] = (mean, sd, rs[0]["temperature"], float(np.mean([r["seconds"] for r in rs])),
                    sum(r["nonfinite_steps"] for r in rs))
    return out


def _cell(mean, sd, mark):
    return f"{mark}{mean:.3f} ± {sd:.3f}{mark}" if mark == "**" else f"{mean:.3f} ± {sd:.3f}{mark}"


def table(payload):
    sizes = payload["sizes"]
    names = [c["name"] for c in payload["contenders"]]
    losses = {c["name"]: c["loss"] for c in payload["contenders"]}
    lines = [f"digits-sort: {payload['digits']}-digit numbers of scikit-learn's 8x8 digits, "
             f"{payload['steps']} Adam steps (one-cycle, peak lr {payload['lr']}) of {payload['images_per_step']} "
             f"images, {payload['seeds']} seeds; accuracy on {payload['eval_sets']} held-out sets per n "
             "(mean ± sd over seeds). Temperature: searched on the validation split over each "
             f"contender's default x {', '.join(f'{g:g}' for g in payload['grid'])} (chosen T in brackets). "
             + ("**bold**: the best mean; `=`: within one standard deviation of the best (the larger of the "
                "two sds), a tie." if payload["seeds"] > 1 else "**bold**: the best mean (one seed: no standard "
                                                                "deviation, so no tie test)."),
             "Seed 0 of each row is the run chosen on the validation split, reported on the test sets."]
    for metric, title in (("exact", "exact match (whole order right)"),
                          ("elementwise", "element-wise accuracy (items at their right slot)")):
        summary = _summary(payload["final"], metric)
        lines += ["", f"### {title}", "",
                  "| method | loss | " + " | ".join(f"n = {n}" for n in sizes) + " | s / run (largest n) |",
                  "|---|---|" + "---:|" * len(sizes) + "---:|"]
        for name in names:
            cells = []
            for n in sizes:
                if (name, n) not in summary:
                    cells.append("-")
                    continue
                mean, sd, temperature, _, nonfinite = summary[(name, n)]
                top = max((v for (m, nn), v in summary.items() if nn == n), key=lambda v: v[0])
                mark = "**" if mean == top[0] else ("=" if top[0] - mean <= max(sd, top[1]) else "")
                bad = f", {nonfinite} non-finite steps" if nonfinite else ""
                cells.append(f"{_cell(mean, sd, mark)} (T {temperature:g}{bad})")
            last = summary.get((name, sizes[-1]))
            lines.append(f"| {name} | {losses[name]} | " + " | ".join(cells) +
                         f" | {'-' if last is None else f'{last[3]:.1f}'} |")
    if payload["relative"]:
        rel = _summary(payload["relative"], "exact")
        searched = _summary(payload["final"], "exact")
        lines += ["", f"### Relative({payload['tau']:g}), no search: exact match, and minus the searched best",
                  "", "| method | " + " | ".join(f"n = {n}" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
        for name in names:
            if not any((name, n) in rel for n in sizes):
                continue
            cells = []
            for n in sizes:
                mean, sd = rel[(name, n)][:2]
                delta = mean - searched[(name, n)][0] if (name, n) in searched else float("nan")
                cells.append(f"{mean:.3f} ± {sd:.3f} ({delta:+.3f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if payload["not_installed"]:
        lines += ["", "not installed (skipped): " + "; ".join(f"{m['name']} ({m['install']})"
                                                              for m in payload["not_installed"])]
    return "\n".join(lines)


def plot(payload, plt, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    sizes = payload["sizes"]
    for ax, metric, title in ((axes[0], "exact", "exact match"), (axes[1], "elementwise", "element-wise accuracy")):
        summary = _summary(payload["final"], metric)
        rel = _summary(payload["relative"], metric)
        for c in payload["contenders"]:
            pts = [(n, *summary[(c["name"], n)][:2]) for n in sizes if (c["name"], n) in summary]
            if pts:
                line = ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                                   capsize=3, label=c["name"] + ("" if c["peer"] is None else " (peer)"),
                                   linestyle="-" if c["peer"] is None else ":")
                rpts = [(n, rel[(c["name"], n)][0]) for n in sizes if (c["name"], n) in rel]
                if rpts:
                    ax.plot([p[0] for p in rpts], [p[1] for p in rpts], "x--", color=line[0].get_color(), alpha=0.5)
        ax.set_xlabel("n (items per set)")
        ax.set_ylabel(title)
        ax.set_title(f"{title} on held-out sets (x: Relative({payload['tau']:g}), no search)", fontsize=9)
        ax.set_xticks(sizes)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check(methods, sizes, **_):
    if max(sizes) > 100:
        raise BenchError(f"digits-sort: n must be at most 100 (sets of distinct two-digit numbers), got {max(sizes)}")
    names = [c.name for c in contenders()]
    for m in methods or ():
        if m not in names:
            raise BenchError(f"digits-sort: unknown method {m!r}; choose from {', '.join(names)}")
        c = next(c for c in contenders() if c.name == m)
        if not installed(c):
            raise BenchError(f"digits-sort: peer {m!r} is not installed: {PEER_INSTALL[m]}")
    from softops.bench.digits import load

    load()  # scikit-learn present?


def main(sizes, steps, methods, seeds, tau, workers, out, quick, progress):
    if quick:
        return run(sizes, steps, methods, seeds, tau, workers, out, quick, images=48, eval_sets=100,
                   progress=progress)
    return run(sizes, steps, methods, seeds, tau, workers, out, quick, progress=progress)
