"""Depth initialisation without learned priors: plane-sweep stereo with a confidence map.

CoherentGS initialises depth from a monocular network; none may be downloaded
here, so depth comes from (in order) the dataset's depth maps, a plane sweep
whose per-view scale and shift are fitted to the SfM points, or the plain plane
sweep. All torch, no weights.

Plane sweep (Collins, CVPR 1996; the fronto-parallel form of Gallup et al.,
CVPR 2007): for each of ``D`` depths uniform in inverse depth, every source
image is warped onto the reference view through the plane ``z = d`` and
compared with a windowed NCC cost ``1 - NCC`` on luminance; costs are averaged
over the sources that see the pixel. Depth is the argmin, refined by a
parabola through its neighbours in inverse depth; confidence is the softmax
probability mass of the three planes around it (MVSNet's, Yao et al. ECCV 2018,
with a fixed temperature). Low-confidence pixels are filled from confident
neighbours by normalised convolution.
"""

from __future__ import annotations

import numpy as np

from geo.cameras import optical_axes_system

__all__ = ["plane_sweep_depth", "depth_range", "fit_scale_shift", "fill_depth", "initial_depths"]

_LUMA = (0.299, 0.587, 0.114)


def _gray(img):
    import torch

    w = torch.tensor(_LUMA, dtype=img.dtype)
    return (img * w).sum(-1)


def plane_sweep_depth(ref, sources, near: float, far: float, planes: int = 48, window: int = 5, temperature: float = 0.05):
    """Depth and confidence of ``ref`` from photometric consistency with ``sources``.

    Args:
        ref: :class:`~scenes.coherent.views.View` (pinhole).
        sources: other views.
        near, far: depth range of the hypotheses.
        planes: number of hypotheses (uniform in inverse depth).
        window: NCC window side in pixels.
        temperature: of the softmax over ``-cost`` behind the confidence.

    Returns:
        ``(depth [H, W] float32, confidence [H, W] float32 in [0, 1])``; depth is 0
        outside ``ref.mask`` when it has one.
    """
    import torch
    import torch.nn.functional as F

    if not sources:
        raise ValueError("plane_sweep_depth: needs at least one source view")
    if not 0 < near < far:
        raise ValueError(f"plane_sweep_depth: need 0 < near < far, got near={near}, far={far}")
    H, W = ref.height, ref.width
    f64 = torch.float64
    inv = torch.linspace(1.0 / near, 1.0 / far, planes, dtype=f64)
    depths = 1.0 / inv  # [D]
    v, u = torch.meshgrid(torch.arange(H, dtype=f64) + 0.5, torch.arange(W, dtype=f64) + 0.5, indexing="ij")
    m = ref.model
    rays = torch.stack([(u - m.cx) / m.fx, (v - m.cy) / m.fy, torch.ones_like(u)], -1)  # [H, W, 3]
    g_ref = _gray(torch.as_tensor(ref.image, dtype=torch.float32))[None, None]  # [1, 1, H, W]
    pad = window // 2

    def box(x):
        return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), window, stride=1)

    mu_r = box(g_ref)
    var_r = (box(g_ref * g_ref) - mu_r * mu_r).clamp_min(0)
    cost_sum = torch.zeros(planes, H, W)
    count = torch.zeros(planes, H, W)
    for src in sources:
        T = np.linalg.inv(src.c2w) @ ref.c2w
        R, t = torch.as_tensor(T[:3, :3]), torch.as_tensor(T[:3, 3])
        pts = depths[:, None, None, None] * rays[None]  # [D, H, W, 3]
        pc = pts @ R.T + t
        z = pc[..., 2]
        sm = src.model
        us = sm.fx * pc[..., 0] / z.clamp_min(1e-9) + sm.cx
        vs = sm.fy * pc[..., 1] / z.clamp_min(1e-9) + sm.cy
        ok = (z > 1e-6) & (us >= 0) & (us <= src.width) & (vs >= 0) & (vs <= src.height)
        grid = torch.stack([2 * us / src.width - 1, 2 * vs / src.height - 1], -1).float()
        g_src = _gray(torch.as_tensor(src.image, dtype=torch.float32))[None, None].expand(planes, 1, -1, -1)
        warped = F.grid_sample(g_src, grid, mode="bilinear", padding_mode="border", align_corners=False)  # [D, 1, H, W]
        mu_s = box(warped)
        var_s = (box(warped * warped) - mu_s * mu_s).clamp_min(0)
        cov = box(warped * g_ref) - mu_s * mu_r
        ncc = cov / torch.sqrt(var_s * var_r + 1e-6)
        cost = (1.0 - ncc.clamp(-1, 1))[:, 0]  # [D, H, W]
        okf = ok.float()
        cost_sum += cost * okf
        count += okf
    cost = torch.where(count > 0, cost_sum / count.clamp_min(1), torch.full_like(cost_sum, 1.0))
    best = cost.argmin(0)  # [H, W]
    # sub-plane refinement: parabola through the neighbours, in inverse-depth index
    lo = (best - 1).clamp(0, planes - 1)
    hi = (best + 1).clamp(0, planes - 1)
    c0, c1, c2 = (cost.gather(0, i[None])[0] for i in (lo, best, hi))
    denom = c0 - 2 * c1 + c2
    offset = torch.where((denom > 1e-6) & (lo != best) & (hi != best), 0.5 * (c0 - c2) / denom, torch.zeros_like(denom))
    idx = best.double() + offset.clamp(-0.5, 0.5).double()
    inv_d = inv[0] + (inv[-1] - inv[0]) * idx / max(planes - 1, 1)
    depth = (1.0 / inv_d).float()
    prob = torch.softmax(-cost / temperature, 0)
    conf = prob.gather(0, best[None])[0] + prob.gather(0, lo[None])[0] * (lo != best) + prob.gather(0, hi[None])[0] * (hi != best)
    # texture-less windows have no NCC signal
    conf = conf * (var_r[0, 0] > 1e-5).float()
    depth, conf = depth.numpy(), conf.float().numpy()
    if ref.mask is not None:
        depth = np.where(ref.mask, depth, 0.0).astype(np.float32)
        conf = np.where(ref.mask, conf, 0.0).astype(np.float32)
    return depth, conf


def fill_depth(depth: np.ndarray, keep: np.ndarray, region: np.ndarray | None = None, iters: int = 200) -> np.ndarray:
    """Replace depths outside ``keep`` by normalised-convolution averages of kept neighbours, within ``region``."""
    import torch
    import torch.nn.functional as F

    region = np.ones_like(keep) if region is None else region
    d = torch.as_tensor(np.where(keep, depth, 0.0), dtype=torch.float32)[None, None]
    w = torch.as_tensor(keep & region, dtype=torch.float32)[None, None]
    if w.sum() == 0:
        return depth
    k = torch.ones(1, 1, 5, 5)
    filled = w.clone()
    out = d.clone()
    for _ in range(iters):
        if bool((filled > 0).all()) or bool(((filled > 0) | ~torch.as_tensor(region)[None, None]).all()):
            break
        num = F.conv2d(out * filled, k, padding=2)
        den = F.conv2d(filled, k, padding=2)
        new = (filled == 0) & (den > 0)
        out = torch.where(new, num / den.clamp_min(1e-9), out)
        filled = torch.where(new, torch.ones_like(filled), filled)
    res = out[0, 0].numpy()
    res = np.where(region, res, 0.0)
    return res.astype(np.float32)


def depth_range(views, points: np.ndarray | None = None, graph_meta: dict | None = None) -> tuple[float, float]:
    """Plane-sweep depth range: from SfM points, dataset bounds, or where the optical axes converge."""
    if points is not None and len(points) >= 10:
        zs = []
        for v in views:
            pc = (points - v.c2w[:3, 3]) @ v.c2w[:3, :3]
            z = pc[:, 2]
            zs.append(z[z > 0])
        z = np.concatenate(zs)
        if len(z) >= 10:
            return float(np.percentile(z, 1) * 0.8), float(np.percentile(z, 99) * 1.25)
    if graph_meta and "near" in graph_meta and "far" in graph_meta:
        return float(graph_meta["near"]), float(graph_meta["far"])
    # least-squares point closest to all optical axes
    A, b = optical_axes_system([v.c2w for v in views])
    centres = np.stack([v.c2w[:3, 3] for v in views])
    baseline = max(float(np.linalg.norm(centres - centres.mean(0), axis=1).max()), 1e-6)
    if np.linalg.cond(A) < 1e6:
        p = np.linalg.solve(A, b)
        dist = [float((p - v.c2w[:3, 3]) @ v.c2w[:3, 2]) for v in views]
        if min(dist) > 0:
            return 0.45 * min(dist), 2.0 * max(dist)
    return baseline, 100.0 * baseline


def fit_scale_shift(depth: np.ndarray, uv: np.ndarray, z: np.ndarray, iters: int = 10) -> tuple[float, float]:
    """Robust (Huber-IRLS) ``a, b`` with ``a * depth[uv] + b ~= z`` for sparse points ``uv [M, 2]`` (pixels)."""
    H, W = depth.shape
    j = np.clip(uv[:, 0].astype(int), 0, W - 1)
    i = np.clip(uv[:, 1].astype(int), 0, H - 1)
    x = depth[i, j].astype(np.float64)
    ok = x > 0
    x, y = x[ok], z[ok].astype(np.float64)
    if len(x) < 3:
        return 1.0, 0.0
    w = np.ones_like(x)
    a, b = 1.0, 0.0
    for _ in range(iters):
        A = np.stack([x, np.ones_like(x)], 1) * np.sqrt(w)[:, None]
        a, b = np.linalg.lstsq(A, y * np.sqrt(w), rcond=None)[0]
        r = np.abs(a * x + b - y)
        delta = 1.345 * max(np.median(r) / 0.6745, 1e-9)
        w = np.where(r <= delta, 1.0, delta / np.maximum(r, 1e-12))
    if not a > 0:
        return 1.0, 0.0
    return float(a), float(b)


def initial_depths(views, source: str = "auto", points: np.ndarray | None = None, graph_meta: dict | None = None,
                   planes: int = 48, window: int = 5, near: float | None = None, far: float | None = None,
                   min_confidence: float = 0.05):
    """Per-view initial depth ``[H, W]`` and the source used (``"dataset" | "sfm" | "mvs"``)."""
    has_depth = all(v.depth is not None and (v.depth > 0).any() for v in views)
    if source == "dataset" or (source == "auto" and has_depth):
        if not has_depth:
            raise ValueError("depth_source='dataset' but some training view has no depth map")
        return [v.depth.copy() for v in views], "dataset"
    use_sfm = points is not None and len(points) >= 10 and source in ("auto", "sfm")
    if source == "sfm" and not use_sfm:
        raise ValueError("depth_source='sfm' but the dataset has no SfM points at /points")
    lo, hi = depth_range(views, points if use_sfm else None, graph_meta)
    lo, hi = near or lo, far or hi
    out = []
    for k, v in enumerate(views):
        others = [w for j, w in enumerate(views) if j != k]
        d, conf = plane_sweep_depth(v, others, lo, hi, planes=planes, window=window)
        region = v.mask if v.mask is not None else np.ones_like(d, bool)
        keep = (conf >= min_confidence) & region
        if keep.sum() < 0.01 * region.sum():  # nothing confident: keep the raw sweep
            keep = region & (d > 0)
        d = fill_depth(d, keep, region)
        if use_sfm:
            pc = (points - v.c2w[:3, 3]) @ v.c2w[:3, :3]
            front = pc[:, 2] > 0
            pc = pc[front]
            uv = np.stack([v.model.fx * pc[:, 0] / pc[:, 2] + v.model.cx, v.model.fy * pc[:, 1] / pc[:, 2] + v.model.cy], 1)
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < v.width) & (uv[:, 1] >= 0) & (uv[:, 1] < v.height)
            if inside.sum() >= 10:
                a, b = fit_scale_shift(d, uv[inside], pc[inside, 2])
                d = np.where(d > 0, np.maximum(a * d + b, 1e-3), 0.0).astype(np.float32)
        out.append(d)
    return out, ("sfm" if use_sfm else "mvs")
