"""``python -m softops bench learn topk-classification``: top-k
classification learning (Petersen et al., "Differentiable Top-k
Classification Learning", ICML 2022) on scikit-learn's 8x8 digits, made a
100-class problem: each image is a two-digit number (two digit images side
by side, ``softops.bench.digits.numbers``; test images only from the test
digits), its class the number.  On the 10 single digits top-5 accuracy is 1
for every loss, which shows nothing.

The loss mixes the top-1 and the top-k term with ``P_K = (1/2, 1/2)`` as in
that paper's top-k cross-entropy: ``1/2 CE(logits, y) + 1/2 (-log m_y)``,
where ``m = soft_topk_mask(logits, k)`` is the relaxed membership of each
class in the top k (so ``m_y`` is the soft probability that the true class
is among the k best; the top-1 term is the softmax, the paper's
``top1_mode='sm'``).  Every softops sorting method with a top-k mask runs
it; plain cross-entropy is the baseline.  The same CNN, optimiser and
budget for all; top-1 and top-k accuracy on 2,000 held-out numbers, mean ±
sd over seeds."""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

from softops.bench import digits as _digits
from softops.bench._common import BenchError, Training, by_seed, run_jobs, versions, write_results

BASELINE = "cross-entropy"
P_TOP1 = 0.5
DIGITS = 2  # classes: 10 ** DIGITS numbers
EVAL_IMAGES = 2000


def contenders():
    """Every sorting method whose top-k mask exists (``method_configs``),
    then the cross-entropy baseline."""
    import softops
    from softops._seed001 import method_configs

    out = []
    for label, method in method_configs():
        try:
            softops.soft_topk_mask(np.arange(4.0), 2, method=method)
        except ValueError:  # no top-k mask for this method
            continue
        out.append(label)
    return out + [BASELINE]


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    k: int
    seed: int
    steps: int
    batch: int
    temperature: float
    lr: float
    eval_images: int
    digits: int


def _batch(rng, split, count, digits):
    images, values = _digits.numbers(rng, split, count, 1, digits)
    return images, values[:, 0]


def _accuracy(torch, model, k, count, digits):
    images, y = _batch(np.random.default_rng(20_220), "test", count, digits)  # the same held-out numbers for all
    with torch.no_grad():
        logits = model(torch.from_numpy(images))
    top = torch.topk(logits, k, dim=-1).indices.numpy()
    return float((top[:, 0] == y).mean()), float((top == y[:, None]).any(-1).mean())


def train(job):
    import torch

    import softops
    from softops._seed001 import method_configs

    torch.manual_seed(job.seed)
    rng = np.random.default_rng([job.seed, job.k])
    model = _digits.cnn(torch, 8 * job.digits, 10**job.digits)
    training = Training(torch, model, job.lr, job.steps)
    method = dict(method_configs()).get(job.name)
    start = time.perf_counter()
    for _ in range(job.steps):
        images, labels = _batch(rng, "train", job.batch, job.digits)
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        if job.name != BASELINE:
            mask = softops.soft_topk_mask(logits, job.k, temperature=job.temperature, method=method)
            member = torch.take_along_dim(mask, y[:, None], dim=-1)[:, 0]
            loss = P_TOP1 * loss + (1 - P_TOP1) * -torch.log(member.clamp_min(1e-9)).mean()
        training.step(loss)
    seconds = time.perf_counter() - start
    model.eval()
    top1, topk = _accuracy(torch, model, job.k, job.eval_images, job.digits)
    start_loss, end_loss = training.ends()
    return {"method": job.name, "k": job.k, "seed": job.seed, "seconds": seconds, "top1": top1, "topk": topk,
            "loss_start": start_loss, "loss_end": end_loss, "nonfinite_steps": training.nonfinite}


def check(methods, sizes, **_):
    names = contenders()
    for m in methods or ():
        if m not in names:
            raise BenchError(f"topk-classification: unknown method {m!r}; choose from {', '.join(names)}")
    if any(k >= 10**DIGITS for k in sizes):
        raise BenchError(f"topk-classification: k must be below the {10**DIGITS} classes, got {max(sizes)}")
    _digits.load()


def main(sizes, steps, methods, seeds, workers, out, quick, progress, **_):
    chosen = [n for n in contenders() if methods is None or n in methods]
    # --quick: the 10 single digits (100 classes do not learn in a few steps)
    batch, eval_images, digits = (16, 200, 1) if quick else (64, EVAL_IMAGES, DIGITS)
    if any(k >= 10**digits for k in sizes):
        raise BenchError(f"topk-classification: k must be below the {10**digits} classes, got {max(sizes)}")
    jobs = [Job(n, k, s, steps, batch, 1.0, 3e-3, eval_images, digits) for k in sizes for n in chosen
            for s in range(seeds)]
    rows = run_jobs(train, jobs, workers, "topk-classification", progress)
    payload = {"task": "topk-classification", "versions": versions("softops", "torch", "scikit-learn"),
               "sizes": list(sizes), "steps": steps, "seeds": seeds, "batch": batch,
               "temperature": 1.0, "lr": 3e-3, "p_top1": P_TOP1, "classes": 10**digits, "test_images": eval_images,
               "rows": rows}
    write_results(out, "topk_classification", table(payload), payload, functools.partial(plot, payload))
    return payload


def _summary(rows, metric):
    return by_seed(rows, "k", metric)


def table(payload):
    names = list(dict.fromkeys(r["method"] for r in payload["rows"]))
    top1, topk = _summary(payload["rows"], "top1"), _summary(payload["rows"], "topk")
    lines = [f"topk-classification: {payload['classes']} classes ({len(str(payload['classes'] - 1))}-digit numbers "
             "of scikit-learn's digits), "
             f"{payload['steps']} Adam steps (one-cycle, peak lr "
             f"{payload['lr']}) of {payload['batch']} images, loss {payload['p_top1']:g} CE + "
             f"{1 - payload['p_top1']:g} top-k term at temperature {payload['temperature']:g}, {payload['seeds']} "
             f"seeds; accuracy on {payload['test_images']} held-out numbers (mean ± sd over seeds)", "",
             "| method | " + " | ".join(f"top-1 (k = {k}) | top-{k}" for k in payload["sizes"]) + " | s / run |",
             "|---|" + "---:|---:|" * len(payload["sizes"]) + "---:|"]
    for name in names:
        cells = [f"{top1[(name, k)][0]:.3f} ± {top1[(name, k)][1]:.3f} | {topk[(name, k)][0]:.3f} ± "
                 f"{topk[(name, k)][1]:.3f}" for k in payload["sizes"]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {top1[(name, payload['sizes'][-1])][2]:.1f} |")
    return "\n".join(lines)


def plot(payload, plt, path):
    names = list(dict.fromkeys(r["method"] for r in payload["rows"]))
    k = payload["sizes"][-1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in ((axes[0], "top1", "top-1 accuracy"), (axes[1], "topk", f"top-{k} accuracy")):
        summary = _summary(payload["rows"], metric)
        ax.barh(range(len(names)), [summary[(n, k)][0] for n in names], xerr=[summary[(n, k)][1] for n in names],
                color=["C7" if n == BASELINE else "C0" for n in names])
        ax.set_yticks(range(len(names)), names)
        lo = min(summary[(n, k)][0] for n in names)
        ax.set_xlim(max(0.0, lo - 0.05), 1.0)
        ax.set_xlabel(title + " on held-out numbers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
