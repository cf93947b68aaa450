r"""Soft sorting and ranking by projection onto the permutahedron.

Blondel, Teboul, Berthet & Djolonga 2020, "Fast Differentiable Sorting and
Ranking" (ICML).  The permutahedron ``P(w)`` is the convex hull of the
permutations of ``w``.  With ``rho = (n, n-1, ..., 1)`` and a temperature
``T > 0`` (the paper's regularisation strength epsilon):

* l2:  ``P_Q(z, w) = argmin_{mu in P(w)} ||mu - z||^2``;
  soft rank ``r(x) = P_Q(x / T, rho)``, soft sort (descending)
  ``s(x) = P_Q(rho / T, x)``  (paper, eqs. 4-5);
* kl:  ``P_E(z, w) = argmin_{mu in P(exp w)} KL(mu, exp z)``;
  soft rank ``r(x) = P_E(x / T, log rho)``, soft sort (descending)
  ``s(x) = log P_E(rho / T, x)``.

Both projections reduce, after sorting ``z`` descending, to one isotonic
regression (paper, Prop. 3), solved by the pool-adjacent-violators kernel of
``softops._kernels.isotonic`` on rows; its custom VJP is the exact Jacobian
(block averages for l2, block softmaxes for kl; paper, section 5), so forward
and backward both cost O(n) after the O(n log n) sort.  The kernel forms each
output from block statistics (``sort_k = mean_B(x) + (rho_k - mean_B rho) / T``
for l2) so that no ``rho / T`` sized intermediate is ever subtracted from
another: float32 results stay within float32 rounding of float64 ones at every
temperature.

``sort_rows`` and ``rank_rows`` work on ``(*batch, n)`` rows; other operations
(top-k, quantiles) are built on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from softops._backend import Backend, backend_of
from softops._validate import check_choice

__all__ = ["Permutahedron", "project_rows", "rank_rows", "sort_rows"]

REGULARIZATIONS = ("l2", "kl")


@dataclass(frozen=True)
class Permutahedron:
    """The permutahedron method (Blondel et al. 2020) and its regulariser.

    ``regularization="l2"`` (the default, and what ``method="permutahedron"``
    means) is the Euclidean projection; ``"kl"`` the Kullback-Leibler one, whose
    soft ranks are positive and whose soft sort stays within the convex hull of
    ``x`` on each block of merged values.
    """

    regularization: str = "l2"

    def __post_init__(self):
        check_choice(self.regularization, "regularization", REGULARIZATIONS)

    # The sort-method interface (see softops.sort): rows of shape (*batch, n).
    def sort_rows(self, backend: Backend, x, temperature, descending: bool):
        return sort_rows(backend, x, temperature, self.regularization, descending)

    def rank_rows(self, backend: Backend, x, temperature, descending: bool):
        return rank_rows(backend, x, temperature, self.regularization, descending)

    @staticmethod
    def temperature_for(tau, spacing, op: str):
        """Temperature for ``softops.Relative(tau)`` given the data's neighbour
        spacing: ranks blend gaps below ``T`` ("rank": ``T = tau * spacing``); sorts
        cap gaps above ``1 / T`` ("sort": ``T = tau / spacing``)."""
        return tau * spacing if op == "rank" else tau / spacing


def _isotonic_fwd(xp, z, w, scale, *, kl):
    p, start = backend_of(z).isotonic_forward(z, w, scale, kl)
    # Views, not the inputs themselves: torch saves no input returned as-is.
    return p, (z[...], w[...], scale[...], start)


def _isotonic_bwd(xp, p, residuals, g, *, kl):
    z, w, scale, start = residuals
    gz, gw, gc = backend_of(z).isotonic_backward(z, w, scale, start, g, kl)
    return gz, gw, gc


# Module-level functions, not functools.partial: torch.compile traces the
# autograd.Function's constant op tuple only through plain functions.
def _isotonic_fwd_l2(xp, z, w, scale):
    return _isotonic_fwd(xp, z, w, scale, kl=False)


def _isotonic_bwd_l2(xp, p, residuals, g):
    return _isotonic_bwd(xp, p, residuals, g, kl=False)


def _isotonic_fwd_kl(xp, z, w, scale):
    return _isotonic_fwd(xp, z, w, scale, kl=True)


def _isotonic_bwd_kl(xp, p, residuals, g):
    return _isotonic_bwd(xp, p, residuals, g, kl=True)


def _isotonic(backend: Backend, z, w, scale, kl: bool):
    """The projection's primal ``c z - v`` in sorted order (see the kernel)."""
    if kl:
        return backend.custom_vjp(_isotonic_fwd_kl, _isotonic_bwd_kl)(z, w, scale)
    return backend.custom_vjp(_isotonic_fwd_l2, _isotonic_bwd_l2)(z, w, scale)


def _descending_positions(backend: Backend, x):
    """``rho = (n, ..., 1)`` broadcast to the shape of ``x``, in its dtype."""
    xp = backend.xp
    n = x.shape[-1]
    rho = xp.arange(n, 0, -1, dtype=x.dtype, device=backend.device(x))
    return xp.broadcast_to(rho, x.shape)


def _scale(backend: Backend, x, temperature):
    """``1 / temperature`` per row, shape ``x.shape[:-1]`` (the temperature is a
    float, a 0-d array, or per row of shape ``(*batch, 1)``)."""
    xp = backend.xp
    if isinstance(temperature, float):
        return xp.full(x.shape[:-1], 1.0 / temperature, dtype=x.dtype, device=backend.device(x))
    scale = 1.0 / temperature
    if scale.ndim == x.ndim:  # a per-row temperature of shape (*batch, 1)
        scale = scale[..., 0]
    return xp.broadcast_to(scale, x.shape[:-1])


def sort_rows(backend: Backend, x, temperature, regularization: str, descending: bool):
    """Soft sort of each row of ``x`` (shape ``(*batch, n)``)."""
    kl = regularization == "kl"
    # Descending soft sort of y: P(rho / T, y) with y's entries sorted descending.
    y = x if descending else -x
    w, _ = backend.sort_descending(y)  # values only: stability is irrelevant
    rho = _descending_positions(backend, x)
    p = _isotonic(backend, rho, w, _scale(backend, x, temperature), kl)
    return p if descending else -p


def project_rows(backend: Backend, y, w, temperature, kl: bool):
    """``P(y / T, w)`` on each row (shape ``(*batch, n)``), in ``y``'s order: the
    projection of ``y / T`` onto the permutahedron of ``w``, whose entries must be
    sorted descending (kl: ``w`` holds log-weights and the primal is returned)."""
    xp = backend.xp
    # Ties may come in any order: tied entries always share one block.
    z, order = backend.sort_descending(y)
    p = _isotonic(backend, z, w, _scale(backend, y, temperature), kl)
    return xp.take_along_axis(p, backend.inverse_permutation(order), axis=-1)


def rank_rows(backend: Backend, x, temperature, regularization: str, descending: bool):
    """Soft ranks (1..n) of each row of ``x`` (shape ``(*batch, n)``)."""
    xp = backend.xp
    kl = regularization == "kl"
    rho = _descending_positions(backend, x)
    p = project_rows(backend, -x if descending else x, xp.log(rho) if kl else rho, temperature, kl)
    return xp.exp(p) if kl else p
