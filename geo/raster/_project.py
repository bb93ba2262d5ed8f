"""EWA projection of 3D Gaussians to the image plane (Zwicker et al. 2002).

Matches gsplat 1.5's fully fused pinhole projection (``ProjectionEWA3DGSFused``):
the Jacobian clamps ``x/z, y/z`` to 1.3x the image's field of view, ``eps2d``
is added to the 2D covariance, the bounding box is opacity aware (Radl et al.
2024, "StopThePop", Sec. B.2: extent ``min(3.33, sqrt(2 ln(255 opacity)))``
standard deviations per axis), and a Gaussian is culled (``radii == 0``) when
its depth is outside ``[near_plane, far_plane]``, its blurred covariance is
not positive definite, its (compensated) opacity is below 1/255, both radii
are ``<= radius_clip``, or its box misses the image.

Everything here is plain differentiable torch on ``[C, N]`` tensors; culled
entries get finite placeholder values so gradients through them are zero,
never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from geo.transforms import quat_to_rotmat

ALPHA_THRESHOLD = 1.0 / 255.0


@dataclass
class Projected:
    """Per-camera, per-Gaussian screen-space quantities (dense ``[C, N]`` layout).

    Attributes:
        means2d: ``[C, N, 2]`` pixel-space centres (u, v); top-left corner is (0, 0).
        conics: ``[C, N, 3]`` upper triangle ``(a, b, c)`` of the inverse blurred
            2D covariance: ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy``.
        depths: ``[C, N]`` camera-space z.
        opacities: ``[C, N]`` opacities, times the antialiasing compensation
            when ``antialiased``.
        radii: ``[C, N, 2]`` int32 half-extents of the bounding box in pixels; 0 = culled.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    opacities: Tensor
    radii: Tensor


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> Projected:
    """Project Gaussians into ``C`` pinhole cameras.

    Args:
        means: ``[N, 3]`` world-space centres.
        quats: ``[N, 4]`` wxyz rotations, unnormalised.
        scales: ``[N, 3]`` standard deviations along the local axes.
        opacities: ``[N]`` opacities in ``[0, 1]``.
        viewmats: ``[C, 4, 4]`` world-to-camera transforms (OpenCV axes).
        Ks: ``[C, 3, 3]`` intrinsics.
        width, height: image size in pixels.
        eps2d: added to the diagonal of the 2D covariance (low-pass filter).
        near_plane, far_plane: depth culling range.
        radius_clip: cull Gaussians whose radii are both ``<= radius_clip`` px.
        antialiased: multiply opacities by ``sqrt(det(S) / det(S + eps2d I))``
            (Mip-Splatting, Yu et al. 2024, Eq. 15).

    Returns:
        :class:`Projected` with ``[C, N, ...]`` tensors.
    """
    # world -> camera; a zero quaternion stands for the identity (gsplat's
    # normalisation maps it to a degenerate but finite matrix; NaN helps no one)
    zero = (quats * quats).sum(-1, keepdim=True) < 1e-24
    quats = torch.where(zero, torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=quats.dtype, device=quats.device), quats)
    R = quat_to_rotmat(quats)  # [N, 3, 3]
    # Scales this large give a 2D covariance whose determinant overflows, so the
    # Gaussian is culled either way; clamping keeps the covariance itself finite
    # so the backward pass yields zeros rather than 0 * inf = NaN.
    big = 1e12 if scales.dtype == torch.float32 else 1e120
    M = R * scales.clamp(-big, big)[:, None, :]  # R S
    cov = M @ M.transpose(-1, -2)  # [N, 3, 3] = R S S^T R^T
    Rv = viewmats[:, :3, :3]  # [C, 3, 3]
    tv = viewmats[:, :3, 3]  # [C, 3]
    mc = torch.einsum("cij,nj->cni", Rv, means) + tv[:, None, :]  # [C, N, 3]
    cov_c = torch.einsum("cij,njk,clk->cnil", Rv, cov, Rv)  # [C, N, 3, 3]

    x, y, z = mc.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(in_depth, z, torch.ones_like(z))  # finite stand-in for culled entries

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # The Jacobian is evaluated at a point clamped to 1.3x the field of view
    # (as in gsplat / INRIA) so Gaussians far outside the frustum do not blow up.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    tx = zs * torch.minimum(torch.maximum(x / zs, -lim_xn), lim_xp)
    ty = zs * torch.minimum(torch.maximum(y / zs, -lim_yn), lim_yp)
    rz = 1.0 / zs
    # J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]
    j00, j02 = fx * rz, -fx * tx * rz * rz
    j11, j12 = fy * rz, -fy * ty * rz * rz
    s00, s01, s02 = cov_c[..., 0, 0], cov_c[..., 0, 1], cov_c[..., 0, 2]
    s11, s12, s22 = cov_c[..., 1, 1], cov_c[..., 1, 2], cov_c[..., 2, 2]
    a = j00 * j00 * s00 + 2 * j00 * j02 * s02 + j02 * j02 * s22
    b = j00 * j11 * s01 + j00 * j12 * s02 + j02 * j11 * s12 + j02 * j12 * s22
    c = j11 * j11 * s11 + 2 * j11 * j12 * s12 + j12 * j12 * s22

    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)  # [C, N, 2]

    det_orig = a * c - b * b
    a = a + eps2d
    c = c + eps2d
    det = a * c - b * b
    ok = in_depth & (det > 0) & torch.isfinite(det)
    det_s = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], -1)  # [C, N, 3]

    opac = opacities[None, :].expand_as(z)
    if antialiased:
        ratio = det_orig / det_s
        pos = ok & (ratio > 0)
        comp = torch.where(pos, torch.sqrt(torch.where(pos, ratio, torch.ones_like(ratio))), torch.zeros_like(ratio))
        opac = opac * comp

    with torch.no_grad():
        op = opac.detach()
        ok = ok & (op >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(3.33)
        # clamp before the int cast: absurd scales must not overflow int32
        big = float(4 * max(width, height) + 16)
        rx = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0))).clamp_max(big)
        ry = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0))).clamp_max(big)
        ok = ok & ~((rx <= radius_clip) & (ry <= radius_clip))
        u, v = means2d.detach().unbind(-1)
        ok = ok & (u + rx > 0) & (u - rx < width) & (v + ry > 0) & (v - ry < height)
        ok = ok & torch.isfinite(u) & torch.isfinite(v)
        radii = torch.stack([rx, ry], -1).where(ok[..., None], torch.zeros_like(means2d)).to(torch.int32)

    return Projected(means2d=means2d, conics=conics, depths=z, opacities=opac, radii=radii)
