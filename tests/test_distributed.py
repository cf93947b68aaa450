"""Data-parallel training with softops in the loss: PyTorch DDP (gloo, 2 CPU
processes), TensorFlow's MirroredStrategy (2 logical CPU devices), JAX
sharding (4 CPU devices: jax.jit on a batch-sharded array, jax.shard_map)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_ddp_step_equals_the_single_process_step(tmp_path):
    """Two ranks under ``torch.distributed.run`` (gloo), each on half of the
    batch, end one SGD step with the parameters of one process on the whole
    batch (DDP averages the ranks' gradients of their mean losses: the
    gradient of the global mean), for a loss through soft_rank (permutahedron
    kernel), soft_topk_mask (LapSum kernel) and lookup (cubic)."""
    torch = pytest.importorskip("torch")
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


@pytest.mark.slow
def test_mirrored_strategy_step_equals_the_single_device_step():
    """``tf.distribute.MirroredStrategy`` over two logical CPU devices, each
    replica on half of the batch inside ``strategy.run`` under
    ``tf.function`` (softops in a graph: the host kernels through
    ``tf.numpy_function``), ends one SGD step with the parameters of one
    device on the whole batch (scripts/mirrored_step.py, in its own process:
    logical devices are fixed before TensorFlow starts)."""
    pytest.importorskip("tensorflow")
    done = subprocess.run([sys.executable, os.path.join(HERE, "scripts", "mirrored_step.py")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    mirrored, single = (np.array([float(v) for v in line.split()]) for line in done.stdout.strip().splitlines()[-2:])
    start = np.random.default_rng(0).normal(size=(8, 8)).ravel() / 3
    assert not np.allclose(single, start), "the step must move the parameters"
    np.testing.assert_allclose(mirrored, single, rtol=1e-12, atol=1e-12)


def _jax_sharding(kind):
    """scripts/jax_sharding.py's records (its own process: the 4 CPU devices
    are fixed before JAX starts)."""
    pytest.importorskip("jax")
    done = subprocess.run([sys.executable, os.path.join(HERE, "scripts", "jax_sharding.py"), kind],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(records) >= (40 if kind == "explicit" else 15), done.stdout[-2000:]
    return records


@pytest.mark.slow
def test_jax_explicit_sharding_stays_on_the_shards():
    """``jax.jit`` on an (8, 16) float64 batch sharded over 4 CPU devices
    along a mesh axis of ``Explicit`` type (``jax.make_mesh``'s default):
    every operation x method returns its value, and the gradient of a
    non-linear loss, sharded along the batch as the input, equal to the
    unsharded result, and the compiled program has no all-gather, all-to-all,
    all-reduce or collective-permute; under ``jax.shard_map`` too."""
    for r in _jax_sharding("explicit"):
        assert r["gathers"] == [], r
        for what in ("value", "grad", "shard_map"):
            assert r[what]["spec"].startswith("P('batch'"), r
            assert r[what]["error"] < 1e-9, r


@pytest.mark.slow
def test_jax_auto_sharding_is_right_and_documented():
    """With ``Auto`` mesh axes JAX does not show a traced function its
    input's sharding: soft_rank of every method (masked too) and the select
    and index operations still equal the unsharded result, and the
    operations without a host kernel (select, index, NeuralSort, SoftSort)
    stay on their shards, as the README's "Distributed" section says; the
    host kernels' callbacks run on one device (there: shard_map or Explicit
    axes)."""
    for r in _jax_sharding("auto"):
        for what in ("value", "grad"):
            assert r[what]["error"] < 1e-9, r
        if not any(m in r["case"] for m in ("lapsum", "permutahedron", "network", "sinkhorn")):
            assert r["gathers"] == [], r
            assert r["value"]["spec"].startswith("P('batch'"), r
