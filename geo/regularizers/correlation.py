r"""Correlation regulariser: ``1 - Pearson(a, b)`` per sample, averaged over the batch.

Vox-E (Sella et al., "Vox-E: Text-guided Voxel Editing of 3D Objects", ICCV 2023,
Sec. 4.2) keeps an edited feature grid close to the input grid with a volumetric
regulariser based on the correlation between them; being scale and offset invariant,
it leaves room for appearance changes while preserving structure. It works on any grid
(2D renders, 3D voxel features).

We compute it as ``1 - r = 1/2 ||z_a - z_b||^2`` with ``z = (x - mean x) / ||x - mean x||``
(the two are equal for unit vectors). This form is exactly 0 for ``b = a`` and exactly
``2 ||z_a||^2`` (= 2 up to rounding of the normalisation) for ``b = -a``. A constant
grid has no correlation; ``eps`` keeps its normalisation finite (its ``z`` is 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_float, check_tensor
from .schedule import Regularizer, Schedule

__all__ = ["correlation_loss", "CorrelationLoss"]


def correlation_loss(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    r"""``mean_b (1 - Pearson(a[b], b[b]))`` over all non-batch elements of each sample.

    Args:
        a: grid ``[B, *]`` (e.g. ``[B, C, D, H, W]`` voxel features or ``[B, C, H, W]`` renders).
        b: grid of the same shape.
        eps: lower bound on the norm of the centred sample.

    Returns:
        scalar in ``[0, 2]``.

    Example:
        >>> g = torch.rand(1, 4, 8, 8, 8)
        >>> float(correlation_loss(g, g)), round(float(correlation_loss(g, -g)), 6)
        (0.0, 2.0)
    """
    check_float(check_tensor(a, "a", "[B, *] (batch first)", min_ndim=2), "a")
    check_float(check_tensor(b, "b", f"{tuple(a.shape)} (same as a)", min_ndim=2), "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape [B, *], got {tuple(a.shape)} and {tuple(b.shape)}")
    if a[0].numel() < 2:
        raise ValueError(f"correlation needs at least 2 elements per sample, got shape {tuple(a.shape)}")
    za, zb = _unit_centred(a.flatten(1), eps), _unit_centred(b.flatten(1), eps)
    return 0.5 * ((za - zb) ** 2).sum(1).mean()


def _unit_centred(x: Tensor, eps: float) -> Tensor:
    c = x - x.mean(1, keepdim=True)
    return c / c.norm(dim=1, keepdim=True).clamp_min(eps)


class CorrelationLoss(Regularizer):
    """Module form of :func:`correlation_loss`; ``forward(a, b)``."""

    name = "correlation"

    def loss(self, a: Tensor, b: Tensor) -> Tensor:
        return correlation_loss(a, b)
