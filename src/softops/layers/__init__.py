"""Layers: softops' operations as framework modules, opt-in per framework.

Import the framework's module (as ``einops.layers.torch``); nothing here
imports a framework::

    from softops.layers.torch import SoftRank, SoftArgmax

Each operation ``soft_rank``, ``soft_topk_mask``, ``lookup``, ... has a layer
named in CamelCase (``SoftRank``, ``SoftTopkMask``, ``Lookup``); the
constructor takes the function's options (``SoftTopkMask(k=3, axis=-1,
temperature=0.5, method="lapsum")``), the call takes its arrays
(``layer(x)``, ``Lookup()(arr, index)``) and the per-call keywords ``mask``
(the sorting family) and ``key`` (Gumbel noise).  ``learn_temperature=True``
makes the temperature (``bandwidth`` for ``SoftIndex``) a learnable parameter,
``exp(log_temperature)``, kept positive, started at the ``temperature``
given.  The table of layers, shared by every framework, is
``softops.layers._spec.LAYERS``.
"""
