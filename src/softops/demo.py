"""``python -m softops demo``: a short printed tour, with values and gradients, on PyTorch."""

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


def run_demo() -> int:
    import softops

    try:
        import torch
    except ImportError:
        print("The demo runs on PyTorch: pip install 'softops[torch]'")
        return 1
    torch.manual_seed(0)
    print(f"softops {softops.__version__} on PyTorch {torch.__version__}")
    tour_select(torch, softops)
    tour_index(torch, softops)
    tour_sort(torch, softops)
    return 0
