"""Plumbing shared by the operation families (select, index, sort, top-k)."""

from __future__ import annotations


def straight_through(backend, hard, soft):
    """The value of ``hard`` with the gradient of ``soft`` (exact: ``soft - soft``
    is 0).  Where ``soft`` is infinite (an entry at ``±inf``, a constant) the
    gradient is 0 rather than ``inf - inf``."""
    xp = backend.xp
    constant = backend.stop_gradient(soft)
    infinite = xp.isinf(constant)
    delta = xp.where(infinite, 0.0, soft) - xp.where(infinite, 0.0, constant)  # never inf - inf
    return backend.stop_gradient(hard) + delta


def index_dtype(xp):
    """The namespace's default index dtype (int64; int32 for JAX without x64,
    where asking for int64 warns and truncates)."""
    info = getattr(xp, "__array_namespace_info__", None)
    return xp.int64 if info is None else info().default_dtypes()["indexing"]


def per_row(backend, x, a):
    """A float or array ``a`` (broadcastable to ``x.shape[:-1]``, or of shape
    ``(*batch, 1)``) as an array of ``x``'s dtype with one axis per batch axis
    of ``x`` (the kernels broadcast it; vmap adds the same leading axis to all)."""
    xp = backend.xp
    shape = (1,) * (x.ndim - 1)
    if isinstance(a, (int, float)):
        return xp.full(shape, float(a), dtype=x.dtype, device=backend.device(x))
    if a.dtype != x.dtype:
        a = xp.astype(a, x.dtype)
    if a.ndim == x.ndim:
        return a[..., 0]
    return xp.reshape(a, (1,) * (x.ndim - 1 - a.ndim) + tuple(a.shape)) if a.ndim < x.ndim - 1 else a


_PLAIN = (list, tuple, int, float)


def as_array(value, like=None):
    """Plain Python input (a number or a nested list) as an array; arrays pass
    through unchanged.

    Without ``like`` it becomes a NumPy array, as ``numpy.asarray`` makes it
    (integers stay integers; a list of floats is float64).  With ``like`` (the
    array it goes with) it takes that array's framework and device, and floats
    take its dtype where that is floating (integers stay int64), so that
    ``lookup(t, 1.5)`` reads a torch tensor ``t`` at a torch index."""
    if isinstance(value, bool) or not isinstance(value, _PLAIN):
        return value
    import numpy as np

    a = np.asarray(value)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"expected numbers or (nested) lists of numbers, got {value!r}")
    if like is None:
        return a
    from softops._backend import backend_of

    backend = backend_of(like)
    xp = backend.xp
    if a.dtype.kind != "f":
        dtype = xp.int64
    else:
        dtype = like.dtype if xp.isdtype(like.dtype, "real floating") else xp.float64
    return xp.asarray(a.tolist() if a.ndim else a.item(), dtype=dtype, device=backend.device(like))


def as_float_array(value):
    """``as_array`` for an operation's main input: a plain list of numbers is a
    float64 NumPy array (``soft_rank([3, 1, 2])`` ranks 3, 1, 2)."""
    if isinstance(value, bool) or not isinstance(value, _PLAIN):
        return value
    import numpy as np

    a = as_array(value)
    return a.astype(np.float64) if a.dtype.kind in "iu" else a


def mask_rows(p, mask):
    """``mask`` (boolean, broadcastable to the caller's ``x``; True = present) in
    the row layout of the prepared input ``p`` (``(*batch, n)``), or None."""
    if mask is None:
        return None
    import numpy as np

    from softops._axis import flatten_axes
    from softops._backend import backend_of

    xp = p.xp
    if isinstance(mask, (bool, list, tuple, np.ndarray)) and not isinstance(p.x, np.ndarray):
        mask = xp.asarray(np.asarray(mask), device=p.backend.device(p.x))
    elif isinstance(mask, (bool, list, tuple)):
        mask = np.asarray(mask)
    try:
        same = backend_of(mask).name == p.backend.name
    except TypeError:
        same = False
    if not same:
        raise TypeError(f"mask must be a boolean array of x's framework ({p.backend.name}), got {type(mask).__name__}")
    if mask.dtype != xp.bool:
        raise TypeError(f"mask must be boolean (True = present), got dtype {mask.dtype}")
    try:
        mask = xp.broadcast_to(mask, p.layout.shape)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to x's shape {p.layout.shape}") from e
    return flatten_axes(xp, mask, p.layout.axes)[0]


def per_shard(*split):
    """Decorate an operation along ``axis`` whose array arguments ``split``
    (the first one the operand, the others broadcasting against it: a mask,
    values, a temperature array) go row for row with it, so that, for a JAX
    operand whose batch axes carry an explicit sharding (a mesh of
    ``jax.sharding.AxisType.Explicit`` axes, ``jax.make_mesh``'s default), it
    runs on each device's rows under ``jax.shard_map``
    (``softops._backend._jax.sharded_call``): the host kernels' callbacks then
    stay on their shard instead of gathering the batch on one device.  Any
    other call is the operation's own."""
    import functools
    import inspect
    import sys

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            jax = sys.modules.get("jax")
            if jax is not None and isinstance(args[0] if args else kwargs.get(split[0]), jax.Array):
                from softops._backend._jax import sharded_call

                return sharded_call(fn, signature, split, args, kwargs)
            return fn(*args, **kwargs)

        return wrapper

    return decorate
