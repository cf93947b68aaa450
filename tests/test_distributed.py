"""Data-parallel training with softops in the loss: PyTorch DDP (gloo, 2 CPU processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_ddp_step_equals_the_single_process_step(tmp_path):
    """Two ranks under ``torch.distributed.run`` (gloo), each on half of the
    batch, end one SGD step with the parameters of one process on the whole
    batch (DDP averages the ranks' gradients of their mean losses: the
    gradient of the global mean), for a loss through soft_rank (permutahedron
    kernel), soft_topk_mask (LapSum kernel) and lookup (cubic)."""
    sys.path.insert(0, os.path.join(HERE, "scripts"))
    try:
        import ddp_step
    finally:
        sys.path.pop(0)
    reference = ddp_step.main(None)
    out = tmp_path / "params.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         os.path.join(HERE, "scripts", "ddp_step.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    got = torch.load(out)
    before = torch.cat([p.detach().reshape(-1) for p in ddp_step.model_and_batch()[0].parameters()])
    assert not torch.allclose(reference, before), "the step must move the parameters"
    torch.testing.assert_close(got, reference, rtol=1e-12, atol=1e-12)
