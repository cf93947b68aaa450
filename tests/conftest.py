"""Fixtures: ``backend`` runs a test once per installed framework.

``SOFTOPS_REQUIRED_BACKENDS`` (comma-separated; default ``numpy,torch,jax``) names
the frameworks that must be importable: ``test_backends_installed`` fails when one
is missing, so that no backend is skipped silently.
"""

from __future__ import annotations

import os

# Keras reads its backend once, at import, and importing TensorFlow imports
# Keras (Keras' default backend is then TensorFlow): set it before anything
# below imports a framework.  The session (test_layers and the doctests of
# softops.layers.keras; pytest loads this file before it collects any path of
# testpaths) runs Keras on JAX; test_layers runs the PyTorch and TensorFlow
# backends in subprocesses.
os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from harness import HARNESSES  # noqa: E402

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
