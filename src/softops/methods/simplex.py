"""Maps from scores to the probability simplex along the last axis.

Every map here takes *shifted* scores ``z`` whose largest entry per row is 0 (the
caller subtracts the row maximum and divides by the temperature) and returns
non-negative weights that sum to 1 over the last axis.

* softmax:   p = exp(z) / sum exp(z)
* sparsemax: p = argmin_{p in simplex} ||p - z||^2 = max(z - tau, 0)
  (Martins & Astudillo 2016, "From Softmax to Sparsemax", Alg. 1)
* entmax15:  p = max(z / 2 - tau, 0)^2, the 1.5-entmax of Peters, Niculae &
  Martins 2019, "Sparse Sequence-to-Sequence Models", exact sort-based Alg. 2.

Sparsemax and entmax15 carry their closed-form Jacobians as custom VJPs:
  sparsemax: J = diag(s) - s s^T / |S|, s the support indicator;
  entmax15:  J = diag(g) - g g^T / sum(g), g = sqrt(p)
(Peters et al. 2019, Prop. 1 / eq. 10), and for every other transform
(forward mode, Hessians, ``torch.func``) the closed form with the support held
fixed (``_sparsemax_smooth``, ``_entmax15_smooth``), which the framework
differentiates to any order.

Both thresholds depend only on entries within 1 (sparsemax) or 2 (entmax15) of
the row maximum, so the scores are clipped from below before the cumulative
sums; this is exact and keeps ±1e30 or -inf inputs from producing inf - inf.
"""

from __future__ import annotations

from softops._backend import Backend


def softmax(backend: Backend, z):
    return backend.softmax(z)


def _sorted_cumulative(xp, u):
    """Descending sort of ``u`` along the last axis, its cumulative sum, and the
    1-based positions ``k`` as an array of ``u``'s dtype."""
    u_sorted = xp.sort(u, axis=-1, descending=True)
    k = xp.cumulative_sum(xp.ones_like(u), axis=-1)  # 1..n, on u's device
    return u_sorted, xp.cumulative_sum(u_sorted, axis=-1), k


def _support_sum(xp, in_support, values):
    """Row sums of ``values`` over the support (a boolean mask)."""
    return xp.sum(xp.where(in_support, values, 0.0), axis=-1, keepdims=True)


def _support_size(xp, in_support, dtype):
    return xp.sum(xp.astype(in_support, dtype), axis=-1, keepdims=True)


def _sparsemax_fwd(xp, z):
    z = xp.clip(z, min=-2.0)
    z_sorted, cumsum, k = _sorted_cumulative(xp, z)
    in_support = (1.0 + k * z_sorted) > cumsum
    support_size = _support_size(xp, in_support, z.dtype)
    tau = (_support_sum(xp, in_support, z_sorted) - 1.0) / support_size
    return xp.clip(z - tau, min=0.0), ()


def _sparsemax_bwd(xp, arrays, p, residuals, g):
    support = xp.astype(p > 0, g.dtype)
    g_support = g * support
    mean = xp.sum(g_support, axis=-1, keepdims=True) / xp.sum(support, axis=-1, keepdims=True)
    return (support * (g - mean),)


def _entmax15_fwd(xp, z):
    u = xp.clip(z / 2.0, min=-2.0)
    u_sorted, cumsum, k = _sorted_cumulative(xp, u)
    mean = cumsum / k
    mean_sq = xp.cumulative_sum(u_sorted * u_sorted, axis=-1) / k
    sum_sq_dev = k * (mean_sq - mean * mean)
    delta = (1.0 - sum_sq_dev) / k
    tau_k = mean - xp.sqrt(xp.clip(delta, min=0.0))
    in_support = tau_k <= u_sorted
    size = _support_size(xp, in_support, u.dtype)
    total = _support_sum(xp, in_support, u_sorted)
    total_sq = _support_sum(xp, in_support, u_sorted * u_sorted)
    delta = (1.0 - (total_sq - total * total / size)) / size
    tau = total / size - xp.sqrt(xp.clip(delta, min=0.0))
    root = xp.clip(u - tau, min=0.0)
    p = root * root
    # The threshold comes from a square root: renormalise away its rounding so
    # that ties share the weight exactly (the Jacobian is unchanged).
    return p / xp.sum(p, axis=-1, keepdims=True), (root,)


def _entmax15_bwd(xp, arrays, p, residuals, g):
    (root,) = residuals
    weighted = root * g
    correction = xp.sum(weighted, axis=-1, keepdims=True) / xp.sum(root, axis=-1, keepdims=True)
    return (weighted - root * correction,)


def _sparsemax_smooth(xp, arrays, p, residuals):
    """``max(z - tau(z), 0)`` with the support ``S`` held fixed:
    ``tau = (sum_S z - 1) / |S|``."""
    (z,) = arrays
    support = p > 0
    tau = (_support_sum(xp, support, z) - 1.0) / _support_size(xp, support, z.dtype)
    return xp.where(support, z - tau, 0.0)


def _entmax15_smooth(xp, arrays, p, residuals):
    """``(z / 2 - tau(z))^2`` on the fixed support ``S``, with the closed-form
    threshold ``tau = mean_S(u) - sqrt((1 - sum_S (u - mean_S u)^2) / |S|)``,
    ``u = z / 2`` (Peters et al. 2019, Alg. 2)."""
    (z,) = arrays
    support = p > 0
    u = xp.where(support, z / 2.0, 0.0)
    size = _support_size(xp, support, z.dtype)
    mean = _support_sum(xp, support, u) / size
    dev = xp.where(support, u - mean, 0.0)
    delta = (1.0 - xp.sum(dev * dev, axis=-1, keepdims=True)) / size
    root = xp.where(support, u - mean + xp.sqrt(xp.clip(delta, min=xp.finfo(z.dtype).tiny)), 0.0)
    return root * root


def sparsemax(backend: Backend, z):
    return backend.custom_derivative(_sparsemax_fwd, _sparsemax_bwd, _sparsemax_smooth)(z)


def entmax15(backend: Backend, z):
    return backend.custom_derivative(_entmax15_fwd, _entmax15_bwd, _entmax15_smooth)(z)


SIMPLEX_MAPS = {"softmax": softmax, "sparsemax": sparsemax, "entmax15": entmax15}
