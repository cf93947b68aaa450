"""Seed 001 end to end, on PyTorch: the quartile selection that autodiff
differentiates to zero, and the relaxations that make it learnable.

The question (``shared/seeds/001``): a vector ``A`` (N,), a matrix ``B``
(N, M), parameters ``theta`` (M,); ``C = B @ theta``; ``A_low`` and
``A_high`` are the entries of ``A`` at the lower and upper quartile of ``C``
(``k = ceil(N / 4)`` entries each: 3 at the seed's N = 10), and the goal is to
minimise a function ``f(A_low, A_high)`` over ``theta``.  Here
``f = mean(A_low) - mean(A_high)``: the direction of ``theta`` (it is
normalised; only the order of ``C`` matters) whose top quartile has the
largest ``A`` against its bottom quartile.  The data are the seed's:
``default_rng(0)``, then ``A``, ``B`` and ``theta`` uniform in [0, 1).

The *hard* objective selects with ``torch.topk`` indices: its gradient is
absent (PyTorch) or zero (JAX, TensorFlow, autograd), so gradient descent
never moves.  Each relaxation replaces the selection and is optimised with
Adam; what is reported is always the hard objective at the current
``theta``:

* ``topk_mask``: ``soft_topk_mask(C, k)`` and ``soft_topk_mask(C, k,
  largest=False)``, weights in [0, 1] summing to ``k``;
  ``f = (A . low - A . high) / k``.
* ``quantile``: the soft quartile boundaries ``soft_quantile(C, [1/4, 3/4])``
  gate each entry with a logistic of its distance to them (width: a tenth
  of the inter-quartile range, held constant);
  ``f = weighted mean of A below - weighted mean of A above``.
* ``sort_by``: ``A`` carried along ``C``'s soft order, ``soft_sort_by(C, A)``
  (the question's ``A[argsort(C)]``): ``f = mean(first k) - mean(last k)``;
  the methods that build a permutation matrix.

NeuralSort, SoftSort and Sinkhorn hold an ``n x n`` matrix per row (at
N = 10^4, 800 MB a matrix), and the sorting network's top-k mask and
quantile took 16 s and 3 s a step there: past ``MATRIX_LIMIT`` entries the
methods that build a permutation matrix are skipped.  The sorting network's
matrix (``sort_by``) is the product of its layers applied to the identity:
under autograd the default odd-even network keeps one ``n x n`` matrix per
layer, ``n`` of them (a worker reached 22 GB at N = 1000, 2026-12-07), so it
stops at ``NETWORK_MATRIX_LIMIT``.

The temperature is ``Relative(tau)``: ``tau`` typical gaps between
neighbouring values of ``C`` (``softops.Relative``), whatever ``theta``'s
scale.  At ``tau = 1`` the permutahedron's top-k mask of this ``C`` is
exactly 0/1 (its projection keeps gaps wider than the temperature exact), so
its gradient is zero there; the demo uses ``tau = 3``.
"""

from __future__ import annotations

import math
import time

import numpy as np

SELECTS = ("topk_mask", "quantile", "sort_by")
MATRIX_LIMIT = 2048  # sort_by with an n x n matrix method: n at most this
NETWORK_MATRIX_LIMIT = 256  # the network's matrix under autograd: n layers of n x n (2 GB at n = 512 in float64)


def make_problem(N, M=20, seed=0):
    """The seed's arrays: ``default_rng(seed)``; ``A`` (N,), ``B`` (N, M),
    ``theta`` (M,), uniform in [0, 1), drawn in that order."""
    rng = np.random.default_rng(seed)
    A = rng.random((N,))
    B = rng.random((N, M))
    theta = rng.random(M)
    return A, B, theta


def quartile_size(N):
    return max(1, math.ceil(N / 4))


def hard_objective(A, C, k):
    """``mean(A_low) - mean(A_high)`` with the exact quartiles of ``C`` (NumPy)."""
    order = np.argsort(C, kind="stable")
    return float(A[order[:k]].mean() - A[order[-k:]].mean())


def hard_gradient(torch, A, B, theta, k):
    """The seed's computation in PyTorch: ``None`` when autodiff has no
    gradient at all (``torch.topk`` indices are integers), else the
    gradient."""
    theta = theta.clone().requires_grad_(True)
    C = B @ (theta / theta.norm())
    f = A[torch.topk(C, k, largest=False).indices].mean() - A[torch.topk(C, k).indices].mean()
    if not f.requires_grad:
        return None
    return torch.autograd.grad(f, theta)[0]


def soft_objective(torch, softops, select, method, A, C, k, temperature):
    if select == "topk_mask":
        high = softops.soft_topk_mask(C, k, temperature=temperature, method=method)
        low = softops.soft_topk_mask(C, k, largest=False, temperature=temperature, method=method)
        return (A @ low - A @ high) / k
    if select == "quantile":
        n = C.shape[-1]
        q = softops.soft_quantile(C, [k / n, 1.0 - k / n], temperature=temperature, method=method)
        width = ((q[1] - q[0]) / 10).detach().clamp_min(1e-12)
        low = torch.sigmoid((q[0] - C) / width)
        high = torch.sigmoid((C - q[1]) / width)
        return (A @ low) / low.sum() - (A @ high) / high.sum()
    ordered = softops.soft_sort_by(C, A, temperature=temperature, method=method)
    return ordered[:k].mean() - ordered[-k:].mean()


def method_configs():
    """(label, method) for every sorting method of the registry
    (``softops.sort.SORT_METHODS``), the permutahedron in both
    regularisations."""
    from softops.sort import SORT_METHODS

    out = []
    for name, config in SORT_METHODS.items():
        out.append((name, name))
        if name == "permutahedron":
            out.append(("permutahedron-kl", config(regularization="kl")))
    return out


def methods_for(select, N):
    """(label, method, reason it is skipped or None) for each method that
    ``select`` can use."""
    import softops
    from softops.sort import resolve_method

    probe = np.arange(4.0)
    calls = {"topk_mask": lambda m: softops.soft_topk_mask(probe, 1, method=m),
             "quantile": lambda m: softops.soft_quantile(probe, [0.25, 0.75], method=m),
             "sort_by": lambda m: softops.soft_sort_by(probe, probe, method=m)}
    rows = []
    for label, method in method_configs():
        matrix = hasattr(resolve_method(method), "permutation_rows")
        if select == "sort_by" and not matrix:
            continue  # no soft permutation matrix to carry A along
        try:
            calls[select](method)
        except ValueError as e:  # an operation the method does not offer
            rows.append((label, method, str(e).split(";")[0].split(" (")[0]))
            continue
        if select == "sort_by" and label == "network" and N > NETWORK_MATRIX_LIMIT:
            rows.append((label, method, f"past N = {NETWORK_MATRIX_LIMIT} (the odd-even network's matrix keeps n "
                                        "layers of n x n for autograd)"))
            continue
        if matrix and N > MATRIX_LIMIT:
            rows.append((label, method, f"past N = {MATRIX_LIMIT} (n x n matrix; the network: seconds a step)"))
            continue
        rows.append((label, method, None))
    return rows


def optimise(torch, softops, select, method, A, B, theta0, k, steps, tau=1.0, lr=0.05, losses=None):
    """Adam on ``theta`` through one relaxation: (hard objective at each step,
    seconds); the soft objective at each step is appended to ``losses``."""
    temperature = softops.Relative(tau)
    theta = theta0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([theta], lr=lr)
    A_np, B_np = A.numpy(), B.numpy()
    curve = []
    start = time.perf_counter()
    for _ in range(steps):
        C = B @ (theta / theta.norm())
        curve.append(hard_objective(A_np, C.detach().numpy(), k))
        loss = soft_objective(torch, softops, select, method, A, C, k, temperature)
        if losses is not None:
            losses.append(float(loss))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - start
    t = theta.detach()
    curve.append(hard_objective(A_np, B_np @ (t / t.norm()).numpy(), k))
    return curve, seconds


def random_search(A, B, k, draws, seed=1):
    """The best hard objective over ``draws`` uniformly random directions
    (a yardstick: what the relaxations reach without any search)."""
    rng = np.random.default_rng(seed)
    thetas = rng.normal(size=(draws, B.shape[1]))
    C = thetas @ B.T
    return min(hard_objective(A, c, k) for c in C)


def run(torch, softops, N, steps, M=20, tau=1.0, report=print):
    """The whole experiment at one N: a dict with the start, the hard
    gradient, the random-search yardstick and one row per (select, method)."""
    A_np, B_np, theta_np = make_problem(N, M)
    k = quartile_size(N)
    A, B, theta0 = (torch.as_tensor(a) for a in (A_np, B_np, theta_np))
    start = hard_objective(A_np, B_np @ (theta_np / np.linalg.norm(theta_np)), k)
    grad = hard_gradient(torch, A, B, theta0, k)
    result = {"N": N, "M": M, "k": k, "steps": steps, "start": start,
              "hard_gradient": None if grad is None else float(grad.abs().max()),
              "random_search": random_search(A_np, B_np, k, 2000 if N <= 1000 else 200), "rows": []}
    for select in SELECTS:
        for label, method, skipped in methods_for(select, N):
            if skipped:
                result["rows"].append({"select": select, "method": label, "skipped": skipped})
                report(result["rows"][-1])
                continue
            curve, seconds = optimise(torch, softops, select, method, A, B, theta0, k, steps, tau)
            row = {"select": select, "method": label, "final": curve[-1], "best": min(curve),
                   "seconds": seconds, "curve": curve}
            result["rows"].append(row)
            report(row)
    return result
