"""The common first steps of an operation along one or more axes.

``prepare(x, axis, temperature)`` validates the arguments, finds the backend,
upcasts half precision to float32 for the computation, and moves the requested
axes last (flattened), so that methods only ever see ``(*batch, n)``; a
temperature array comes in the same row layout, ``(*batch, 1)``
(``softops._validate.temperature_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from softops._axis import AxisLayout, flatten_axes
from softops._backend import Backend
from softops._validate import check_float_array, check_temperature, normalize_axes, temperature_rows


@dataclass(frozen=True)
class Prepared:
    backend: Backend
    x: Any  # (*batch, n), in the compute dtype
    layout: AxisLayout
    dtype: Any  # the caller's dtype, restored on output
    temperature: Any  # Python float, 0-d or (*batch, 1) array in the compute dtype, >= tiny

    @property
    def row_temperature(self):
        """The temperature against a reduction over the rows (shape ``batch``)."""
        t = self.temperature
        return t[..., 0] if getattr(t, "ndim", 0) else t

    @property
    def xp(self):
        return self.backend.xp

    def output(self, y):
        """Cast a result back to the caller's dtype."""
        return self.xp.astype(y, self.dtype) if y.dtype != self.dtype else y


def compute_dtype(xp, dtype):
    """float16 and bfloat16 are computed in float32; other dtypes as they are."""
    return xp.float32 if xp.finfo(dtype).bits < 32 else dtype


def prepare(x, axis, temperature, *, name: str = "x", relative=None) -> Prepared:
    """``relative(p, tau)`` turns ``temperature=Relative(tau)`` into the
    family's temperature for the prepared rows ``p`` (without it, Relative is
    refused)."""
    backend = check_float_array(x, name)
    x = backend.canonical(x)
    xp = backend.xp
    temperature = check_temperature(temperature, backend, relative=relative is not None)
    tau = None
    if type(temperature).__name__ == "Relative":
        tau, temperature = temperature.tau, 1.0
    axes = normalize_axes(axis, x.ndim)
    empty = [a for a in axes if x.shape[a] == 0]
    if empty:
        raise ValueError(
            f"axis {empty[0]} of {name} has length 0; the operation needs at least one element"
        )
    caller_dtype = x.dtype
    dtype = compute_dtype(xp, x.dtype)
    if x.dtype != dtype:
        x = xp.astype(x, dtype)
    flat, layout = flatten_axes(xp, x, axes)
    # A temperature below the smallest normal number would divide to inf - inf.
    tiny = float(xp.finfo(dtype).smallest_normal)
    if isinstance(temperature, float):
        temperature = max(temperature, tiny)
    else:
        temperature = temperature_rows(xp, xp.clip(xp.astype(temperature, dtype), min=tiny), layout)
    p = Prepared(backend, flat, layout, caller_dtype, temperature)
    if tau is not None:
        t = relative(p, tau)
        p = Prepared(backend, flat, layout, caller_dtype, xp.clip(t, min=tiny, max=float(xp.finfo(dtype).max)))
    return p
