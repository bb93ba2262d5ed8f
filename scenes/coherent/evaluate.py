"""``geo eval``: render the held-out views of a reconstruction and score them.

PSNR and SSIM (kornia, 11x11 Gaussian window) on the test split of the dataset,
at the resolution the scene was trained at, composited on the training
background. A PNG grid (rows: views; columns: ground truth | render | |error| x4)
is written for a person to look at.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["evaluate", "render_views_of_cloud"]


def render_views_of_cloud(cloud, views, background=(1.0, 1.0, 1.0)) -> list[np.ndarray]:
    """``[H, W, 3]`` float renders of ``cloud`` for each :class:`View`."""
    import torch

    from scenes.render import render_camera

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    args = (t(cloud.means), t(cloud.quats), t(cloud.scales), t(cloud.opacities), t(cloud.sh), cloud.sh_degree)
    out = []
    with torch.no_grad():
        for v in views:
            rgb, _, _ = render_camera(*args, v.model, v.c2w, background)
            out.append(rgb.clamp(0, 1).numpy())
    return out


def evaluate(scene_dir, data=None, *, grid: str | Path | None = None, holdout_every: int | None = None, log=print) -> dict:
    """Score a reconstruction on held-out views.

    Args:
        scene_dir: the ``geo reconstruct`` output (a scene directory with ``/gaussians``).
        data: the dataset; default: the one recorded in the scene.
        grid: PNG path for the comparison grid; default ``scene_dir/eval_grid.png``.
        holdout_every: test split rule; default: the one used for training.

    Returns:
        ``{"psnr", "ssim", "views": {name: {"psnr", "ssim"}}, "grid"}``.
    """
    import torch
    from kornia.metrics import ssim
    from PIL import Image

    from scenes import load_scene
    from scenes.coherent.views import prepare_view
    from scenes.data import load_capture
    from scenes.payloads import Camera

    scene_dir = Path(scene_dir)
    scene = load_scene(scene_dir)
    if "/gaussians" not in scene:
        raise ValueError(f"{scene_dir}: no /gaussians node; is this a `geo reconstruct` output?")
    cloud = scene["/gaussians"].payload
    rec = scene.meta.get("reconstruction", {})
    data = data or rec.get("data")
    if data is None:
        raise ValueError("evaluate: give --data (the scene does not record its dataset)")
    dcfg = rec.get("data_config", {})
    he = holdout_every if holdout_every is not None else dcfg.get("holdout_every", 8)
    bg = tuple(dcfg.get("background", (1.0, 1.0, 1.0)))
    graph = load_capture(data, holdout_every=he, holdout=(list(dcfg.get("holdout") or []) or None) if holdout_every is None else None)
    test = [n for n in graph.find(Camera) if n.meta.get("split") == "test"]
    if not test:
        raise ValueError(f"{data}: no held-out views (holdout_every={he})")
    views = [prepare_view(n, rec.get("resolution"), use_mask=False) for n in test]
    renders = render_views_of_cloud(cloud, views, bg)
    per, rows = {}, []
    for v, r in zip(views, renders):
        gt = v.image
        mse = float(np.mean((r.astype(np.float64) - gt) ** 2))
        p = float("inf") if mse == 0 else -10 * np.log10(mse)
        s = float(ssim(torch.as_tensor(r).permute(2, 0, 1)[None], torch.as_tensor(gt).permute(2, 0, 1)[None], 11).mean())
        per[v.name] = {"psnr": p, "ssim": s}
        err = np.clip(np.abs(r - gt).mean(-1, keepdims=True) * 4, 0, 1).repeat(3, -1)
        rows.append(np.concatenate([gt, r, err], 1))
    grid = Path(grid) if grid else scene_dir / "eval_grid.png"
    img = (np.concatenate(rows, 0) * 255 + 0.5).astype(np.uint8)
    tmp = grid.with_name(f".{grid.name}.tmp")
    Image.fromarray(img).save(tmp, format="PNG")
    tmp.replace(grid)
    res = {
        "psnr": float(np.mean([x["psnr"] for x in per.values()])),
        "ssim": float(np.mean([x["ssim"] for x in per.values()])),
        "views": per,
        "grid": str(grid),
        "method": rec.get("method"),
    }
    for name, x in per.items():
        log(f"  {name}: PSNR {x['psnr']:.2f} dB  SSIM {x['ssim']:.4f}")
    log(f"{rec.get('method', 'scene')}: {len(per)} held-out views: PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.4f}; grid {grid}")
    (scene_dir / "eval.json").write_text(json.dumps(res, indent=1))
    return res
