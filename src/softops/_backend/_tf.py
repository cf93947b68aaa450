"""TensorFlow backend: an Array API adapter over TensorFlow's own operations,
custom derivatives from the smooth re-expression, kernels on the host.

TensorFlow has no Array API namespace (``tf.experimental.numpy`` follows NumPy's
promotion, which turns ``float32 op 0.5`` into float64).  ``xp_tf`` is the
smallest namespace the algorithms use: each function maps to TensorFlow
operations, and a Python number next to a tensor takes the tensor's dtype (the
Array API's weak scalars).

Derivatives.  Eagerly, ``custom_derivative`` is a ``tf.custom_gradient`` whose
value is the kernel's ``out``: first-order reverse mode runs the kernel's
``bwd``; where the gradient is itself recorded (a nested ``tf.GradientTape`` for
second order, ``tf.autodiff.ForwardAccumulator``, whose forward mode TensorFlow
derives from a differentiable gradient) it differentiates ``smooth`` (locally
exact to every order, see ``Backend.custom_derivative``); with no tape
recording the kernel's value is returned directly.  In a graph
(``tf.function``, ``tf.vectorized_map``, XLA) and under a forward accumulator
the result is ``out + (s -
stop_gradient(s))`` with ``s = smooth(...)``: value ``out``, the derivatives of
``smooth``, from ordinary operations (``pfor`` loses a custom gradient around a
host call, an accumulator gives it no tangent, and XLA runs no host call).

Kernels.  Eagerly on a CPU tensor the numba kernels run on the tensor's host
buffer.  Inside ``tf.function`` the isotonic kernel runs through
``tf.numpy_function``; under XLA (``jit_compile=True``), where no host call can
run, the isotonic projection uses its Array API twin, and every other method
its array code (``cpu_kernels`` is False in graphs).
"""

from __future__ import annotations

import math
import numbers
import types

import numpy as np
import tensorflow as tf

from softops._backend import Backend

# --- the Array API adapter ---------------------------------------------------------

xp_tf = types.ModuleType("softops._backend.xp_tf")
_ns = xp_tf.__dict__

for _name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "bfloat16", "float32", "float64"):
    _ns[_name] = getattr(tf, _name)
xp_tf.inf, xp_tf.nan, xp_tf.e, xp_tf.pi = math.inf, math.nan, math.e, math.pi

_FLOATS = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_SIGNED = (tf.int8, tf.int16, tf.int32, tf.int64)
_UNSIGNED = (tf.uint8, tf.uint16, tf.uint32, tf.uint64)


def _is_tensor(a) -> bool:
    return isinstance(a, (tf.Tensor, tf.Variable))


def _dtype_of_scalar(value):
    if isinstance(value, bool):
        return tf.bool
    if isinstance(value, numbers.Integral):
        return tf.int64
    return tf.float64


def _promote(*dtypes):
    """The Array API's promotion among TensorFlow dtypes (floats win over
    integers; the wider wins)."""
    dtypes = [tf.as_dtype(d) for d in dtypes]
    floats = [d for d in dtypes if d.is_floating]
    pool = floats or dtypes
    best = pool[0]
    for d in pool[1:]:
        if d.size > best.size or (d.size == best.size and d == tf.float32 and best == tf.bfloat16):
            best = d
    return best


def _scalar(value, dtype):
    """A Python number as a 0-d tensor of ``dtype`` (rounded as NumPy rounds:
    beyond the dtype's range a float becomes an infinity)."""
    dtype = tf.as_dtype(dtype)
    with np.errstate(over="ignore"):
        value = np.asarray(value, dtype=dtype.as_numpy_dtype)
    return tf.constant(value, dtype)


def _operands(*values):
    """Tensors of one dtype from tensors and Python numbers (a number takes the
    dtype of the tensors: weak scalars)."""
    tensors = [v for v in values if _is_tensor(v)]
    if tensors:
        dtype = _promote(*(t.dtype for t in tensors))
        if dtype.is_integer and any(isinstance(v, float) for v in values):
            dtype = tf.float64
    else:
        dtype = _promote(*(_dtype_of_scalar(v) for v in values))
    return [tf.cast(v, dtype) if _is_tensor(v) and v.dtype != dtype
            else (v if _is_tensor(v) else _scalar(v, dtype)) for v in values]


def _unary(function):
    def apply(x, /):
        return function(tf.convert_to_tensor(x))
    return apply


def _binary(function):
    def apply(x1, x2, /):
        return function(*_operands(x1, x2))
    return apply


for _name, _function in {
    "abs": tf.abs, "exp": tf.exp, "expm1": tf.math.expm1, "log": tf.math.log, "log1p": tf.math.log1p,
    "sqrt": tf.sqrt, "floor": tf.floor, "ceil": tf.math.ceil, "tanh": tf.tanh, "cos": tf.cos, "sin": tf.sin,
    "atan": tf.atan, "isnan": tf.math.is_nan, "isinf": tf.math.is_inf, "isfinite": tf.math.is_finite,
    "sign": tf.sign, "square": tf.square, "negative": tf.negative, "logical_not": tf.logical_not,
}.items():
    _ns[_name] = _unary(_function)

for _name, _function in {
    "maximum": tf.maximum, "minimum": tf.minimum, "remainder": tf.math.floormod, "add": tf.add,
    "subtract": tf.subtract, "multiply": tf.multiply, "divide": tf.math.truediv, "pow": tf.pow,
    "equal": tf.equal, "not_equal": tf.not_equal, "less": tf.less, "greater": tf.greater,
    "less_equal": tf.less_equal, "greater_equal": tf.greater_equal, "logical_and": tf.logical_and,
    "logical_or": tf.logical_or, "atan2": tf.atan2,
}.items():
    _ns[_name] = _binary(_function)


def _log2(x, /):
    """``log2`` exact at powers of two (``log(x) / log(2)`` is not: ceil(log2(8)) = 4)."""
    x = tf.convert_to_tensor(x)
    v = tf.math.log(x) / tf.constant(math.log(2.0), x.dtype)
    r = tf.round(v)
    return tf.where(tf.pow(tf.constant(2.0, x.dtype), r) == x, r, v)


xp_tf.log2 = _log2
xp_tf.round = _unary(tf.round)


def _logaddexp(x1, x2, /):
    a, b = _operands(x1, x2)
    top = tf.maximum(a, b)
    finite = tf.math.is_finite(top)
    # Where the larger is infinite the result is it; elsewhere
    # top + log(exp(a - top) + exp(b - top)) from inputs masked to finite values,
    # so that no inf reaches an exp whose gradient tf.where would multiply by 0.
    safe = tf.stop_gradient(tf.where(finite, top, tf.zeros_like(top)))
    a_, b_ = tf.where(finite, a, safe), tf.where(finite, b, safe)
    return tf.where(finite, safe + tf.math.log(tf.exp(a_ - safe) + tf.exp(b_ - safe)), top)


xp_tf.logaddexp = _logaddexp


def _where(condition, x1, x2, /):
    a, b = _operands(x1, x2)
    return tf.where(condition, a, b)


xp_tf.where = _where


def _clip(x, /, min=None, max=None):
    x = tf.convert_to_tensor(x)
    if min is not None:
        x = tf.maximum(x, tf.cast(min, x.dtype) if _is_tensor(min) else _scalar(min, x.dtype))
    if max is not None:
        x = tf.minimum(x, tf.cast(max, x.dtype) if _is_tensor(max) else _scalar(max, x.dtype))
    return x


xp_tf.clip = _clip


def _reduction(function):
    def apply(x, /, *, axis=None, keepdims=False, dtype=None):
        x = tf.convert_to_tensor(x)
        if dtype is not None:
            x = tf.cast(x, dtype)
        return function(x, axis=axis, keepdims=keepdims)
    return apply


for _name, _function in {"sum": tf.reduce_sum, "prod": tf.reduce_prod, "max": tf.reduce_max,
                         "min": tf.reduce_min, "mean": tf.reduce_mean}.items():
    _ns[_name] = _reduction(_function)


def _logical_reduction(function):
    def apply(x, /, *, axis=None, keepdims=False):
        x = tf.convert_to_tensor(x)
        return function(tf.cast(x, tf.bool) if x.dtype != tf.bool else x, axis=axis, keepdims=keepdims)
    return apply


xp_tf.any = _logical_reduction(tf.reduce_any)
xp_tf.all = _logical_reduction(tf.reduce_all)


def _argmax(x, /, *, axis=None, keepdims=False):
    x = tf.convert_to_tensor(x)
    if axis is None:
        x, axis = tf.reshape(x, (-1,)), 0
    out = tf.argmax(x, axis=axis, output_type=tf.int64)
    return tf.expand_dims(out, axis) if keepdims else out


xp_tf.argmax = _argmax


def _asarray(obj, /, *, dtype=None, device=None, copy=None):
    with tf.device(device or ""):
        if _is_tensor(obj):
            obj = tf.convert_to_tensor(obj)
            return obj if dtype is None or obj.dtype == dtype else tf.cast(obj, dtype)
        if isinstance(obj, (bool, int, float)) and dtype is None:
            dtype = _dtype_of_scalar(obj)
        a = np.asarray(obj)
        if dtype is None and a.dtype == np.float16 or a.dtype.kind not in "biuf":
            a = a.astype(np.float64) if a.dtype.kind not in "biuf" else a
        return tf.constant(a, dtype=dtype)


xp_tf.asarray = _asarray


def _astype(x, dtype, /, *, copy=True, device=None):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == dtype else tf.cast(x, dtype)


xp_tf.astype = _astype


def _full(shape, fill_value, *, dtype=None, device=None):
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    dtype = dtype or _dtype_of_scalar(fill_value)
    with tf.device(device or ""):
        return tf.fill(shape, _scalar(fill_value, dtype))


xp_tf.full = _full
xp_tf.zeros = lambda shape, *, dtype=None, device=None: _full(shape, 0, dtype=dtype or tf.float64, device=device)
xp_tf.ones = lambda shape, *, dtype=None, device=None: _full(shape, 1, dtype=dtype or tf.float64, device=device)
xp_tf.empty = xp_tf.zeros


def _full_like(x, /, fill_value, *, dtype=None, device=None):
    x = tf.convert_to_tensor(x)
    return tf.fill(tf.shape(x), _scalar(fill_value, dtype or x.dtype))


xp_tf.full_like = _full_like
xp_tf.zeros_like = lambda x, /, *, dtype=None, device=None: _full_like(x, 0, dtype=dtype)
xp_tf.ones_like = lambda x, /, *, dtype=None, device=None: _full_like(x, 1, dtype=dtype)
xp_tf.empty_like = xp_tf.zeros_like


def _eye(n_rows, n_cols=None, /, *, k=0, dtype=None, device=None):
    n_cols = n_rows if n_cols is None else n_cols
    with tf.device(device or ""):
        if not k:
            return tf.eye(n_rows, n_cols, dtype=dtype or tf.float64)
        # ones where column - row == k (the k-th diagonal, as numpy.eye)
        on = tf.range(n_cols)[None, :] - tf.range(n_rows)[:, None] == k
        return tf.cast(on, dtype or tf.float64)


xp_tf.eye = _eye


def _arange(start, /, stop=None, step=1, *, dtype=None, device=None):
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = tf.int64 if all(isinstance(v, numbers.Integral) for v in (start, stop, step)) else tf.float64
    with tf.device(device or ""):
        return tf.range(start, stop, step, dtype=dtype)


xp_tf.arange = _arange
xp_tf.reshape = lambda x, /, shape, *, copy=None: tf.reshape(x, tuple(shape))


def _broadcast_to(x, /, shape):
    x = tf.convert_to_tensor(x)
    shape = tuple(shape)
    if x.shape.is_fully_defined() and tf.broadcast_static_shape(x.shape, tf.TensorShape(shape)) != shape:
        raise ValueError(f"cannot broadcast an array of shape {tuple(x.shape)} to {shape}")
    return tf.broadcast_to(x, shape)


xp_tf.broadcast_to = _broadcast_to
xp_tf.permute_dims = lambda x, /, axes: tf.transpose(x, tuple(axes))
xp_tf.matrix_transpose = lambda x, /: tf.linalg.matrix_transpose(x)
xp_tf.squeeze = lambda x, /, axis: tf.squeeze(x, axis=axis)
xp_tf.expand_dims = lambda x, /, *, axis=0: tf.expand_dims(x, axis)
xp_tf.stack = lambda arrays, /, *, axis=0: tf.stack(_operands(*arrays), axis=axis)
xp_tf.concat = lambda arrays, /, *, axis=0: tf.concat(_operands(*arrays), axis=0 if axis is None else axis)


def _matmul(x1, x2, /):
    a, b = _operands(x1, x2)
    vector_a, vector_b = len(a.shape) == 1, len(b.shape) == 1
    out = tf.linalg.matmul(a[None] if vector_a else a, b[:, None] if vector_b else b)
    if vector_b:
        out = out[..., 0]
    return out[..., 0, :] if vector_a and not vector_b else (out[..., 0] if vector_a else out)


xp_tf.matmul = _matmul


def _flip(x, /, *, axis=None):
    x = tf.convert_to_tensor(x)
    axes = range(len(x.shape)) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    return tf.reverse(x, [a % len(x.shape) for a in axes])


xp_tf.flip = _flip


def _cumulative_sum(x, /, *, axis=None, dtype=None, include_initial=False):
    x = tf.convert_to_tensor(x)
    if dtype is not None:
        x = tf.cast(x, dtype)
    axis = -1 if axis is None else axis
    out = tf.cumsum(x, axis=axis)
    if include_initial:
        zero_shape = list(x.shape)
        zero_shape[axis] = 1
        out = tf.concat([tf.zeros(zero_shape, x.dtype), out], axis=axis)
    return out


xp_tf.cumulative_sum = _cumulative_sum


def _sort(x, /, *, axis=-1, descending=False, stable=True):
    return tf.sort(x, axis=axis, direction="DESCENDING" if descending else "ASCENDING")


def _argsort(x, /, *, axis=-1, descending=False, stable=True):
    x = tf.convert_to_tensor(x)
    if x.dtype.is_floating:
        # NumPy's order: NaN after +inf (tf.argsort leaves NaN where it falls).
        nan = tf.math.is_nan(x)
        key = tf.where(nan, tf.constant(math.inf, x.dtype), x)
        if descending:
            key = -key
        order = tf.argsort(key, axis=axis, stable=True)
        # among the +inf-keyed entries, the true +inf first, NaN last (stable on a 0/1 key)
        tail = tf.gather(tf.cast(nan, tf.int32), order, axis=axis, batch_dims=len(x.shape) - 1) \
            if axis in (-1, len(x.shape) - 1) else None
        if tail is not None:
            order = tf.gather(order, tf.argsort(tail, axis=-1, stable=True), axis=-1, batch_dims=len(x.shape) - 1)
        return tf.cast(order, tf.int64)
    return tf.cast(tf.argsort(x, axis=axis, direction="DESCENDING" if descending else "ASCENDING",
                              stable=True), tf.int64)


xp_tf.sort = _sort
xp_tf.argsort = _argsort


def _take_along_axis(x, indices, /, *, axis=-1):
    x = tf.convert_to_tensor(x)
    ndim = len(x.shape)
    axis %= ndim
    if axis != ndim - 1:
        perm = [a for a in range(ndim) if a != axis] + [axis]
        inverse = np.argsort(perm).tolist()
        out = _take_along_axis(tf.transpose(x, perm), tf.transpose(indices, perm), axis=-1)
        return tf.transpose(out, inverse)
    batch = tf.broadcast_static_shape(x.shape[:-1], indices.shape[:-1])
    x = tf.broadcast_to(x, tuple(batch) + (x.shape[-1],))
    indices = tf.broadcast_to(indices, tuple(batch) + (indices.shape[-1],))
    return tf.gather(x, indices, axis=-1, batch_dims=ndim - 1)


xp_tf.take_along_axis = _take_along_axis


def _take(x, indices, /, *, axis=None):
    x = tf.convert_to_tensor(x)
    if axis is None:
        x, axis = tf.reshape(x, (-1,)), 0
    return tf.gather(x, indices, axis=axis)


xp_tf.take = _take


def _searchsorted(x1, x2, /, *, side="left", sorter=None):
    if sorter is not None:
        x1 = tf.gather(x1, sorter, axis=-1, batch_dims=len(x1.shape) - 1)
    x1, x2 = tf.convert_to_tensor(x1), tf.convert_to_tensor(x2)
    if len(x1.shape) == 1 and len(x2.shape) != 1:
        flat = tf.reshape(x2, (1, -1))
        out = tf.searchsorted(x1[None], flat, side=side, out_type=tf.int64)
        return tf.reshape(out, tf.shape(x2))
    return tf.searchsorted(x1, x2, side=side, out_type=tf.int64)


xp_tf.searchsorted = _searchsorted


class _Finfo:
    def __init__(self, dtype):
        import ml_dtypes

        dtype = tf.as_dtype(dtype)
        if not dtype.is_floating:
            raise TypeError(f"finfo needs a floating dtype, got {dtype.name}")
        info = ml_dtypes.finfo(dtype.as_numpy_dtype)
        self.bits = info.bits
        self.eps = float(info.eps)
        self.max = float(info.max)
        self.min = float(info.min)
        self.smallest_normal = float(info.smallest_normal)
        self.tiny = self.smallest_normal
        self.dtype = dtype


xp_tf.finfo = _Finfo


class _Iinfo:
    def __init__(self, dtype):
        dtype = tf.as_dtype(dtype)
        self.bits, self.max, self.min, self.dtype = dtype.size * 8, dtype.max, dtype.min, dtype


xp_tf.iinfo = _Iinfo


def _isdtype(dtype, kind):
    if isinstance(kind, tuple):
        return any(_isdtype(dtype, k) for k in kind)
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError:
        raise TypeError(f"not a TensorFlow dtype: {dtype!r}") from None
    if not isinstance(kind, str):
        return dtype == tf.as_dtype(kind)
    table = {
        "bool": dtype == tf.bool,
        "signed integer": dtype in _SIGNED,
        "unsigned integer": dtype in _UNSIGNED,
        "integral": dtype in _SIGNED + _UNSIGNED,
        "real floating": dtype in _FLOATS,
        "complex floating": dtype.is_complex,
        "numeric": dtype in _SIGNED + _UNSIGNED + _FLOATS or dtype.is_complex,
    }
    if kind not in table:
        raise ValueError(f"unknown dtype kind {kind!r}")
    return table[kind]


xp_tf.isdtype = _isdtype


def _result_type(*arrays_and_dtypes):
    dtypes = []
    for a in arrays_and_dtypes:
        if _is_tensor(a):
            dtypes.append(a.dtype)
        elif isinstance(a, tf.dtypes.DType):
            dtypes.append(a)
    return _promote(*dtypes)


xp_tf.result_type = _result_type


class _Info:
    def default_dtypes(self, *, device=None):
        return {"real floating": tf.float64, "integral": tf.int64, "indexing": tf.int64}


xp_tf.__array_namespace_info__ = _Info

xp_tf.linalg = types.SimpleNamespace(solve=lambda x1, x2, /: tf.linalg.solve(*_operands(x1, x2)),
                                     matmul=_matmul)


# --- the backend -------------------------------------------------------------------


def _recording() -> bool:
    """Whether a gradient tape or a forward accumulator is recording (eagerly)."""
    if not tf.executing_eagerly():
        return True
    try:
        from tensorflow.python.eager import record

        return bool(record.could_possibly_record())
    except (ImportError, AttributeError):  # pragma: no cover - a TensorFlow without it
        return True


def _forward_mode(arrays) -> bool:
    """Whether a ``tf.autodiff.ForwardAccumulator`` carries a tangent of any of ``arrays``."""
    try:
        from tensorflow.python.eager import forwardprop_util

        return bool(forwardprop_util.pack_tangents(list(arrays)).tangents)
    except (ImportError, AttributeError):  # pragma: no cover - then assume it may
        return True


def _value_plus_delta(fwd, smooth, arrays):
    out, residuals = fwd(xp_tf, *(tf.stop_gradient(a) for a in arrays))
    out = tf.stop_gradient(out)
    s = smooth(xp_tf, arrays, out, residuals)
    delta = s - tf.stop_gradient(s)
    return out + tf.where(tf.math.is_inf(out), tf.zeros_like(delta), delta)


def _custom_gradient(fwd, bwd, smooth, arrays):
    """``fwd``'s value under ``tf.custom_gradient`` (eager): first-order
    reverse mode runs the kernel's ``bwd``; where the gradient must itself be
    differentiable (an outer tape or a forward accumulator records it), the
    gradient differentiates ``smooth`` instead."""

    @tf.custom_gradient
    def op(*inputs):
        out, residuals = fwd(xp_tf, *inputs)

        def grad_fn(upstream):
            if _recording():
                with tf.GradientTape() as tape:
                    tape.watch(inputs)
                    s = smooth(xp_tf, inputs, out, residuals)
                    s = tf.where(tf.math.is_inf(out), tf.zeros_like(s), s)
                grads = tape.gradient(s, inputs, output_gradients=upstream,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
            else:
                grads = bwd(xp_tf, inputs, out, residuals, upstream)
            return tuple(None if g is None else tf.cast(g, a.dtype) for g, a in zip(grads, inputs))

        return out, grad_fn

    return op(*arrays)


def _in_xla() -> bool:
    """Whether the current graph is being compiled by XLA (``jit_compile=True``)."""
    if tf.executing_eagerly():
        return False
    try:
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
    except (ImportError, AttributeError):  # pragma: no cover
        return False


def _host(a):
    return None if a is None else np.asarray(a)


def _on_host(function, arrays, outputs):
    """``function(*numpy arrays) -> tuple of numpy arrays`` on TensorFlow
    tensors: directly when eager, through ``tf.numpy_function`` in a graph
    (``outputs``: ``(shape, dtype)`` of each result)."""
    present = [a for a in arrays if a is not None]
    where = [a is not None for a in arrays]

    def call(*values):
        it = iter(values)
        full = [np.asarray(next(it)) if w else None for w in where]
        return tuple(np.asarray(r) for r in function(*full))

    if tf.executing_eagerly():
        return tuple(tf.constant(r) for r in call(*(a.numpy() for a in present)))
    results = tf.numpy_function(call, present, [tf.as_dtype(d) for _, d in outputs], stateful=False)
    results = results if isinstance(results, (list, tuple)) else [results]
    for r, (shape, _) in zip(results, outputs):
        r.set_shape(shape)
    return tuple(results)


class TfBackend(Backend):
    name = "tensorflow"
    xp = xp_tf
    differentiable = True

    def stop_gradient(self, x):
        return tf.stop_gradient(x)

    def canonical(self, x):
        return tf.convert_to_tensor(x) if isinstance(x, tf.Variable) else x

    def device(self, x):
        return getattr(x, "device", "") or ""

    def custom_derivative(self, fwd, bwd, smooth):
        def apply(*arrays):
            if not tf.executing_eagerly() or _forward_mode(arrays):
                # In a graph (tf.function, tf.vectorized_map, XLA) or under a
                # forward accumulator: the value plus s - stop_gradient(s),
                # ordinary operations that every transform differentiates
                # (pfor drops a tf.custom_gradient's gradient around a host
                # call, and an accumulator gives it no tangent: zeros).
                return _value_plus_delta(fwd, smooth, arrays)
            if not _recording():
                return fwd(xp_tf, *arrays)[0]
            return _custom_gradient(fwd, bwd, smooth, arrays)

        return apply

    def take(self, x, index):
        return _take_along_axis(x, index, axis=-1)

    def segment_sum(self, values, ids):
        shape = tuple(ids.shape)
        n = shape[-1]
        rows = math.prod(shape[:-1])
        values = tf.reshape(tf.broadcast_to(values, shape), (rows * n,))
        ids = tf.reshape(tf.cast(ids, tf.int64), (rows, n))
        flat = tf.reshape(ids + tf.range(rows, dtype=tf.int64)[:, None] * n, (rows * n,))
        return tf.reshape(tf.math.unsorted_segment_sum(values, flat, rows * n), shape)

    def gumbel(self, key, shape, dtype, like):
        if isinstance(key, tf.random.Generator):
            u = key.uniform(shape, dtype=dtype)
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
            u = tf.random.stateless_uniform(shape, seed=[int(key) & 0x7FFFFFFF, int(key) >> 31], dtype=dtype)
        else:
            raise TypeError(
                "key must be a tf.random.Generator or an int seed for TensorFlow input, "
                f"got {type(key).__name__}"
            )
        info = _Finfo(dtype)
        u = tf.clip_by_value(u, info.tiny, 1.0 - info.eps)
        return -tf.math.log(-tf.math.log(u))

    def inverse_permutation(self, order):
        # out[order[i]] = i: a permutation's argsort (TensorFlow has no scatter
        # along an axis with batch dimensions short of tensor_scatter_nd).
        return tf.cast(tf.argsort(order, axis=-1, stable=True), order.dtype)

    def while_loop(self, cond, body, state):
        if tf.executing_eagerly():
            return super().while_loop(cond, body, state)
        return tuple(tf.while_loop(lambda *s: cond(*s), lambda *s: tuple(body(*s)), tuple(state)))

    def cond(self, pred, true_fn, false_fn, operands):
        if tf.executing_eagerly():
            return super().cond(pred, true_fn, false_fn, operands)
        return tuple(tf.cond(pred, lambda: tuple(true_fn(*operands)), lambda: tuple(false_fn(*operands))))

    def opaque(self, kernel, arrays, static=()):
        if not tf.executing_eagerly():
            return tuple(kernel(xp_tf, *arrays, *static))
        import array_api_compat.numpy as xp_numpy

        out = kernel(xp_numpy, *(a.numpy() for a in arrays), *static)
        return tuple(tf.constant(np.asarray(r)) for r in out)

    # softmax: the base class's exp(z - max) / sum, not tf.nn.softmax, whose CPU
    # kernel rounds a one-hot row to 0.99999994 (float32); at tiny temperatures
    # that rounding, divided by T, overflowed the gradient.

    def logsumexp(self, z, axis):
        top = tf.reduce_max(z, axis=axis, keepdims=True)
        top = tf.where(tf.math.is_finite(top), top, tf.zeros_like(top))
        return tf.math.log(tf.reduce_sum(tf.exp(z - top), axis=axis)) + tf.squeeze(top, axis=axis)

    def cpu_kernels(self, x):
        from softops._kernels.lapsum import HAVE_NUMBA

        return HAVE_NUMBA and tf.executing_eagerly() and "GPU" not in self.device(x).upper()

    def kernel(self, host, arrays, static=()):
        from softops._backend import KERNEL_NAMES, KERNELS

        shapes = KERNELS[KERNEL_NAMES[host]][1]([tuple(a.shape) for a in arrays], *static)
        outputs = [(shape, arrays[d].dtype if isinstance(d, int) else tf.as_dtype(d)) for shape, d in shapes]
        return _on_host(lambda *values: host(*values, *static), arrays, outputs)

    def isotonic_forward(self, z, w, scale, kl, unsort=None):
        from softops._kernels import isotonic

        shape = tuple(tf.broadcast_static_shape(tf.broadcast_static_shape(z.shape[:-1], w.shape[:-1]),
                                                scale.shape)) + (z.shape[-1],)
        if _in_xla():
            return _isotonic_forward_xla(z, w, scale, kl, unsort, shape)
        outputs = [(shape, z.dtype), (shape, tf.int32)] + ([(shape, tf.int32)] if unsort else [])

        def host(z, w, scale):
            p, start, order = isotonic.forward_numpy(z, w, scale, kl, unsort)
            return (p, start) if order is None else (p, start, order)

        out = _on_host(host, (z, w, scale), outputs)
        return (out[0], out[1], out[2] if unsort else None)

    def isotonic_backward(self, z, w, scale, start, g, kl, order=None, unsort=None, need=(True, True)):
        from softops._kernels import isotonic

        shape = tuple(start.shape)
        outputs = [(shape, z.dtype)] * sum(need) + [(shape[:-1], z.dtype)]

        def host(z, w, scale, start, g, order):
            grads = isotonic.backward_numpy(z, w, scale, start, g, kl, order, unsort, need)
            return tuple(a for a in grads if a is not None)

        out = list(_on_host(host, (z, w, scale, start, g, order), outputs))
        gz = out.pop(0) if need[0] else None
        gw = out.pop(0) if need[1] else None
        return gz, gw, out[0]

    def lapsum_forward(self, op, x, t, k=None, need_t=True):
        from softops._kernels import lapsum

        out = lapsum.forward(op, _host(x), _host(t), _host(k), need_t)
        return tuple(None if r is None else tf.constant(r) for r in out)

    def lapsum_backward(self, op, y, order, t, aux, gaps, g, k=None, need_t=True):
        from softops._kernels import lapsum

        out = lapsum.backward(op, _host(y), _host(order), _host(t), _host(aux), _host(gaps), _host(g), _host(k),
                              need_t)
        return tuple(None if r is None else tf.constant(r) for r in out)


def _isotonic_forward_xla(z, w, scale, kl, unsort, shape):
    """``isotonic_forward`` from TensorFlow operations (the Array API twin on
    rows sorted by ``tf.argsort``): for XLA, where no host call runs."""
    from softops._kernels.isotonic import forward_twin

    z = tf.broadcast_to(z, shape)
    w = tf.broadcast_to(w, shape)
    scale = tf.broadcast_to(scale, shape[:-1])
    order = None
    if unsort:
        order = tf.cast(_argsort(z if unsort == "z" else w, axis=-1, descending=True), tf.int32)
        if unsort == "z":
            z = _take_along_axis(z, order)
        else:
            w = _take_along_axis(w, order)
    p, start = forward_twin(xp_tf, z, w, scale, kl)
    if unsort == "z":
        p = _take_along_axis(p, TF.inverse_permutation(order))
    return p, tf.cast(start, tf.int32), order


TF = TfBackend()
