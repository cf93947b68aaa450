"""Seed 000 in TensorFlow: learn a fractional index by gradient descent through
``softops.lookup``, and learn where to write through ``softops.assign``.

The seed's notebook reads ``arr = [1, 2, 3, 4, 5]`` at ``index = 1.5`` by
linear interpolation and prints an index gradient of ``-1``: its weights are
swapped (``t * arr[floor] + (1 - t) * arr[ceil]``), so the value moves the
wrong way as the index grows (and its read at 1.5 happens to be right only
because ``t = 1/2``).  The correct derivative is ``arr[2] - arr[1] = +1``.

1. Lookup: find the index ``i`` at which a smooth table reads a target value,
   by gradient descent on ``(lookup(table, i) - target)^2`` starting from 4.2.
   softops' index gradient descends to the right place; the seed's swapped
   weights push the index away from it.
2. Write: ``assign(arr, i, v, mode="linear")`` splats ``v`` into the two
   samples around ``i``; learn ``i`` and ``v`` from a target array written at
   ``i* = 5.3`` with ``v* = 7``, from ``(5.8, 1)`` (both gradients come from
   the write itself; the splat is local, so a start outside the target's cell
   gets no pull toward it).  A soft write head (Gaussian ``soft_index``
   weights, ``soft_scatter_add``) reaches every sample and finds ``(5.3, 7)``
   from ``(2, 1)``.

Run: ``python examples/tf_lookup.py`` (``--steps N``).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import softops  # noqa: E402


def seed_linear_lookup(arr, index):
    """The seed's linear lookup, re-implemented (weights as printed there)."""
    t1, t2 = tf.floor(index), tf.math.ceil(index)
    t = tf.math.divide_no_nan(index - t1, t2 - t1)
    return t * tf.gather(arr, tf.cast(t1, tf.int32)) + (1 - t) * tf.gather(arr, tf.cast(t2, tf.int32))


def learn_index(read, table, target, steps, lr=0.05, start=4.2):
    """Gradient descent on ``(read(table, i) - target)^2`` from ``start``; the path of ``i``."""
    index = tf.Variable(start, dtype=tf.float64)
    path = [start]
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = (read(table, index) - target) ** 2
        grad = tape.gradient(loss, index)
        index.assign(tf.clip_by_value(index - lr * grad, 0.0, float(table.shape[0] - 1)))
        path.append(float(index.numpy()))
    return path


def learn_write(write, base, target, start, steps, lr_index, lr_value):
    """Learn ``(i, v)`` so that ``write(base, i, v)`` equals ``target``, from ``start``."""
    index = tf.Variable(start[0], dtype=tf.float64)
    value = tf.Variable(start[1], dtype=tf.float64)
    losses = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((write(base, index, value) - target) ** 2)
        g_index, g_value = tape.gradient(loss, [index, value])
        # Per-parameter steps: the loss curves ~2 v^2 in the index, ~1 in the value.
        index.assign_sub(lr_index * g_index)
        value.assign_sub(lr_value * g_value)
        losses.append(float(loss.numpy()))
    return float(index.numpy()), float(value.numpy()), losses


def linear_write(base, index, value):
    return softops.assign(base, index[None], value[None], mode="linear")


def gaussian_write(base, index, value):
    """A soft write head: Gaussian weights over every sample (bandwidth 1.5), ``base + w v``."""
    weights = softops.soft_index(index, base.shape[0], kernel="gaussian", bandwidth=1.5)
    return softops.soft_scatter_add(base, weights, value)


def main(argv=None, quiet=False):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    say = (lambda *a: None) if quiet else print

    arr = tf.constant([1.0, 2.0, 3.0, 4.0, 5.0], tf.float64)
    i = tf.Variable(1.5, dtype=tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        seed_value = seed_linear_lookup(arr, i)
        soft_value = softops.lookup(arr, i)
    seed_grad, soft_grad = float(tape.gradient(seed_value, i)), float(tape.gradient(soft_value, i))
    say(f"seed 000 read at 1.5: value {float(seed_value):.1f}, index gradient {seed_grad:+.1f} "
        f"(softops: {float(soft_value):.1f}, {soft_grad:+.1f})")

    samples = np.sqrt(np.arange(12.0)) * 3.0  # increasing, curved
    table = tf.constant(samples)
    want = 7.4
    truth = float(np.interp(want, samples, np.arange(12.0)))  # where the linear read gives 7.4
    soft_path = learn_index(lambda a, j: softops.lookup(a, j), table, want, args.steps)
    seed_path = learn_index(seed_linear_lookup, table, want, args.steps)
    cubic_path = learn_index(lambda a, j: softops.lookup(a, j, mode="cubic"), table, want, args.steps)
    say(f"learn the index where the table 3 sqrt(j) reads {want} by linear interpolation "
        f"(the truth {truth:.4f}), from 4.2:")
    say(f"  softops linear: {soft_path[-1]:.4f}   cubic: {cubic_path[-1]:.4f}   seed's lookup: {seed_path[-1]:.4f}")

    base = tf.zeros(12, tf.float64)
    i_true, v_true = tf.constant(5.3, tf.float64), tf.constant(7.0, tf.float64)
    writes = {}
    for name, write, start, lrs in (("linear", linear_write, (5.8, 1.0), (0.004, 0.3)),
                                    ("gaussian", gaussian_write, (2.0, 1.0), (0.02, 0.3))):
        target = write(base, i_true, v_true)
        writes[name] = learn_write(write, base, target, start, args.steps, *lrs)
        index, value, losses = writes[name]
        say(f"learn a {name} write of 7 at 5.3 from {start}: index {index:.4f}, value {value:.4f}, "
            f"loss {losses[0]:.3g} -> {losses[-1]:.2g}")
    return {"seed_grad": seed_grad, "soft_grad": soft_grad, "truth": truth, "soft_path": soft_path,
            "seed_path": seed_path, "cubic_path": cubic_path, "writes": writes}


if __name__ == "__main__":
    main()
