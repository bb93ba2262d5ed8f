"""Exact ray casting through a voxel grid (Amanatides & Woo 1987, "A fast voxel
traversal algorithm for ray tracing"), vectorised over rays.

One traversal serves three jobs: the first hit (class, distance, flow) for RayIoU
and mAVE, the per-pixel first hit that renders the synthetic camera images, and
the Occ3D-style camera-visibility mask (every voxel a camera ray passes through,
up to and including the one it stops at).

Grid convention (the whole package): a grid ``[X, Y, Z]`` has its minimum corner
at ``origin`` and voxel ``(i, j, k)`` spans ``origin + [i, i+1) * voxel_size``
along x, and likewise along y and z, so its centre is ``origin + (idx + 0.5) * voxel_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RayHits", "cast_rays", "voxel_centers"]


@dataclass
class RayHits:
    """Result of :func:`cast_rays` for ``R`` rays.

    Attributes:
        index: ``[R]`` flat voxel index (``i * Y * Z + j * Z + k``) of the first
            occupied voxel, ``-1`` where the ray leaves the grid (or ``max_dist``) first.
        dist: ``[R]`` distance along the (unit) ray to where it enters that voxel;
            ``inf`` on a miss.
        visited: ``[X * Y * Z]`` bool, voxels any ray passed through or stopped at
            (only when ``want_visited``), else ``None``.
    """

    index: Tensor
    dist: Tensor
    visited: Tensor | None = None


def voxel_centers(shape, origin, voxel_size, dtype=torch.float32, device=None) -> Tensor:
    """Centres ``[X, Y, Z, 3]`` of a grid of ``shape = (X, Y, Z)``."""
    vs = torch.as_tensor(voxel_size, dtype=dtype, device=device).expand(3)
    o = torch.as_tensor(origin, dtype=dtype, device=device)
    axes = [(torch.arange(n, dtype=dtype, device=device) + 0.5) * vs[a] + o[a] for a, n in enumerate(shape)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


@torch.no_grad()
def cast_rays(occupied: Tensor, origin, voxel_size, ray_origins: Tensor, ray_dirs: Tensor,
              max_dist: float = float("inf"), want_visited: bool = False) -> RayHits:
    """First occupied voxel along each ray, by exact grid traversal.

    Args:
        occupied: ``[X, Y, Z]`` bool grid.
        origin: grid minimum corner, 3 floats.
        voxel_size: float or 3 floats.
        ray_origins: ``[R, 3]`` (or ``[3]``, shared) ray starts, in grid coordinates' frame.
        ray_dirs: ``[R, 3]`` directions; normalised here, so ``dist`` is metric.
        max_dist: rays stop (as misses) beyond this distance.
        want_visited: also return the mask of traversed voxels.

    Returns:
        :class:`RayHits`.
    """
    dev = occupied.device
    X, Y, Z = occupied.shape
    dims = torch.tensor([X, Y, Z], device=dev)
    vs = torch.as_tensor(voxel_size, dtype=torch.float64, device=dev).expand(3)
    o = torch.as_tensor(origin, dtype=torch.float64, device=dev)
    d = ray_dirs.to(device=dev, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    R = d.shape[0]
    p = ray_origins.to(device=dev, dtype=torch.float64).expand(R, 3)
    g = (p - o) / vs  # start in voxel units
    dg = d / vs  # direction in voxel units per metre
    # slab test against the grid box [0, dims] (in voxel units): entry/exit distances
    inv = 1.0 / torch.where(dg == 0, torch.full_like(dg, 1e-300), dg)
    t1 = (0 - g) * inv
    t2 = (dims.to(g) - g) * inv
    t_near = torch.minimum(t1, t2).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t1, t2).amin(-1).clamp_max(max_dist)
    alive = t_near < t_far
    start = g + dg * (t_near + 1e-9)[:, None]
    idx = start.floor().long()
    idx = torch.minimum(torch.maximum(idx, torch.zeros_like(idx)), dims - 1)
    step = torch.where(dg > 0, 1, -1).long()
    next_bound = (idx + (step > 0).long()).to(g)
    t_max = torch.where(dg != 0, (next_bound - g) * inv, torch.full_like(g, float("inf")))
    t_delta = torch.where(dg != 0, inv.abs(), torch.full_like(g, float("inf")))
    t_entry = t_near.clone()

    hit_index = torch.full((R,), -1, dtype=torch.long, device=dev)
    hit_dist = torch.full((R,), float("inf"), dtype=torch.float64, device=dev)
    flat_occ = occupied.reshape(-1)
    visited = torch.zeros(X * Y * Z, dtype=torch.bool, device=dev) if want_visited else None
    strides = torch.tensor([Y * Z, Z, 1], device=dev)
    rays = torch.nonzero(alive).squeeze(1)
    idx, step, t_max, t_delta, t_entry, t_far = idx[rays], step[rays], t_max[rays], t_delta[rays], t_entry[rays], t_far[rays]
    for _ in range(int(X + Y + Z) + 2):
        if rays.numel() == 0:
            break
        flat = (idx * strides).sum(-1)
        if visited is not None:
            visited[flat] = True
        hit = flat_occ[flat]
        if hit.any():
            hit_index[rays[hit]] = flat[hit]
            hit_dist[rays[hit]] = t_entry[hit]
        # advance along the axis whose boundary comes first
        axis = t_max.argmin(-1, keepdim=True)
        t_entry = t_max.gather(-1, axis).squeeze(-1)
        idx = idx.scatter_add(-1, axis, step.gather(-1, axis))
        t_max = t_max.scatter_add(-1, axis, t_delta.gather(-1, axis))
        inside = ((idx >= 0) & (idx < dims)).all(-1) & (t_entry < t_far)
        keep = ~hit & inside
        rays, idx, step, t_max, t_delta, t_entry, t_far = (
            rays[keep], idx[keep], step[keep], t_max[keep], t_delta[keep], t_entry[keep], t_far[keep])
    return RayHits(hit_index, hit_dist.to(torch.float32), visited)
