r"""Row kernels on several threads, without a pool that spins.

The numba kernels are compiled serially (``njit(nogil=True)``, no
``parallel=True``) and take a range of rows.  ``run`` splits a call's rows
into chunks and runs them on softops' own pool of Python threads (the kernels
release the GIL), one chunk on the calling thread.  Why not numba's
``prange``: its OpenMP / TBB pools busy-wait between parallel regions and
size themselves from the machine, not from the framework's setting, so next
to PyTorch's own pool, under ``torch.set_num_threads(1)`` or next to a second
process they fought for the cores (10-44x slower than one thread).  Idle
threads here block on a queue; they never spin.

How many threads a call uses:

* ``softops.set_num_threads(n)`` (or the ``SOFTOPS_NUM_THREADS`` environment
  variable) when set;
* otherwise the framework's own setting for calls from it
  (``torch.get_num_threads()``, which DataLoader workers and most launchers
  set to 1);
* otherwise the cores this process may run on (its CPU affinity).

And never more chunks than ``rows * n / MIN_CHUNK`` entries allow: a chunk
must carry enough work to pay for handing it to a thread (tens of
microseconds), so small calls run on the calling thread alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MIN_CHUNK", "available_cores", "framework_threads", "get_num_threads", "run", "set_num_threads",
           "threads_for_call"]

# Entries (rows x n) per chunk below which a call is not split further:
# about 0.2-1 ms of kernel work, against ~20 us to hand a chunk to a thread.
MIN_CHUNK = 1 << 15

_setting: int | None = None
_framework: contextvars.ContextVar = contextvars.ContextVar("softops_framework_threads", default=None)
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _check(n, what):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return n


def set_num_threads(n: int | None) -> None:
    """Set how many threads softops' CPU kernels use per call (``None``: back
    to the default, the framework's setting or the available cores).  It
    applies to every framework, PyTorch included, and to every thread of the
    process.

    >>> import softops
    >>> softops.set_num_threads(1); softops.get_num_threads()
    1
    >>> softops.set_num_threads(None)
    """
    global _setting
    _setting = None if n is None else _check(n, "set_num_threads(n)")


def _env_setting():
    value = os.environ.get("SOFTOPS_NUM_THREADS", "").strip()
    if not value:
        return None
    try:
        return _check(int(value), "SOFTOPS_NUM_THREADS")
    except ValueError:
        raise ValueError(f"SOFTOPS_NUM_THREADS must be a positive integer, got {value!r}") from None


def get_num_threads() -> int:
    """The threads a call from NumPy or JAX uses: ``set_num_threads``'s value,
    else ``SOFTOPS_NUM_THREADS``, else the available cores.  (Calls from
    PyTorch follow ``torch.get_num_threads()`` unless one of the first two is set.)"""
    return _setting or _env_setting() or available_cores()


@contextlib.contextmanager
def framework_threads(n: int):
    """Within the block, kernel calls follow the framework's thread setting ``n``
    (unless softops' own setting is made)."""
    token = _framework.set(max(1, int(n)))
    try:
        yield
    finally:
        _framework.reset(token)


def threads_for_call() -> int:
    explicit = _setting or _env_setting()
    if explicit:
        return explicit
    framework = _framework.get()
    return framework if framework is not None else available_cores()


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, available_cores() - 1),
                                       thread_name_prefix="softops-kernel")
        return _pool


def _forget_pool():
    # A forked child (a DataLoader worker) has none of the parent's threads.
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


class _Health:
    """Whether helper threads get a core.  After a call whose helpers started
    late (later than a quarter of the call, or never: the OS had no free core
    for them, on a busy machine or next to a pool that spins), the next calls
    run on the caller's thread alone, for a stretch that doubles while that
    persists (8, 16, ..., 1024 calls), and then probe again: on a busy machine
    a helper costs the caller more than it gives."""

    skip = 0
    stretch = 8

    @classmethod
    def report(cls, late: bool):
        if late:
            cls.skip, cls.stretch = cls.stretch, min(2 * cls.stretch, 1024)
        else:
            cls.stretch = 8


def run(call, rows: int, n: int) -> None:
    """``call(lo, hi)`` for pieces ``[lo, hi)`` covering ``range(rows)`` (rows of
    ``n`` entries), on up to ``threads_for_call()`` threads; returns when all are
    done (an exception in any piece is raised here).

    The rows are cut into twice as many pieces as threads, and every thread,
    the caller's included, takes the next piece until none is left: a pool
    thread that the OS does not schedule soon (a busy machine) leaves its
    pieces to the others, so a call is never slower than the caller's thread
    alone by more than one piece; and late helpers send the next calls to the
    caller's thread alone for a while (``_Health``)."""
    threads = min(threads_for_call(), available_cores(), rows, max(1, (rows * max(n, 1)) // MIN_CHUNK))
    if threads > 1 and _Health.skip > 0:
        _Health.skip -= 1
        threads = 1
    if threads <= 1:
        call(0, rows)
        return
    pieces = min(rows, 2 * threads)
    bounds = [p * rows // pieces for p in range(pieces + 1)]
    counter = itertools.count()  # next() is atomic: each piece is taken once
    started = []

    def take(helper):
        if helper:
            started.append(time.perf_counter())
        while (p := next(counter)) < pieces:
            call(bounds[p], bounds[p + 1])

    pool = _get_pool()
    t0 = time.perf_counter()
    helpers = [pool.submit(take, True) for _ in range(threads - 1)]
    try:
        take(False)
    finally:
        for f in helpers:
            if not f.cancel():  # a helper that never started has nothing to do
                f.result()
    elapsed = time.perf_counter() - t0
    _Health.report(len(started) < threads - 1 or max(started) - t0 > 0.25 * elapsed)
