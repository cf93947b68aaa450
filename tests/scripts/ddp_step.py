"""One data-parallel training step through softops (run by tests/test_distributed.py).

Under ``python -m torch.distributed.run --standalone --nproc_per_node=2
ddp_step.py OUT``: each rank takes its half of a fixed global batch, wraps the
model in ``DistributedDataParallel`` (gloo, CPU) and takes one SGD step on a
loss through soft_rank, soft_topk_mask and lookup; rank 0 saves the
parameters to ``OUT``.  Without ``torch.distributed.run`` (no ``RANK``), the
same step on the whole batch in one process (the reference)."""

from __future__ import annotations

import os
import sys

import torch

import softops


def model_and_batch():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8, dtype=torch.float64)
    x = torch.randn(16, 8, dtype=torch.float64)
    target = torch.randn(16, 8, dtype=torch.float64)
    table = torch.linspace(-2.0, 3.0, 9, dtype=torch.float64) ** 2
    return model, x, target, table


def loss_fn(model, x, target, table):
    y = model(x)
    ranks = softops.soft_rank(y, temperature=0.5)
    mask = softops.soft_topk_mask(y, 3, temperature=0.5, method="lapsum")
    read = softops.lookup(table, 4.0 + 2.0 * torch.tanh(y), mode="cubic")
    return ((ranks - 4.5 - target) ** 2).mean() + (mask * target).mean() + read.mean()


def step(model, x, target, table):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    loss_fn(model, x, target, table).backward()
    opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def main(out):
    model, x, target, table = model_and_batch()
    if "RANK" not in os.environ:
        return step(model, x, target, table)
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    half = slice(rank * 16 // world, (rank + 1) * 16 // world)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    params = step(ddp, x[half], target[half], table)
    if rank == 0:
        torch.save(params, out)
    dist.destroy_process_group()
    return params


if __name__ == "__main__":
    main(sys.argv[1])
