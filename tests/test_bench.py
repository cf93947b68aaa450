"""``python -m softops bench``: every learning task's ``--quick`` version
trains (its loss falls) and writes its table, JSON and plot; the speed bench
times every op; bad options and missing dependencies exit 2 with one error
line.  Nothing here asserts on accuracy or time."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="scikit-learn (softops[bench]) not installed")


def _bench(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "softops", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _outputs(tmp_path, name, stdout):
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert (tmp_path / f"{name}.md").read_text() in stdout + "\n"
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    return result


def test_bench_learn_quartiles_quick(tmp_path):
    """Every relaxation x method trains (its soft loss falls)."""
    done = _bench("learn", "quartiles", "--quick", "--out", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    result = _outputs(tmp_path, "quartiles", done.stdout)
    assert {r["N"] for r in result["rows"]} == {10, 100}
    assert len(result["rows"]) >= 30
    for r in result["rows"]:
        assert r["soft_loss_end"] < r["soft_loss_start"], r


@needs_sklearn
def test_bench_learn_digits_sort_quick(tmp_path):
    """Every softops sorting method (the registry's, so a new one joins) and
    every installed peer trains through its paper's loss, in two worker
    processes; the held-out accuracies are probabilities; the table has the
    exact-match, element-wise and Relative(tau) sections."""
    from softops.bench import digits_sort

    done = _bench("learn", "digits-sort", "--quick", "--workers", "2", "--out", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    result = _outputs(tmp_path, "digits_sort", done.stdout)
    expected = {c.name for c in digits_sort.contenders() if digits_sort.installed(c)}
    from softops.sort import SORT_METHODS

    assert set(SORT_METHODS) | {"permutahedron-kl"} <= expected
    assert {r["method"] for r in result["final"]} == expected
    assert {r["method"] for r in result["relative"]} == set(SORT_METHODS) | {"permutahedron-kl"}
    for r in result["final"] + result["relative"]:
        assert r["loss_end"] < r["loss_start"], r
        assert r["nonfinite_steps"] == 0, r
        for key in ("val_exact", "test_exact", "val_elementwise", "test_elementwise"):
            assert 0.0 <= r[key] <= 1.0
        assert r["test_exact"] <= r["test_elementwise"] + 1e-12  # a whole order right has every item right
    for section in ("### exact match", "### element-wise accuracy", "### Relative(1), no search"):
        assert section in done.stdout


@needs_sklearn
def test_bench_learn_topk_classification_quick(tmp_path):
    done = _bench("learn", "topk-classification", "--quick", "--out", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    result = _outputs(tmp_path, "topk_classification", done.stdout)
    names = {r["method"] for r in result["rows"]}
    assert {"cross-entropy", "permutahedron", "lapsum", "network", "neuralsort", "softsort"} <= names
    for r in result["rows"]:
        assert r["loss_end"] < r["loss_start"], r
        assert 0.0 <= r["top1"] <= r["topk"] <= 1.0, r


def test_bench_learn_keypoints_quick(tmp_path):
    """Each select method trains the net through the spatial soft-argmax; the
    hard argmax has no gradient (its row is the untrained net); kornia's
    softmax soft-argmax, where installed, trains like softops' softmax (the
    same function: test_speed_peers_compute_what_softops_computes)."""
    done = _bench("learn", "keypoints", "--quick", "--out", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    result = _outputs(tmp_path, "keypoints", done.stdout)
    rows = {r["method"]: r for r in result["rows"]}
    from softops.select import WEIGHT_METHODS

    assert set(WEIGHT_METHODS) | {"heatmap-ce + argmax", "hard argmax (autodiff)"} <= set(rows)
    for name, r in rows.items():
        if name == "hard argmax (autodiff)":
            assert r["has_gradient"] is False and r["loss_start"] == r["loss_end"]
        else:
            assert r["loss_end"] < r["loss_start"], r
        assert r["pixel_error"] > 0
    if "kornia" in rows:
        assert rows["kornia"]["pixel_error"] == pytest.approx(rows["softmax"]["pixel_error"], rel=0.05)


def test_bench_speed_quick(tmp_path):
    """Every op times softops (and the peers installed) and reports the ratios."""
    stem = tmp_path / "speed"
    done = _bench("speed", "--quick", "--frameworks", "torch", "--output", str(stem), "--no-progress",
                  "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "speed.json").read_text())
    from softops.bench.speed import OPS

    timed = {(r["name"], r["op"]) for r in result["results"] if r["median_ms"]}
    assert {("softops", op) for op in ("argmax2d", "sparsemax", "entmax15", "lookup2d")} <= timed
    assert {("softops permutahedron", "rank"), ("softops lapsum", "sort"), ("torch.sort (fwd)", "floor")} <= timed
    assert ("torch grid_sample", "lookup2d") in timed  # torch itself is the peer
    text = (tmp_path / "speed.md").read_text()
    assert text in done.stdout + "\n" and "Ratios (bilinear lookup, 2-D (index), same run)" in text
    assert len(OPS) == len({r["op"] for r in result["results"]} - {"floor"})


def test_speed_peers_compute_what_softops_computes():
    """The speed bench's peers are the same functions: kornia's spatial
    soft-argmax (x, y) is softops' (i, j) reversed, grid_sample's bilinear
    read is softops.lookup, entmax's sparsemax / entmax15 are
    argmax_weights' (at temperature 1)."""
    import torch

    from softops.bench import speed

    rng = torch.Generator().manual_seed(0)
    for op in speed.TORCH_OPS:
        (_, ours), (peer_name, peer) = speed._select_index(op, 1.0)
        n = 128
        try:
            f_peer = peer(n)
        except ImportError:
            continue
        x = torch.randn(3, n, generator=rng, dtype=torch.float32)
        a, b = ours(n)(x), f_peer(x)
        if op == "argmax2d":
            b = b.flip(-1)
        torch.testing.assert_close(a.reshape(-1), b.reshape(-1), rtol=1e-4, atol=1e-4, msg=peer_name)


@pytest.mark.parametrize("args,message", [
    (["learn", "digits"], "invalid choice: 'digits'"),
    (["learn", "quartiles", "--sizes", "1,10"], "must be at least 2"),
    (["learn", "digits-sort", "--sizes", "1"], "must be at least 2"),
    (["learn", "quartiles", "--methods", "bubble"], "unknown method 'bubble'"),
    (["learn", "digits-sort", "--methods", "bubble"], "unknown method 'bubble'"),
    (["learn", "keypoints", "--methods", "bubble"], "unknown method 'bubble'"),
    (["learn", "quartiles", "--steps", "0"], "--steps must be at least 1"),
    (["learn", "digits-sort", "--seeds", "0"], "--seeds must be at least 1"),
    (["learn", "topk-classification", "--sizes", "100"], "k must be below the 100 classes"),
    (["speed", "--ops", "bubble"], "unknown op 'bubble'"),
    (["speed", "--sizes", "1"], "must be at least 2"),
    (["speed", "--device", "tpu"], "--device must be cpu or cuda"),
])
def test_bench_bad_options_exit_2(args, message):
    """A bad option is argparse's usage and one error line, exit status 2, no traceback."""
    done = _bench(*args, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("usage: softops") and [l for l in lines if "error:" in l] == lines[-1:], lines


def test_bench_speed_cuda_without_gpu_exits_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = _bench("speed", "--device", "cuda", "--quick", timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("module,args,message", [
    ("torchsort", ["learn", "digits-sort", "--methods", "torchsort"], "peer 'torchsort' is not installed: pip"),
    ("kornia", ["learn", "keypoints", "--methods", "kornia"], "peer 'kornia' is not installed: pip install 'softops[bench]'"),
    ("sklearn", ["learn", "digits-sort"], "needs sklearn: pip install 'softops[bench]'"),
    ("sklearn", ["learn", "topk-classification"], "needs sklearn: pip install 'softops[bench]'"),
])
def test_bench_missing_dependency_names_the_extra(tmp_path, module, args, message):
    """A peer or scikit-learn that cannot be imported (simulated by a module
    that raises ImportError, first on the path) is one error line naming
    what installs it, exit 2."""
    (tmp_path / f"{module}.py").write_text("raise ImportError('simulated: not installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = _bench(*args, "--quick", env=env, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_bench_help_is_plain_text():
    done = _bench("--help", timeout=120)
    assert done.returncode == 0
    for task in ("digits-sort", "quartiles", "keypoints", "topk-classification", "bench speed"):
        assert task in done.stdout
    assert "\x1b[" not in done.stdout  # no colour codes
