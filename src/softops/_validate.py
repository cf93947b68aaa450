"""Argument checks shared by every public operation.

Each check raises a ``TypeError`` (wrong kind of thing) or ``ValueError`` (right
kind, wrong value) whose message names the argument and what is allowed.  Checks
never synchronise with an accelerator and never break a trace: values of traced or
on-device arrays are not inspected.
"""

from __future__ import annotations

import math
import numbers
import sys

from softops._backend import Backend, backend_of


def check_float_array(x, name: str = "x") -> Backend:
    """Return the backend of ``x``, which must be a real floating array."""
    try:
        backend = backend_of(x)
    except TypeError:
        raise TypeError(
            f"{name} must be a PyTorch tensor, a JAX array, a TensorFlow tensor or a NumPy array, "
            f"got {type(x).__name__}"
        ) from None
    try:
        floating = backend.xp.isdtype(x.dtype, "real floating")
    except TypeError:  # a dtype NumPy does not know, e.g. ml_dtypes' bfloat16
        raise TypeError(
            f"{name} has dtype {x.dtype}, which NumPy cannot compute with (NumPy has no "
            f"bfloat16 arithmetic); pass {name}.astype(numpy.float32), or a JAX array "
            f"(jax.numpy.asarray({name})) to keep bfloat16"
        ) from None
    if not floating:
        raise TypeError(
            f"{name} must have a real floating dtype (float16, bfloat16, float32 or "
            f"float64), got {x.dtype}; convert it first, e.g. {_to_float(backend, name)}"
        )
    return backend


def _to_float(backend, name):
    return {"torch": f"{name}.float()", "jax": f"{name}.astype(jax.numpy.float32)",
            "tensorflow": f"tf.cast({name}, tf.float32)"}.get(
        backend.name, f"{name}.astype(float)")


def concrete_values(value):
    """The values of an array as a float64 NumPy array, or None where reading them
    would cost a device sync or break a trace (jax tracers, torch under compile or
    on an accelerator)."""
    import numpy as np

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        try:  # fails inside torch.func transforms, where the value is not known
            return value.detach().double().numpy()
        except RuntimeError:
            return None
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(value, jax.core.Tracer):
        return None
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(value, (tf.Tensor, tf.Variable)):
        if not tf.executing_eagerly() or "GPU" in (value.device or "").upper():
            return None
        return np.asarray(value.numpy(), dtype=np.float64)
    return np.asarray(value, dtype=np.float64)


def concrete_scalar(value) -> float | None:
    """The value of a 0-d array as a Python float, or None (see ``concrete_values``)."""
    values = concrete_values(value)
    return None if values is None else float(values)


def check_temperature(temperature, backend: Backend, name: str = "temperature", *, relative: bool = True):
    """Return the temperature: a positive finite Python float, ``Relative(tau)``
    (where ``relative``), or an array of the input's framework (0-d, or one
    value per row: see ``temperature_rows``), so that it can be learned.  The
    values of an array are checked where reading them costs no device sync."""
    if type(temperature).__name__ == "Relative":
        if relative:
            return temperature
        raise TypeError(f"{name} must be a positive number here, not Relative(tau)")
    if isinstance(temperature, bool) or not (
        isinstance(temperature, numbers.Real) or hasattr(temperature, "shape")
    ):
        raise TypeError(
            f"{name} must be a positive real number, an array of them or softops.Relative(tau), "
            f"got {temperature!r}"
        )
    if isinstance(temperature, numbers.Real):  # Python and NumPy scalars
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"{name} must be finite and > 0, got {temperature}")
        return temperature
    else:
        try:
            same_framework = backend_of(temperature) is backend
        except TypeError:
            same_framework = False
        if not same_framework:
            raise TypeError(
                f"{name} must be a Python number or an array of the same framework "
                f"as x ({backend.name}), got {type(temperature).__name__}"
            )
        if not backend.xp.isdtype(temperature.dtype, "real floating"):
            raise TypeError(f"{name} must be a floating array, got dtype {temperature.dtype}")
        values = concrete_values(temperature)
    if values is not None:
        import numpy as np

        values = np.asarray(values)
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise ValueError(f"{name} must be finite and > 0, got {values[bad].flat[0]}")
    return temperature


def temperature_rows(xp, temperature, layout, name: str = "temperature"):
    """A temperature array in the row layout ``(*batch, 1)`` of ``layout`` (the
    caller's ``x`` with the operated-on axes moved last and flattened); a 0-d
    array stays 0-d.  Two forms are accepted: an array that broadcasts to the
    batch shape (``x``'s shape without the axes, e.g. ``(B,)`` for ``x`` of shape
    ``(B, n)``), or one with ``x``'s number of dimensions and size 1 on the axes
    (``keepdims`` form, e.g. ``(B, 1)``)."""
    shape = tuple(temperature.shape)
    if not shape:
        return temperature
    batch = layout.batch_shape
    ndim = len(batch) + len(layout.axes)
    if len(shape) == ndim:
        if any(shape[a] != 1 for a in layout.axes):
            raise ValueError(
                f"{name} of shape {shape} has x's number of dimensions, so it must have size 1 on "
                f"the operated-on axes {layout.axes} (x's shape is {layout.shape})"
            )
        kept = tuple(i for i in range(ndim) if i not in layout.axes)
        temperature = xp.reshape(temperature, tuple(shape[i] for i in kept))
        shape = tuple(temperature.shape)
    ok = len(shape) <= len(batch) and all(
        s in (1, b) for s, b in zip(shape[::-1], batch[::-1])
    )
    if not ok:
        raise ValueError(
            f"{name} of shape {shape} must broadcast to the batch shape {batch} (x's shape "
            f"{layout.shape} without the axes {layout.axes}), or have x's number of "
            "dimensions with size 1 on those axes"
        )
    temperature = xp.broadcast_to(temperature, batch)
    return xp.reshape(temperature, batch + (1,))


def check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(value, name: str, allowed) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}"
        )
    return value


def normalize_axes(axis, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """Non-negative axes from an int or a tuple of ints; checks range and repeats."""
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    if ndim == 0:
        raise ValueError(
            "x is 0-d (a single number); the operation works along an axis of an array "
            "with at least one dimension (e.g. x[None] or x.reshape(1))"
        )
    if not axes:
        raise ValueError(f"{name} must name at least one axis, got {axis!r}")
    result = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{name}={axis!r} is out of range for an array with {ndim} dimension(s); "
                f"allowed: {-ndim} to {ndim - 1}"
            )
        result.append(int(a) % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"{name}={axis!r} repeats an axis")
    return tuple(result)
