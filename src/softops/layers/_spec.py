"""The layers every framework module builds: one ``Layer`` per public operation."""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from dataclasses import dataclass

import softops
from softops.temperature import Relative


@dataclass(frozen=True)
class Layer:
    """``function``'s layer: ``inputs`` are the arrays the call takes (in
    order), ``required`` the options the constructor needs (no default),
    ``per_call`` the keywords the call may add (``mask``, ``key``) and
    ``learnable`` the option that ``learn_temperature`` learns (None: none)."""

    function: str
    inputs: tuple
    required: tuple = ()
    per_call: tuple = ()
    learnable: str | None = "temperature"

    @property
    def fn(self):
        return getattr(softops, self.function)

    @property
    def doc(self) -> str:
        first = (self.fn.__doc__ or "").strip().split("\n\n")[0]
        call = ", ".join(self.inputs + tuple(f"{k}=None" for k in self.per_call))
        return (f"``softops.{self.function}`` as a layer: ``layer({call})``; the constructor takes its "
                f"options{' (' + ', '.join(self.required) + ' required)' if self.required else ''}"
                f"{' and learn_temperature' if self.learnable else ''} (see ``softops.layers``).\n\n{first}")


_SELECT = dict(per_call=("key",))
_SORT = dict(per_call=("mask",))
LAYERS = {
    "ArgmaxWeights": Layer("argmax_weights", ("x",), **_SELECT),
    "SoftArgmax": Layer("soft_argmax", ("x",), **_SELECT),
    "SoftArgmin": Layer("soft_argmin", ("x",), **_SELECT),
    "SoftMax": Layer("soft_max", ("x",)),
    "SoftMin": Layer("soft_min", ("x",)),
    "SoftIndex": Layer("soft_index", ("index",), required=("size",), learnable="bandwidth"),
    "SoftTake": Layer("soft_take", ("arr", "weights"), learnable=None),
    "Lookup": Layer("lookup", ("arr", "index"), learnable=None),
    "LookupAlongAxis": Layer("lookup_along_axis", ("arr", "index"), learnable=None),
    "Assign": Layer("assign", ("arr", "index", "value"), learnable=None),
    "SoftAssign": Layer("soft_assign", ("arr", "weights", "value"), learnable=None),
    "SoftScatterAdd": Layer("soft_scatter_add", ("arr", "weights", "value"), learnable=None),
    "SoftSort": Layer("soft_sort", ("x",), **_SORT),
    "SoftRank": Layer("soft_rank", ("x",), **_SORT),
    "SoftTopk": Layer("soft_topk", ("x",), required=("k",), **_SORT),
    "SoftTopkMask": Layer("soft_topk_mask", ("x",), required=("k",), **_SORT),
    "SoftQuantile": Layer("soft_quantile", ("x",), required=("q",), **_SORT),
    "SoftMedian": Layer("soft_median", ("x",), **_SORT),
    "SoftPermutation": Layer("soft_permutation", ("x",), **_SORT),
    "SoftSortBy": Layer("soft_sort_by", ("keys", "values"), **_SORT),
}


def options(layer: Layer, name: str, given: dict, learn_temperature: bool) -> tuple[dict, float | None]:
    """``(options, start)``: the constructor's options checked against the
    function's signature (an unknown or missing option raises ``TypeError``
    naming it, a per-call keyword given here too) and, with
    ``learn_temperature``, the positive starting value of the learnable
    option (removed from the options)."""
    params = inspect.signature(layer.fn).parameters
    allowed = [p for p in params if p not in layer.inputs and p not in layer.per_call]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        where = " (pass it to the call)" if set(unknown) & set(layer.per_call) else ""
        raise TypeError(f"{name}() got unexpected option(s) {unknown}{where}; it takes {allowed}")
    missing = [p for p in layer.required if p not in given]
    if missing:
        raise TypeError(f"{name}() needs the option(s) {missing}")
    opts = dict(given)
    if not learn_temperature:
        return opts, None
    if layer.learnable is None:
        raise ValueError(f"{name} has no temperature to learn (softops.{layer.function} takes none)")
    start = opts.pop(layer.learnable, params[layer.learnable].default)
    if isinstance(start, Relative) or isinstance(start, bool) or not isinstance(start, numbers.Real) \
            or not (math.isfinite(start) and start > 0):
        raise ValueError(f"{name}(learn_temperature=True) needs a positive finite number as {layer.learnable} "
                         f"to start from, got {start!r}")
    return opts, float(start)


def call_options(layer: Layer, name: str, options: dict, arrays: tuple, per_call: dict) -> dict:
    """The options of one call: the constructor's plus the per-call keywords
    given (None: not given), after checking the number of arrays and the
    keywords (``TypeError`` naming what was expected)."""
    if len(arrays) != len(layer.inputs):
        raise TypeError(f"{name}() takes the arrays {layer.inputs}, got {len(arrays)}")
    unknown = sorted(set(per_call) - set(layer.per_call))
    if unknown:
        raise TypeError(f"{name}() call got unexpected keyword(s) {unknown}; it takes {list(layer.per_call)}")
    return dict(options, **{k: v for k, v in per_call.items() if v is not None})


def call(layer: Layer, name: str, options: dict, arrays: tuple, per_call: dict, temperature, cast):
    """``layer.fn`` on ``arrays`` with ``call_options`` and, when ``temperature``
    (the learnt one) is not None, it as the learnable option, ``cast(t, dtype)``
    to the first floating input's dtype (as it is when no input floats)."""
    opts = call_options(layer, name, options, arrays, per_call)
    if temperature is not None:
        like = next((a for a in arrays if "float" in str(getattr(a, "dtype", ""))), None)
        opts[layer.learnable] = temperature if like is None else cast(temperature, like.dtype)
    return layer.fn(*arrays, **opts)


def describe(options: dict, learnt: bool) -> str:
    """The options as ``k=v, ...`` for a layer's repr."""
    return ", ".join([f"{k}={v!r}" for k, v in options.items()] + (["learn_temperature=True"] if learnt else []))


def to_config(value):
    """An option as JSON-ready data: softops' config objects (``Permutahedron``,
    ``Sinkhorn``, ``Relative``, ...) as ``{"softops": name, "config": fields}``,
    tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and type(value).__module__.startswith("softops"):
        if getattr(softops, type(value).__name__, None) is not type(value):
            raise TypeError(f"cannot serialise {value!r}: not a public softops config")
        return {"softops": type(value).__name__, "config": {k: to_config(v) for k, v in
                                                             dataclasses.asdict(value).items()}}
    if isinstance(value, (list, tuple)):
        return [to_config(v) for v in value]
    return value


def from_config(value):
    """The inverse of ``to_config``."""
    if isinstance(value, dict) and set(value) == {"softops", "config"}:
        return getattr(softops, value["softops"])(**{k: from_config(v) for k, v in value["config"].items()})
    if isinstance(value, list):
        return [from_config(v) for v in value]
    return value
