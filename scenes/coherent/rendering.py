"""One camera through :func:`geo.raster.rasterize`: the render call shared by CoherentGS, the
3DGS baseline, evaluation and TSDF export."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from geo.transforms import se3_inverse

__all__ = ["render_camera", "camera_tensors"]


def camera_tensors(model, c2w: np.ndarray, supersample: int = 1) -> tuple[Tensor, Tensor, int, int]:
    """``(viewmat [1, 4, 4], K [1, 3, 3], W, H)`` float32, intrinsics scaled by ``supersample``."""
    s = int(supersample)
    K = torch.tensor([[model.fx * s, 0.0, model.cx * s], [0.0, model.fy * s, model.cy * s], [0.0, 0.0, 1.0]], dtype=torch.float32)
    vm = torch.as_tensor(se3_inverse(np.asarray(c2w, np.float64)), dtype=torch.float32)
    return vm[None], K[None], int(model.width) * s, int(model.height) * s


def render_camera(means, quats, scales, opacities, sh, sh_degree: int, model, c2w, background=(1.0, 1.0, 1.0),
                  supersample: int = 1, return_meta: bool = False, eps2d: float = 0.3):
    """Render one pinhole camera.

    Args:
        means ``[N, 3]``, quats ``[N, 4]`` (wxyz), scales ``[N, 3]`` (std-devs), opacities ``[N]``,
        sh ``[N, K, 3]`` with ``K >= (sh_degree + 1) ** 2``.
        model: pinhole :class:`geo.cameras.CameraModel` (output size).
        c2w: ``[4, 4]`` camera-to-world, OpenCV axes.
        supersample: render at ``s`` times the resolution and average-pool back (multisampling).
        eps2d: the rasterizer's screen-space low-pass filter (pixels^2).

    Returns:
        ``(rgb [H, W, 3], depth [H, W] expected z, alpha [H, W])`` (+ ``meta`` when asked).
    """
    vm, K, W, H = camera_tensors(model, c2w, supersample)
    bg = torch.as_tensor(background, dtype=torch.float32)[None]
    out, alpha, meta = rasterize_call(means, quats, scales, opacities, sh, sh_degree, vm, K, W, H, bg, eps2d)
    img = torch.cat([out[0], alpha[0]], -1)  # [H, W, 5]
    if supersample > 1:
        img = F.avg_pool2d(img.permute(2, 0, 1)[None], supersample)[0].permute(1, 2, 0)
    rgb, depth, a = img[..., :3], img[..., 3], img[..., 4]
    if return_meta:
        return rgb, depth, a, meta
    return rgb, depth, a


def rasterize_call(means, quats, scales, opacities, sh, sh_degree, viewmats, Ks, W, H, backgrounds, eps2d=0.3):
    from geo.raster import rasterize

    k = (sh_degree + 1) ** 2
    return rasterize(means, quats, scales, opacities, sh[:, :k], viewmats, Ks, W, H,
                     sh_degree=sh_degree, backgrounds=backgrounds, render_mode="RGB+ED", eps2d=eps2d)
