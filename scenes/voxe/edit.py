"""Stage 2 of Vox-E: optimise the grid towards a text prompt (Sec. 4.1-4.2).

Loss per iteration, for a render ``x`` of the edited grid from a random camera around
the object: ``L = L_SDS(x; prompt + view suffix) + lambda (1 - Pearson(d_edit, d_orig))``,
the second term being :func:`geo.regularizers.correlation_loss` on the raw density grids
(``[1, 1, X, Y, Z]``). The original grid is frozen.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from scenes.voxe.config import EditConfig

__all__ = ["look_at", "random_camera", "orbit_cameras", "edit_grid", "grid_sphere", "density_correlation_loss"]


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """``[4, 4]`` camera-to-world (OpenCV: x right, y down, z forward) at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-8:  # looking along up
        x = np.cross(z, np.roll(up, 1))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def grid_sphere(grid) -> tuple[np.ndarray, float]:
    """Centre and radius of the sphere inscribed in the grid's box (grid frame)."""
    lo, hi = np.asarray(grid.bounds_min, np.float64), np.asarray(grid.bounds_max, np.float64)
    return (lo + hi) / 2, float((hi - lo).min() / 2)


def _fill_distance(radius: float, fov_deg: float) -> float:
    return radius / math.sin(math.radians(fov_deg) / 2)


def _orbit_pose(center, dist, az, el, up, front) -> np.ndarray:
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    f = np.asarray(front, np.float64)
    f = f - (f @ up) * up
    f /= np.linalg.norm(f)
    side = np.cross(up, f)
    d = math.cos(el) * (math.cos(az) * f + math.sin(az) * side) + math.sin(el) * up
    return look_at(np.asarray(center) + dist * d, center, up)


def random_camera(rng: np.random.Generator, grid, cfg: EditConfig, size: int):
    """A pinhole camera of ``size`` px and a random pose around the grid (grid frame)."""
    from scenes.data.synthetic import pinhole_camera

    c, r = grid_sphere(grid)
    dist = _fill_distance(r, cfg.fov_deg) * rng.uniform(*cfg.camera_distance)
    az = rng.uniform(0, 2 * math.pi)
    el = math.radians(rng.uniform(*cfg.elevation_deg))
    return pinhole_camera(size, cfg.fov_deg), _orbit_pose(c, dist, az, el, cfg.up, cfg.front_dir)


def orbit_cameras(grid, n: int, size: int, fov_deg: float = 40.0, elevation_deg: float = 20.0, up=(0.0, 1.0, 0.0),
                  front=(0.0, 0.0, 1.0), distance: float | None = None):
    """``n`` cameras evenly around the grid at one elevation (turntables, attention fitting)."""
    from scenes.data.synthetic import pinhole_camera

    c, r = grid_sphere(grid)
    dist = distance or _fill_distance(r, fov_deg) * 1.1
    model = pinhole_camera(size, fov_deg)
    return [(model, _orbit_pose(c, dist, 2 * math.pi * i / n, math.radians(elevation_deg), up, front)) for i in range(n)]


def density_correlation_loss(density, original):
    """``1 - Pearson(density, original)`` of two raw density grids ``[X, Y, Z]`` (Vox-E Eq. 5)."""
    from geo.regularizers import correlation_loss

    return correlation_loss(density[None, None], original[None, None])


def edit_grid(grid, prompt: str, guidance, cfg: EditConfig | None = None, *, out_dir=None, progress: bool = True,
              log=print, callback=None):
    """Edit a :class:`scenes.voxels.VoxelGrid` towards ``prompt`` with SDS + the volumetric term.

    Args:
        grid: the reconstructed (original) grid; not modified.
        prompt: the edit text, e.g. ``"a cow wearing a party hat"``.
        guidance: a :class:`scenes.voxe.guidance.Guidance`.
        cfg: settings (iterations, render size, lambda, camera sampling, checkpoints).
        out_dir: where ``checkpoint.pt`` (density, features, iteration) is written every
            ``cfg.checkpoint_every`` iterations; resumed from when present.
        callback: optional ``callback(it, terms)`` per iteration.

    Returns:
        ``(edited_grid, stats)`` with ``stats["history"]`` the per-iteration loss terms
        and ``stats["sec_per_iter"]``.
    """
    import torch

    from scenes.voxels import VoxelGrid, occupancy_from_density, render_view
    from scenes.voxe.guidance import view_direction

    cfg = cfg or EditConfig()
    rng = np.random.default_rng(cfg.seed)
    d0, f0 = grid.tensors(device=guidance.m.device)
    density = d0.clone().requires_grad_(True)
    features = f0.clone().requires_grad_(True)
    start = 0
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=guidance.m.device)
        if tuple(state["density"].shape) == tuple(density.shape) and state.get("prompt") == prompt:
            with torch.no_grad():
                density.copy_(state["density"])
                features.copy_(state["features"])
            start = int(state["iteration"])
            log(f"resumed edit from {ckpt} at iteration {start}")
    opt = torch.optim.Adam([{"params": [density], "lr": cfg.lr_density},
                            {"params": [features], "lr": cfg.lr_features}], betas=(0.9, 0.99))
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=guidance.m.device)
    center, _ = grid_sphere(grid)
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iters, initial=start, desc="edit", dynamic_ncols=True, leave=False)
    t0 = time.perf_counter()
    occ = None
    for it in range(start, cfg.iters):
        if cfg.skip_empty and (it - start) % 10 == 0:
            with torch.no_grad():
                occ = occupancy_from_density(density, 0.01, 3)
        model, c2w = random_camera(rng, grid, cfg, cfg.render_size)
        out = render_view(density, features, grid.bounds_min, grid.bounds_max, model, c2w, n_samples=cfg.n_samples,
                          stratified=True, background=bg, color=grid.color, occupancy=occ)
        img = out["rgb"].permute(2, 0, 1)[None].clamp(0, 1)
        vp = guidance.view_prompt(prompt, view_direction(c2w, center, cfg.up, cfg.front_dir))
        sds, info = guidance.sds_loss(img, [vp], it)
        corr = density_correlation_loss(density, d0)
        loss = sds + cfg.correlation_weight * corr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        terms = {"sds": float(sds.detach()), "corr": float(corr.detach()), "t": info["t"]}
        history.append(terms)
        if callback is not None:
            callback(it, terms)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(sds=f"{terms['sds']:.3g}", corr=f"{terms['corr']:.4f}", t=int(terms["t"]))
        if ckpt is not None and cfg.checkpoint_every > 0 and (it + 1) % cfg.checkpoint_every == 0:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"density": density.detach().cpu(), "features": features.detach().cpu(), "iteration": it + 1,
                        "prompt": prompt}, tmp)
            tmp.replace(ckpt)
    if bar is not None:
        bar.close()
    n = max(1, cfg.iters - start)
    edited = VoxelGrid.from_tensors(density, features, grid.bounds_min, grid.bounds_max, grid.color)
    return edited, {"history": history, "sec_per_iter": (time.perf_counter() - t0) / n, "iters": cfg.iters - start}
