r"""Compiled kernels without waiting for the compiler: the first calls run interpreted.

numba compiles a kernel variant on its first call (one to three seconds per
variant on a 2-core machine; the README's "First call" table) and caches the
machine code on disk.  A fresh environment would pay that inside the user's
first call.  Instead, the first call of a variant (per operation variant and
dtype: ``key``) starts compiling it on a background thread and, while that
runs, computes with the same kernel uncompiled: its own functions as plain
Python (``row_kernel``).  Calls switch to the compiled kernel as soon as it
is ready.  Both tiers compute the same quantities; they agree to the dtype's
rounding (``tests/test_tiers.py``).

* A call waits for the compile (as before) when its input is large, more than
  ``INTERPRET_LIMIT`` entries (rows x n): interpreted Python costs about 15
  microseconds an entry, so a large call would take longer than the compile.
* ``SOFTOPS_COMPILE=blocking`` (or ``set_compile_mode("blocking")``) always
  waits, for bit-for-bit reproducible first calls; ``python -m softops
  warmup`` compiles every variant up front.
* With a warm disk cache the background thread only loads the machine code;
  a first call waits up to ``GRACE`` seconds for that, so it normally runs
  compiled already.
* The compile thread is not a daemon: a short script that exits while it runs
  waits for it, so the disk cache is filled for the next run.
* ``fork`` (DataLoader workers) waits for a running compile step and the
  child starts afresh (numba's compiler lock is never inherited held).

Tracing is unaffected: the choice is made inside the host kernels, which
``torch.compile`` and ``jax.jit`` treat as opaque.
"""

from __future__ import annotations

import contextlib
import os
import threading
import types

import numpy as np

__all__ = ["GRACE", "INTERPRET_LIMIT", "compiled", "get_compile_mode", "interpreted", "interpreting", "pick", "row_kernel",
           "set_compile_mode", "warming"]

# Entries (rows x n) up to which a call runs interpreted while its kernel compiles.
INTERPRET_LIMIT = 8192
# Seconds a first call waits for the background thread (a cache load takes less).
GRACE = 0.5
MODES = ("background", "blocking")

_mode = None  # set_compile_mode's value; None: SOFTOPS_COMPILE, else "background"
_lock = threading.Lock()
_events: dict = {}  # key -> threading.Event, set once the variant is compiled (or failed to)
_local = threading.local()
_hooked = False


def _check(mode, what):
    if mode not in MODES:
        raise ValueError(f"{what} must be one of {MODES}, got {mode!r}")
    return mode


def set_compile_mode(mode: str | None) -> None:
    """How a kernel that is not compiled yet runs: ``"background"`` (the
    default: compiled on a background thread, interpreted meanwhile for small
    inputs) or ``"blocking"`` (the call waits for the compile); ``None``: back
    to the default (or the ``SOFTOPS_COMPILE`` environment variable).

    >>> import softops
    >>> softops.set_compile_mode("blocking"); softops.get_compile_mode()
    'blocking'
    >>> softops.set_compile_mode(None)
    """
    global _mode
    _mode = None if mode is None else _check(mode, "set_compile_mode(mode)")


def get_compile_mode() -> str:
    """``set_compile_mode``'s value, else ``SOFTOPS_COMPILE``, else ``"background"``."""
    if _mode is not None:
        return _mode
    value = os.environ.get("SOFTOPS_COMPILE", "").strip()
    return _check(value, "SOFTOPS_COMPILE") if value else "background"


@contextlib.contextmanager
def _forced(value):
    before = getattr(_local, "forced", None)
    _local.forced = value
    try:
        yield
    finally:
        _local.forced = before


def warming():
    """Within the block (on this thread), every kernel runs compiled (compiling
    it on the spot): the compile thread and ``warmup`` compile through the
    kernels' public functions."""
    return _forced(True)


def interpreting():
    """Within the block (on this thread), every kernel runs uncompiled, as a
    first call does while its kernel compiles (for tests of that tier)."""
    return _forced(False)


def _compile(warm, done):
    try:
        with warming():
            warm()
    except Exception:  # the compiled call raises it again, where the user sees it
        pass
    finally:
        done.set()


def compiled(key, warm, size: int) -> bool:
    """Whether a call of ``size`` entries runs the compiled kernel ``key``
    (hashable: the module, variant and dtype).  ``warm()`` compiles it (a
    tiny call of the kernel's public function, which then reaches this
    function inside ``warming``).  False: run the uncompiled tier this time."""
    forced = getattr(_local, "forced", None)
    if forced is not None:
        return forced
    with _lock:
        done = _events.get(key)
        fresh = done is None
        if fresh:
            done = _events[key] = threading.Event()
    if done.is_set():
        return True
    if get_compile_mode() == "blocking" or size > INTERPRET_LIMIT:
        if fresh:
            _compile(warm, done)
        else:
            done.wait()  # another thread compiles it
        return True
    if not fresh:
        return False  # compiling on its thread
    _hook_fork()
    threading.Thread(target=_compile, args=(warm, done), name=f"softops-compile-{key[0]}", daemon=False).start()
    return done.wait(GRACE)


def pick(name: str, variant: tuple, compiled_kernels, plain_kernels, warm, dtype, size: int):
    """``compiled_kernels[variant]`` (numba's, None without numba) when
    ``compiled`` says so for module ``name``'s variant in ``dtype``, else
    ``plain_kernels()[variant]``; ``warm(*variant, dtype)`` compiles it."""
    if compiled_kernels is not None and compiled(
            (name, *variant, np.dtype(dtype).name), lambda: warm(*variant, dtype), size):
        return compiled_kernels[variant]
    return plain_kernels()[variant]


def _hook_fork():
    global _hooked
    with _lock:
        if _hooked or not hasattr(os, "register_at_fork"):
            return
        _hooked = True
    from numba.core.compiler_lock import global_compiler_lock

    def before():
        # A compile step in flight finishes first; the child then never
        # inherits numba's compiler lock held by a thread it does not have.
        global_compiler_lock.acquire()

    def after_in_parent():
        global_compiler_lock.release()

    def after_in_child():
        global _lock
        global_compiler_lock.release()
        _lock = threading.Lock()
        for key, done in list(_events.items()):
            if not done.is_set():  # its compile thread is not in the child
                del _events[key]

    os.register_at_fork(before=before, after_in_parent=after_in_parent, after_in_child=after_in_child)


def interpreted(function, plain: dict):
    """``function`` as plain Python whose global helpers are the plain-Python
    functions ``plain`` (name -> function): the kernel modules rebind those
    names to numba's compiled helpers once numba loads, which an interpreted
    call must not reach (calling them would compile them on the spot).
    Helpers of ``function``'s own module are rebound too, so their nested
    calls stay plain."""
    scope = dict(function.__globals__)

    def rebind(f):
        return types.FunctionType(f.__code__, scope, f.__name__, f.__defaults__, f.__closure__)

    scope.update({name: (rebind(f) if f.__globals__ is function.__globals__ else f) for name, f in plain.items()})
    return rebind(function)


def row_kernel(function, plain: dict, rows_at: int = -2):
    """The row kernel ``function(*arrays, row_lo, row_hi)`` interpreted
    (``interpreted``), on float64 copies of its float32 arrays.  The kernels
    are written for numba, where an expression mixing float32 values with
    float64 ones (constants, ``math`` functions) is float64; NumPy's scalars
    keep float32 there (NEP 50) and would overflow where the compiled kernel
    does not.  ``rows_at``: the position of ``row_lo`` (``row_hi`` follows;
    by default the last two arguments).  Rows ``row_lo:row_hi`` of the
    writable arrays are written back
    (other rows may belong to another thread's chunk); a float32 array that is
    a view of an earlier one (LapSum's read-only ``y_in``) stays a view of
    that one's copy."""
    run = interpreted(function, plain)

    def widened(*args):
        lo, hi = args[rows_at], args[rows_at + 1]
        wide = []
        for a in args:
            w = a
            if isinstance(a, np.ndarray) and a.dtype == np.float32:
                for b, wb in zip(args, wide):
                    if wb is not b and b.shape == a.shape and np.shares_memory(a, b):
                        w = wb.view()
                        break
                else:
                    with np.errstate(invalid="ignore"):  # an output's uninitialised memory may hold a signalling NaN
                        w = a.astype(np.float64)
                w.flags.writeable = a.flags.writeable
            wide.append(w)
        with np.errstate(all="ignore"):  # the compiled kernel computes the same overflows silently
            run(*wide)
        for a, w in zip(args, wide):
            if w is not a and a.flags.writeable and a.ndim and a.shape[0] >= hi:
                a[lo:hi] = w[lo:hi]

    return widened
