"""Seed 001: choose theta so that the quartiles of C = B @ theta split A well.

The problem (as asked): a vector A (N,), a matrix B (N, M) and parameters theta
(M,); C = B @ theta; take the elements of A whose C falls in the upper and in the
lower quartile of C, and minimise a function f(A_low, A_high) with respect to
theta.  Here f = mean(A_low) - mean(A_high): pick the direction theta (only its
direction matters, theta is normalised) whose upper-quartile items have the
largest A compared with its lower-quartile items.

Selecting by argsort / top_k makes f piecewise constant in theta: its gradient
is zero (JAX, TensorFlow, autograd) or absent (PyTorch).  ``softops.
soft_topk_mask`` replaces the 0/1 quartile indicators by weights in [0, 1] that
sum to k = N / 4 (the projection of C / T onto the capped simplex); T is in the
units of C: items whose C is within about T of the quartile boundary are
shared.  Gradient descent on the soft objective then lowers the *hard* one too.

``--select sort_by`` writes the selection as the question does, A indexed by
C's order: ``softops.soft_sort_by(C, A, descending=True)[:k]`` are the soft
top-quartile elements of A (each a weighted mean of the A whose C is near that
position of the soft order; a differentiable sorting network by default), and
``soft_sort_by(C, A)[:k]`` the bottom quartile.

Run:  python examples/quartiles.py [--backend torch|jax] [--steps 60] [--select mask|sort_by]
"""

from __future__ import annotations

import argparse

import numpy as np

import softops

N, M, SEED = 200, 5, 1
TEMPERATURE = 0.2  # in units of C (about N(0, 1) here)
LEARNING_RATE = 0.3


def make_data():
    rng = np.random.default_rng(SEED)
    B = rng.normal(size=(N, M))
    theta_true = rng.normal(size=M)
    A = B @ theta_true / np.linalg.norm(theta_true) + 0.5 * rng.normal(size=N)
    theta0 = rng.normal(size=M)
    return A, B, theta0, theta_true


SELECT = "mask"  # or "sort_by" (set by --select)


def _objectives(xp, A, B, theta, k, temperature):
    """(soft f, C) at theta."""
    C = B @ (theta / xp.sqrt(xp.sum(theta**2)))
    if SELECT == "sort_by":
        # A[argsort(C)][-k:] and [:k], relaxed: A carried along C's soft order.
        high = softops.soft_sort_by(C, A, descending=True, temperature=temperature, method="neuralsort")[:k]
        low = softops.soft_sort_by(C, A, temperature=temperature, method="neuralsort")[:k]
        return xp.mean(low) - xp.mean(high), C
    high = softops.soft_topk_mask(C, k, temperature=temperature)
    low = softops.soft_topk_mask(C, k, largest=False, temperature=temperature)
    soft = (xp.sum(low * A) - xp.sum(high * A)) / k
    return soft, C


def _hard(A, C, k):
    """f with argsort-selected quartiles (what the user wrote), on NumPy values."""
    order = np.argsort(C)
    return A[order[:k]].mean() - A[order[-k:]].mean()


def run_torch(steps, report):
    import torch

    A, B, theta0, _ = (torch.as_tensor(a) for a in make_data())
    k = N // 4
    theta = theta0.clone().requires_grad_(True)
    # The hard selection: top_k / argsort indices carry no gradient.
    C = B @ (theta / theta.norm())
    f_hard = A[torch.topk(C, k, largest=False).indices].mean() - A[torch.topk(C, k).indices].mean()
    hard_grad = None if not f_hard.requires_grad else torch.autograd.grad(f_hard, theta)[0]
    history = []
    for step in range(steps + 1):
        soft, C = _objectives(torch, A, B, theta, k, TEMPERATURE)
        (grad,) = torch.autograd.grad(soft, theta)
        history.append((step, soft.item(), _hard(A.numpy(), C.detach().numpy(), k), grad.norm().item()))
        report(history[-1])
        with torch.no_grad():
            theta -= LEARNING_RATE * grad
    return hard_grad, history


def run_jax(steps, report):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    A, B, theta0, _ = (jnp.asarray(a) for a in make_data())
    k = N // 4

    def hard_f(theta):
        C = B @ (theta / jnp.linalg.norm(theta))
        order = jnp.argsort(C)
        return A[order[:k]].mean() - A[order[-k:]].mean()

    hard_grad = jax.grad(hard_f)(theta0)
    soft_and_grad = jax.jit(jax.value_and_grad(lambda t: _objectives(jnp, A, B, t, k, TEMPERATURE)[0]))
    theta, history = theta0, []
    for step in range(steps + 1):
        soft, grad = soft_and_grad(theta)
        C = np.asarray(B @ (theta / jnp.linalg.norm(theta)))
        history.append((step, float(soft), _hard(np.asarray(A), C, k), float(jnp.linalg.norm(grad))))
        report(history[-1])
        theta = theta - LEARNING_RATE * grad
    return hard_grad, history


def main(argv=None, *, quiet=False):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["torch", "jax"], default="torch")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--select", choices=["mask", "sort_by"], default="mask")
    args = parser.parse_args(argv)
    global SELECT
    SELECT = args.select
    say = (lambda *a: None) if quiet else print
    every = max(1, args.steps // 6)

    def report(row):
        step, soft, hard, gnorm = row
        if step % every == 0 or step == args.steps:
            say(f"{step:5d}  {soft:+10.4f}  {hard:+10.4f}  {gnorm:10.4f}")

    say(f"seed 001: N={N}, M={M}, quartiles k={N // 4}, temperature={TEMPERATURE} (units of C), "
        f"backend={args.backend}, select={args.select}")
    say(" step   soft f      hard f      |grad soft f|")
    run = run_torch if args.backend == "torch" else run_jax
    hard_grad, history = run(args.steps, report)
    if hard_grad is None:
        say("hard f (torch.topk indices): no gradient at all (f does not require grad)")
    else:
        say(f"hard f (argsort indices): gradient = {np.asarray(hard_grad).round(6).tolist()}")
    first, last = history[0], history[-1]
    say(f"soft gradient at the start: |grad| = {first[3]:.4f} (non-zero)")
    say(f"hard f: {first[2]:+.4f} -> {last[2]:+.4f};  soft f: {first[1]:+.4f} -> {last[1]:+.4f}")
    A, B, _, theta_true = make_data()
    say(f"reference: hard f at the generating direction theta_true = {_hard(A, B @ theta_true, N // 4):+.4f}")
    return hard_grad, history


if __name__ == "__main__":
    main()
