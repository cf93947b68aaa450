"""softops' operations as ``torch.nn.Module`` layers (see ``softops.layers``).

>>> import torch
>>> from softops.layers.torch import SoftRank
>>> layer = SoftRank(temperature=2.0, learn_temperature=True)
>>> layer(torch.tensor([3.0, 1.0, 2.0])).detach()
tensor([2.5000, 1.5000, 2.0000])
>>> layer
SoftRank(learn_temperature=True)
>>> sorted(name for name, _ in layer.named_parameters())
['log_temperature']
"""

from __future__ import annotations

import math

import torch

from softops.layers._spec import LAYERS, Layer, call, describe, options

__all__ = sorted(LAYERS)


class _Module(torch.nn.Module):
    _layer: Layer

    def __init__(self, *, learn_temperature: bool = False, **opts):
        super().__init__()
        name = type(self).__name__
        self.options, start = options(self._layer, name, opts, learn_temperature)
        if start is not None:
            self.log_temperature = torch.nn.Parameter(torch.tensor(math.log(start)))

    @property
    def temperature(self):
        """The learnt temperature (``bandwidth`` for ``SoftIndex``), ``exp(log_temperature)``;
        None unless ``learn_temperature``."""
        t = getattr(self, "log_temperature", None)
        return None if t is None else torch.exp(t)

    def forward(self, *arrays, **per_call):
        return call(self._layer, type(self).__name__, self.options, arrays, per_call, self.temperature,
                    lambda t, dtype: t.to(dtype))

    def extra_repr(self) -> str:
        return describe(self.options, self.temperature is not None)


for _name, _layer in LAYERS.items():
    globals()[_name] = type(_name, (_Module,), {"_layer": _layer, "__doc__": _layer.doc, "__module__": __name__})
del _name, _layer
