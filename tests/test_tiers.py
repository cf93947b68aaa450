"""Kernels compile on a background thread while small first calls run uncompiled
(``softops._kernels._tiers``): both tiers agree, every mode does what it says."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

pytest.importorskip("numba")

from softops._kernels import _tiers, isotonic, lapsum, network  # noqa: E402


def _rows(dtype):
    """Rows with ties, infinities, a constant row and random ones (n = 6)."""
    rng = np.random.default_rng(7)
    x = np.stack([rng.normal(size=6), [1.0, 1.0, 0.5, 1.0, -2.0, 3.0], [2.0] * 6,
                  [0.3, -np.inf, 2.0, -np.inf, 0.5, np.inf], rng.normal(size=6) * 1e3, rng.normal(size=6)])
    return x.astype(dtype)


PER_ROW = np.array([1.0, 0.5, 2.0, 1.0, 3e2, 0.7])
# Batch layouts: (rows, n), one unbatched row, a (2, 3) batch, one row shared by three temperatures.
LAYOUTS = {"rows": (lambda a: a, lambda p: p), "single": (lambda a: a[0], lambda p: p[0]),
           "batch": (lambda a: a.reshape(2, 3, 6), lambda p: p.reshape(2, 3)),
           "shared": (lambda a: a[:1], lambda p: p[:3])}


def _layouts(dtype, finite=False):
    x = _rows(dtype)
    if finite:
        x = np.where(np.isfinite(x), x, 0.0)
    for name, (rows, per_row) in LAYOUTS.items():
        yield name, rows(x), per_row(PER_ROW.astype(dtype))


def _both(call):
    """``call()`` compiled and interpreted."""
    with _tiers.warming():
        compiled = call()
    with _tiers.interpreting():
        plain = call()
    return compiled, plain


def _close(a, b, dtype):
    a, b = (np.asarray(v, np.float64) for v in (a, b))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1 + np.nanmax(np.abs(np.where(np.isfinite(a), a, 0)),
                                                                           initial=0)))


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,need_t", list(itertools.product(lapsum.OPS, (False, True))))
def test_lapsum_tiers_agree(op, need_t, dtype):
    for _, x, t in _layouts(dtype):
        k = 2.0 + t * 0 if op == "mask" else None
        (out, aux, gaps, y, order), plain = _both(lambda: lapsum.forward(op, x, t, k, need_t))
        for a, b in zip((out, aux, gaps, y, order), plain):
            _close(a, b, dtype)
        g = np.random.default_rng(1).normal(size=out.shape).astype(dtype)
        # The residuals of either tier serve the other's backward.
        grads, grads_plain = _both(lambda: lapsum.backward(op, *plain[3:], t, *plain[1:3], g, k, need_t))
        for a, b in zip(grads, grads_plain):
            _close(a, b, dtype)
        for a, b in zip(grads, lapsum.backward(op, y, order, t, aux, gaps, g, k, need_t)):
            _close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kl,unsort", list(itertools.product((False, True), (None, "z", "w"))))
def test_permutahedron_tiers_agree(kl, unsort, dtype):
    # The projection's inputs are finite (the method masks infinities).
    for _, z, scale in _layouts(dtype, finite=True):
        w = np.arange(6, 0, -1).astype(dtype)
        if unsort != "z":  # the sequence the kernel does not sort comes sorted descending
            z = -np.sort(-z, axis=-1)
        (p, start, order), plain = _both(lambda: isotonic.forward_numpy(z, w, scale, kl, unsort))
        _close(p, plain[0], dtype)
        np.testing.assert_array_equal(start, plain[1])
        if unsort is not None:
            np.testing.assert_array_equal(order, plain[2])
        g = np.random.default_rng(1).normal(size=p.shape).astype(dtype)
        grads, grads_plain = _both(lambda: isotonic.backward_numpy(z, w, scale, start, g, kl, order, unsort))
        for a, b in zip(grads, grads_plain):
            _close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("net,kind", list(itertools.product((0, 1), range(network.KINDS))))
def test_network_tiers_agree(net, kind, dtype):
    for _, y, t in _layouts(dtype, finite=True):
        shape = np.broadcast_shapes(y.shape[:-1], t.shape) + y.shape[-1:]
        w = np.random.default_rng(2).normal(size=shape).astype(dtype)
        g = np.random.default_rng(3).normal(size=shape).astype(dtype)
        # Outputs and gradients agree, and either tier's residuals serve the other's
        # backward (residual slots of unused comparator lanes are never read).
        (out, zs), (out_plain, zs_plain) = _both(lambda: network.sort_forward(y, t, net, kind))
        _close(out, out_plain, dtype)
        for residual in (zs, zs_plain):
            for a, b in zip(*_both(lambda: network.sort_backward(y, t, residual, g, net, kind, True))):
                _close(a, b, dtype)
        (out, zs, ds), (out_plain, zs_plain, ds_plain) = _both(lambda: network.columns_forward(y, t, w, net, kind))
        _close(out, out_plain, dtype)
        reference = network.columns_backward(y, t, w, zs, ds, g, net, kind, True)
        for residuals in ((zs, ds), (zs_plain, ds_plain)):
            for pair in _both(lambda: network.columns_backward(y, t, w, *residuals, g, net, kind, True)):
                for a, b in zip(pair, reference):
                    _close(a, b, dtype)


# --- the scheduling rules, on stand-in kernels -----------------------------------------


class _Stub:
    """A stand-in ``warm``: counts calls, blocks until released."""

    def __init__(self, fail=False):
        self.calls = 0
        self.release = threading.Event()
        self.fail = fail

    def __call__(self):
        self.calls += 1
        assert _tiers.compiled(("inner",), None, 1), "warm must see every kernel as compiled"
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("compile failed")


@pytest.fixture
def mode():
    yield _tiers.set_compile_mode
    _tiers.set_compile_mode(None)


def test_background_mode_interprets_small_calls_until_compiled(mode, monkeypatch):
    monkeypatch.setattr(_tiers, "GRACE", 0.01)
    mode("background")
    stub, key = _Stub(), ("stub", object())
    assert not _tiers.compiled(key, stub, 10)  # started, not ready: interpret
    threads = [t for t in threading.enumerate() if t.name == "softops-compile-stub"]
    assert len(threads) == 1 and not threads[0].daemon  # exit waits for it: the cache gets filled
    assert not _tiers.compiled(key, stub, 10)  # still compiling: no second thread, no wait
    stub.release.set()
    threads[0].join(10)
    assert _tiers.compiled(key, stub, 10) and stub.calls == 1


def test_large_calls_and_blocking_mode_wait_for_the_compile(mode):
    mode("background")
    stub, key = _Stub(), ("stub", object())
    stub.release.set()
    assert _tiers.compiled(key, stub, _tiers.INTERPRET_LIMIT + 1) and stub.calls == 1
    mode("blocking")
    stub, key = _Stub(), ("stub", object())
    stub.release.set()
    assert _tiers.compiled(key, stub, 1) and stub.calls == 1
    assert _tiers.compiled(key, stub, 1) and stub.calls == 1


def test_a_failed_compile_runs_the_compiled_kernel_which_reports_it(mode):
    mode("blocking")
    stub, key = _Stub(fail=True), ("stub", object())
    stub.release.set()
    assert _tiers.compiled(key, stub, 1)


def test_compile_mode_setting_and_environment(mode, monkeypatch):
    monkeypatch.setenv("SOFTOPS_COMPILE", "blocking")
    assert _tiers.get_compile_mode() == "blocking"
    mode("background")
    assert _tiers.get_compile_mode() == "background"
    with pytest.raises(ValueError, match="set_compile_mode.*'background', 'blocking'"):
        mode("lazy")
    mode(None)
    monkeypatch.setenv("SOFTOPS_COMPILE", "later")
    with pytest.raises(ValueError, match="SOFTOPS_COMPILE must be one of"):
        _tiers.get_compile_mode()


def test_interpreted_rebinds_the_module_helpers():
    def helper_py(v):
        return v + 1

    def kernel(v):
        return _helper(v) * 2  # noqa: F821 - a module global, as in the kernel modules

    compiled_helper = lambda v: -1  # noqa: E731 - what numba would have bound
    kernel.__globals__["_helper"] = compiled_helper
    try:
        assert kernel(1) == -2
        assert _tiers.interpreted(kernel, {"_helper": helper_py})(1) == 4
        assert kernel(1) == -2  # the module's own binding is untouched
    finally:
        del kernel.__globals__["_helper"]


# --- in a fresh process with an empty numba cache ---------------------------------------

FRESH = r"""
import os, sys, threading
import numpy as np
import softops
from softops._kernels import _tiers, isotonic
_tiers.GRACE = 0.0  # return at once (the compile takes seconds)
x = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 0.0, 2.0]])
first = softops.soft_rank(x)
busy = [t.name for t in threading.enumerate() if t.name.startswith("softops-compile")]
assert busy == ["softops-compile-isotonic"], busy
if sys.argv[1] == "fork":
    pid = os.fork()
    if pid == 0:  # a DataLoader-style worker: its own calls must not hang on the parent's compile
        np.testing.assert_allclose(softops.soft_rank(x), first, rtol=1e-12)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    for t in threading.enumerate():
        if t.name.startswith("softops-compile"):
            t.join()
    np.testing.assert_allclose(softops.soft_rank(x), first, rtol=1e-12)
    assert isotonic._numba_kernels()[False, "z"][0].signatures
print("OK")
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "fork"])
def test_fresh_process_first_call_does_not_wait_and_fills_the_cache(how):
    if how == "fork" and not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, SOFTOPS_COMPILE="background")
        out = subprocess.run([sys.executable, "-c", FRESH, how], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
        # The process exited while compiling; it waited for the compile, which filled the cache.
        cached = [name for _, _, files in os.walk(cache) for name in files]
        assert any(name.startswith("isotonic._forward_kernel") for name in cached), cached
        assert any(name.startswith("isotonic._backward_kernel") for name in cached), cached
