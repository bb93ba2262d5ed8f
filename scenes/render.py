"""Render scene content through the project's one rasterizer, :func:`geo.raster.rasterize`.

The glue between the scene graph (numpy payloads, camera nodes with world
poses) and the batched torch rasterizer:

* :func:`render_camera` renders torch Gaussian parameters from one pinhole
  camera (optionally multisampled); methods that optimise Gaussians
  (CoherentGS, the 3DGS baseline), evaluation and TSDF export use it.
* :func:`render_gaussians` renders a saved :class:`GaussianCloud` from camera
  nodes (previews, the viewer tests).
* :func:`pixel_gaussians` lifts a camera's image and depth map into one
  Gaussian per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from geo.transforms import se3_inverse
from scenes.graph import Node
from scenes.payloads import Camera, GaussianCloud

__all__ = ["RenderOutput", "render_camera", "camera_tensors", "render_gaussians", "pixel_gaussians"]


@dataclass
class RenderOutput:
    """Per-camera renders as float32 numpy arrays.

    Attributes:
        rgb: ``[C, H, W, 3]`` colour in [0, 1], composited over the background.
        alpha: ``[C, H, W]`` accumulated opacity.
        depth: ``[C, H, W]`` expected z-depth (0 where alpha is 0).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray


def render_gaussians(
    gaussians: GaussianCloud,
    cameras: list[Node],
    *,
    background=(1.0, 1.0, 1.0),
    gaussians_to_world: np.ndarray | None = None,
    device: str = "cpu",
) -> RenderOutput:
    """Render a :class:`GaussianCloud` from camera nodes of a scene graph.

    All cameras must share one image size (they are rendered as one batch) and
    be pinhole; undistort distorted captures first (``CameraModel.undistort_image``).

    Args:
        gaussians: the Gaussians, in the frame given by ``gaussians_to_world``.
        cameras: camera nodes; their world transforms are the poses.
        background: RGB behind the Gaussians.
        gaussians_to_world: ``[4, 4]`` world transform of the Gaussians' node
            (identity when None). Only rigid transforms occur in a scene graph.
        device: torch device to render on.
    """
    from geo.raster import rasterize

    if not cameras:
        raise ValueError("render_gaussians: cameras is empty; expected at least one Camera node")
    models = []
    for n in cameras:
        if not isinstance(n.payload, Camera):
            raise ValueError(f"render_gaussians: node {n.path} has no Camera payload")
        if n.payload.model.model == "fisheye" or n.payload.model.has_distortion:
            raise ValueError(f"render_gaussians: camera {n.path} is distorted ({n.payload.model.model}); undistort it first")
        models.append(n.payload.model)
    W, H = models[0].width, models[0].height
    if any((m.width, m.height) != (W, H) for m in models):
        raise ValueError("render_gaussians: all cameras must share one image size; render them in groups")

    if gaussians_to_world is not None:
        gaussians = gaussians.transformed(gaussians_to_world)
    f32 = dict(dtype=torch.float32, device=device)
    means = torch.as_tensor(gaussians.means, **f32)
    quats = torch.as_tensor(gaussians.quats, **f32)
    tensors = [camera_tensors(m, n.world_transform) for m, n in zip(models, cameras)]
    viewmats = torch.cat([t[0] for t in tensors]).to(device)
    Ks = torch.cat([t[1] for t in tensors]).to(device)
    bg = torch.as_tensor(background, **f32).expand(len(cameras), 3)
    with torch.no_grad():
        img, alpha, _ = rasterize(
            means,
            quats,
            torch.as_tensor(gaussians.scales, **f32),
            torch.as_tensor(gaussians.opacities, **f32),
            torch.as_tensor(gaussians.sh, **f32),
            viewmats,
            Ks,
            W,
            H,
            sh_degree=gaussians.sh_degree,
            backgrounds=bg,
            render_mode="RGB+ED",
        )
    return RenderOutput(
        rgb=img[..., :3].clamp(0, 1).cpu().numpy(),
        alpha=alpha[..., 0].cpu().numpy(),
        depth=img[..., 3].cpu().numpy(),
    )


def pixel_gaussians(camera: Node, *, stride: int = 1, opacity: float = 0.95, footprint: float = 0.7) -> GaussianCloud:
    """One isotropic Gaussian per pixel with depth, on that pixel's ray (world frame).

    The Gaussian's standard deviation is ``footprint`` times the pixel's
    footprint at its depth (``z / f`` scene units per pixel, times ``stride``),
    so neighbouring Gaussians overlap and the view is reproduced without holes.

    Args:
        camera: a node whose :class:`Camera` payload has ``image`` and ``depth``.
        stride: use every ``stride``-th pixel in each direction.
        opacity: initial opacity of every Gaussian.
        footprint: standard deviation in units of the pixel footprint.
    """
    cam = camera.payload
    if not isinstance(cam, Camera) or cam.depth is None or cam.image is None:
        raise ValueError(f"pixel_gaussians: node {camera.path} needs a Camera payload with image and depth")
    m = cam.model
    rows, cols = np.mgrid[0 : m.height : stride, 0 : m.width : stride]
    z = cam.depth[rows, cols]
    keep = z > 0
    if cam.mask is not None:
        keep &= cam.mask[rows, cols]
    rows, cols, z = rows[keep], cols[keep], z[keep]
    uv = torch.as_tensor(np.stack([cols + 0.5, rows + 0.5], -1), dtype=torch.float64)
    p_cam = m.unproject(uv, torch.as_tensor(z, dtype=torch.float64)).numpy()
    c2w = camera.world_transform
    p_world = p_cam @ c2w[:3, :3].T + c2w[:3, 3]
    rgb = cam.image[rows, cols, :3]
    rgb = rgb.astype(np.float64) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    cloud = GaussianCloud.from_points(p_world, rgb, scale=1.0, opacity=opacity, sh_degree=0)
    sigma = footprint * stride * z / np.sqrt(m.fx * m.fy)
    cloud.log_scales = np.repeat(np.log(sigma)[:, None], 3, 1).astype(np.float32)
    return cloud


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
