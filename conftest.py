"""Session-wide settings that must precede any import (src doctests are collected before tests/)."""

import os

# Keras reads its backend once, at import: the test session (and the doctests
# of softops.layers.keras) run Keras on JAX; tests/test_layers.py runs the
# PyTorch backend in a subprocess.
os.environ.setdefault("KERAS_BACKEND", "jax")
