"""``python -m softops demo``: seed 001 end to end (the quartile selection
that autodiff differentiates to zero, learnt through every relaxation), the
seeds' own numbers against softops', a printed tour of the operations with
values and gradients, and two plots, on PyTorch."""

from __future__ import annotations

import math


def _fmt(values, digits=4):
    flat = values.detach().reshape(-1).tolist() if hasattr(values, "detach") else list(values)
    # "+ 0.0" prints -0.0 as 0.0
    body = ", ".join(f"{v + 0.0:.{digits}f}" if math.isfinite(v) else str(v) for v in flat)
    return f"[{body}]"


def _item(tensor) -> float:
    return tensor.detach().item()


def _section(title):
    print()
    print(title)
    print("-" * len(title))


def tour_select(torch, softops):
    _section("1. argmax has no gradient; soft_argmax does")
    x = torch.tensor([1.0, 3.0, 2.5, 0.0], requires_grad=True)
    hard = torch.argmax(x)
    print(f"torch.argmax({_fmt(x, 1)}) = {int(hard)}  (integer tensor, no grad_fn: {hard.grad_fn})")
    for t in (1.0, 0.1, 0.01):
        index = softops.soft_argmax(x, temperature=t)
        (grad,) = torch.autograd.grad(index, x)
        print(f"soft_argmax(temperature={t:<4}) = {_item(index):.4f}   d index / d x = {_fmt(grad)}")

    _section("2. Relaxed one-hot of argmax at x = [-2, 0, 0.5]")
    x = torch.tensor([-2.0, 0.0, 0.5], dtype=torch.float64, requires_grad=True)
    for method in ("softmax", "sparsemax", "entmax15"):
        weights = softops.argmax_weights(x, method=method)
        print(f"{method:<10} weights = {_fmt(weights)}")
    jacobian = torch.autograd.functional.jacobian(
        lambda t: softops.argmax_weights(t, method="sparsemax"), x
    )
    print("sparsemax Jacobian  =", "; ".join(_fmt(row, 2) for row in jacobian))
    gumbel = softops.argmax_weights(x, method="gumbel", key=torch.Generator().manual_seed(0))
    sample = softops.argmax_weights(x, method="gumbel", key=0, hard=True)
    print(f"gumbel (key=seed 0)  = {_fmt(gumbel)}; hard sample = {_fmt(sample, 0)}")

    _section("3. Where the seed notebooks returned NaN")
    for values in ([8.0, 8.0, 8.0, 9.0], [-11.0, -12.0, -12.0, -12.0], [0.0, 0.0, 0.0, 0.0]):
        x = torch.tensor(values, requires_grad=True)
        index = softops.soft_argmax(x, temperature=1e-3)
        (grad,) = torch.autograd.grad(softops.soft_argmax(x), x)
        print(f"soft_argmax({_fmt(x, 0)}) = {_item(index):.4f}; gradient at T=1: {_fmt(grad)}")
    big = torch.tensor([1e30, -1e30, 3e29], requires_grad=True)
    index = softops.soft_argmax(big)
    (grad,) = torch.autograd.grad(index, big)
    print(f"float32 +-1e30: soft_argmax = {_item(index):.1f}, gradient finite: {bool(torch.isfinite(grad).all())}")
    masked = torch.tensor([-float("inf"), 2.0, -float("inf"), 1.0])
    print(f"-inf entries are masks: weights = {_fmt(softops.argmax_weights(masked))}")

    _section("4. Spatial soft-argmax of a heatmap (keypoint at row 3.3, column 5.7)")
    rows = torch.arange(8.0).reshape(8, 1)
    cols = torch.arange(10.0).reshape(1, 10)
    heat = -((rows - 3.3) ** 2 + (cols - 5.7) ** 2) / 2.0
    heat = heat.expand(2, 1, 8, 10).clone().requires_grad_(True)  # (batch, channel, H, W)
    coords = softops.soft_argmax(heat, axis=(-2, -1))
    print(f"soft_argmax(heat, axis=(-2, -1)): shape {tuple(coords.shape)}, (i, j) = {_fmt(coords[0, 0], 3)}")
    coords[0, 0, 1].backward()
    g = heat.grad[0, 0]
    print(f"d j / d heat[3, 8] = {_item(g[3, 8]):+.4f}, d j / d heat[3, 3] = {_item(g[3, 3]):+.4f}"
          " (raising the right side moves the keypoint right)")

    _section("5. Soft max / min, and hard=True (exact forward, soft gradient)")
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for method in ("softmax", "sparsemax", "entmax15", "logsumexp"):
        value = softops.soft_max(x, method=method)
        (grad,) = torch.autograd.grad(value, x)
        print(f"soft_max[{method:<9}] = {_item(value):.4f}   gradient = {_fmt(grad)}")
    print(f"soft_min[softmax]   = {_item(softops.soft_min(x)):.4f}")
    value = softops.soft_max(x, hard=True)
    (grad,) = torch.autograd.grad(value, x)
    print(f"soft_max(hard=True) = {_item(value):.4f}   gradient = {_fmt(grad)}")


def tour_index(torch, softops):
    _section("6. Reading at a fractional index (seed 000's linear lookup, corrected)")
    arr = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], requires_grad=True)
    index = torch.tensor(1.5, requires_grad=True)
    value = softops.lookup(arr, index)
    d_arr, d_index = torch.autograd.grad(value, (arr, index))
    print(f"lookup({_fmt(arr, 0)}, 1.5) = {_item(value):.4f}")
    print(f"d / d arr = {_fmt(d_arr, 2)}   d / d index = {_item(d_index):+.4f} (the seed's code gave -1)")
    nearest = softops.lookup(arr, index, hard=True)
    (d_hard,) = torch.autograd.grad(nearest, index)
    print(f"hard=True reads a real element: {_item(nearest):.1f}, d / d index = {_item(d_hard):+.4f}")
    grid = torch.arange(12.0).reshape(3, 4)
    points = torch.tensor([[0.5, 1.5], [1.5, 2.5]], requires_grad=True)
    read = softops.lookup(grid, points, axis=(0, 1))
    (d_points,) = torch.autograd.grad(read.sum(), points)
    print(f"2-D bilinear lookup at (0.5, 1.5), (1.5, 2.5) = {_fmt(read, 2)}; d / d (i, j) = {_fmt(d_points, 1)}")
    weights = softops.soft_index(torch.tensor(2.5), 5)
    print(f"soft_index(2.5, 5) = {_fmt(weights, 2)}")

    _section("7. Writing at a soft position (memory write head)")
    memory = torch.zeros(5)
    head = softops.argmax_weights(torch.tensor([0.0, 3.0, 2.0, 0.0, 0.0]), temperature=0.5)
    written = softops.soft_assign(memory, head, torch.tensor(10.0))
    print(f"soft_assign(zeros(5), weights {_fmt(head, 3)}, 10) = {_fmt(written, 3)}")
    exact = softops.assign(torch.arange(5.0), torch.tensor(3), torch.tensor(-1.0))
    print(f"assign(arange(5), 3, -1) = {_fmt(exact, 0)} (inputs are never modified)")


def tour_sort(torch, softops):
    _section("8. Soft sort, rank, top-k and quantiles (permutahedron, LapSum)")
    x = torch.tensor([0.3, -1.2, 2.0, 0.31, 1.1], requires_grad=True)
    print(f"x = {_fmt(x, 2)}; torch.argsort(torch.argsort(x)) + 1 = {_fmt(torch.argsort(torch.argsort(x)) + 1.0, 0)}")
    for method in ("permutahedron", "lapsum"):
        ranks = softops.soft_rank(x, temperature=0.1, method=method)
        print(f"soft_rank[{method:<13}](T=0.1) = {_fmt(ranks, 3)}  (0.30 and 0.31 share ranks)")
    soft = softops.Relative(1.0)  # about one typical neighbour gap of x
    print(f"soft_sort(temperature=Relative(1))      = {_fmt(softops.soft_sort(x, temperature=soft), 3)}")
    mask = softops.soft_topk_mask(x, 3, temperature=soft)
    (grad,) = torch.autograd.grad((mask * torch.arange(5.0)).sum(), x)
    print(f"soft_topk_mask(k=3, temperature=Relative(1)) = {_fmt(mask, 3)} (sums to {_item(mask.sum()):.1f})")
    print(f"  d sum(mask * [0..4]) / dx = {_fmt(grad, 3)}")
    median = softops.soft_median(x, temperature=softops.Relative(0.3))
    print(f"soft_median(temperature=Relative(0.3)) = {_item(median):.4f}; torch.quantile(x, 0.5) = "
          f"{_item(torch.quantile(x.detach(), 0.5)):.4f}")


TAU = 3.0  # the seed-001 temperature, Relative(TAU): TAU typical gaps of C


def tour_seed001(torch, softops, sizes, steps):
    """Seed 001 at each N in ``sizes``: the hard objective's gradient, then
    each relaxation x method's hard objective from start to end."""
    from softops import _seed001

    results = []
    for N, n_steps in zip(sizes, steps):
        A, B, theta = _seed001.make_problem(N)
        k = _seed001.quartile_size(N)
        _section(f"Seed 001 at N = {N}, M = 20: quartiles of C = B @ theta (k = {k}), "
                 f"f = mean(A_low) - mean(A_high)")
        A_t, B_t, theta_t = (torch.as_tensor(a) for a in (A, B, theta))
        grad = _seed001.hard_gradient(torch, A_t, B_t, theta_t, k)
        start = _seed001.hard_objective(A, B @ (theta / (theta ** 2).sum() ** 0.5), k)
        what = "no gradient at all (f.requires_grad is False)" if grad is None else f"gradient max |g| = {grad.abs().max():.1e}"
        print(f"hard selection (torch.topk indices): {what}; JAX, TensorFlow and autograd give 0 (the seed).")
        print(f"  -> gradient descent never moves theta: hard f stays {start:+.4f}")
        print(f"relaxations, Adam (lr 0.05) for {n_steps} steps, temperature Relative({TAU:g}); "
              "the column is the *hard* f at theta:")
        print(f"  {'select':<10} {'method':<17} {'start':>8} {'end':>8} {'best':>8} {'time':>7}")

        too_big = set()

        def report(row):
            if "skipped" in row and row["skipped"].startswith("past N"):
                too_big.add(row["method"])
            elif "skipped" in row:
                print(f"  {row['select']:<10} {row['method']:<17} skipped: {row['skipped']}")
            else:
                print(f"  {row['select']:<10} {row['method']:<17} {row['curve'][0]:+8.4f} {row['final']:+8.4f} "
                      f"{row['best']:+8.4f} {row['seconds']:6.2f}s", flush=True)

        result = _seed001.run(torch, softops, N, n_steps, tau=TAU, report=report)
        if too_big:
            print(f"  skipped at N = {N}: {', '.join(sorted(too_big))} (they build an n x n permutation matrix; "
                  f"the network's took seconds a step: up to N = {_seed001.MATRIX_LIMIT})")
        print(f"yardstick: the best hard f over {2000 if N <= 1000 else 200} random directions of theta: "
              f"{result['random_search']:+.4f}")
        results.append(result)
    return results


def tour_seeds(torch, softops):
    """The seeds' published numbers next to softops' (seeds 000, 002/003)."""
    _section("The seeds' numbers against softops'")
    arr = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    index = torch.tensor(1.5, requires_grad=True)
    value = softops.lookup(arr, index)
    (d_index,) = torch.autograd.grad(value, index)
    print(f"seed 000, lookup([1..5], 1.5): value 2.5, d/d index -1 (the seed's) | softops: "
          f"{_item(value):.1f}, {_item(d_index):+.1f}")
    # Seed 003's DifferentiableArgmax, its math re-implemented: p = exp(x), six rounds of
    # p <- p^10 / sum(p^10), then the token sum_i 2 (clip(sum_{j > i} p_j, 0.5, 1) - 0.5); float32.
    def seed_layer(x):
        p = torch.exp(x)
        for _ in range(6):
            a = p ** 10
            p = a / a.sum(-1, keepdim=True)
        after = p.flip(-1).cumsum(-1).flip(-1) - p
        return (2 * (after.clamp(0.5, 1.0) - 0.5)).sum(-1)

    print("seed 003's argmax layer on its own test rows (float32), published value | re-implemented | "
          "softops soft_argmax (T = 1e-3; gradient at T = 1):")
    for row, published in (([-11.0, -11.0, -10.0, -11.0], "2"), ([-11.0, -12.0, -12.0, -12.0], "nan"),
                           ([7.0, 7.0, 7.0, 8.0], "3"), ([8.0, 8.0, 8.0, 9.0], "nan")):
        x = torch.tensor(row, requires_grad=True)
        seed = seed_layer(x)
        (g_seed,) = torch.autograd.grad(seed, x)
        ours = softops.soft_argmax(x, temperature=1e-3)
        (g_ours,) = torch.autograd.grad(softops.soft_argmax(x), x)
        print(f"  {_fmt(x, 0):<22} published {published:>3} | {_item(seed):.4f}, gradient finite "
              f"{bool(torch.isfinite(g_seed).all())!s:5} | {_item(ours):.4f}, gradient finite "
              f"{bool(torch.isfinite(g_ours).all())}")


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or None (saying
    which extra installs it) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\nplots: matplotlib is not installed (pip install 'softops[docs]')")
        return None
    return plt


def write_plots(torch, softops, results, out):
    """Two PNGs under ``out``: the seed-001 hard objective along the
    optimisation, and every relaxation against its temperature.  Returns
    their paths, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    import os

    os.makedirs(out, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results) + 3.0, 4.8), squeeze=False)
    styles = {"topk_mask": "-", "quantile": "--", "sort_by": ":"}
    for ax, result in zip(axes[0], results):
        for row in result["rows"]:
            if "curve" in row:
                ax.plot(row["curve"], styles[row["select"]], label=f"{row['select']} / {row['method']}", lw=1.2)
        ax.axhline(result["start"], color="k", lw=2, label="hard selection (zero gradient)")
        ax.axhline(result["random_search"], color="grey", ls="-.", lw=1, label="best of random directions")
        ax.set_title(f"seed 001, N = {result['N']}, k = {result['k']}")
        ax.set_xlabel("Adam step")
        ax.set_ylabel("hard f = mean(A_low) - mean(A_high)")
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1.0), loc="upper left")
    fig.tight_layout()
    paths.append(os.path.join(out, "seed001_objective.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    from softops._seed001 import method_configs

    x = torch.tensor([0.3, -1.2, 2.0, 0.31, 1.1], dtype=torch.float64)
    temperatures = torch.logspace(-3, 2, 60, dtype=torch.float64).tolist()
    panels = [(f"soft_rank, {label}", lambda t, m=method: softops.soft_rank(x, temperature=t, method=m))
              for label, method in method_configs()]
    panels += [(f"soft_argmax weights, {m}", lambda t, m=m: softops.argmax_weights(x, temperature=t, method=m))
               for m in ("softmax", "sparsemax", "entmax15")]
    cols = 4
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(16, 3.2 * ((len(panels) + cols - 1) // cols)),
                             squeeze=False)
    for ax, (title, f) in zip(axes.flat, panels):
        values = torch.stack([f(t) for t in temperatures]).numpy()
        for j in range(values.shape[1]):
            ax.semilogx(temperatures, values[:, j], label=f"x = {x[j]:.2f}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("temperature (units of x)")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("each relaxation of x = [0.3, -1.2, 2.0, 0.31, 1.1] against its temperature: "
                 "the exact operation as T -> 0")
    fig.tight_layout()
    paths.append(os.path.join(out, "relaxations_vs_temperature.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def run_demo(out="softops-demo", quick=False) -> int:
    import time

    import softops

    try:
        import torch
    except ImportError:
        print("The demo runs on PyTorch: pip install 'softops[torch]'")
        return 1
    start = time.perf_counter()
    torch.manual_seed(0)
    print(f"softops {softops.__version__} on PyTorch {torch.__version__}")
    sizes, steps = ((10,), (30,)) if quick else ((10, 10_000), (60, 200))
    results = tour_seed001(torch, softops, sizes, steps)
    tour_seeds(torch, softops)
    tour_select(torch, softops)
    tour_index(torch, softops)
    tour_sort(torch, softops)
    paths = write_plots(torch, softops, results, out)
    if paths:
        print("\nplots written: " + ", ".join(paths))
    print(f"\ndemo done in {time.perf_counter() - start:.0f} s")
    return 0
