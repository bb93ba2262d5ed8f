"""A small camera-based occupancy + flow network for the synthetic benchmark.

Input: per camera a semantic image and a depth image (the stand-in for an image
backbone's depth / semantic heads) for the key frame and the previous frame.
:func:`lift_views` scatters them into the key frame's voxel grid: per voxel, the
class histogram of the back-projected pixels (log-scaled) and a free-space count
(voxels that rays pass through before their depth). The previous frame is lifted
with its cameras expressed in the key frame's ego coordinates, so motion shows up
as displaced evidence. :class:`OccFlowNet`, a 3-level 3D U-Net, maps the stacked
grids to ``K`` semantic logits and ``F`` flow channels per voxel. The lift is
fixed (not learned); only the U-Net trains.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["lift_views", "OccFlowNet"]


@torch.no_grad()
def lift_views(semantics: Tensor, depth: Tensor, Ks: Tensor, cam_to_ego: Tensor, grid, origin, voxel_size,
               num_classes: int, free_index: int, free_samples: int = 12) -> Tensor:
    """Scatter multi-view semantic + depth images into a voxel grid.

    Args:
        semantics: ``[C, H, W]`` class ids; depth: ``[C, H, W]`` z-depth (0 = none).
        Ks: ``[C, 3, 3]``; cam_to_ego: ``[C, 4, 4]`` (OpenCV axes) into the grid's frame.
        grid: ``(X, Y, Z)``; origin, voxel_size: grid placement.
        num_classes: ``K``; free_index: its free class (no channel of its own).
        free_samples: points per ray, spread over ``(0, depth)``, that vote "free".

    Returns:
        ``[K, X, Y, Z]``: ``K - 1`` class channels then one free-space channel, ``log1p`` counts.
    """
    C, H, W = depth.shape
    X, Y, Z = grid
    dev = depth.device
    vs = torch.as_tensor(voxel_size, dtype=torch.float32, device=dev).expand(3)
    o = torch.as_tensor(origin, dtype=torch.float32, device=dev)
    v, u = torch.meshgrid(torch.arange(H, device=dev) + 0.5, torch.arange(W, device=dev) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # [HW, 3]
    rays = pix @ torch.linalg.inv(Ks.float()).transpose(1, 2)  # [C, HW, 3], z = 1
    R, t = cam_to_ego[:, :3, :3].float(), cam_to_ego[:, :3, 3].float()
    d = depth.reshape(C, -1).float()
    s = semantics.reshape(C, -1).long()
    has = d > 0
    free = free_index % num_classes
    cls_of = torch.arange(num_classes, device=dev)
    cls_of = torch.where(cls_of > free, cls_of - 1, cls_of)  # class id -> channel

    def scatter(pts: Tensor, ch: Tensor, out: Tensor) -> None:
        ijk = ((pts - o) / vs).floor().long()
        ok = ((ijk >= 0) & (ijk < torch.tensor([X, Y, Z], device=dev))).all(-1)
        ijk, ch = ijk[ok], ch[ok]
        flat = ((ch * X + ijk[:, 0]) * Y + ijk[:, 1]) * Z + ijk[:, 2]
        out.view(-1).index_add_(0, flat, torch.ones_like(flat, dtype=out.dtype))

    out = torch.zeros(num_classes, X, Y, Z, device=dev)
    # depth marks where the ray enters the surface; step a quarter voxel inside so the
    # point falls in the occupied voxel, not on its face
    cam_pts = rays * (d + 0.25 * float(vs[0]))[..., None]  # [C, HW, 3]
    world = cam_pts @ R.transpose(1, 2) + t[:, None]
    keep = has & (s != free)
    scatter(world[keep], cls_of[s[keep]], out)
    frac = (torch.arange(free_samples, device=dev, dtype=torch.float32) + 0.5) / free_samples
    # rays with no hit vote free up to a nominal range of 1.5x the grid's half-diagonal
    rng = torch.where(has, d, torch.full_like(d, float(vs[0]) * max(X, Y) * 0.75))
    pts = (rays[:, :, None, :] * (rng[..., None, None] * frac[None, None, :, None]))  # [C, HW, S, 3]
    # stop half a voxel short of the surface so the hit voxel is not voted free
    pts = pts * (1 - 0.5 * float(vs[0]) / rng.clamp_min(1e-3))[..., None, None]
    world_free = pts @ R.transpose(1, 2)[:, None] + t[:, None, None]
    scatter(world_free.reshape(-1, 3), torch.full((world_free.numel() // 3,), num_classes - 1, device=dev), out)
    return torch.log1p(out)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                         nn.Conv3d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU())


class OccFlowNet(nn.Module):
    """3D U-Net: ``[B, in_ch, X, Y, Z]`` -> logits ``[B, K, X, Y, Z]`` and flow ``[B, F, X, Y, Z]``.

    Downsampling halves x and y at both levels and z at the first only, so
    ``X, Y`` must be divisible by 4 and ``Z`` by 2.
    """

    def __init__(self, in_channels: int, num_classes: int, flow_dims: int = 2, width: int = 16):
        super().__init__()
        w = width
        self.enc0 = _block(in_channels, w)
        self.enc1 = _block(w, 2 * w)
        self.enc2 = _block(2 * w, 3 * w)
        self.dec1 = _block(3 * w + 2 * w, 2 * w)
        self.dec0 = _block(2 * w + w, w)
        self.sem = nn.Conv3d(w, num_classes, 1)
        self.flow = nn.Sequential(nn.Conv3d(w, w, 1), nn.SiLU(), nn.Conv3d(w, flow_dims, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        e0 = self.enc0(x)
        e1 = self.enc1(F.max_pool3d(e0, (2, 2, 2)))
        e2 = self.enc2(F.max_pool3d(e1, (2, 2, 1)))
        d1 = self.dec1(torch.cat([F.interpolate(e2, size=e1.shape[2:], mode="trilinear"), e1], 1))
        d0 = self.dec0(torch.cat([F.interpolate(d1, size=e0.shape[2:], mode="trilinear"), e0], 1))
        return self.sem(d0), self.flow(d0)
