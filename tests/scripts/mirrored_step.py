"""One data-parallel training step through softops under TensorFlow's
``tf.distribute.MirroredStrategy`` (run by tests/test_distributed.py).

The CPU is split into two logical devices; each replica takes its half of a
fixed global batch and the strategy sums the replicas' gradients of their
share of the global mean loss (soft_rank, soft_topk_mask, lookup), inside
``strategy.run`` under ``tf.function``.  Prints the parameters after one SGD
step, then those of the same step in one replica on the whole batch, as two
lines of numbers."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import softops  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

rng = np.random.default_rng(0)
W0 = rng.normal(size=(8, 8)) / 3
X = rng.normal(size=(16, 8))
TARGET = rng.normal(size=(16, 8))
TABLE = tf.constant(np.linspace(-2.0, 3.0, 9) ** 2)


def loss_sum(w, x, target):
    y = tf.matmul(x, w)
    ranks = softops.soft_rank(y, temperature=0.5)
    mask = softops.soft_topk_mask(y, 3, temperature=0.5, method="lapsum")
    read = softops.lookup(TABLE, 4.0 + 2.0 * tf.tanh(y), mode="cubic")
    per_row = (tf.reduce_mean((ranks - 4.5 - target) ** 2, axis=-1) + tf.reduce_mean(mask * target, axis=-1)
               + tf.reduce_mean(read, axis=-1))
    return tf.reduce_sum(per_row) / 16.0  # this share of the global batch mean


def mirrored_step():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        w = tf.Variable(W0)
    data = tf.data.Dataset.from_tensor_slices((X, TARGET)).batch(16)
    batch = next(iter(strategy.experimental_distribute_dataset(data)))

    @tf.function
    def step(x, target):
        def replica(x, target):
            with tf.GradientTape() as tape:
                loss = loss_sum(w, x, target)
            grad = tape.gradient(loss, w)
            grad = tf.distribute.get_replica_context().all_reduce("sum", grad)
            w.assign_sub(0.1 * grad)
            return tf.shape(x)[0]

        return strategy.run(replica, args=(x, target))

    sizes = strategy.experimental_local_results(step(*batch))
    assert [int(s) for s in sizes] == [8, 8], sizes
    return w.numpy()


def single_step():
    w = tf.Variable(W0)
    with tf.GradientTape() as tape:
        loss = loss_sum(w, tf.constant(X), tf.constant(TARGET))
    w.assign_sub(0.1 * tape.gradient(loss, w))
    return w.numpy()


if __name__ == "__main__":
    for params in (mirrored_step(), single_step()):
        print(" ".join(repr(float(v)) for v in params.ravel()))
