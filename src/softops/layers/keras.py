"""softops' operations as Keras 3 layers (see ``softops.layers``).

They run under all three Keras backends, ``tensorflow``, ``jax`` and
``torch`` (set ``KERAS_BACKEND`` before importing Keras): each hands softops
its own arrays, and softops answers in them.  Every layer is registered for
``keras.saving`` (package ``softops``); ``get_config`` holds the options
(softops' config objects as ``{"softops": name, "config": fields}``), a learnt
temperature travels with the weights.  The sorting family's ``mask``
(True = present) is Keras' own mask convention: a mask from an earlier layer
(``Embedding(mask_zero=True)``, ``Masking``) reaches it as ``mask``.

>>> import keras, numpy as np
>>> from softops.layers.keras import SoftRank
>>> keras.ops.convert_to_numpy(SoftRank(temperature=2.0)(np.array([3.0, 1.0, 2.0], dtype="float32")))
array([2.5, 1.5, 2. ], dtype=float32)
"""

from __future__ import annotations

import math

import keras

from softops.layers._spec import LAYERS, Layer, call, describe, from_config, options, to_config

__all__ = sorted(LAYERS)


class _Layer(keras.layers.Layer):
    _layer: Layer

    def __init__(self, *, learn_temperature: bool = False, name=None, dtype=None, trainable=True, **opts):
        super().__init__(name=name, dtype=dtype, trainable=trainable)
        given = {k: from_config(v) for k, v in opts.items()}
        self.options, self._start = options(self._layer, type(self).__name__, given, learn_temperature)
        # The sorting family's mask (True = present) is Keras' mask: a Keras
        # mask from an earlier layer (Embedding(mask_zero=True), Masking)
        # arrives as ``mask``; none is passed on (top-k and quantiles change
        # the axis).
        self.supports_masking = "mask" in self._layer.per_call
        self.log_temperature = None
        if self._start is not None:
            self.log_temperature = self.add_weight(
                name="log_temperature", shape=(), initializer=keras.initializers.Constant(math.log(self._start)),
                trainable=True, dtype="float32")

    @property
    def temperature(self):
        """The learnt temperature (``bandwidth`` for ``SoftIndex``), ``exp(log_temperature)``;
        None unless ``learn_temperature``."""
        return None if self.log_temperature is None else keras.ops.exp(self.log_temperature)

    def call(self, *arrays, **per_call):
        return call(self._layer, type(self).__name__, self.options, arrays, per_call, self.temperature,
                    keras.ops.cast)

    def compute_mask(self, *args, **kwargs):
        return None

    def compute_output_spec(self, *arrays, **per_call):
        # The function itself on symbolic inputs would not trace through
        # softops' host kernels: evaluate it on zeros of the inputs' shapes.
        import numpy as np

        zeros = [np.zeros([1 if d is None else d for d in a.shape], dtype=a.dtype) for a in arrays]
        out = call(self._layer, type(self).__name__, self.options, tuple(zeros), {}, None, None)
        return keras.KerasTensor(out.shape, dtype=str(out.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({k: to_config(v) for k, v in self.options.items()})
        if self._start is not None:
            config.update({"learn_temperature": True, self._layer.learnable: self._start})
        return config

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {describe(self.options, self._start is not None)}>"


for _name, _layer in LAYERS.items():
    globals()[_name] = keras.saving.register_keras_serializable(package="softops")(
        type(_name, (_Layer,), {"_layer": _layer, "__doc__": _layer.doc, "__module__": __name__}))
del _name, _layer
