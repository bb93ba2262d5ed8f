r"""Edge-aware smoothness of a depth or disparity field, guided by an image.

For every spatial axis ``k`` (2D images or 3D volumes alike)::

    L = sum_k  mean_i( |d_k d[i]| * exp(-gamma * mean_c |d_k I[c, i]|) )

with forward differences ``d_k`` (see :mod:`geo.regularizers.tv`), the image gradient
averaged over channels and each axis' mean taken over its own ``(S_k - 1) prod_{j!=k} S_j``
positions and the batch. This is the Monodepth term (Godard et al., "Unsupervised
Monocular Depth Estimation with Left-Right Consistency", CVPR 2017, Eq. 3; Monodepth2,
ICCV 2019, with ``normalize=True``: the disparity is divided by its per-sample mean first,
``d* = d / mean(d)``, which removes the trivial "shrink the depth" minimum).
Departures: ``gamma`` is a parameter (Monodepth fixes it to 1) and the term is
dimension-generic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_float, check_positive, check_tensor
from .schedule import Regularizer, Schedule
from .tv import spatial_differences

__all__ = ["edge_aware_smoothness", "EdgeAwareSmoothness"]


def edge_aware_smoothness(
    depth: Tensor,
    image: Tensor,
    gamma: float = 1.0,
    normalize: bool = False,
    eps: float = 1e-7,
) -> Tensor:
    r"""Edge-aware smoothness ``sum_k mean(|d_k depth| exp(-gamma |d_k image|))`` (see module docstring).

    Args:
        depth: depth or disparity ``[B, 1, *S]``.
        image: guide image ``[B, C, *S]`` (same batch and spatial sizes).
        gamma: edge sensitivity (>= 0); 0 gives plain anisotropic L1 TV per axis.
        normalize: divide ``depth`` by its per-sample mean first (Monodepth2).
        eps: added to the mean in ``normalize`` to avoid dividing by zero.

    Returns:
        scalar loss.

    Shape:
        - depth: ``[B, 1, H, W]`` or ``[B, 1, D, H, W]`` (``[B, 1, L]`` also works).
        - image: ``[B, C, H, W]`` or ``[B, C, D, H, W]``.

    Example:
        >>> disp, img = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
        >>> loss = edge_aware_smoothness(disp, img, normalize=True)
    """
    shape = "[B, 1, *S] (S: 1 to 3 spatial axes)"
    check_float(check_tensor(depth, "depth", shape, ndims=(3, 4, 5)), "depth")
    check_float(check_tensor(image, "image", "[B, C, *S]", ndims=(3, 4, 5)), "image")
    if depth.shape[1] != 1:
        raise ValueError(f"depth must have shape {shape}, got {tuple(depth.shape)}")
    if image.ndim != depth.ndim or image.shape[0] != depth.shape[0] or image.shape[2:] != depth.shape[2:]:
        raise ValueError(f"image must have shape [B, C, *S] = [{depth.shape[0]}, C, {', '.join(map(str, depth.shape[2:]))}], got {tuple(image.shape)}")
    check_positive(gamma, "gamma", allow_zero=True)
    if min(depth.shape[2:]) < 2:
        raise ValueError(f"every spatial size must be >= 2, got depth of shape {tuple(depth.shape)}")
    if normalize:
        depth = depth / (depth.flatten(1).mean(1).view(-1, *([1] * (depth.ndim - 1))) + eps)
    loss = depth.new_zeros(())
    for dd, di in zip(spatial_differences(depth), spatial_differences(image)):
        loss = loss + (dd.abs() * torch.exp(-gamma * di.abs().mean(1, keepdim=True))).mean()
    return loss


class EdgeAwareSmoothness(Regularizer):
    """Module form of :func:`edge_aware_smoothness`; ``forward(depth, image)``."""

    name = "edge_smoothness"

    def __init__(self, weight: float = 1.0, schedule: Schedule | None = None, gamma: float = 1.0, normalize: bool = False) -> None:
        super().__init__(weight, schedule)
        self.gamma, self.normalize = gamma, normalize

    def loss(self, depth: Tensor, image: Tensor) -> Tensor:
        return edge_aware_smoothness(depth, image, self.gamma, self.normalize)
