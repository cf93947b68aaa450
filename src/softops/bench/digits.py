"""The 8x8 handwritten digits that ship with scikit-learn (1,797 images,
``sklearn.datasets.load_digits``; no download), split once into train /
validation / test images, and the small CNN the digit tasks train.

Multi-digit numbers (the NeuralSort / diffsort ranking benchmark, Grover et
al. 2019, Petersen et al. 2021): ``d`` digit images side by side, 8 x 8d
pixels, each digit drawn from the split's images of that class, so no test
image is ever seen in training."""

from __future__ import annotations

import functools

import numpy as np

from softops.bench._common import require

SPLITS = ("train", "val", "test")
_FRACTIONS = (0.6, 0.2, 0.2)


@functools.lru_cache(maxsize=1)
def load():
    """``(images, labels, splits)``: images float32 in [0, 1] of shape
    (1797, 8, 8), labels int, and for each split a ``(table, counts)`` pair:
    ``table[c, :counts[c]]`` are the split's image indices of class ``c``.
    The split is a fixed permutation (seed 2019), stratified by class."""
    datasets = require("sklearn.datasets", "bench", "the digit benchmarks")
    data = datasets.load_digits()
    images = (np.asarray(data.images, dtype=np.float32) / 16.0)
    labels = np.asarray(data.target, dtype=np.int64)
    rng = np.random.default_rng(2019)
    members = {s: [] for s in SPLITS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.cumsum([round(f * len(idx)) for f in _FRACTIONS[:-1]])
        for s, part in zip(SPLITS, np.split(idx, cuts)):
            members[s].append(part)
    splits = {}
    for s in SPLITS:
        counts = np.array([len(p) for p in members[s]])
        table = np.zeros((10, counts.max()), dtype=np.int64)
        for c, part in enumerate(members[s]):
            table[c, : len(part)] = part
        splits[s] = (table, counts)
    return images, labels, splits


def split_indices(split):
    """Every image index of ``split`` (sorted)."""
    table, counts = load()[2][split]
    return np.sort(np.concatenate([table[c, : counts[c]] for c in range(10)]))


def numbers(rng, split, count, n, digits):
    """``count`` sets of ``n`` distinct ``digits``-digit numbers drawn
    uniformly from ``[0, 10**digits)``, as images of shape
    ``(count, n, 8, 8 * digits)`` (float32) and values ``(count, n)``."""
    if n > 10**digits:
        raise ValueError(f"n = {n} distinct numbers need more than {digits} digits")
    images, _, splits = load()
    table, counts = splits[split]
    values = np.argsort(rng.random((count, 10**digits)), axis=-1)[:, :n]  # n distinct per set
    out = np.empty((count, n, 8, 8 * digits), dtype=np.float32)
    for p in range(digits):
        digit = (values // 10 ** (digits - 1 - p)) % 10
        pick = table[digit, (rng.random(digit.shape) * counts[digit]).astype(np.int64)]
        out[..., 8 * p: 8 * p + 8] = images[pick]
    return out, values


def cnn(torch, width, outputs):
    """Two 3x3 convolutions (16 and 32 channels, ReLU, 2x2 max-pooling) and a
    hidden layer of 64 on one-channel 8 x ``width`` images: ``outputs`` per image."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(32 * 2 * (width // 4), 64), nn.ReLU(), nn.Linear(64, outputs),
    )
