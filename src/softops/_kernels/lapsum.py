r"""LapSum soft rank, soft sort and top-k mask of rows (sorted by the kernel), with exact backwards.

Struski, Bednarczyk, Podolak & Tabor 2025, "LapSum - One Method to
Differentiate Them All" (ICML, arXiv:2503.06242); the notation is that of
``softops.methods.lapsum``.  The forward kernel sorts each of the caller's rows
``x`` itself (``softops._kernels.rowsort``) into the ascending values ``y_0 <=
... <= y_{n-1}`` and the permutation ``order`` (``y_j = x[order_j]``); every row
has a temperature ``T > 0``.
With ``d_j = exp(-(y_{j+1} - y_j) / T)`` and ``delta_j = (y_{j+1} - y_j) / T``:

* ``alpha_j = sum_{i <= j} e^{-(y_j - y_i)/T} = 1 + d_{j-1} alpha_{j-1}`` and
  ``beta_j = sum_{i >= j} e^{-(y_i - y_j)/T} = 1 + d_j beta_{j+1}``;
* ``alpha'_j = sum_{i < j} e^{-u} u`` (``u = (y_j - y_i)/T``)
  ``= d_{j-1} (alpha'_{j-1} + delta_{j-1} alpha_{j-1})``, and its mirror ``beta'_j``.

Operations (``0``-based ``j``; outputs in the caller's order except the sort):

* rank: ``r_j = j + 1 + (beta_j - alpha_j) / 2``.  Backward, with ``g`` the
  cotangent in sorted order, ``A_j = sum_{i <= j} g_i e^{-(y_j-y_i)/T}`` and
  ``B_j = sum_{i >= j} g_i e^{-(y_i-y_j)/T}`` (the same recurrences):
  ``gy_j = (g_j (alpha_j + beta_j) - A_j - B_j) / (2T)`` and, since
  ``dr_j/dT = (beta'_j - alpha'_j) / (2T)``, ``gT = sum_j g_j dr_j/dT``.
* sort: ``s_k = F^{-1}(k + 1/2)`` (``k = 0..n-1``) on the gap ``m_k = #{j : r_j
  <= k + 1}`` (a sweep: targets and ranks both increase), in closed form: on
  that gap ``P = alpha_{m-1} e^{-(b - y_{m-1})/T}`` and ``Q = beta_m e^{-(y_m -
  b)/T}`` satisfy ``Q - P = 2 (target - m)`` and ``P Q = alpha_{m-1} beta_m
  d_{m-1}`` (the quadratic of ``softops.methods.lapsum``; see ``_root``).
  Backward by the implicit function theorem: ``ds_k/dy_i = e^{-|s_k - y_i|/T} /
  D_k`` with ``D_k = sum_i e^{-|s_k - y_i|/T} = P + Q``, and ``ds_k/dT = sum_i
  e^{-|u|} u / D_k`` with ``u = (s_k - y_i)/T``, read off ``alpha'`` at knot
  ``m_k - 1`` and ``beta'`` at knot ``m_k``; ``gy_i = sum_k (g_k / D_k)
  e^{-|s_k - y_i|/T}`` splits into the ``k`` with ``m_k <= i`` and those with
  ``m_k > i`` and is two more recurrences over ``i``.
* mask (largest): ``p_i = sigma((y_i - b)/T)`` with ``F(b) = n - k``; ``p = 1``
  for ``k >= n`` and ``0`` for ``k <= 0``.  With ``v_i = (y_i - b)/T``,
  ``e_i = e^{-|v_i|}``, ``q_i = e_i / (2T)``, ``D = sum e_i``, ``G = sum g_i q_i``
  and ``db/dT = -sum e_i v_i / D``: ``gy_j = g_j q_j - G e_j / D = (g_j - c) q_j``
  with ``c = 2 T G / D = sum g_i e_i / sum e_i``, ``gk = c`` and
  ``gT = -sum_i g_i q_i v_i - G db/dT = (c sum e_i v_i - sum g_i e_i v_i) / (2T)``.

Only bounded quantities are formed: every exponent is ``<= 0``; the sort's
``D_k`` is ``P_k + Q_k >= 1`` of ``_root`` (no exponential at all); the mask's
``e_i / D`` is taken after shifting by the smallest ``|v_i|`` (``D`` may
underflow when ``T`` is tiny against the gaps); terms ``e^{-a}`` with ``a >
700`` are dropped.  Sums run in float64 whatever the dtype.  Tied knots get
exactly equal ranks (a tied knot copies its predecessor's rank).

The forward pass hands the backward pass the coefficients of the backward map
(``aux`` and, for the sort, ``gaps``: every ``e_j``, the rank's ``alpha_j +
beta_j``, the sort's ``m_k``, ``P_k / (alpha_{m-1} D_k)`` and ``Q_k / (beta_m
D_k)``, and the derivatives in ``T`` when ``T`` needs a gradient), so the
rank's and the sort's backward pass is a few linear recurrences: no
transcendental function and no division.

``forward`` / ``backward`` run the numba kernels (``@njit(cache=True,
nogil=True)`` over a range of rows, compiled lazily; large calls spread over
the non-spinning pool of ``softops._kernels._threads``); without numba
they run the same functions as plain Python (slow: the methods module uses its
pure Array API twin instead).  Shapes: ``y`` and ``order`` ``(*batch, n)``;
``t`` and ``k`` with as many axes as ``batch``, broadcasting against it.  Any
float dtype: half precision is computed in float32 (numba has no float16).
"""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np

from softops._kernels import _threads, _tiers, rowsort, vecmath
from softops._kernels._rows import as_rows, readonly

__all__ = ["OPS", "HAVE_NUMBA", "aux_shapes", "forward", "backward", "numba_available"]

# Whether numba is installed, known without importing it (and so without
# compiling anything): the methods pick the kernel or their twin by it, also
# while torch.compile traces them.
HAVE_NUMBA = importlib.util.find_spec("numba") is not None

OPS = ("rank", "sort", "mask")
_OP = {name: i for i, name in enumerate(OPS)}
# forward's aux channels per element: e_j, then rank: alpha_j + beta_j and
# beta'_j - alpha'_j; sort: u_k, v_k and ds_k/dT (see _sort_forward).
_AUX = {"rank": 3, "sort": 4, "mask": 1}
_BIG = 700.0  # terms e^{-a} with a beyond this are dropped


# --- per-row helpers (njit-ed when numba is there) ----------------------------------


def _block_knots_py(y, t, steps, lo, hi, block):
    """``block[(r - lo) n + j] = e_j`` of rows ``lo <= r < hi`` (``e_{n-1} = 0``).
    The exponents are written first and exponentiated in one flat loop, which
    the compiler vectorises however short the rows are."""
    n = y.shape[1]
    for r in range(lo, hi):
        yr = r * steps[0]
        scale = -1.0 / np.float64(t[r * steps[1]])
        base = (r - lo) * n
        for j in range(n - 1):
            # Tied infinities are a tie (gap 0); next to an infinity the gap
            # is infinite and e_j = 0, which decouples the finite entries.
            gap = 0.0 if y[yr, j + 1] == y[yr, j] else np.float64(y[yr, j + 1]) - np.float64(y[yr, j])
            block[base + j] = gap * scale
        block[base + n - 1] = -np.inf
    for i in range((hi - lo) * n):
        block[i] = _exp(block[i])


def _block_recurrences_py(y, lo, hi, block, alpha, beta, rank):
    """``alpha``, ``beta`` and the sorted ranks of the rows ``lo <= r < hi`` of
    ``y`` from their ``e`` in ``block`` (flat: row ``r``'s ``j`` at ``(r - lo) n +
    j``, as in the outputs).  A tied knot copies its predecessor's rank.  The
    loops run over rows innermost, so the rows' serial chains overlap instead
    of each waiting on its own previous step."""
    n = y.shape[1]
    rows = hi - lo
    for r in range(rows):
        alpha[r * n] = 1.0
        beta[r * n + n - 1] = 1.0
    for j in range(1, n):
        for r in range(rows):
            i = r * n + j
            alpha[i] = 1.0 + block[i - 1] * alpha[i - 1]
    for j in range(n - 2, -1, -1):
        for r in range(rows):
            i = r * n + j
            beta[i] = 1.0 + block[i] * beta[i + 1]
    for j in range(n):
        for r in range(rows):
            i = r * n + j
            if j > 0 and y[lo + r, j] == y[lo + r, j - 1]:
                rank[i] = rank[i - 1]
            else:
                rank[i] = j + 1.0 + 0.5 * (beta[i] - alpha[i])


def _derivatives_py(y, r, t, e, alpha, beta, da, db):
    """``alpha'`` and ``beta'`` of row ``r`` (see the module docstring)."""
    n = y.shape[1]
    da[0] = 0.0
    for j in range(1, n):
        de = 0.0
        if e[j - 1] > 0.0 and y[r, j] != y[r, j - 1]:
            de = e[j - 1] * ((np.float64(y[r, j]) - np.float64(y[r, j - 1])) / t)
        da[j] = e[j - 1] * da[j - 1] + de * alpha[j - 1]
    db[n - 1] = 0.0
    for j in range(n - 2, -1, -1):
        de = 0.0
        if e[j] > 0.0 and y[r, j + 1] != y[r, j]:
            de = e[j] * ((np.float64(y[r, j + 1]) - np.float64(y[r, j])) / t)
        db[j] = e[j] * db[j + 1] + de * beta[j + 1]


def _larger_root_py(d, a, b, c):
    """``(big, knot, right)``: the larger of ``P`` and ``Q`` of ``_root``, ``|d| +
    sqrt(d^2 + c)``, which is ``Q`` when ``d >= 0`` (``right``) and ``P``
    otherwise, and the knot weight on its side (``b`` or ``a``)."""
    right = d >= 0
    return abs(d) + math.sqrt(d * d + c), (b if right else a), right


def _root_py(d, a, b, c, yl, yr):
    """The root ``z`` of ``F(z) = m + d`` on gap ``m`` (between the knots ``yl =
    y_{m-1}`` and ``yr = y_m``; an outer gap has one knot) as ``(P, Q, anchor,
    offset)`` with ``z = anchor + T offset``.  ``P = a e^{-(z - yl)/T}`` and ``Q =
    b e^{-(yr - z)/T}`` (``a = alpha_{m-1}``, ``b = beta_m``, 0 for a missing knot)
    solve ``Q - P = 2 d`` and ``P Q = c = a b d_{m-1}``: the larger is ``|d| +
    sqrt(d^2 + c)``, the other ``c`` over it.  The anchor is ``yr`` for ``d >= 0``
    (offset ``-log(b / Q)``), else ``yl`` (offset ``log(a / P)``); for ``d = 0``
    with ``c`` underflowing (``P = Q = 0``), the midpoint with offset ``log(a /
    b) / 2``.  Scalars only: array arguments cost a reference count each."""
    big, knot, right = _larger_root(d, a, b, c)
    if big == 0.0:
        return 0.0, 0.0, 0.5 * (yl + yr), 0.5 * (math.log(a) - math.log(b))
    offset = math.log(big / knot)
    if right:
        return c / big, big, yr, offset
    return big, c / big, yl, -offset


def _gap_py(y, yr, e, alpha, beta, target, m):
    """``_root`` for ``target`` on gap ``m`` of row ``yr``."""
    n = alpha.shape[0]
    a = alpha[m - 1] if m > 0 else 0.0
    b = beta[m] if m < n else 0.0
    c = a * b * e[m - 1] if (m > 0 and m < n) else 0.0
    return _root(target - m, a, b, c, np.float64(y[yr, max(m - 1, 0)]), np.float64(y[yr, min(m, n - 1)]))


def _mask_target_py(n, k):
    """``(inside, target)``: ``F(b) = n - k`` for ``0 < k < n``."""
    target = n - k
    return 0.0 < target < n, target


# --- row kernels ----------------------------------------------------------------------


def _forward_kernel(OP, NEED_T):
    """The forward row kernel of operation ``OP`` (``_OP``), with or without
    ``T``'s coefficients (``NEED_T``): closure constants, so numba prunes the
    other cases' branches (the helpers get them as literals) and each variant
    compiles only its own code, on its first call."""

    def _forward_rows(x, x_bits, bits, t, k, steps, out, aux, gaps, y, y_in, order, row_lo, row_hi):
        n = out.shape[1]
        # Blocks of about _BLOCK entries: the knots and recurrences of a block's
        # rows are computed in flat loops (which vectorise), within the cache.
        per_block = max(1, _BLOCK // max(n, 1))
        for lo in range(row_lo, row_hi, per_block):
            hi = min(lo + per_block, row_hi)
            # Sort the block's rows (softops._kernels.rowsort): y and order.
            key = np.empty(n, np.uint64)
            key_b = np.empty(n, np.uint64)
            idx = np.empty(n, np.int32)
            idx_b = np.empty(n, np.int32)
            count = np.empty(256, np.int64)
            for r in range(lo, hi):
                _sort_row(x_bits, r, bits, False, key, key_b, idx, idx_b, count)
                for i in range(n):
                    order[r, i] = idx[i]
                    y[r, i] = x[r, idx[i]]
            # From here on the sorted rows are read through ``y_in``, a read-only
            # view of ``y``: the helpers then compile once for the forward and
            # the backward (which gets them read-only).
            block = np.empty((hi - lo) * n, np.float64)
            _block_knots(y_in, t, steps, lo, hi, block)
            block_alpha = np.empty((hi - lo) * n, np.float64)
            block_beta = np.empty((hi - lo) * n, np.float64)
            block_rank = np.empty((hi - lo) * n, np.float64)
            _block_recurrences(y_in, lo, hi, block, block_alpha, block_beta, block_rank)
            e = np.empty(max(n - 1, 1), np.float64)
            alpha = np.empty(n, np.float64)
            beta = np.empty(n, np.float64)
            rank = np.empty(n, np.float64)
            da = np.empty(n, np.float64)
            db = np.empty(n, np.float64)
            counts = np.empty(n + 1, np.int64)
            for r in range(lo, hi):
                yr = r * steps[0]
                tr = np.float64(t[r * steps[1]])
                base = (r - lo) * n
                for j in range(n):
                    aux[r, 0, j] = block[base + j]
                    alpha[j] = block_alpha[base + j]
                    beta[j] = block_beta[base + j]
                    rank[j] = block_rank[base + j]
                for j in range(n - 1):
                    e[j] = block[base + j]
                if NEED_T and OP != 2:
                    _derivatives(y_in, yr, tr, e, alpha, beta, da, db)
                if OP == 0:
                    for j in range(n):
                        out[r, order[yr, j]] = rank[j]
                        aux[r, 1, j] = alpha[j] + beta[j]
                        aux[r, 2, j] = db[j] - da[j] if NEED_T else 0.0
                elif OP == 1:
                    _sort_forward(y_in, r, yr, tr, e, alpha, beta, rank, da, db, NEED_T, counts, out, block, base,
                                  aux, gaps)
                else:
                    inside, target = _mask_target(n, np.float64(k[r * steps[2]]))
                    if not inside:
                        fill = 0.0 if target > 0 else 1.0
                        for j in range(n):
                            out[r, j] = fill
                        continue
                    m = 0
                    while m < n and rank[m] - 0.5 <= target:
                        m += 1
                    _, _, anchor, offset = _gap(y_in, yr, e, alpha, beta, target, m)
                    for j in range(n):
                        v = (0.0 if y_in[yr, j] == anchor else (np.float64(y_in[yr, j]) - anchor) / tr) - offset
                        p = 0.5 * _exp(-abs(v))
                        out[r, order[yr, j]] = p if v <= 0 else 1.0 - p
            if OP == 1:
                # The sort's logarithms, in one flat (vectorised) loop for the block.
                for i in range((hi - lo) * n):
                    block[i] = _log(block[i])
                for r in range(lo, hi):
                    tr = np.float64(t[r * steps[1]])
                    base = (r - lo) * n
                    for j in range(n):
                        out[r, j] = np.float64(out[r, j]) + tr * block[base + j]

    return _forward_rows


def _sort_forward_py(y, r, yr, t, e, alpha, beta, rank, da, db, need_t, counts, out, logs, base, aux, gaps):
    """The sorted row and its backward coefficients.  On gap ``m = m_k`` (``a =
    alpha_{m-1}``, ``b = beta_m``, ``c = a b d_{m-1}``, 0 for a missing knot) the
    target ``k + 1/2`` is never a knot's rank, so ``d = k + 1/2 - m != 0`` and
    ``_root``'s larger root is ``|d| + sqrt(d^2 + c)``.  With ``e^{-w_l} = P_k /
    a``, ``e^{-w_r} = Q_k / b`` (``w_l = (s_k - y_{m-1})/T``, ``w_r = (y_m -
    s_k)/T``) and ``D_k = P_k + Q_k``: ``ds_k/dy_i = u_k e^{-(y_{m-1} - y_i)/T}``
    for ``i < m`` with ``u_k = P_k / (a D_k)`` and ``v_k e^{-(y_i - y_m)/T}`` for
    ``i >= m`` with ``v_k = Q_k / (b D_k)``; both come from one division (for
    ``d > 0``, ``R = 1 / (b (Q^2 + c))``, ``u = b^2 d_{m-1} R``, ``v = Q^2 R``;
    mirrored for ``d < 0``), and the output from one logarithm, ``log(Q / b)`` or
    ``-log(P / a)``.  ``ds_k/dT = (P_k (w_l + alpha'_{m-1} / a) - Q_k
    (w_r + beta'_m / b)) / D_k``.  ``aux`` gets ``u_k, v_k`` and that derivative
    (``need_t``), ``gaps`` gets ``m_k``."""
    n = alpha.shape[0]
    # m_k = #{i : rank_i <= k + 1}: knot i counts from k = ceil(rank_i) - 1 on
    # (a histogram and its running sum: no data-dependent branch).
    for i in range(n + 1):
        counts[i] = 0
    for i in range(n):
        first = n
        if rank[i] >= 0.0:  # False for NaN
            first = min(int(math.ceil(rank[i])) - 1, n)
        counts[max(first, 0)] += 1
    m = 0
    for j in range(n):
        m += counts[j]
        d = j + 0.5 - m
        a = alpha[max(m - 1, 0)] if m > 0 else 0.0
        b = beta[min(m, n - 1)] if m < n else 0.0
        em = e[min(max(m - 1, 0), max(n - 2, 0))] if (m > 0 and m < n) else 0.0
        c = a * b * em
        # right (d > 0): m < n, b >= 1 and big = Q_k; else m > 0, a >= 1, big = P_k.
        big, knot, right = _larger_root(d, a, b, c)
        inv = 1.0 / (knot * (big * big + c))
        near = big * big * inv
        far = knot * knot * em * inv
        # s_k = y_m + T log(Q / b) (right) or y_{m-1} + T log(a / P): the anchor
        # now, the logarithm's argument into ``logs`` (taken for a whole block).
        out[r, j] = y[yr, min(m, n - 1)] if right else y[yr, max(m - 1, 0)]
        logs[base + j] = (big if right else knot) / (knot if right else big)
        aux[r, 1, j] = far if right else near
        aux[r, 2, j] = near if right else far
        dt = 0.0
        if need_t:
            small = c / big
            p = small if right else big
            q = big if right else small
            if p > 0.0:
                dt += p * (math.log(a) - math.log(p) + da[m - 1] / a)
            if q > 0.0:
                dt -= q * (math.log(b) - math.log(q) + db[m] / b)
            dt /= p + q
        aux[r, 3, j] = dt
        if not math.isfinite(out[r, j]):
            # An output at an infinite knot is a constant.
            aux[r, 1, j] = 0.0
            aux[r, 2, j] = 0.0
            aux[r, 3, j] = 0.0
        gaps[r, j] = m


def _backward_kernel(OP, NEED_T):
    """The backward row kernel of operation ``OP`` (see ``_forward_kernel``)."""

    def _backward_rows(y, order, t, k, aux, gaps, g, steps, gy, gt, gk, row_lo, row_hi):
        n = gy.shape[1]
        if row_lo < row_hi:
            e = np.empty(max(n - 1, 1), np.float64)
            alpha = np.empty(n, np.float64)
            beta = np.empty(n, np.float64)
            rank = np.empty(n, np.float64)
            wl = np.empty(n, np.float64)
            wr = np.empty(n, np.float64)
            for r in range(row_lo, row_hi):
                yr = r * steps[0]
                tr = np.float64(t[r * steps[1]])
                if OP == 0:
                    _rank_backward(g, r, order, yr, tr, aux, NEED_T, wl, gy, gt)
                elif OP == 1:
                    _sort_backward(g, r, order, yr, aux, gaps, NEED_T, wl, wr, gy, gt)
                else:
                    for j in range(n - 1):
                        e[j] = aux[r, 0, j]
                    _block_recurrences(y, yr, yr + 1, e, alpha, beta, rank)
                    _mask_backward(y, g, r, order, yr, tr, np.float64(k[r * steps[2]]), e, alpha, beta, rank,
                                   wl, wr, gy, gt, gk)
                # Entries at +-inf are constants (their outputs too).
                for j in range(n):
                    if y[yr, j] == np.inf or y[yr, j] == -np.inf:
                        gy[r, order[yr, j]] = 0.0

    return _backward_rows


def _rank_backward_py(g, r, order, yr, t, aux, need_t, acc, gy, gt):
    """``gy_j = (g_j (alpha_j + beta_j) - A_j - B_j) / (2T)`` (``aux``: ``e_j``,
    ``alpha_j + beta_j``, ``beta'_j - alpha'_j``); ``acc`` holds ``A_j``, ``B_j``
    runs backwards alongside the output."""
    n = acc.shape[0]
    a = 0.0
    for j in range(n):
        a = np.float64(g[r, order[yr, j]]) + (np.float64(aux[r, 0, j - 1]) * a if j > 0 else 0.0)
        acc[j] = a
    b = 0.0
    total_t = 0.0
    half = 0.5 / t
    for j in range(n - 1, -1, -1):
        oj = order[yr, j]
        gj = np.float64(g[r, oj])
        b = gj + np.float64(aux[r, 0, j]) * b
        gy[r, oj] = (gj * np.float64(aux[r, 1, j]) - acc[j] - b) * half
        if need_t:
            total_t += gj * np.float64(aux[r, 2, j])
    gt[r] = total_t * half


def _sort_backward_py(g, r, order, yr, aux, gaps, need_t, left, right, gy, gt):
    """``gy_i = P_i + Q_i`` with ``P_i = sum_{m_k <= i} g_k v_k e^{-(y_i - y_{m_k})/T}``
    forwards and ``Q_i = sum_{m_k > i} g_k u_k e^{-(y_{m_k - 1} - y_i)/T}``
    backwards (``_sort_forward``): each ``g_k u_k`` is added at knot ``m_k - 1``
    and each ``g_k v_k`` at knot ``m_k``, then two recurrences in ``e``."""
    n = left.shape[0]
    for i in range(n):
        left[i] = 0.0
        right[i] = 0.0
    total_t = 0.0
    for j in range(n):
        gj = np.float64(g[r, j])
        m = gaps[r, j]
        # u_k = 0 when m_k = 0 and v_k = 0 when m_k = n: clamped, they add nothing.
        left[max(m - 1, 0)] += gj * np.float64(aux[r, 1, j])
        right[min(m, n - 1)] += gj * np.float64(aux[r, 2, j])
        if need_t:
            total_t += gj * np.float64(aux[r, 3, j])
    gt[r] = total_t
    p = 0.0
    for i in range(n):
        p = right[i] + (np.float64(aux[r, 0, i - 1]) * p if i > 0 else 0.0)
        gy[r, order[yr, i]] = p
    q = 0.0
    for i in range(n - 1, -1, -1):
        q = left[i] + np.float64(aux[r, 0, i]) * q
        gy[r, order[yr, i]] += q


def _mask_backward_py(y, g, r, order, yr, t, k, e, alpha, beta, rank, v, ex, gy, gt, gk):
    n = alpha.shape[0]
    inside, target = _mask_target(n, k)
    if not inside:
        for j in range(n):
            gy[r, j] = 0.0
        gt[r] = 0.0
        gk[r] = 0.0
        return
    m = 0
    while m < n and rank[m] - 0.5 <= target:
        m += 1
    _, _, anchor, offset = _gap(y, yr, e, alpha, beta, target, m)
    shift = np.inf
    for j in range(n):
        v[j] = (0.0 if y[yr, j] == anchor else (np.float64(y[yr, j]) - anchor) / t) - offset
        shift = min(shift, abs(v[j]))
    # e_j = e^{-shift} eh_j with eh_j = e^{shift - |v_j|} (shift = min |v_j|: D
    # may underflow); c = 2 T G / D = sum g_j eh_j / sum eh_j.
    es = math.exp(-shift)
    dh = 0.0
    gh = 0.0
    ev = 0.0  # sum eh_j v_j
    gev = 0.0  # sum g_j eh_j v_j
    for j in range(n):
        gj = np.float64(g[r, order[yr, j]])
        a = abs(v[j]) - shift
        eh = _exp(-a) if a <= _BIG else 0.0
        ex[j] = eh
        if eh > 0.0:
            dh += eh
            gh += gj * eh
            ev += eh * v[j]
            gev += gj * eh * v[j]
    ratio = gh / dh
    scale = es / (2.0 * t)
    for j in range(n):
        oj = order[yr, j]
        gy[r, oj] = (np.float64(g[r, oj]) - ratio) * ex[j] * scale
    gk[r] = ratio
    # gT = -sum g q v - G db/dT with db/dT = -sum e v / D and G / D = c / (2T).
    gt[r] = (ratio * ev - gev) * scale


_sort_row = rowsort.sort_row
_exp = vecmath.exp_nonpositive_py
_log = vecmath.log_positive_py
_block_knots = _block_knots_py
_block_recurrences = _block_recurrences_py
_derivatives = _derivatives_py
_larger_root = _larger_root_py
_root = _root_py
_gap = _gap_py
_mask_target = _mask_target_py
_rank_backward = _rank_backward_py
_sort_forward = _sort_forward_py
_sort_backward = _sort_backward_py
_mask_backward = _mask_backward_py
# Entries per block of rows in the forward kernel (see _forward_kernel).
_BLOCK = 1024


@functools.cache
def _numba_kernels():
    """The compiled kernels, or None when numba is not installed."""
    global _sort_row, _exp, _log, _block_knots, _block_recurrences
    global _derivatives, _larger_root, _root, _gap, _mask_target
    global _rank_backward, _sort_forward, _sort_backward, _mask_backward
    try:
        import numba
    except ImportError:
        return None
    # error_model="numpy": no division-by-zero branch (every division here is
    # guarded), so that the flat loops vectorise.
    jit = numba.njit(cache=True, nogil=True, error_model="numpy")
    _exp, _log = vecmath.compiled()
    _sort_row = rowsort.compiled_sort_row()
    # Helpers first: the kernels resolve these globals when they compile.
    _block_recurrences = jit(_block_recurrences_py)
    _block_knots, _derivatives = jit(_block_knots_py), jit(_derivatives_py)
    _larger_root, _root = jit(_larger_root_py), jit(_root_py)
    _gap = jit(_gap_py)
    _mask_target = jit(_mask_target_py)
    _rank_backward, _sort_backward = jit(_rank_backward_py), jit(_sort_backward_py)
    _sort_forward = jit(_sort_forward_py)
    _mask_backward = jit(_mask_backward_py)
    kernel = numba.njit(cache=True, nogil=True, error_model="numpy")
    return _variants(kernel)


def numba_available() -> bool:
    return _numba_kernels() is not None


def _variants(wrap):
    """``{(op, need_t): (forward, backward)}``, each kernel made by ``wrap``."""
    return {(op, need_t): (wrap(_forward_kernel(i, need_t)), wrap(_backward_kernel(i, need_t)))
            for op, i in _OP.items() for need_t in (False, True)}


# The plain-Python helpers (what the names above are before numba loads).
_PLAIN = dict(_sort_row=rowsort.sort_row, _exp=vecmath.exp_nonpositive_py, _log=vecmath.log_positive_py,
              _block_knots=_block_knots_py, _block_recurrences=_block_recurrences_py, _derivatives=_derivatives_py,
              _larger_root=_larger_root_py, _root=_root_py, _gap=_gap_py, _mask_target=_mask_target_py,
              _rank_backward=_rank_backward_py, _sort_forward=_sort_forward_py, _sort_backward=_sort_backward_py,
              _mask_backward=_mask_backward_py)


@functools.cache
def _python_kernels():
    return _variants(lambda f: _tiers.row_kernel(f, _PLAIN))


def _kernels(op, need_t, dtype, size):
    """``(forward, backward)`` row kernels of ``op`` (with ``T``'s coefficients
    or not) for a call of ``size`` entries computing in ``dtype``: numba's
    (compiled on first use, per variant and dtype, on a background thread
    while small calls run interpreted: ``softops._kernels._tiers``), else the
    plain-Python ones."""
    return _tiers.pick("lapsum", (op, bool(need_t)), _numba_kernels(), _python_kernels, _warm, dtype, size)


def _warm(op, need_t, dtype):
    """One tiny forward and backward of the variant (compiles it)."""
    x = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 0.0, 2.0]], dtype)
    t = np.ones(2, dtype)
    k = np.full(2, 2.0, dtype) if op == "mask" else None
    out, aux, gaps, y, order = forward(op, x, t, k, need_t)
    backward(op, y, order, t, aux, gaps, np.ones_like(out), k, need_t)


class _Layout:
    """The common batch shape of ``y`` (with ``order``), ``t`` and ``k``; each as a
    ``(rows or 1, ...)`` contiguous array with a row step (0: shared by all rows)."""

    def __init__(self, y, order, t, k):
        y, t = np.asarray(y), np.asarray(t)
        order = None if order is None else np.asarray(order)  # None: the forward computes it
        k = np.zeros((), y.dtype) if k is None else np.asarray(k)
        self.n = n = y.shape[-1]
        rows_of_order = y.shape[:-1] if order is None else order.shape[:-1]
        self.batch = np.broadcast_shapes(y.shape[:-1], rows_of_order, t.shape, k.shape)
        self.rows = math.prod(self.batch)
        # Results come back in y's dtype; numba computes in float32 or float64.
        self.dtype = y.dtype
        self.work = y.dtype if y.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        y, t, k = (a.astype(self.work, copy=False) for a in (y, t, k))
        if order is not None and order.shape != y.shape:
            y, order = np.broadcast_arrays(y, order)
        self.y, y_step = self._rows(y, y.shape[:-1], n)
        self.order = None if order is None else self._rows(order, order.shape[:-1], n)[0]
        self.t, t_step = self._rows(t, t.shape, None)
        self.k, k_step = self._rows(k, k.shape, None)
        self.steps = np.array([y_step, t_step, k_step], np.int64)

    def _rows(self, a, batch, n):
        return as_rows(a, batch, self.batch, n)

    def full(self, a):
        return np.ascontiguousarray(np.broadcast_to(a, self.batch + (self.n,))).reshape(self.rows, self.n)


def aux_shapes(op: str, batch, n) -> tuple:
    """The shapes of ``forward``'s ``aux`` and ``gaps`` for rows of shape ``(*batch, n)``."""
    return (*batch, _AUX[op], n), (*batch, n if op == "sort" else 0)


def forward(op: str, x, t, k=None, need_t=True):
    """``(out, aux, gaps, y, order)`` for the caller's rows ``x``: the ranks
    (caller's order), the sort (ascending) or the top-k mask (caller's order),
    shape ``(*batch, n)`` in ``x``'s dtype (``k`` for the mask only); and what
    ``backward`` needs besides: ``aux`` (``aux_shapes``, in the dtype the
    kernel computes in: float64 for float64 rows, else float32) holds every
    ``e_j`` and the operation's coefficients of the backward map (``T``'s only
    with ``need_t``); ``gaps`` (int32, the sort only) each output's gap
    ``m_k``; ``y`` and ``order`` the rows sorted ascending (``y`` in the
    computing dtype) and the int32 permutation (``y_j = x[order_j]``, stable),
    which the kernel computes itself (``softops._kernels.rowsort``).  The
    rank's and the sort's backward then evaluate no exponential, logarithm,
    square root or division."""
    lay = _Layout(x, None, t, k)
    n, rows = lay.n, lay.rows
    # A row shared by the batch (one x, a temperature per row) is copied to every row.
    x_rows = lay.full(lay.y[0]) if lay.steps[0] == 0 and rows > 1 else lay.y
    steps = lay.steps.copy()
    steps[0] = 1
    x_bits, bits = rowsort.key_bits(x_rows)
    aux_shape, gaps_shape = aux_shapes(op, lay.batch, n)
    out = np.empty((rows, n), lay.work)
    aux = np.empty((rows,) + aux_shape[-2:], lay.work)  # (rows, channels, n)
    gaps = np.empty((rows, gaps_shape[-1]), np.int32)
    y = np.empty((rows, n), lay.work)
    order = np.empty((rows, n), np.int32)
    x_rows, x_bits, t, k, steps = readonly(x_rows, x_bits, lay.t, lay.k, steps)
    args = (x_rows, x_bits, bits, t, k, steps, out, aux, gaps, y, *readonly(y), order)
    kernel = _kernels(op, need_t, lay.work, rows * n)[0]
    _threads.run(lambda lo, hi: kernel(*args, lo, hi), rows, n)
    shape = lay.batch + (n,)
    return (out.astype(lay.dtype, copy=False).reshape(shape), aux.reshape(aux_shape), gaps.reshape(gaps_shape),
            y.reshape(shape), order.reshape(shape))


def backward(op: str, y, order, t, aux, gaps, g, k=None, need_t=True):
    """``(gx, gt, gk)`` (``gk`` is 0 but for the mask): the cotangents of the caller's row
    ``x`` (shape ``(*batch, n)``, caller's order) and of ``t`` and ``k`` per row
    (shape ``batch``; sum them to the inputs' shapes yourself), given ``aux``
    and ``gaps`` from ``forward(op, ..., need_t)`` and the cotangent ``g`` of its
    output (in the order it was returned in).  ``need_t=False`` skips ``gt``
    (returned as 0)."""
    lay = _Layout(y, order, t, k)
    gy = np.empty((lay.rows, lay.n), lay.work)
    gt = np.zeros(lay.rows, np.float64)
    gk = np.zeros(lay.rows, np.float64)
    aux_shape, gaps_shape = aux_shapes(op, lay.batch, lay.n)
    aux = np.ascontiguousarray(np.broadcast_to(aux, aux_shape)).reshape((lay.rows,) + aux_shape[-2:])
    gaps = np.ascontiguousarray(np.broadcast_to(gaps, gaps_shape)).reshape(lay.rows, gaps_shape[-1])
    y, order, t, k, aux, gaps, g, steps = readonly(
        lay.y, lay.order, lay.t, lay.k, aux, gaps, lay.full(np.asarray(g).astype(lay.work, copy=False)), lay.steps)
    args = (y, order, t, k, aux, gaps, g, steps, gy, gt, gk)
    kernel = _kernels(op, need_t, lay.work, lay.rows * lay.n)[1]
    _threads.run(lambda lo, hi: kernel(*args, lo, hi), lay.rows, lay.n)
    return (
        gy.astype(lay.dtype, copy=False).reshape(lay.batch + (lay.n,)),
        gt.astype(lay.dtype).reshape(lay.batch),
        gk.astype(lay.dtype).reshape(lay.batch),
    )
