"""``python -m softops bench learn keypoints``: locate a blob in synthetic
noisy images with a small fully convolutional net trained through the N-D
soft-argmax (``softops.soft_argmax(heatmap, axis=(-2, -1))``, the DSNT
idea of Nibali et al. 2018), one run per select method.

Images (``S x S``, ``--sizes`` sets S): a Gaussian blob of peak 1 and
width sigma ~ U(1.5, 3) pixels centred uniformly at sub-pixel positions at
least 2 pixels from the border, on a random linear ramp of height up to 1
(so the brightest pixel is often not the blob) plus white noise of sd 0.3.
The net (three 5x5 convolutions) outputs one heatmap per image; its
location is the soft-argmax in pixel units, trained with the squared
error to the true centre.

Baselines: kornia's ``spatial_soft_argmax2d`` (pixel coordinates) on the
same net where installed; the usual heatmap classification (softmax
cross-entropy on the pixel nearest the centre) decoded with a hard argmax;
and the hard argmax trained by autodiff, which has no gradient at all, so
its row is the untrained net.  Reported: mean pixel error on held-out
images (a fresh random stream), mean ± sd over seeds."""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

from softops.bench._common import BenchError, Training, by_seed, run_jobs, versions, write_results

PEERS = {"kornia": "pip install 'softops[bench]'"}
BASELINES = ("heatmap-ce + argmax", "hard argmax (autodiff)")


def contenders():
    """(name, kind): every select method of ``softops.argmax_weights``
    (``softops.select.WEIGHT_METHODS``), kornia, the two baselines."""
    from softops.select import WEIGHT_METHODS

    return [(m, "softops") for m in WEIGHT_METHODS] + [("kornia", "peer")] + [(b, "baseline") for b in BASELINES]


def installed(name):
    if name != "kornia":
        return True
    try:
        import kornia  # noqa: F401
    except Exception:
        return False
    return True


def images(rng, count, side):
    """``count`` images ``(count, 1, side, side)`` float32 and their blob
    centres ``(count, 2)`` as (row, column) in pixels."""
    centre = rng.uniform(2.0, side - 3.0, size=(count, 2))
    sigma = rng.uniform(1.5, 3.0, size=(count, 1, 1))
    grid = np.arange(side, dtype=np.float64)
    rows, cols = grid[None, :, None], grid[None, None, :]
    blob = np.exp(-((rows - centre[:, 0, None, None]) ** 2 + (cols - centre[:, 1, None, None]) ** 2)
                  / (2 * sigma**2))
    slope = rng.uniform(-1.0, 1.0, size=(count, 2)) / side
    ramp = slope[:, 0, None, None] * rows + slope[:, 1, None, None] * cols
    ramp -= ramp.min(axis=(1, 2), keepdims=True)
    noisy = blob + ramp + rng.normal(0.0, 0.3, size=blob.shape)
    return noisy[:, None].astype(np.float32), centre.astype(np.float32)


def net(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.Conv2d(16, 16, 5, padding=2), nn.ReLU(),
                         nn.Conv2d(16, 1, 5, padding=2))


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    side: int
    seed: int
    steps: int
    batch: int
    eval_images: int
    temperature: float
    lr: float


def _locate(torch, name, heat, temperature, key):
    """(batch, 2) locations (row, column) in pixels from heatmaps (batch, 1, S, S)."""
    import softops

    if name == "kornia":
        import kornia

        xy = kornia.geometry.subpix.spatial_soft_argmax2d(heat, torch.tensor(temperature),
                                                           normalized_coordinates=False)[:, 0]
        return xy.flip(-1)  # kornia gives (x, y) = (column, row)
    if name in BASELINES:
        side = heat.shape[-1]
        flat = torch.argmax(heat.reshape(heat.shape[0], -1), dim=-1)
        return torch.stack([flat // side, flat % side], dim=-1).to(heat.dtype)
    extra = {"key": key} if name == "gumbel" else {}
    return softops.soft_argmax(heat, axis=(-2, -1), temperature=temperature, method=name, **extra)[:, 0]


def train(job):
    import torch

    torch.manual_seed(job.seed)
    rng = np.random.default_rng([job.seed, job.side])
    model = net(torch)
    training = Training(torch, model, job.lr, job.steps)
    start = time.perf_counter()
    trains = job.name != "hard argmax (autodiff)"
    for step in range(job.steps if trains else 0):
        x, centre = (torch.from_numpy(a) for a in images(rng, job.batch, job.side))
        heat = model(x)
        if job.name == "heatmap-ce + argmax":
            pixel = centre.round().long().clamp(0, job.side - 1)
            target = pixel[:, 0] * job.side + pixel[:, 1]
            loss = torch.nn.functional.cross_entropy(heat.reshape(job.batch, -1), target)
        else:
            loc = _locate(torch, job.name, heat, job.temperature, key=1_000_003 * job.seed + step)
            loss = ((loc - centre) ** 2).sum(-1).mean()
        training.step(loss)
    seconds = time.perf_counter() - start
    if not trains:  # what autodiff gives through torch.argmax: nothing to step with
        x, centre = (torch.from_numpy(a) for a in images(rng, job.batch, job.side))
        loc = _locate(torch, job.name, model(x), job.temperature, key=0)
        training.losses = [float(((loc - centre) ** 2).sum(-1).mean())]
        has_grad = loc.requires_grad
    x, centre = (torch.from_numpy(a) for a in images(np.random.default_rng([10_000, job.side]), job.eval_images,
                                                     job.side))
    with torch.no_grad():
        loc = _locate(torch, job.name, model(x), job.temperature, key=12345)
    error = float(torch.linalg.vector_norm(loc - centre, dim=-1).mean())
    start_loss, end_loss = training.ends()
    return {"method": job.name, "side": job.side, "seed": job.seed, "seconds": seconds, "pixel_error": error,
            "loss_start": start_loss, "loss_end": end_loss, "nonfinite_steps": training.nonfinite,
            "has_gradient": True if trains else has_grad}


def check(methods, **_):
    names = [n for n, _ in contenders()]
    for m in methods or ():
        if m not in names:
            raise BenchError(f"keypoints: unknown method {m!r}; choose from {', '.join(names)}")
        if not installed(m):
            raise BenchError(f"keypoints: peer {m!r} is not installed: {PEERS[m]}")


def main(sizes, steps, methods, seeds, workers, out, quick, progress, **_):
    chosen = [n for n, _ in contenders() if (methods is None or n in methods) and installed(n)]
    missing = [n for n, _ in contenders() if (methods is None or n in methods) and not installed(n)]
    batch, eval_images = (8, 64) if quick else (32, 500)
    jobs = [Job(n, side, s, steps, batch, eval_images, 1.0, 3e-3) for side in sizes for n in chosen
            for s in range(seeds)]
    rows = run_jobs(train, jobs, workers, "keypoints", progress)
    payload = {"task": "keypoints", "versions": versions("softops", "torch", "kornia"), "sizes": list(sizes), "steps": steps, "seeds": seeds, "batch": batch,
               "eval_images": eval_images, "temperature": 1.0, "lr": 3e-3, "rows": rows,
               "not_installed": {m: PEERS[m] for m in missing}}
    write_results(out, "keypoints", table(payload), payload, functools.partial(plot, payload))
    return payload


def _summary(rows):
    return by_seed(rows, "side", "pixel_error")


def table(payload):
    summary = _summary(payload["rows"])
    names = list(dict.fromkeys(r["method"] for r in payload["rows"]))
    kinds = dict(contenders())
    lines = [f"keypoints: blob location in noisy S x S images, {payload['steps']} Adam steps (one-cycle, peak lr "
             f"{payload['lr']}) of {payload['batch']} images, temperature {payload['temperature']:g}, "
             f"{payload['seeds']} seeds; mean pixel error on {payload['eval_images']} held-out images "
             "(mean ± sd over seeds; lower is better)", "",
             "| method | kind | " + " | ".join(f"S = {s}" for s in payload["sizes"]) + " | s / run |",
             "|---|---|" + "---:|" * len(payload["sizes"]) + "---:|"]
    for name in names:
        cells = [f"{summary[(name, s)][0]:.2f} ± {summary[(name, s)][1]:.2f}" for s in payload["sizes"]]
        lines.append(f"| {name} | {kinds[name]} | " + " | ".join(cells) +
                     f" | {summary[(name, payload['sizes'][-1])][2]:.1f} |")
    lines += ["", "hard argmax (autodiff): torch.argmax is integer-valued, so the loss has no gradient and the net "
              "never moves; its row is the untrained net."]
    if payload["not_installed"]:
        lines += ["not installed (skipped): " + "; ".join(f"{m} ({how})" for m, how in payload["not_installed"].items())]
    return "\n".join(lines)


def plot(payload, plt, path):
    summary = _summary(payload["rows"])
    names = list(dict.fromkeys(r["method"] for r in payload["rows"]))
    side = payload["sizes"][-1]
    fig, ax = plt.subplots(figsize=(7, 4))
    means = [summary[(n, side)][0] for n in names]
    sds = [summary[(n, side)][1] for n in names]
    ax.barh(range(len(names)), means, xerr=sds, color=["C0" if dict(contenders())[n] == "softops" else "C7"
                                                        for n in names])
    ax.set_yticks(range(len(names)), names)
    ax.set_xscale("log")
    ax.set_xlabel(f"mean pixel error on held-out {side} x {side} images (log scale; lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
