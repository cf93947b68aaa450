"""softops' operations as ``flax.nnx`` modules (see ``softops.layers``).

>>> import jax.numpy as jnp
>>> from softops.layers.flax import SoftRank
>>> layer = SoftRank(temperature=2.0, learn_temperature=True)
>>> layer(jnp.array([3.0, 1.0, 2.0], dtype=jnp.float32))
Array([2.5, 1.5, 2. ], dtype=float32)
>>> layer
SoftRank(learn_temperature=True)
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

from softops.layers._spec import LAYERS, Layer, call, describe, options

__all__ = sorted(LAYERS)


class _Module(nnx.Module):
    _layer: Layer

    def __init__(self, *, learn_temperature: bool = False, **opts):
        self.options, start = options(self._layer, type(self).__name__, opts, learn_temperature)
        if start is not None:
            self.log_temperature = nnx.Param(jnp.asarray(math.log(start), dtype=jnp.float32))

    @property
    def temperature(self):
        """The learnt temperature (``bandwidth`` for ``SoftIndex``), ``exp(log_temperature)``;
        None unless ``learn_temperature``."""
        t = getattr(self, "log_temperature", None)
        return None if t is None else jnp.exp(t[...])

    def __call__(self, *arrays, **per_call):
        return call(self._layer, type(self).__name__, self.options, arrays, per_call, self.temperature,
                    lambda t, dtype: t.astype(dtype))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({describe(self.options, self.temperature is not None)})"


for _name, _layer in LAYERS.items():
    globals()[_name] = type(_name, (_Module,), {"_layer": _layer, "__doc__": _layer.doc, "__module__": __name__})
del _name, _layer
