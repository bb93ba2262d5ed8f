r"""Optimal-transport regularisers on point sets: Sinkhorn divergence and Monge gap.

Both use the entropic OT cost between weighted samples, solved by POT
(``ot.solve_sample``, log-domain Sinkhorn, PyTorch backend) rather than a hand-written
loop::

    OT_eps(a, b) = min_{P in U(a, b)} <P, C> + eps KL(P | a b^T),   C_ij = ||x_i - y_j||^2

so ``OT_0`` is the squared 2-Wasserstein distance of the empirical measures.

* Sinkhorn divergence (debiased; Genevay, Peyré & Cuturi, AISTATS 2018; Feydy et al.,
  AISTATS 2019): ``S_eps(a, b) = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2``.
  It is >= 0, zero iff the measures coincide, and tends to ``OT_0 = W_2^2`` as
  ``eps -> 0`` (the self terms are at most ``eps log n``).
* Monge gap (Uscidda & Cuturi, "The Monge Gap: A Regularizer to Learn All Transport
  Maps", ICML 2023, Def. 3.1 with the entropic estimator of Sec. 3.3): for a map ``T``
  and reference samples ``x_i`` with weights ``a``,
  ``M(T) = sum_i a_i c(x_i, T(x_i)) - OT_eps(a, T#a)``, where ``T#a`` puts mass ``a_i`` on
  ``T(x_i)``. It vanishes (up to ``-eps log n <= M <= 0``) when ``T`` is an optimal map
  on the samples (for the squared cost: the gradient of a convex function, e.g. the
  Gaussian OT map) and is positive otherwise. Departure: ``eps`` is absolute (the paper
  and OTT scale it with the mean cost); pass ``eps = 0.05 * mean cost`` to match.

Convergence: POT's plain log-domain Sinkhorn (no eps-scaling) needs ``O(max C / eps)``
iterations or more; with ``eps`` below ~1% of the largest cost it can hit ``max_iter``
(POT then warns) and the value is only approximately converged. Scale ``eps`` with
the data (or normalise the point sets) for training use.

Gradients: ``grad="envelope"`` (default) differentiates the converged value through the
cost matrix only (Danskin), cheap in memory and exact at convergence; ``"autodiff"``
backpropagates through the Sinkhorn iterations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_choice, check_points, check_positive, check_weights
from .schedule import Regularizer, Schedule

__all__ = ["entropic_ot", "sinkhorn_divergence", "monge_gap", "SinkhornDivergence", "MongeGap"]


def _check_pair(x, y, a, b):
    check_points(x, "x")
    check_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x [N, D] and y [M, D] must have the same D, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    return check_weights(a, x.shape[0], "a", x), check_weights(b, y.shape[0], "b", y)


def _solve(x, y, a, b, eps, debias, max_iter, tol, grad):
    import ot  # POT; imported lazily (heavy)

    return ot.solve_sample(
        x, y, a=a, b=b, metric="sqeuclidean", reg=eps, reg_type="KL", debias=debias, max_iter=max_iter, tol=tol, grad=grad
    ).value


def entropic_ot(
    x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None, eps: float = 0.05,
    max_iter: int = 10000, tol: float = 1e-6, grad: str = "envelope",
) -> Tensor:
    r"""``OT_eps(a, b)`` with the squared Euclidean cost (value including ``eps KL``).

    Args:
        x: source points ``[N, D]``; y: target points ``[M, D]``.
        a, b: weights ``[N]`` / ``[M]`` summing to 1 (uniform by default).
        eps: entropic regularisation (absolute, in units of squared distance).
        max_iter, tol: Sinkhorn budget and marginal tolerance.
        grad: ``"envelope"`` or ``"autodiff"``.

    Returns:
        scalar.
    """
    a, b = _check_pair(x, y, a, b)
    check_positive(eps, "eps")
    check_choice(grad, "grad", ("envelope", "autodiff"))
    return _solve(x, y, a, b, eps, False, max_iter, tol, grad)


def sinkhorn_divergence(
    x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None, eps: float = 0.05,
    max_iter: int = 10000, tol: float = 1e-6, grad: str = "envelope",
) -> Tensor:
    r"""Debiased Sinkhorn divergence ``OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2``.

    Args: as :func:`entropic_ot`.

    Returns:
        scalar; ``-> W_2^2`` of the empirical measures as ``eps -> 0``.

    Example:
        >>> x, y = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64) + 1
        >>> s = sinkhorn_divergence(x, y, eps=1.0)
    """
    a, b = _check_pair(x, y, a, b)
    check_positive(eps, "eps")
    check_choice(grad, "grad", ("envelope", "autodiff"))
    return _solve(x, y, a, b, eps, True, max_iter, tol, grad)


def monge_gap(
    x: Tensor, tx: Tensor, a: Tensor | None = None, eps: float = 0.01,
    max_iter: int = 10000, tol: float = 1e-6, grad: str = "envelope",
) -> Tensor:
    r"""Monge gap ``sum_i a_i ||x_i - T(x_i)||^2 - OT_eps(a, T#a)`` of a map on reference samples.

    Args:
        x: reference samples ``[N, D]``.
        tx: their images ``T(x)`` ``[N, D]`` (row i is the image of row i).
        a: weights ``[N]`` (uniform by default).
        eps, max_iter, tol, grad: as :func:`entropic_ot`.

    Returns:
        scalar; ``~0`` (within ``[-eps log N, 0]``) for an optimal map, > 0 otherwise.

    Example:
        >>> x = torch.randn(128, 2, dtype=torch.float64)
        >>> gap = monge_gap(x, 2.0 * x + 1.0)   # an optimal map: gap ~ 0
    """
    check_points(x, "x")
    check_points(tx, "tx")
    if x.shape != tx.shape:
        raise ValueError(f"tx must have the shape of x [N, D] = {tuple(x.shape)} (one image per sample), got {tuple(tx.shape)}")
    a, _ = _check_pair(x, tx, a, a)
    check_positive(eps, "eps")
    check_choice(grad, "grad", ("envelope", "autodiff"))
    displacement = (a * ((x - tx) ** 2).sum(1)).sum()
    return displacement - _solve(x, tx, a, a, eps, False, max_iter, tol, grad)


class SinkhornDivergence(Regularizer):
    """Module form of :func:`sinkhorn_divergence`; ``forward(x, y, a=None, b=None)``."""

    name = "sinkhorn"

    def __init__(self, weight: float = 1.0, schedule: Schedule | None = None, eps: float = 0.05, max_iter: int = 10000, tol: float = 1e-6) -> None:
        super().__init__(weight, schedule)
        self.eps, self.max_iter, self.tol = eps, max_iter, tol

    def loss(self, x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None) -> Tensor:
        return sinkhorn_divergence(x, y, a, b, self.eps, self.max_iter, self.tol)


class MongeGap(Regularizer):
    """Module form of :func:`monge_gap`; ``forward(x, tx, a=None)``."""

    name = "monge_gap"

    def __init__(self, weight: float = 1.0, schedule: Schedule | None = None, eps: float = 0.01, max_iter: int = 10000, tol: float = 1e-6) -> None:
        super().__init__(weight, schedule)
        self.eps, self.max_iter, self.tol = eps, max_iter, tol

    def loss(self, x: Tensor, tx: Tensor, a: Tensor | None = None) -> Tensor:
        return monge_gap(x, tx, a, self.eps, self.max_iter, self.tol)
