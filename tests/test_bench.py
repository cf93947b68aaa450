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
    (["learn", "digits-sort", "--sizes", "101"], "n must be at most 100"),
    (["learn", "digits-sort", "--tau", "inf"], "--tau must be finite and > 0"),
    (["learn", "--sizes", "5"], "give a TASK with it"),
    (["speed", "--quick", "--sizes", "1"], "must be at least 2"),
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


def test_bench_help_lists_every_task_and_what_sizes_means():
    from softops.bench import TASKS

    done = _bench("learn", "--help", timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    text = " ".join(done.stdout.split())
    for task, spec in TASKS.items():
        assert task in text and f"{task}: {spec.size_name}" in text
    done = _bench("--help", timeout=120)
    assert done.returncode == 0 and "bench speed" in done.stdout and "topk-classification" in done.stdout


def _payload(means, seeds=3):
    """A digits-sort payload with the given {(method, n): [test exact per seed]}."""
    names = list(dict.fromkeys(m for m, _ in means))
    sizes = sorted({n for _, n in means})
    final = [{"method": m, "n": n, "seed": s, "temperature": 1.0, "seconds": 1.0, "nonfinite_steps": 0,
              "test_exact": v, "test_elementwise": v} for (m, n), vs in means.items() for s, v in enumerate(vs)]
    return {"sizes": sizes, "digits": 2, "steps": 1, "lr": 0.01, "images_per_step": 1, "seeds": seeds,
            "eval_sets": 1, "grid": [1.0], "tau": 1.0, "not_installed": [], "relative": [], "final": final,
            "contenders": [{"name": m, "loss": "perm-ce", "peer": None} for m in names]}


def test_digits_sort_table_marks_the_best_and_the_ties():
    """Bold for the best mean; `=` for a mean within the larger of the two
    standard deviations of it; nothing for a clear loss; one seed: no ties."""
    from softops.bench.digits_sort import table

    text = table(_payload({("a", 3): [0.50, 0.52, 0.54], ("b", 3): [0.49, 0.51, 0.53],
                           ("c", 3): [0.30, 0.31, 0.32]}))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "**0.520 ± 0.020**" in rows["a"]
    assert "0.510 ± 0.020=" in rows["b"]
    assert "0.310 ± 0.010 (" in rows["c"] and "=" not in rows["c"].split("|")[3]
    one = table(_payload({("a", 3): [0.5], ("b", 3): [0.49]}, seeds=1))
    assert "one seed: no standard deviation, so no tie test" in one and "0.490 ± 0.000 (" in one


@needs_sklearn
def test_every_contender_relaxes_the_true_order():
    """At a small temperature each contender's relaxation is the true order:
    the argmax of each row of a permutation matrix is the item at that slot
    (softops' P[s, j], diffsort's transposed, SoftTorch's), soft ranks order
    like the true ranks (the losses' targets are built the same way)."""
    import numpy as np
    import torch

    from softops.bench import digits_sort

    x = torch.tensor([[0.3, -1.2, 2.0, 0.5, 1.1], [4.0, 3.0, -2.0, 0.0, 1.0]], dtype=torch.float64)
    order = torch.argsort(x, dim=-1)
    for c in digits_sort.contenders():
        if not digits_sort.installed(c):
            continue
        out = digits_sort._relaxed(torch, c, x.float() if c.peer else x, c.default_temperature * 0.01).detach()
        if c.loss == "rank-mse":
            np.testing.assert_array_equal(torch.argsort(out, dim=-1).numpy(), order.numpy(), err_msg=c.name)
            np.testing.assert_allclose(out.numpy(), (torch.argsort(order, -1) + 1).numpy(), atol=0.05,
                                       err_msg=c.name)
        else:
            np.testing.assert_array_equal(out.argmax(-1).numpy(), order.numpy(), err_msg=c.name)
            assert float(digits_sort._loss(torch, c.loss, out, order)) < 0.1, c.name
