"""Mesh a Gaussian scene by TSDF fusion of its rendered depth and colour (Open3D).

Each camera renders expected depth, colour and alpha through the project's
rasterizer; pixels with ``alpha < min_alpha`` are dropped (depth 0), the rest are
integrated into Open3D's ``ScalableTSDFVolume`` (Curless & Levoy, SIGGRAPH 1996)
and the zero level set is extracted by marching cubes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from scenes.payloads import GaussianCloud, Mesh

__all__ = ["tsdf_mesh"]


def tsdf_mesh(cloud: GaussianCloud, cameras, *, resolution: int = 160, voxel_size: float | None = None,
              min_alpha: float = 0.5, background=(1.0, 1.0, 1.0)) -> Mesh:
    """Fuse renders of ``cloud`` from ``cameras`` into a vertex-coloured :class:`Mesh`.

    Args:
        cloud: the Gaussians (world frame).
        cameras: list of ``(model, c2w)``: pinhole :class:`geo.cameras.CameraModel` and ``[4, 4]``
            camera-to-world (OpenCV axes).
        resolution: voxels along the longest side of the Gaussians' bounding cube.
        voxel_size: TSDF voxel edge instead of ``resolution``.
        min_alpha: pixels less opaque than this carry no depth.
    """
    import open3d as o3d
    import torch

    from scenes.render import render_camera

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    means, quats, scales = t(cloud.means), t(cloud.quats), t(cloud.scales)
    opac, sh = t(cloud.opacities), t(cloud.sh)
    frames = []
    with torch.no_grad():
        for model, c2w in cameras:
            rgb, depth, alpha = render_camera(means, quats, scales, opac, sh, cloud.sh_degree, model, c2w, background)
            d = torch.where(alpha > min_alpha, depth, torch.zeros_like(depth))
            frames.append((model, np.asarray(c2w, np.float64), rgb.clamp(0, 1).numpy(), d.numpy().astype(np.float32)))
    zmax = max((float(f[3].max()) for f in frames), default=0.0)
    if zmax <= 0:
        raise ValueError("tsdf_mesh: no camera sees an opaque pixel; nothing to fuse")
    # a cube around the (opaque) Gaussians; Open3D's uniform volume (its scalable one returns
    # empty meshes on this build)
    op = np.asarray(cloud.opacities) > 0.1
    pts = np.asarray(cloud.means, np.float64)[op if op.sum() >= 10 else slice(None)]
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    pad = 0.1 * float((hi - lo).max()) + 1e-6
    lo, hi = lo - pad, hi + pad
    length = float((hi - lo).max())
    res = resolution if voxel_size is None else max(16, int(math.ceil(length / voxel_size)))
    vox = length / res
    vol = o3d.pipelines.integration.UniformTSDFVolume(
        length=length, resolution=res, sdf_trunc=4 * vox,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8, origin=lo.reshape(3, 1),
    )
    for model, c2w, rgb, d in frames:
        intr = o3d.camera.PinholeCameraIntrinsic(int(model.width), int(model.height), model.fx, model.fy, model.cx - 0.5, model.cy - 0.5)
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray((rgb * 255).astype(np.uint8))),
            o3d.geometry.Image(np.ascontiguousarray(d)),
            depth_scale=1.0, depth_trunc=zmax * 1.01, convert_rgb_to_intensity=False,
        )
        vol.integrate(rgbd, intr, np.linalg.inv(c2w))
    m = vol.extract_triangle_mesh()
    v = np.asarray(m.vertices)
    f = np.asarray(m.triangles)
    if len(v) == 0 or len(f) == 0:
        raise ValueError("tsdf_mesh: the fused volume has no surface")
    colors = np.clip(np.rint(np.asarray(m.vertex_colors) * 255), 0, 255).astype(np.uint8)
    return Mesh(vertices=v.astype(np.float32), faces=f.astype(np.int64), vertex_colors=colors)
