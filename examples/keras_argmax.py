"""Seeds 002/003: a differentiable argmax as a Keras layer, trained end to end.

The seed's Keras ``Argmax`` layer has no gradient (TensorFlow returns None
for every weight); its "DifferentiableArgmax" raises probabilities to the
100th power three times and reads the token off with a cumulative sum and a
clip.  ``(3 p)^100`` overflows float32 once a probability exceeds about 0.8
(``2.4^100 > 3.4e38``), and the first round sharpens every row that far, so
its later rounds divide ``inf`` by ``inf``: values and gradients NaN (at every
scale below).  ``softops.layers.keras.SoftArgmax``
is ``sum_i i softmax(x / T)_i``: finite at every scale, with a gradient.

Part 1 evaluates both on logits at scales 1e-3 ... 1e3 (value and gradient
finite or not).  Part 2 trains ``Embedding -> LSTM -> Dense -> SoftArgmax``
to output the position of the largest token of a sequence (the seed's
architecture), from the soft argmax's squared error alone, and reports the
hard argmax accuracy.

Run:  python examples/keras_argmax.py [--steps 300]   (KERAS_BACKEND=jax by default; torch and tensorflow work too)
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from softops.layers.keras import SoftArgmax  # noqa: E402


def seed_argmax(p, length=3):
    """The seed's power normalisation, re-implemented with Keras ops: three
    rounds of ``(len p)^100`` normalised, then the token as the sum of the
    clipped reverse exclusive cumulative sum."""
    ops = keras.ops
    for _ in range(3):
        a = ops.power(length * p, 100.0)
        p = a / ops.sum(a, axis=-1, keepdims=True)
    reverse = ops.flip(ops.cumsum(ops.flip(p, axis=-1), axis=-1), axis=-1) - p  # exclusive, reversed
    return ops.sum(2.0 * (ops.clip(reverse, 0.5, 1.0) - 0.5), axis=-1)


def value_and_grad(f, x):
    """``f(x)`` summed and its gradient in ``x``, with the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.value_and_grad(lambda v: keras.ops.sum(f(v)))(x)
    if backend == "torch":
        import torch

        v = torch.tensor(np.asarray(x), requires_grad=True)
        y = f(v).sum()
        y.backward()
        return y.detach(), v.grad
    import tensorflow as tf  # Keras' tensorflow backend

    v = tf.convert_to_tensor(np.asarray(x))
    with tf.GradientTape() as tape:
        tape.watch(v)
        y = tf.reduce_sum(f(v))
    return y, tape.gradient(y, v)


def scales(quiet=False):
    """Rows of (scale, seed value finite, seed gradient finite, softops value finite, softops gradient finite)."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 3)).astype("float32")
    layer = SoftArgmax(temperature=1.0)
    rows = []
    for scale in (1e-3, 1e-1, 1.0, 1e1, 1e3):
        x = logits * np.float32(scale)
        probs = keras.ops.softmax(keras.ops.convert_to_tensor(x), axis=-1)
        seed_v, seed_g = value_and_grad(seed_argmax, keras.ops.convert_to_numpy(probs))
        ours_v, ours_g = value_and_grad(layer, x)
        row = (scale,) + tuple(bool(np.all(np.isfinite(keras.ops.convert_to_numpy(a))))
                               for a in (seed_v, seed_g, ours_v, ours_g))
        rows.append(row)
        if not quiet:
            print(f"scale {scale:8.0e}: seed value finite {row[1]!s:5}  gradient finite {row[2]!s:5} | "
                  f"SoftArgmax value finite {row[3]!s:5}  gradient finite {row[4]!s:5}")
    return rows


def train(steps=300, quiet=False):
    """Train the seed's architecture to point at the largest token; returns
    (losses, hard accuracy on held-out sequences before and after)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)

    def batch(n):
        tokens = rng.integers(0, 10, size=(n, 3))
        return tokens, np.argmax(tokens, axis=-1).astype("float32")

    inp = keras.Input((3,), dtype="int32")
    h = keras.layers.Embedding(10, 8)(inp)
    h = keras.layers.LSTM(16)(h)
    logits = keras.layers.Dense(3)(h)
    model = keras.Model(inp, SoftArgmax(temperature=0.5, learn_temperature=True)(logits))
    scorer = keras.Model(inp, logits)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    test_x, test_y = batch(512)

    def accuracy():
        return float(np.mean(np.argmax(scorer.predict(test_x, verbose=0), axis=-1) == test_y))

    before = accuracy()
    losses = []
    for step in range(steps):
        x, y = batch(64)
        losses.append(float(model.train_on_batch(x, y)))
        if not quiet and (step + 1) % 100 == 0:
            print(f"step {step + 1:4d}: soft-argmax squared error {losses[-1]:.4f}")
    after = accuracy()
    if not quiet:
        print(f"hard argmax accuracy on held-out sequences: {before:.2f} before, {after:.2f} after training")
    return losses, before, after


def main(argv=None, quiet=False):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    if not quiet:
        print(f"Keras {keras.__version__} on {keras.backend.backend()}\n")
    return scales(quiet), train(args.steps, quiet)


if __name__ == "__main__":
    main()
