"""Threads: the kernels split large calls over softops' own non-spinning pool,
follow the framework's thread setting, and give the same bits on any number of
threads (softops._kernels._threads)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import softops
from softops._kernels import _threads, isotonic, lapsum, rowsort

# Rows x n well above MIN_CHUNK * 4, so that 4 threads cut it into 8 pieces.
BIG = (512, 300)


@pytest.fixture(autouse=True)
def healthy_pool():
    """Each test starts with helpers in use (no back-off from an earlier test)."""
    _threads._Health.skip, _threads._Health.stretch = 0, 8
    yield
    _threads._Health.skip, _threads._Health.stretch = 0, 8


@pytest.fixture
def threads():
    """Set softops' thread count for one test and restore the default after."""
    yield softops.set_num_threads
    softops.set_num_threads(None)


@pytest.fixture
def spy_pool(monkeypatch):
    """Counts the calls handed to the pool."""
    calls = []
    real = _threads._get_pool

    class Spy:
        def submit(self, fn, *a):
            calls.append(fn)
            return real().submit(fn, *a)

    monkeypatch.setattr(_threads, "_get_pool", Spy)
    monkeypatch.setattr(_threads, "available_cores", lambda: 4)
    return calls


def _kernel_outputs(x):
    w = np.arange(x.shape[-1], 0, -1, dtype=x.dtype)
    p, start, order = isotonic.forward_numpy(x, w, np.ones(x.shape[0], x.dtype), False, "z")
    g = np.cos(np.arange(x.size, dtype=x.dtype)).reshape(x.shape)
    gz, gw, gc = isotonic.backward_numpy(x, w, np.ones(x.shape[0], x.dtype), start, g, False, order, "z")
    outs = [p, start, order, gz, gc, *rowsort.sort_rows(x)]
    for op in ("rank", "sort", "mask"):
        k = np.full(x.shape[0], 7.0, x.dtype) if op == "mask" else None
        out, aux, gaps, y, o = lapsum.forward(op, x, np.ones(x.shape[0], x.dtype), k)
        outs += [out, aux, gaps, *lapsum.backward(op, y, o, np.ones(x.shape[0], x.dtype), aux, gaps, g, k)]
    return outs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_on_any_number_of_threads(threads, spy_pool, dtype):
    x = np.random.default_rng(0).standard_normal(BIG).astype(dtype)
    threads(1)
    one = _kernel_outputs(x)
    assert not spy_pool
    for n in (2, 3, 4):
        threads(n)
        many = _kernel_outputs(x)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b)
    assert spy_pool, "a large call on several threads must use the pool"


def test_small_calls_stay_on_the_callers_thread(threads, spy_pool):
    threads(4)
    _kernel_outputs(np.random.default_rng(0).standard_normal((8, 64)))
    assert not spy_pool


def test_torch_calls_follow_torch_threads(spy_pool):
    torch = pytest.importorskip("torch")
    x = torch.randn(*BIG, dtype=torch.float64, requires_grad=True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        softops.soft_rank(x).sum().backward()
        assert not spy_pool, "torch.set_num_threads(1) must keep the kernels on one thread"
        torch.set_num_threads(4)
        softops.soft_rank(x).sum().backward()
        assert spy_pool
    finally:
        torch.set_num_threads(before)


def test_softops_setting_overrides_torch(threads, spy_pool):
    torch = pytest.importorskip("torch")
    x = torch.randn(*BIG, dtype=torch.float64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        threads(1)
        softops.soft_sort(x)
        assert not spy_pool
    finally:
        torch.set_num_threads(before)


def test_exception_in_a_piece_is_raised(threads):
    threads(2)

    def call(lo, hi):
        if lo > 0:
            raise ArithmeticError("piece failed")

    with pytest.raises(ArithmeticError, match="piece failed"):
        _threads.run(call, 1000, 1 << 12)


def _counter(rows):
    """A row counter and the piece call that counts into it."""
    seen = np.zeros(rows, int)

    def call(lo, hi):
        seen[lo:hi] += 1

    return seen, call


def test_every_row_is_computed_once(threads):
    threads(4)
    seen, call = _counter(1001)
    _threads.run(call, 1001, 1 << 12)
    np.testing.assert_array_equal(seen, 1)


def test_late_helpers_back_off(threads, monkeypatch):
    """A helper the OS never schedules: the call finishes on the caller's
    thread, and the next calls skip the pool for a doubling stretch."""
    submitted = []

    class Stalled:
        def submit(self, fn, *a):
            from concurrent.futures import Future

            submitted.append(fn)
            return Future()  # never runs; cancel() succeeds

    monkeypatch.setattr(_threads, "_get_pool", Stalled)
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    threads(2)
    seen, call = _counter(1000)
    _threads.run(call, 1000, 1 << 12)
    np.testing.assert_array_equal(seen, 1)
    assert len(submitted) == 1 and _threads._Health.skip == 8
    for _ in range(8):
        _threads.run(call, 1000, 1 << 12)
    assert len(submitted) == 1, "backed-off calls must not use the pool"
    _threads.run(call, 1000, 1 << 12)
    assert len(submitted) == 2 and _threads._Health.skip == 16
    np.testing.assert_array_equal(seen, 10)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_raise(bad):
    with pytest.raises(ValueError, match="positive integer"):
        softops.set_num_threads(bad)


def test_bad_environment_setting_raises(monkeypatch):
    monkeypatch.setenv("SOFTOPS_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="SOFTOPS_NUM_THREADS"):
        softops.get_num_threads()
    monkeypatch.setenv("SOFTOPS_NUM_THREADS", "3")
    assert softops.get_num_threads() == 3


FORK = r"""
import multiprocessing, numpy as np, softops
softops.set_num_threads(2)
x = np.random.default_rng(1).standard_normal((512, 300))
expected = float(np.asarray(softops.soft_rank(x)).sum())  # starts the pool here

def child(queue):
    queue.put(float(np.asarray(softops.soft_rank(x)).sum()))

ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
p = ctx.Process(target=child, args=(queue,))
p.start()
p.join(timeout=120)
assert p.exitcode == 0, p.exitcode
assert abs(queue.get(timeout=5) - expected) <= 1e-12 * abs(expected)
print("ok")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_after_the_pool_started():
    """A DataLoader worker is a fork of a process whose pool threads it lacks
    (in a fresh process: forking this one, which may hold JAX's threads, could
    deadlock for reasons of JAX's own)."""
    out = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_numba_starts_no_thread_pool_of_its_own():
    """No numba threading layer (OpenMP / TBB spin between regions) is ever launched."""
    code = (
        "import numpy as np, numba, softops\n"
        "x = np.random.default_rng(0).standard_normal((512, 300))\n"
        "for m in ('permutahedron', 'lapsum'):\n"
        "    softops.soft_rank(x, method=m); softops.soft_sort(x, method=m); softops.soft_topk_mask(x, 5, method=m)\n"
        "try:\n"
        "    print(numba.threading_layer())\n"
        "except ValueError:\n"
        "    print('none')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"
