"""Benchmark of Vox-E (:mod:`scenes.voxe`): reconstruction, edit iterations, locality.

Cases (each in its own subprocess, so ``peak_rss_mb`` is that case's peak resident memory):

* ``recon``: coarse-to-fine reconstruction of the synthetic Spot scene, every 8th view
  held out: held-out PSNR and time at 64^3 (32 -> 64) and 128^3 (32 -> 64 -> 128). The
  full run renders Spot with ``--views`` (48) ring cameras at 128 px into a temporary
  cache directory (``scenes.data.synthetic.render_synthetic``, the bundled sample's
  layout with 3x the views); ``--quick`` uses the bundled 16-view ``assets/spot_sample``;
  ``--data`` picks any capture.
* ``edit``: seconds per SDS edit iteration (render with gradients, VAE encode, UNet with
  classifier-free guidance, backward, Adam step, correlation term) of a 128^3 grid, with
  the tiny config-built model and with an SD-2-sized model (random weights, built from
  its config: ~865M-parameter UNet, SD VAE, 23-layer CLIP text tower), at 64^2 and
  256^2 render size (the SD-sized model sees the render resized to 512^2, as in use).
* ``local``: a synthetic local edit: a blob grid is edited for a few SDS iterations with
  the tiny model (the whole grid drifts), a known region is recoloured (the edit), a noisy
  synthetic attention field marks that region, and the graph cut + restoration run; reports the region IoU and the fraction
  of voxels outside the region whose density and features are bit-identical to the
  original (must be 1.0).

Usage: ``python -m tools.bench.voxe [--quick] [--data DIR] [--views N] [--no-sd2]``. ``--quick``
(under 2 minutes on 2 CPU cores) runs a 16 -> 32 reconstruction, the tiny model at 64^2
and the locality case. The last stdout line is one JSON object with ``recon_psnr``,
``sec_per_edit_iter`` and ``outside_unchanged`` (plus the per-case details).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPOT = REPO / "assets" / "spot_sample"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def case_recon(stages: str, data: str) -> dict:
    from scenes.voxe.config import ReconConfig
    from scenes.voxe.reconstruct import evaluate_grid, load_views, reconstruct

    res_its = [tuple(int(v) for v in s.split("x")) for s in stages.split(",")]
    cfg = ReconConfig(resolutions=tuple(r for r, _ in res_its), iters=tuple(i for _, i in res_its),
                      rays_per_batch=2048 if res_its[-1][0] <= 32 else 4096)
    views = load_views(data, cfg.holdout_every)
    t0 = time.perf_counter()
    grid, st = reconstruct(views, cfg, progress=False)
    secs = time.perf_counter() - t0
    ev = evaluate_grid(grid, views)
    return {"case": "recon", "data": Path(data).name, "views": len(views), "resolution": grid.resolution[0],
            "stages": stages, "psnr": ev["psnr"],
            "psnr_train": evaluate_grid(grid, views, "train")["psnr"], "seconds": secs,
            "test_views": sorted(ev["per_view"]), "peak_rss_mb": _peak_mb()}


def _blob(n: int):
    from scenes.voxels import VoxelGrid

    rng = np.random.default_rng(0)
    x = (np.indices((n, n, n)).transpose(1, 2, 3, 0) + 0.5) / n * 2 - 1
    r = np.linalg.norm(x, axis=-1)
    dens = np.where(r < 0.6, 8.0, -6.0).astype(np.float32)
    feat = (rng.normal(size=(n, n, n, 3)) * 0.3).astype(np.float32)
    return VoxelGrid(dens, feat, -np.ones(3), np.ones(3)), x, r


def case_edit(model_kind: str, size: int, iters: int) -> dict:
    import torch

    from scenes.voxe.config import EditConfig, GuidanceConfig
    from scenes.voxe.edit import edit_grid
    from scenes.voxe.guidance import Guidance, build_sd2_sized_model, build_tiny_model

    t0 = time.perf_counter()
    model = build_tiny_model() if model_kind == "tiny" else build_sd2_sized_model()
    build_s = time.perf_counter() - t0
    grid, _, _ = _blob(128)
    g = Guidance(model, GuidanceConfig(backend="tiny"), total_steps=iters)
    stamps = []
    edit_grid(grid, "a cow wearing a party hat", g, EditConfig(iters=iters, render_size=size), progress=False,
              callback=lambda it, terms: stamps.append(time.perf_counter()))
    per = (stamps[-1] - stamps[0]) / (len(stamps) - 1)  # the first iteration is warm-up
    n_params = sum(p.numel() for m in (model.unet, model.vae, model.text_encoder) for p in m.parameters())
    return {"case": "edit", "model": model_kind, "render": size, "sec_per_iter": per, "iters_timed": len(stamps) - 1,
            "build_s": build_s, "params_m": n_params / 1e6, "threads": torch.get_num_threads(), "peak_rss_mb": _peak_mb()}


def case_local(n: int, iters: int) -> dict:
    from scenes.voxe.config import EditConfig, GuidanceConfig, LocalConfig
    from scenes.voxe.edit import edit_grid
    from scenes.voxe.guidance import Guidance, build_tiny_model
    from scenes.voxe.local import refine_local

    orig, x, r = _blob(n)
    g = Guidance(build_tiny_model(), GuidanceConfig(backend="tiny"), total_steps=iters)
    edited, _ = edit_grid(orig, "a cow wearing a party hat", g, EditConfig(iters=iters, render_size=32, n_samples=64),
                          progress=False)
    rng = np.random.default_rng(1)
    region_true = (np.linalg.norm(x - np.array([0.3, 0.3, 0.0]), axis=-1) < 0.35) & (r < 0.6)
    edited.features[region_true] += 2.0  # the edit itself: the region changes colour
    att_e = np.clip(np.where(region_true, 0.8, 0.2) + rng.normal(size=r.shape) * 0.15, 0, 1)
    att_o = np.clip(np.where(r < 0.6, 0.6, 0.0) + rng.normal(size=r.shape) * 0.1, 0, 1)
    t0 = time.perf_counter()
    out, region = refine_local(edited, orig, np.stack([att_e, att_o]).astype(np.float32), LocalConfig())
    cut_s = time.perf_counter() - t0
    outside = ~region
    same = (out.density == orig.density) & (out.features == orig.features).all(-1)
    changed_by_edit = float(((edited.density != orig.density) | (edited.features != orig.features).any(-1))[outside].mean())
    return {"case": "local", "grid": n, "edit_iters": iters, "iou": float((region & region_true).sum() / (region | region_true).sum()),
            "outside_unchanged": float(same[outside].mean()), "outside_changed_before_restore": changed_by_edit,
            "graph_cut_s": cut_s, "peak_rss_mb": _peak_mb()}


def spot_dataset(views: int) -> str:
    """Spot rendered with ``views`` ring cameras at 128 px, cached in the temporary directory."""
    import tempfile

    from scenes.data.synthetic import SyntheticConfig, render_synthetic

    out = Path(tempfile.gettempdir()) / f"geo-bench-voxe-spot{views}-128"
    if not (out / "transforms.json").is_file():
        render_synthetic(REPO / "assets" / "spot" / "spot_triangulated.obj", out,
                         SyntheticConfig(views=views, resolution=128, flow=False))
    return str(out)


def spawn(args: list[str], timeout: float) -> dict:
    p = subprocess.run([sys.executable, "-m", "tools.bench.voxe", "--case", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        return {"case": args[0], "error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a subset that runs in under 2 minutes")
    ap.add_argument("--data", default=None, help="capture for the reconstruction (default: Spot, see above)")
    ap.add_argument("--views", type=int, default=48, help="views of the rendered Spot dataset (full run)")
    ap.add_argument("--no-sd2", action="store_true", help="skip the SD-2-sized model (needs ~8 GB of RAM on CPU)")
    ap.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        kind, *rest = args.case
        if kind == "recon":
            out = case_recon(rest[0], rest[1])
        elif kind == "edit":
            out = case_edit(rest[0], int(rest[1]), int(rest[2]))
        else:
            out = case_local(int(rest[0]), int(rest[1]))
        print(json.dumps(out))
        return
    t0 = time.perf_counter()
    results = []

    def run(a, timeout=3600):
        r = spawn(a, timeout)
        print(json.dumps(r), flush=True)
        results.append(r)
        return r

    data = args.data or (str(SPOT) if args.quick else spot_dataset(args.views))
    if args.quick:
        recon = [run(["recon", "16x60,32x120", data])]
        edits = [run(["edit", "tiny", "64", "4"])]
    else:
        recon = [run(["recon", "32x300,64x300", data]), run(["recon", "32x300,64x300,128x1000", data])]
        edits = [run(["edit", "tiny", "64", "6"]), run(["edit", "tiny", "256", "4"])]
        if not args.no_sd2:
            edits += [run(["edit", "sd2", "64", "2"]), run(["edit", "sd2", "256", "2"])]
    local = run(["local", "32" if args.quick else "64", "3"])
    best = recon[-1]
    tiny64 = next((e for e in edits if e.get("model") == "tiny" and e.get("render") == 64), {})
    summary = {
        "recon_psnr": best.get("psnr"), "recon_resolution": best.get("resolution"), "recon_s": best.get("seconds"),
        "sec_per_edit_iter": tiny64.get("sec_per_iter"),
        "sec_per_edit_iter_by_case": {f"{e.get('model')}@{e.get('render')}": e.get("sec_per_iter") for e in edits},
        "outside_unchanged": local.get("outside_unchanged"), "local_iou": local.get("iou"),
        "peak_rss_mb": max((r.get("peak_rss_mb") or 0) for r in results), "quick": args.quick,
        "total_s": time.perf_counter() - t0,
    }
    if not args.quick:
        print("\n| case | result |\n|---|---|")
        for r in results:
            print(f"| {r.get('case')} | {json.dumps({k: v for k, v in r.items() if k != 'case'})} |")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
