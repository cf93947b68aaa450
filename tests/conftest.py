"""Fixtures: ``backend`` runs a test once per installed framework.

``SOFTOPS_REQUIRED_BACKENDS`` (comma-separated; default ``numpy,torch,jax``) names
the frameworks that must be importable: ``test_backends_installed`` fails when one
is missing, so that no backend is skipped silently.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from harness import HARNESSES

settings.register_profile(
    "softops",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("softops")

# Kernels compile before their first call returns (the default compiles them on
# a background thread and interprets small calls meanwhile): tests that compare
# two calls then never compare an interpreted with a compiled one.  Both tiers
# and the background mode are tested in test_tiers.py.
os.environ.setdefault("SOFTOPS_COMPILE", "blocking")

# Keras reads its backend once, at import: the session (test_layers and the
# doctests of softops.layers.keras; pytest loads this file before it collects
# any path of testpaths) runs Keras on JAX; test_layers runs PyTorch's in a
# subprocess.
os.environ.setdefault("KERAS_BACKEND", "jax")

# Frameworks whose layers (softops.layers.<name>) the layer tests require.
REQUIRED_LAYERS = [
    name.strip() for name in os.environ.get("SOFTOPS_REQUIRED_LAYERS", "torch,flax,keras").split(",") if name.strip()
]

REQUIRED_BACKENDS = [
    name.strip()
    for name in os.environ.get("SOFTOPS_REQUIRED_BACKENDS", "numpy,torch,jax").split(",")
    if name.strip()
]


@pytest.fixture(params=HARNESSES, ids=lambda h: h.name)
def backend(request):
    """A test harness for one framework (see ``harness.py``)."""
    return request.param


@pytest.fixture(params=[h for h in HARNESSES if h.differentiable], ids=lambda h: h.name)
def diff_backend(request):
    """A harness for one framework with autodiff (PyTorch, JAX, TensorFlow)."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
