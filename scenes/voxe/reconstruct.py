"""Stage 1 of Vox-E: fit a voxel-grid radiance field to posed images, coarse to fine.

Loss per ray batch: ``|C - C_gt|_1`` (+ ``mask_weight |alpha - mask|_1`` when the
capture has masks) + ``tv_density TV(raw density) + tv_features TV(features)``, TV from
:func:`geo.regularizers.total_variation` on the ``[1, C, X, Y, Z]`` grids. Each stage
upsamples the previous grid trilinearly (cell centres, ``align_corners=False``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from geo.cameras import optical_axes_system
from scenes.voxe.config import ReconConfig

__all__ = ["View", "load_views", "fit_bounds", "reconstruct", "render_grid_view", "evaluate_grid", "psnr"]


@dataclass
class View:
    name: str
    model: object  # geo.cameras.CameraModel, pinhole
    c2w: np.ndarray  # [4, 4] OpenCV
    image: np.ndarray  # [H, W, 3] float32 in [0, 1]
    mask: np.ndarray | None  # [H, W] bool
    split: str


def load_views(data, holdout_every: int | None = 8, max_size: int | None = None) -> list[View]:
    """Posed images of a capture directory (or a SceneGraph with ``/cameras``) as :class:`View` s."""
    from scenes.data import load_capture
    from scenes.graph import SceneGraph
    from scenes.payloads import Camera

    graph = data if isinstance(data, SceneGraph) else load_capture(data, holdout_every=holdout_every, max_size=max_size)
    views = []
    for node in graph.find(Camera):
        cam = node.payload
        if cam.image is None:
            continue
        if cam.model.model != "pinhole" or cam.model.has_distortion:
            raise ValueError(f"{node.path}: Vox-E reconstruction needs undistorted pinhole cameras, got {cam.model.model}")
        img = cam.image
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
        mask = None if cam.mask is None else cam.mask.astype(bool)
        if img.shape[-1] == 4:
            if mask is None:
                mask = img[..., 3] > 0.5
            img = img[..., :3]
        views.append(View(node.name, cam.model, np.asarray(node.world_transform, np.float64), img, mask,
                          node.meta.get("split", "train")))
    if not views:
        raise ValueError("no camera with an image found")
    return views


def fit_bounds(views: list[View]) -> tuple[np.ndarray, np.ndarray]:
    """A cube around the point the cameras look at, sized so it just fills the narrowest view.

    The centre is the least-squares point nearest to every optical axis; the half-size is
    the mean camera distance times ``sin(fov / 2)`` of the narrowest field of view (the
    radius of a sphere that fills that view, as the synthetic datasets are framed).
    """
    c = np.linalg.lstsq(*optical_axes_system([v.c2w for v in views]), rcond=None)[0]
    dist = np.mean([np.linalg.norm(v.c2w[:3, 3] - c) for v in views])
    fov = min(min(v.model.fov_x, v.model.fov_y) for v in views)
    r = dist * math.sin(fov / 2) * 1.02
    return c - r, c + r


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def _view_rays(views: list[View]):
    import torch

    o, d, c, m = [], [], [], []
    for v in views:
        ro, rd = v.model.rays(v.c2w, dtype=torch.float32)
        o.append(ro.reshape(-1, 3))
        d.append(rd.reshape(-1, 3))
        c.append(torch.from_numpy(v.image.reshape(-1, 3)))
        m.append(None if v.mask is None else torch.from_numpy(v.mask.reshape(-1)).float())
    masks = None if any(x is None for x in m) else torch.cat(m)
    return torch.cat(o), torch.cat(d), torch.cat(c), masks


def n_samples_for(res: int, samples_per_voxel: float) -> int:
    return max(16, int(math.ceil(res * math.sqrt(3.0) * samples_per_voxel)))


def reconstruct(data, cfg: ReconConfig | None = None, *, progress: bool = True, log=print):
    """Fit a :class:`scenes.voxels.VoxelGrid` (RGB or SH colour, ``cfg.color``) to a capture.

    Args:
        data: capture directory or SceneGraph, or a list of :class:`View`.
        cfg: settings.

    Returns:
        ``(grid, stats)``; ``stats`` has per-stage ``time_s`` and the final ``loss``.
    """
    import torch
    import torch.nn.functional as F

    from geo.regularizers import total_variation
    from scenes.voxels import VoxelGrid, occupancy_from_density, render_rays, sh_channels

    cfg = cfg or ReconConfig()
    if len(cfg.resolutions) != len(cfg.iters):
        raise ValueError(f"resolutions and iters need one entry per stage, got {cfg.resolutions} and {cfg.iters}")
    views = data if isinstance(data, list) else load_views(data, cfg.holdout_every, cfg.max_size)
    train = [v for v in views if v.split == "train"] or views
    if cfg.bounds is not None:
        lo, hi = np.array(cfg.bounds[:3], np.float64), np.array(cfg.bounds[3:], np.float64)
    else:
        lo, hi = fit_bounds(train)
    gen = torch.Generator().manual_seed(cfg.seed)
    origins, dirs, colours, masks = _view_rays(train)
    use_mask = masks is not None and cfg.mask_weight > 0
    bg = torch.tensor(cfg.background, dtype=torch.float32)
    density = features = None
    stats = {"stages": [], "bounds": [lo.tolist(), hi.tolist()]}
    for res, iters in zip(cfg.resolutions, cfg.iters):
        t0 = time.perf_counter()
        if density is None:
            density = torch.full((res,) * 3, cfg.init_density)
            features = torch.zeros(3 if cfg.color == "rgb" else sh_channels(cfg.sh_degree), res, res, res)
        else:
            density = F.interpolate(density[None, None], size=(res,) * 3, mode="trilinear", align_corners=False)[0, 0]
            features = F.interpolate(features[None], size=(res,) * 3, mode="trilinear", align_corners=False)[0]
        density = density.detach().requires_grad_(True)
        features = features.detach().requires_grad_(True)
        opt = torch.optim.Adam([{"params": [density], "lr": cfg.lr_density},
                                {"params": [features], "lr": cfg.lr_features}], betas=(0.9, 0.99))
        S = n_samples_for(res, cfg.samples_per_voxel)
        occ = None
        bar = _progress(iters, f"recon {res}^3", progress)
        for it in range(iters):
            if cfg.skip_empty and res != cfg.resolutions[0] and it % 50 == 0:
                with torch.no_grad():
                    occ = occupancy_from_density(density)
            idx = torch.randint(0, origins.shape[0], (cfg.rays_per_batch,), generator=gen)
            out = render_rays(density, features, lo, hi, origins[idx], dirs[idx], n_samples=S, stratified=True,
                              background=bg, occupancy=occ, generator=gen, checkpoint=False, color=cfg.color)
            l1 = (out["rgb"] - colours[idx]).abs().mean()
            loss = l1
            if use_mask:
                loss = loss + cfg.mask_weight * (out["alpha"] - masks[idx]).abs().mean()
            if cfg.tv_density > 0:
                loss = loss + cfg.tv_density * total_variation(density[None, None])
            if cfg.tv_features > 0:
                loss = loss + cfg.tv_features * total_variation(features[None])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
                if it % 20 == 0:
                    bar.set_postfix(l1=f"{float(l1):.4f}", psnr=f"{-10 * math.log10(max(float(((out['rgb'] - colours[idx]) ** 2).mean()), 1e-10)):.1f}")
        if bar is not None:
            bar.close()
        stats["stages"].append({"resolution": res, "iters": iters, "samples": S, "time_s": time.perf_counter() - t0})
        stats["loss"] = float(loss.detach())
    grid = VoxelGrid.from_tensors(density, features, lo, hi, cfg.color)
    return grid, stats


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def render_grid_view(grid, model, c2w, *, n_samples: int | None = None, background=(1.0, 1.0, 1.0), extras=None,
                     tensors=None) -> dict:
    """Render a :class:`VoxelGrid` (no gradients) into numpy ``rgb [H, W, 3]``, ``alpha``, ``depth``.

    Cells farther than 2 cells from any cell with ``sigma > 0.01`` are skipped (their
    opacity over a ray's whole chord through a cube box is below 1 - exp(-0.01 * 2 sqrt(3) r) for half-size r).
    """
    import torch

    from scenes.voxels import occupancy_from_density, render_view

    d, f = tensors if tensors is not None else grid.tensors()
    S = n_samples or n_samples_for(max(grid.resolution), 1.0)
    with torch.no_grad():
        out = render_view(d, f, grid.bounds_min, grid.bounds_max, model, c2w, n_samples=S, color=grid.color,
                          background=torch.tensor(background, dtype=torch.float32), extras=extras,
                          occupancy=occupancy_from_density(d))
    return {k: v.numpy() for k, v in out.items()}


def evaluate_grid(grid, views: list[View], split: str = "test", background=(1.0, 1.0, 1.0)) -> dict:
    """Mean PSNR of the grid's renders against the ``split`` views' images."""
    sel = [v for v in views if v.split == split]
    tensors = grid.tensors()
    scores = {}
    for v in sel:
        out = render_grid_view(grid, v.model, v.c2w, background=background, tensors=tensors)
        scores[v.name] = psnr(np.clip(out["rgb"], 0, 1), v.image)
    return {"psnr": float(np.mean(list(scores.values()))) if scores else float("nan"), "per_view": scores}
