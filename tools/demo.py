"""`geo demo`: the Quick-start demo on the bundled Spot sample.

Until sparse-view reconstruction lands, the demo exercises the foundation end
to end: it loads the transforms.json sample into a scene graph, lifts three
training views into per-pixel Gaussians using their depth maps, saves the
scene and checks that it loads back bit for bit, renders the held-out views
through :func:`geo.raster.rasterize`, and writes a preview grid.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    tmp.replace(path)


def _same_scene(a, b) -> bool:
    """Every node, transform, meta and payload array identical (bit for bit)."""
    na, nb = list(a.traverse()), list(b.traverse())
    if [n.path for n in na] != [n.path for n in nb]:
        return False
    for x, y in zip(na, nb):
        if not np.array_equal(x.transform, y.transform) or x.meta != y.meta or type(x.payload) is not type(y.payload):
            return False
        if x.payload is not None:
            ax, ay = x.payload.to_arrays(), y.payload.to_arrays()
            if ax.keys() != ay.keys() or any(ax[k].dtype != ay[k].dtype or not np.array_equal(ax[k], ay[k]) for k in ax):
                return False
    return True


def run_demo(data: Path, out: Path, n_source_views: int = 3) -> None:
    from scenes import load_scene, save_scene
    from scenes.data import load_capture
    from scenes.info import summarize_graph
    from scenes.payloads import Camera, GaussianCloud
    from scenes.render import pixel_gaussians, render_gaussians

    t0 = time.perf_counter()
    graph = load_capture(data, holdout_every=8)
    cams = graph.find(Camera)
    train = [n for n in cams if n.meta.get("split") == "train"]
    test = [n for n in cams if n.meta.get("split") == "test"]
    if not train or not test:
        raise ValueError(f"{data}: the demo needs train and held-out views, got {len(train)} train / {len(test)} test")
    # Three source views spread around the ring, as in sparse-view reconstruction.
    sources = [train[i] for i in np.linspace(0, len(train) - 1, n_source_views + 1)[:-1].round().astype(int)]
    gaussians = GaussianCloud.concat([pixel_gaussians(n) for n in sources])
    graph.add("/gaussians", payload=gaussians, meta={"from_views": [n.name for n in sources]})
    t_load = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    scene_dir = out / "scene"
    save_scene(graph, scene_dir)
    reloaded = load_scene(scene_dir)
    exact = _same_scene(graph, reloaded)

    t1 = time.perf_counter()
    renders = render_gaussians(reloaded["/gaussians"].payload, [reloaded[n.path] for n in test])
    t_render = time.perf_counter() - t1

    rows, lines = [], []
    for k, n in enumerate(test):
        gt = n.payload.image[..., :3].astype(np.float32) / 255.0
        pred = renders.rgb[k]
        lines.append(f"  {n.name}: PSNR {_psnr(pred, gt):.2f} dB, coverage {renders.alpha[k].mean():.1%}")
        err = np.clip(np.abs(pred - gt).mean(-1, keepdims=True) * 4, 0, 1).repeat(3, -1)
        rows.append(np.concatenate([gt, pred, err], 1))
    grid = (np.concatenate(rows, 0) * 255 + 0.5).astype(np.uint8)
    _save_png(out / "preview.png", grid)

    print(summarize_graph(reloaded, str(scene_dir)))
    print(f"demo: {gaussians.num} Gaussians lifted from views {', '.join(n.name for n in sources)}")
    print(f"demo: scene saved to {scene_dir} and reloaded {'bit-exact' if exact else 'WITH DIFFERENCES'}")
    print(f"demo: rendered {len(test)} held-out views ({renders.rgb.shape[2]}x{renders.rgb.shape[1]}) in {t_render:.2f} s:")
    print("\n".join(lines))
    print(f"demo: preview grid (ground truth | render | error x4) written to {out / 'preview.png'}")
    print(f"demo: done in {time.perf_counter() - t0:.1f} s (loading {t_load:.1f} s)")
    if not exact:
        raise RuntimeError("scene round trip was not exact")
