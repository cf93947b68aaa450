"""``python -m softops warmup`` compiles every specialisation the operations use."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("numba")

# In a fresh process: warm up, note each kernel's compiled signatures, then run
# every sorting-family operation and method forward and backward in every
# framework and float dtype; no kernel may gain a signature.
CODE = r"""
import numpy as np
import softops
from softops._kernels import isotonic, lapsum, network, rowsort, warmup

def signatures():
    kernels = {}
    for module in (isotonic, lapsum, network):
        compiled = module._numba_kernels()
        # Variant kernels (closure constants) come in a dict keyed by variant.
        pairs = compiled.items() if isinstance(compiled, dict) else [((), compiled)]
        for variant, pair in pairs:
            for k in pair:
                kernels[f"{module.__name__}.{k.py_func.__name__}{variant}"] = k
    kernels["rowsort"] = rowsort._compiled()
    return {name: set(k.signatures) for name, k in kernels.items()}

warmup.warmup(progress=False)
before = signatures()
ops = [lambda x, m: softops.soft_rank(x, method=m), lambda x, m: softops.soft_sort(x, method=m),
       lambda x, m: softops.soft_topk(x, 2, method=m), lambda x, m: softops.soft_topk_mask(x, 2, method=m),
       lambda x, m: softops.soft_quantile(x, 0.3, method=m)]
methods = ["permutahedron", softops.Permutahedron(regularization="kl"), "lapsum", "network",
           softops.SortingNetwork("bitonic", "cauchy")]
data = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 0.0, 2.0]])
import torch
for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
    for m in methods:
        for op in ops[:3] + ops[4:] if m is methods[1] else ops:  # no kl top-k mask
            x = torch.tensor(data, dtype=dtype, requires_grad=True)
            op(x, m).float().sum().backward()
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
for dtype in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64):
    for m in methods:
        for op in ops[:3] + ops[4:] if m is methods[1] else ops:
            jax.grad(lambda v: jnp.sum(op(v, m).astype(jnp.float32)))(jnp.asarray(data, dtype))
for dtype in (np.float32, np.float64):
    for m in methods:
        for op in ops[:3] + ops[4:] if m is methods[1] else ops:
            op(data.astype(dtype), m)
after = signatures()
new = {k: after[k] - before[k] for k in after if after[k] - before[k]}
print("NEW", new)
"""


def test_warmup_covers_every_operation():
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "NEW {}" in out.stdout, out.stdout


def test_warmup_command_runs():
    out = subprocess.run([sys.executable, "-m", "softops", "warmup", "--quiet"], capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
