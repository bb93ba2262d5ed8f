r"""Orthogonality regularisers for weight matrices and functional maps.

* :func:`orthogonality`: ``||W^T W - I||_F^2`` for ``W`` of shape ``[..., m, n]`` with
  ``m >= n`` (orthonormal columns); for ``m < n`` the Gram ``W W^T`` is used instead, so
  the target is always reachable. For a square functional map ``C`` (Ovsjanikov et al.,
  "Functional Maps", SIGGRAPH 2012) this is the area-preservation term
  ``||C^T C - I||_F^2``. Batched inputs are summed.

* :func:`lambda_orthogonality`: the relaxed variant that leaves ``W`` free inside a
  tolerance ``lambda`` of the orthogonal set and pulls it back only outside it::

      R_lambda(W) = max(0, ||W^T W - I||_F - lambda)^2

  This follows the idea of Ricci et al., "lambda-Orthogonality Regularization for
  Compatible Representation Learning" (NeurIPS 2025, arXiv:2509.16664), which learns an
  affine map constrained to stay within ``lambda`` of orthogonal. The brief pointed at
  "Huang et al. 2022"; the search only found Ricci et al., and their exact loss could
  not be read here, so this hinge is our formula: it is zero on the whole ball
  ``||W^T W - I||_F <= lambda`` (the "free" region), continuously differentiable
  (squared hinge), and equals ``orthogonality`` shifted by the tolerance far from it.
  Batched inputs: one hinge per matrix, summed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_float, check_positive, check_tensor
from .schedule import Regularizer, Schedule

__all__ = ["orthogonality", "lambda_orthogonality", "Orthogonality", "LambdaOrthogonality", "gram_residual"]


def gram_residual(w: Tensor) -> Tensor:
    """``W^T W - I`` (``m >= n``) or ``W W^T - I`` (``m < n``), shape ``[..., k, k]``, ``k = min(m, n)``."""
    g = w.transpose(-1, -2) @ w if w.shape[-2] >= w.shape[-1] else w @ w.transpose(-1, -2)
    return g - torch.eye(g.shape[-1], dtype=w.dtype, device=w.device)


def _check_w(w) -> Tensor:
    return check_float(check_tensor(w, "w", "[..., m, n]", min_ndim=2), "w")


def orthogonality(w: Tensor) -> Tensor:
    r"""``sum_batch ||W^T W - I||_F^2`` (Gram on the smaller side; see module docstring).

    Args:
        w: matrices ``[..., m, n]``.

    Returns:
        scalar.

    Example:
        >>> q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
        >>> float(orthogonality(q)) < 1e-24
        True
    """
    _check_w(w)
    return (gram_residual(w) ** 2).sum()


def lambda_orthogonality(w: Tensor, lam: float = 0.1) -> Tensor:
    r"""``sum_batch max(0, ||W^T W - I||_F - lam)^2``: free within ``lam`` of orthogonal.

    Args:
        w: matrices ``[..., m, n]``.
        lam: tolerance ``lambda >= 0`` (0 gives ``orthogonality``).

    Returns:
        scalar.
    """
    _check_w(w)
    check_positive(lam, "lam", allow_zero=True)
    r = gram_residual(w).flatten(-2)
    sq = (r * r).sum(-1)
    # sqrt only where outside the tolerance: keeps the gradient finite at W orthogonal.
    pos = sq > lam * lam
    norm = torch.sqrt(torch.where(pos, sq, torch.ones_like(sq)))
    return torch.where(pos, (norm - lam) ** 2, torch.zeros_like(sq)).sum()


class Orthogonality(Regularizer):
    """Module form of :func:`orthogonality`; ``forward(w)`` (a tensor or a list of tensors, summed)."""

    name = "orthogonality"

    def loss(self, w) -> Tensor:
        ws = w if isinstance(w, (list, tuple)) else [w]
        return sum(orthogonality(x) for x in ws)


class LambdaOrthogonality(Regularizer):
    """Module form of :func:`lambda_orthogonality`; ``forward(w)`` (a tensor or a list, summed)."""

    name = "lambda_orthogonality"

    def __init__(self, weight: float = 1.0, schedule: Schedule | None = None, lam: float = 0.1) -> None:
        super().__init__(weight, schedule)
        self.lam = lam

    def loss(self, w) -> Tensor:
        ws = w if isinstance(w, (list, tuple)) else [w]
        return sum(lambda_orthogonality(x, self.lam) for x in ws)
