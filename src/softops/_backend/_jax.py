"""JAX backend: jax.custom_jvp for custom derivatives, PRNG keys for noise.

Everything here is traceable: operations work under ``jax.jit``, ``jax.vmap`` and
``jax.grad`` with no host round trip.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from softops._backend import Backend


# --- the tangent map and its transpose as two primitives --------------------------
# A custom derivative's tangent ``t = J(x) dx`` is ``jax.jvp`` of ``smooth`` at the
# kernel's discrete structure.  JAX would transpose that expression for reverse
# mode (slow: the smooth code run backwards); instead the tangent map is the
# primitive ``tangent_p`` whose transpose is ``pullback_p``, the kernel's own
# backward (``bwd``), and the transpose of ``pullback_p`` is ``tangent_p`` again.
# Both are linear in their last arguments; every other derivative (of the maps
# in ``x``, for second order) and every batching rule differentiates or maps the
# smooth expressions, so each transform stays exact.  Operands: the primals, the
# kernel's ``out`` and residuals, then the linear operands (the tangents of the
# inexact primals ``diff``, or the cotangent of ``out``).


def _split(args, n_p, n_r):
    return tuple(args[:n_p]), args[n_p], tuple(args[n_p + 1:n_p + 1 + n_r]), tuple(args[n_p + 1 + n_r:])


def _with(args, where, values):
    """``args`` with ``values`` at the positions ``where``."""
    args = list(args)
    for i, v in zip(where, values):
        args[i] = v
    return tuple(args)


def _tangent_smooth(*args, op, n_p, n_r, diff):
    primals, out, residuals, tangents = _split(args, n_p, n_r)
    _, t = jax.jvp(lambda *d: op[2](jnp, _with(primals, diff, d), out, residuals),
                   tuple(primals[i] for i in diff), tuple(tangents))
    return jnp.where(jnp.isinf(out), jnp.zeros_like(t), t)  # an infinite output is a constant


def _pullback_smooth(*args, op, n_p, n_r, diff):
    primals, out, residuals, (g,) = _split(args, n_p, n_r)
    _, pull = jax.vjp(lambda *d: op[2](jnp, _with(primals, diff, d), out, residuals),
                      *(primals[i] for i in diff))
    return list(pull(jnp.where(jnp.isinf(out), jnp.zeros_like(g), g).astype(out.dtype)))


def _pullback_kernel(*args, op, n_p, n_r, diff):
    primals, out, residuals, (g,) = _split(args, n_p, n_r)
    grads = op[1](jnp, primals, out, residuals, jnp.where(jnp.isinf(out), jnp.zeros_like(g), g))
    return [jnp.zeros_like(primals[i]) if grads[i] is None
            else jnp.broadcast_to(grads[i], primals[i].shape).astype(primals[i].dtype) for i in diff]


def _smooth_batch(smooth, multiple):
    def rule(args, dims, **params):
        out = jax.vmap(functools.partial(smooth, **params), in_axes=tuple(dims))(*args)
        return out, ([0] * len(out) if multiple else 0)

    return rule


def _make_primitives():
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    tangent_p = Primitive("softops_tangent")
    pullback_p = Primitive("softops_pullback")
    pullback_p.multiple_results = True

    tangent_p.def_impl(_tangent_smooth)
    # Abstract values as given (shape, dtype and sharding: under explicit
    # sharding a lost sharding would mismatch the arrays it meets).
    tangent_p.def_abstract_eval(lambda *args, op, n_p, n_r, diff: args[n_p])
    pullback_p.def_impl(_pullback_kernel)
    pullback_p.def_abstract_eval(lambda *args, op, n_p, n_r, diff: [args[i] for i in diff])
    mlir.register_lowering(tangent_p, mlir.lower_fun(_tangent_smooth, multiple_results=False))
    mlir.register_lowering(pullback_p, mlir.lower_fun(_pullback_kernel, multiple_results=True))

    def jvp_rule(primitive, smooth):
        # d(map) = map(d linear operands) + (d map / d primals)(linear operands):
        # the smooth expression's jvp in the primals and the linear operands
        # (out and the residuals are constants).
        def rule(primals_in, tangents_in, **params):
            n_p, n_r, diff = params["n_p"], params["n_r"], params["diff"]
            value = primitive.bind(*primals_in, **params)
            # Every primal with a tangent moves, not only diff (those with an
            # inner tangent): an outer derivative in an input the inner one held.
            moving = (*(i for i in range(n_p) if type(tangents_in[i]) is not ad.Zero
                        and jnp.issubdtype(primals_in[i].dtype, jnp.inexact)),
                      *range(n_p + 1 + n_r, len(primals_in)))
            dirs = tuple(ad.instantiate_zeros(tangents_in[i]) for i in moving)
            _, tangent = jax.jvp(lambda *m: smooth(*_with(primals_in, moving, m), **params),
                                 tuple(primals_in[i] for i in moving), dirs)
            return value, tangent

        return rule

    ad.primitive_jvps[tangent_p] = jvp_rule(tangent_p, _tangent_smooth)
    ad.primitive_jvps[pullback_p] = jvp_rule(pullback_p, _pullback_smooth)

    def tangent_transpose(ct, *args, op, n_p, n_r, diff):
        head = n_p + 1 + n_r
        assert not any(ad.is_undefined_primal(a) for a in args[:head])
        if type(ct) is ad.Zero:
            return [None] * len(args)
        return [None] * head + list(pullback_p.bind(*args[:head], ct, op=op, n_p=n_p, n_r=n_r, diff=diff))

    def pullback_transpose(cts, *args, op, n_p, n_r, diff):
        head = n_p + 1 + n_r
        assert not any(ad.is_undefined_primal(a) for a in args[:head])
        if all(type(c) is ad.Zero for c in cts):
            return [None] * len(args)
        cts = [ad.instantiate_zeros(c) for c in cts]
        return [None] * head + [tangent_p.bind(*args[:head], *cts, op=op, n_p=n_p, n_r=n_r, diff=diff)]

    # delta_p(s): value 0, derivative ds (of every order), like s - stop_gradient(s);
    # its lowering never reads s, so XLA drops s where no derivative needs it.
    delta_p = Primitive("softops_delta")
    delta_p.def_impl(jnp.zeros_like)
    delta_p.def_abstract_eval(lambda s: s)  # s's shape, dtype and sharding
    mlir.register_lowering(delta_p, mlir.lower_fun(jnp.zeros_like, multiple_results=False))
    ad.primitive_jvps[delta_p] = lambda primals, tangents: (delta_p.bind(*primals), tangents[0])
    batching.primitive_batchers[delta_p] = lambda args, dims: (delta_p.bind(*args), dims[0])

    ad.primitive_transposes[tangent_p] = tangent_transpose
    ad.primitive_transposes[pullback_p] = pullback_transpose
    batching.primitive_batchers[tangent_p] = _smooth_batch(_tangent_smooth, False)
    batching.primitive_batchers[pullback_p] = _smooth_batch(_pullback_smooth, True)
    return tangent_p, delta_p


@functools.cache
def _primitives():
    """``(tangent_p, delta_p)``, made on first use."""
    return _make_primitives()


@functools.lru_cache(maxsize=None)
def _custom_function(fwd, bwd, smooth):
    """A ``jax.custom_jvp``: the value from ``fwd`` (a kernel callback, evaluated
    on stop-gradient inputs so that no callback is ever differentiated); the
    tangent ``J dx`` is the primitive ``tangent_p`` (the jvp of ``smooth``),
    whose transpose is ``bwd``, the kernel's backward: ``jax.grad`` runs the
    kernel's backward, and every other transform (``jvp``, ``jacfwd``,
    ``hessian``, ``linearize``, ``vmap``) differentiates or maps ``smooth``, so
    one rule serves them all."""

    op = (fwd, bwd, smooth)
    tangent_p, delta_p = _primitives()
    # The value-only fwd is compiled once per shape and reused by every
    # transform (eager JAX would dispatch each of its operations, and a
    # solver's while_loop would compile anew on every call).
    value = jax.jit(lambda *arrays: fwd(jnp, *arrays))

    @jax.custom_jvp
    def function(*arrays):
        return value(*arrays)[0]

    @functools.partial(jax.jit, static_argnames="live")
    def rule(primals, tangents, live):
        # One program too: eager transforms (jax.grad, jax.jvp) would compile
        # every operation separately for each new shape.
        out, residuals = value(*(jax.lax.stop_gradient(a) for a in primals))
        infinite = jnp.isinf(out)  # an infinite output is a constant
        # Value 0 (out keeps the kernel's value), the derivatives of smooth: what an
        # outer transform differentiates (higher orders); dropped by XLA otherwise.
        delta = delta_p.bind(smooth(jnp, primals, out, residuals))
        t = (tangent_p.bind(*primals, out, *residuals, *tangents,
                            op=op, n_p=len(primals), n_r=len(residuals), diff=live)
             if live else jnp.zeros_like(out))
        return out + jnp.where(infinite, 0.0, delta), t

    # Symbolic zeros: only the inputs that carry a tangent enter the tangent map.
    # An input held constant (a Python-float temperature, traced by a jit inside
    # an operation) contributed 0 * (its partial derivative), nan where that
    # partial overflows (1 / T^2 at T below about 1 / sqrt(max)).
    def function_jvp(primals, tangents):
        live = tuple(i for i, (a, t) in enumerate(zip(primals, tangents))
                     if jnp.issubdtype(a.dtype, jnp.inexact) and not isinstance(t, SymbolicZero))
        return rule(tuple(primals), tuple(tangents[i] for i in live), live)

    function.defjvp(function_jvp, symbolic_zeros=True)

    return function


def _is_prng_key(key) -> bool:
    if not isinstance(key, jax.Array):
        return False
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return True
    # Legacy raw keys: uint32 arrays of shape (2,).
    return key.dtype == jnp.uint32 and key.shape == (2,)


class JaxBackend(Backend):
    name = "jax"
    xp = jnp
    differentiable = True

    def stop_gradient(self, x):
        return jax.lax.stop_gradient(x)

    def device(self, x):
        return None  # tracers have no device; JAX places new arrays with their users

    def custom_derivative(self, fwd, bwd, smooth):
        return _custom_function(fwd, bwd, smooth)

    def segment_sum(self, values, ids):
        shape = ids.shape
        n = shape[-1]
        rows = 1
        for d in shape[:-1]:
            rows *= d
        values = jnp.broadcast_to(values, shape).reshape(rows, n)
        offsets = (jnp.arange(rows, dtype=ids.dtype) * n)[:, None]
        flat = (ids.reshape(rows, n) + offsets).reshape(-1)
        return jax.ops.segment_sum(values.reshape(-1), flat, num_segments=rows * n).reshape(shape)

    def gumbel(self, key, shape, dtype, like):
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            key = jax.random.key(int(key))
        elif not _is_prng_key(key):
            raise TypeError(
                "key must be a JAX PRNG key (jax.random.key(seed)) or an int seed for "
                f"JAX input, got {type(key).__name__}"
            )
        return jax.random.gumbel(key, shape, dtype)

    def while_loop(self, cond, body, state):
        return tuple(jax.lax.while_loop(lambda s: cond(*s), lambda s: tuple(body(*s)), tuple(state)))

    def cond(self, pred, true_fn, false_fn, operands):
        return tuple(jax.lax.cond(pred, lambda *o: tuple(true_fn(*o)), lambda *o: tuple(false_fn(*o)), *operands))

    def opaque(self, kernel, arrays, static=()):
        if not self._on_cpu(arrays[0]):
            return tuple(kernel(jnp, *arrays, *static))
        # On CPU the solver runs on the host buffers (NumPy), with nothing for
        # XLA to compile; "broadcast_all" hands a vmapped call its batch as
        # leading axes, which the solvers take.
        import array_api_compat.numpy as xp_numpy
        import numpy as np

        from softops._backend import OPAQUE_LIKE

        def host(*values):
            return tuple(kernel(xp_numpy, *(np.asarray(v) for v in values), *static))

        shapes = tuple(jax.ShapeDtypeStruct(arrays[i].shape, arrays[i].dtype) for i in OPAQUE_LIKE[kernel])
        return tuple(jax.pure_callback(host, shapes, *arrays, vmap_method="broadcast_all"))

    @staticmethod
    def _on_cpu(x) -> bool:
        if isinstance(x, jax.core.Tracer):
            return jax.default_backend() == "cpu"
        return all(d.platform == "cpu" for d in x.devices())

    def softmax(self, z):
        return jax.nn.softmax(z, axis=-1)

    def logsumexp(self, z, axis):
        return jax.nn.logsumexp(z, axis=axis)

    def inverse_permutation(self, order):
        positions = jnp.broadcast_to(jnp.arange(order.shape[-1], dtype=order.dtype), order.shape)
        return jnp.put_along_axis(jnp.empty_like(order), order, positions, axis=-1, inplace=False)

    def isotonic_forward(self, z, w, scale, kl, unsort=None):
        from softops._kernels import jax_ops

        return jax_ops.isotonic_forward(z, w, scale, kl, unsort)

    def isotonic_backward(self, z, w, scale, start, g, kl, order=None, unsort=None, need=(True, True)):
        from softops._kernels import jax_ops

        return jax_ops.isotonic_backward(z, w, scale, start, g, kl, order, unsort, need)

    def cpu_kernels(self, x):
        from softops._kernels.lapsum import HAVE_NUMBA

        return HAVE_NUMBA and self._on_cpu(x)

    def kernel(self, host, arrays, static=()):
        import numpy as np

        from softops._backend import KERNEL_NAMES, KERNELS

        shapes = KERNELS[KERNEL_NAMES[host]][1]([tuple(a.shape) for a in arrays], *static)
        results = tuple(jax.ShapeDtypeStruct(shape, arrays[d].dtype if isinstance(d, int) else jnp.dtype(d))
                        for shape, d in shapes)

        def on_host(*values):
            return tuple(host(*(np.asarray(v) for v in values), *static))

        return tuple(jax.pure_callback(on_host, results, *arrays, vmap_method="expand_dims"))

    def lapsum_forward(self, op, x, t, k=None, need_t=True):
        from softops._kernels import jax_ops

        return jax_ops.lapsum_forward(op, x, t, k, need_t)

    def lapsum_backward(self, op, y, order, t, aux, gaps, g, k=None, need_t=True):
        from softops._kernels import jax_ops

        return jax_ops.lapsum_backward(op, y, order, t, aux, gaps, g, k, need_t)


JAX = JaxBackend()


# --- explicitly sharded batches: the operation per shard ---------------------------
# ``jax.pure_callback`` outside ``shard_map`` runs on one device: under ``jax.jit`` a
# batch-sharded array would be gathered there for the host kernels.  Every
# operation works row by row, so where the caller's array carries an explicit
# sharding on its batch axes the whole operation runs under ``jax.shard_map`` on
# each device's rows, and its result is sharded as the input (``per_shard`` in
# ``softops._shared``).  With ``Auto`` mesh axes the sharding is not visible while
# tracing; the README's "Distributed" section says what to do there.


def _explicit_sharding(a):
    """``(mesh, spec)`` of a JAX array with an explicit sharding over a mesh of
    more than one device, else None."""
    try:
        sharding = jax.typeof(a).sharding
        mesh = sharding.mesh
    except (AttributeError, TypeError):
        return None
    if mesh.empty or mesh.size == 1 or jax.sharding.AxisType.Explicit not in mesh.axis_types:
        return None
    spec = tuple(sharding.spec)
    return mesh, spec + (None,) * (a.ndim - len(spec))


def _parts(mesh, entry):
    names = () if entry is None else entry if isinstance(entry, tuple) else (entry,)
    return functools.reduce(lambda p, name: p * mesh.shape[name], names, 1)


def sharded_call(fn, signature, split, args, kwargs):
    """``fn(*args, **kwargs)``, per shard of the batch where the argument
    ``split[0]`` is a JAX array explicitly sharded along axes other than
    ``axis`` (the comment above).  The other arguments named in ``split``
    (NumPy arrays become JAX ones) are split as they broadcast against it: a
    ``temperature`` of fewer dimensions against its batch axes, the others
    against the whole operand, a size-1 axis replicated; every other argument
    goes whole to every shard.  Each output axis that shrinks when one
    sharded batch axis does takes that axis's mesh axes (``jax.eval_shape``).
    Sharded operation axes are gathered first: the operation needs whole rows."""
    bound = signature.bind(*args, **kwargs)
    main = bound.arguments.get(split[0])
    found = _explicit_sharding(main) if isinstance(main, jax.Array) else None
    if found is None:
        return fn(*args, **kwargs)
    import numpy as np

    from softops._validate import normalize_axes

    mesh, spec = found
    try:
        axes = normalize_axes(bound.arguments.get("axis", signature.parameters["axis"].default), main.ndim)
    except (TypeError, ValueError):
        return fn(*args, **kwargs)  # the operation's own error
    batch = tuple(None if d in axes else s for d, s in enumerate(spec))
    sharded = [d for d, s in enumerate(batch) if s is not None]
    if not sharded or any(main.shape[d] % _parts(mesh, batch[d]) for d in sharded):
        return fn(*args, **kwargs)
    names = [name for name in split if isinstance(bound.arguments.get(name), (jax.Array, np.ndarray))]
    arrays = [jnp.asarray(bound.arguments[name]) for name in names]
    kept = [d for d in range(main.ndim) if d not in axes]

    def dims(a, name):
        """The batch axis of ``main`` that each axis of ``a`` splits with (or None)."""
        if a.ndim == main.ndim:
            ref = list(range(main.ndim))
        elif name == "temperature" and a.ndim <= len(kept):
            ref = kept[len(kept) - a.ndim:]
        elif a.ndim < main.ndim:
            ref = list(range(main.ndim - a.ndim, main.ndim))
        else:
            return None
        return tuple(d if d in sharded and a.shape[j] == main.shape[d] else None for j, d in enumerate(ref))

    in_dims = [dims(a, name) for a, name in zip(arrays, names)]
    if any(ds is None for ds in in_dims):
        return fn(*args, **kwargs)  # the operation's own error

    def call(*values):
        bound.arguments.update(zip(names, values))
        return fn(*bound.args, **bound.kwargs)

    def shapes(split_dims):
        return [jax.ShapeDtypeStruct(tuple(n // _parts(mesh, batch[d]) if d in split_dims else n
                                           for n, d in zip(a.shape, ds)), a.dtype)
                for a, ds in zip(arrays, in_dims)]

    whole = jax.eval_shape(call, *shapes(()))
    each = [jax.eval_shape(call, *shapes((d,))) for d in sharded]
    P = jax.sharding.PartitionSpec

    def out_spec(out_whole, *out_each):
        entries = [None] * len(out_whole.shape)
        for d, out in zip(sharded, out_each):
            for i, (n, m) in enumerate(zip(out_whole.shape, out.shape)):
                if n != m:
                    entries[i] = batch[d]
        return P(*entries)

    out_specs = jax.tree.map(out_spec, whole, *each)
    in_specs = tuple(P(*(None if d is None else batch[d] for d in ds)) for ds in in_dims)
    arrays = [jax.sharding.reshard(a, s) for a, s in zip(arrays, in_specs)]
    return jax.shard_map(call, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)(*arrays)
