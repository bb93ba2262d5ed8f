"""Sparse-view benchmark: CoherentGS vs plain 3DGS on synthetic Spot, side by side.

The dataset (11 views on a ring at 20 degrees elevation around Spot, rendered by
:mod:`scenes.data.synthetic` with depth, masks and flow) is generated into a cache
directory on first use, never into the repository. Views 0, 4 and 7 train (about
120 degrees apart), the other 8 are held out. Both methods get the same views,
resolution, renderer and number of rendering iterations; CoherentGS also runs its
alignment stage, which renders nothing (its time is included in its seconds).

    python -m tools.bench.sparse_view            # full: 128 px, 200 iterations
    python -m tools.bench.sparse_view --quick    # 64 px, 40 iterations; last line JSON

CoherentGS initialises depth from the dataset's depth maps here (the issue's rule:
dataset depth first), the baseline from random points on the training rays; pass
``--depth-source mvs`` to run CoherentGS from the built-in plane sweep instead.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[2]
TRAIN_IDS = (0, 4, 7)
N_VIEWS = 11


@dataclass
class Args:
    quick: bool = False
    """64 px, 40 iterations: under 2 minutes on 2 cores."""
    resolution: int | None = None
    """Override the image size (default 128, quick 64)."""
    iters: int | None = None
    """Override the rendering iterations for both methods (default 200, quick 40)."""
    depth_source: Literal["auto", "dataset", "mvs"] = "auto"
    cache: Path | None = None
    """Dataset cache directory (default $XDG_CACHE_HOME/geo/bench or a temp dir)."""
    out: Path | None = None
    """Where the two reconstructions go (default: a temporary directory)."""
    seed: int = 0


def dataset(resolution: int, cache: Path | None) -> Path:
    from scenes.data.synthetic import SyntheticConfig, render_synthetic

    root = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geo" / "bench"
    path = root / f"spot_ring{N_VIEWS}_{resolution}"
    if not (path / "transforms.json").is_file():
        cfg = SyntheticConfig(views=N_VIEWS, resolution=resolution, layout="ring", flow_dtype="float16")
        render_synthetic(REPO / "assets" / "spot" / "spot_triangulated.obj", path, cfg)
    return path


def run(args: Args) -> dict:
    import torch

    from scenes.coherent.config import BaselineConfig, CoherentConfig, DataConfig
    from scenes.coherent.evaluate import evaluate
    from scenes.coherent.train import reconstruct

    t_all = time.perf_counter()
    res = args.resolution or (64 if args.quick else 128)
    iters = args.iters or (40 if args.quick else 200)
    data = dataset(res, args.cache)
    holdout = tuple(f"r_{k:03d}" for k in range(N_VIEWS) if k not in TRAIN_IDS)
    dcfg = DataConfig(holdout=holdout, view_selection="first")
    out = args.out or Path(tempfile.mkdtemp(prefix="geo-bench-"))
    coherent = CoherentConfig(depth_source=args.depth_source, align_iters=30 if args.quick else 60)
    baseline = BaselineConfig(num_random=3000 if args.quick else 5000)
    rows = {}
    for method in ("coherent", "3dgs"):
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        r = reconstruct(data, out / method, method=method, views=len(TRAIN_IDS), iters=iters, resolution=res,
                        seed=args.seed, checkpoint_every=0, coherent=coherent, baseline=baseline, data_cfg=dcfg,
                        exports=False, progress=sys.stderr.isatty(), log=lambda *a: None)
        train_s = time.perf_counter() - t0
        ev = evaluate(out / method, data, log=lambda *a: None)
        rows[method] = {"psnr": ev["psnr"], "ssim": ev["ssim"], "train_seconds": train_s,
                        "gaussians": int(r["trainer"].cloud_arrays()["means"].shape[0])}
    print(f"sparse-view benchmark: Spot ring, {len(TRAIN_IDS)} train / {len(holdout)} held-out views, {res} px, "
          f"{iters} iterations each (CoherentGS + {coherent.align_iters} alignment steps), depth init {args.depth_source}")
    print(f"{'method':<10} {'PSNR (dB)':>10} {'SSIM':>8} {'time (s)':>9} {'Gaussians':>10}")
    for m, name in (("coherent", "CoherentGS"), ("3dgs", "3DGS")):
        x = rows[m]
        print(f"{name:<10} {x['psnr']:>10.2f} {x['ssim']:>8.4f} {x['train_seconds']:>9.1f} {x['gaussians']:>10d}")
    gap = rows["coherent"]["psnr"] - rows["3dgs"]["psnr"]
    print(f"CoherentGS - 3DGS: {gap:+.2f} dB (target >= +3 dB: {'met' if gap >= 3 else 'NOT met'}); grids in {out}")
    summary = {
        "psnr_coherent": round(rows["coherent"]["psnr"], 3),
        "psnr_vanilla": round(rows["3dgs"]["psnr"], 3),
        "ssim_coherent": round(rows["coherent"]["ssim"], 4),
        "ssim_vanilla": round(rows["3dgs"]["ssim"], 4),
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    import tyro

    run(tyro.cli(Args, args=argv))


if __name__ == "__main__":
    main()
