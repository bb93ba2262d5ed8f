"""Benchmark of the VoxelSplat loss (:mod:`scenes.occflow`) on synthetic dynamic scenes.

For each seed: generate training and test sequences (:mod:`scenes.occflow.synthetic`),
lift noisy multi-view depth + semantic images of the key and previous frame into
the grid, and train :class:`scenes.occflow.model.OccFlowNet` twice from the same
initialisation, on the same sample order and for the same number of steps:

* **base**: class-weighted voxel cross-entropy on camera-visible voxels + the
  weighted voxel flow L1 (``weighted_flow_l1``, the same term as ``loss_flow3d``);
* **voxelsplat**: the same voxel cross-entropy + :class:`VoxelSplatLoss` (its
  ``loss_flow3d`` is the base's flow term, so only the rendered terms differ),
  rendering into the key frame's cameras and the next frame's (``dt = +0.5 s``);
  the semantic and depth renders ramp in linearly over the first half of the
  steps (``--render-warmup 0.5``, the config's ``render_schedule``), the flow
  terms are on from the start.

Test metrics: Occ3D mIoU on camera-visible voxels, RayIoU (1/2/4 m) from the ego
sensor positions of the previous, key and next frame, and mAVE on the dynamic
classes' true-positive rays (:mod:`scenes.occflow.metrics`).

Usage: ``python -m tools.bench.occflow [--quick] [--seeds 0 1 2] [--steps N]``.
``--quick`` (one seed, 4 training and 2 test sequences, 80 steps) runs in under 2
minutes on 2 CPU cores; the full run (6 training sequences, 200 steps, 8 test
sequences = 16 key frames per seed) averages 3 seeds. The
world is 32 x 32 x 8 voxels of 0.5 m, 6 cameras of 48 x 32. ``--w-sem2d``,
``--w-depth2d``, ``--w-flow2d``, ``--depth-mode``, ``--depth-metric``, ``--dynamic-speed``,
``--adjacent-grad``, ``--sem2d-class-alpha``, ``--pixel-weight``, ``--sample-free``,
``--render-warmup`` override the loss's defaults for
ablations (closer to the release: ``--render-warmup 0 --depth-mode accumulated --adjacent-grad all
--sem2d-class-alpha 0 --w-sem2d 0.5 --w-depth2d 1 --w-flow2d 1``, plus
``flow_opacity_grad=True, sem2d_render="logits", w_alpha2d=0`` in
:class:`VoxelSplatConfig`). A picture of ground truth vs both predictions for one
test frame (bird's-eye view of the top occupied class per column) goes to
``--picture`` (default ``docs/occflow_frame.png``). The last stdout line is one
JSON object with ``miou_base``, ``miou_voxelsplat``, ``mave_base``,
``mave_voxelsplat`` (plus RayIoU and training times).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

PALETTE = {  # class -> RGB, in synthetic.CLASSES order
    0: (230, 60, 50), 1: (250, 160, 30), 2: (60, 120, 240), 3: (150, 90, 200), 4: (240, 230, 60),
    5: (150, 150, 150), 6: (255, 255, 255),
}


def build_samples(seqs, noise_rng, K, free, with_next=True):
    """Per key frame: lifted input, training labels (255 outside the camera mask), flow, views, eval data."""
    import torch

    from scenes.occflow.model import lift_views

    out = []
    for seq in seqs:
        cfg = seq.config
        for f in range(1, cfg.frames - 1):
            feats = []
            for src in (f, f - 1):
                fr = seq.frames[src]
                sem = fr.semantics.copy()
                flip = noise_rng.random(sem.shape) < 0.05
                sem[flip] = noise_rng.integers(0, K, size=int(flip.sum()))
                dep = fr.depth * (1 + 0.03 * noise_rng.standard_normal(fr.depth.shape)).astype(np.float32)
                c2e = seq.ego_to_ego(src, f) @ fr.cam_to_ego
                feats.append(lift_views(torch.from_numpy(sem), torch.from_numpy(dep), torch.from_numpy(fr.Ks).float(),
                                        torch.from_numpy(c2e).float(), cfg.grid, cfg.origin, cfg.voxel_size, K, free))
            key, nxt = seq.frames[f], seq.frames[f + 1]
            labels = torch.from_numpy(key.labels)
            mask = torch.from_numpy(key.mask_camera)
            c2e = [key.cam_to_ego, seq.ego_to_ego(f + 1, f) @ nxt.cam_to_ego]
            sensors = [seq.ego_to_ego(s, f)[:3, 3] + np.array([0.0, 0.0, 1.8]) for s in (f - 1, f, f + 1)]
            out.append({
                "x": torch.cat(feats, 0),
                "labels": labels,
                "labels_train": torch.where(mask, labels, torch.full_like(labels, 255)),
                "mask": mask,
                "flow": torch.from_numpy(key.flow),
                "Ks": torch.from_numpy(np.stack([key.Ks, nxt.Ks])).float(),
                "cam_to_ego": torch.from_numpy(np.stack(c2e)).float(),
                "sensors": torch.from_numpy(np.stack(sensors)).float(),
                "cfg": cfg,
            })
    return out


def class_weights(samples, K):
    import torch

    counts = torch.zeros(K)
    for s in samples:
        lab = s["labels_train"]
        counts += torch.bincount(lab[lab != 255], minlength=K).float()
    w = (counts / counts.sum()).clamp_min(1e-4).pow(-0.5)
    return w / w.mean()


def train(samples, K, free, steps, seed, use_voxelsplat, vs_cfg, lr=3e-3, width=16):
    import torch
    import torch.nn.functional as F

    from scenes.occflow.loss import RigViews, VoxelSplatLoss, weighted_flow_l1
    from scenes.occflow.model import OccFlowNet

    torch.manual_seed(seed)
    net = OccFlowNet(samples[0]["x"].shape[0], K, 2, width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    cw = class_weights(samples, K)
    loss_fn = VoxelSplatLoss(vs_cfg)
    order = np.random.default_rng(seed).integers(0, len(samples), size=steps)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for it, i in enumerate(order):
        s = samples[i]
        cfg = s["cfg"]
        logits, flow = net(s["x"][None])
        lab = s["labels_train"][None]
        flow_gt = s["flow"].permute(3, 0, 1, 2)[None]
        loss = F.cross_entropy(logits, lab, weight=cw, ignore_index=255)
        if use_voxelsplat:
            views = RigViews(s["Ks"][None], s["cam_to_ego"][None], [0.0, cfg.dt], cfg.width, cfg.height)
            terms = loss_fn(logits, flow, lab, flow_gt, cfg.origin, cfg.voxel_size, views, step=it, generator=gen)
            loss = loss + sum(terms.values())
        else:
            loss = loss + vs_cfg.w_flow3d * weighted_flow_l1(flow.movedim(1, -1), flow_gt.movedim(1, -1), lab != 255,
                                                             vs_cfg.flow_eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
    return net, time.perf_counter() - t0


def evaluate(net, samples, K, free):
    import torch

    from scenes.occflow.metrics import OccupancyMIoU, RayMetrics
    from scenes.occflow.synthetic import CLASSES, DYNAMIC_CLASSES

    miou = OccupancyMIoU(K, free)
    rays = RayMetrics(K, free, [CLASSES.index(c) for c in DYNAMIC_CLASSES])
    preds = []
    with torch.no_grad():
        for s in samples:
            logits, flow = net(s["x"][None])
            pred = logits[0].argmax(0)
            pflow = flow[0].permute(1, 2, 3, 0)
            miou.update(pred, s["labels"], s["mask"])
            cfg = s["cfg"]
            rays.update(pred, s["labels"], cfg.origin, cfg.voxel_size, s["sensors"], pflow, s["flow"])
            preds.append(pred)
    r = rays.compute()
    return {"miou": miou.compute()["miou"], "rayiou": r["rayiou"], "mave": r["mave"]}, preds


def bev_image(labels, mask, free, scale=8):
    """Bird's-eye view: class of the highest camera-visible occupied voxel per (x, y) column
    (Occ3D's visualisation restricted to what is evaluated); columns with no visible voxel are
    black, x (forward) points up, y (left) points left."""
    lab = np.asarray(labels)
    vis = np.asarray(mask)
    lab = np.where(vis, lab, free)
    occ = lab != free
    Z = lab.shape[2]
    top = Z - 1 - np.argmax(occ[:, :, ::-1], axis=2)
    cls = np.take_along_axis(lab, top[..., None], 2)[..., 0]
    cls = np.where(occ.any(2), cls, free)
    lut = np.array([PALETTE[c] for c in range(len(PALETTE))], np.uint8)
    img = lut[cls]
    img[~vis.any(2)] = 0
    img = img[::-1, ::-1]
    return np.kron(img, np.ones((scale, scale, 1), np.uint8))


def save_picture(path, sample, pred_base, pred_vs, free, titles=("ground truth", "base", "VoxelSplat")):
    from PIL import Image, ImageDraw

    from scenes.occflow.synthetic import CLASSES

    ims = [bev_image(p.numpy(), sample["mask"].numpy(), free) for p in (sample["labels"], pred_base, pred_vs)]
    h, w = ims[0].shape[:2]
    top, bottom, gap = 22, 24, 8
    canvas = Image.new("RGB", (3 * w + 4 * gap, top + h + bottom), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (title, im) in enumerate(zip(titles, ims)):
        x0 = gap + k * (w + gap)
        canvas.paste(Image.fromarray(im), (x0, top))
        draw.text((x0, 5), title, fill=(0, 0, 0))
    x = gap
    for c, name in enumerate(CLASSES):
        draw.rectangle([x, top + h + 7, x + 10, top + h + 17], fill=PALETTE[c], outline=(0, 0, 0))
        draw.text((x + 14, top + h + 6), name, fill=(0, 0, 0))
        x += 14 + 7 * len(name) + 12
    draw.rectangle([x, top + h + 7, x + 10, top + h + 17], fill=(0, 0, 0))
    draw.text((x + 14, top + h + 6), "not visible", fill=(0, 0, 0))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    canvas.save(path)


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from geo.regularizers.schedule import Schedule
    from scenes.occflow.config import VoxelSplatConfig
    from scenes.occflow.synthetic import CLASSES, FREE, SyntheticConfig, make_sequence

    K = len(CLASSES)
    world = SyntheticConfig(grid=(32, 32, 8), frames=4, n_cameras=6, width=48, height=32, n_cars=3,
                            n_pedestrians=2, n_barriers=2, n_poles=3)
    n_train, n_test = (4, 2) if args.quick else (6, 8)
    # the library defaults unless overridden on the command line
    vs_cfg = VoxelSplatConfig(max_gaussians=args.max_gaussians, cameras_per_chunk=world.n_cameras, checkpoint=False)
    over = {k: getattr(args, k) for k in ("w_sem2d", "w_depth2d", "w_flow2d", "depth_mode", "depth_metric",
                                          "dynamic_speed", "adjacent_grad", "sem2d_class_alpha", "pixel_weight",
                                          "sample_free")
            if getattr(args, k) is not None}
    if over.get("depth_mode") == "accumulated" and "depth_metric" not in over:
        over["depth_metric"] = "l1"  # the release's accumulated-depth L1
    if args.render_warmup > 0:  # the 2D semantic / depth terms ramp in linearly over this fraction of the steps
        over["render_schedule"] = Schedule("linear", 0, max(1, round(args.render_warmup * args.steps)))
    vs_cfg = replace(vs_cfg, **over)
    results = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        seqs = [make_sequence(10_000 * seed + i, world) for i in range(n_train + n_test)]
        rng = np.random.default_rng(seed)
        train_s = build_samples(seqs[:n_train], rng, K, FREE)
        test_s = build_samples(seqs[n_train:], rng, K, FREE)
        t_data = time.perf_counter() - t0
        row = {"seed": seed, "data_s": round(t_data, 1)}
        preds = {}
        for name, use in (("base", False), ("voxelsplat", True)):
            net, t_train = train(train_s, K, FREE, args.steps, seed, use, vs_cfg)
            m, preds[name] = evaluate(net, test_s, K, FREE)
            row.update({f"{k}_{name}": v for k, v in m.items()})
            row[f"time_{name}_s"] = round(t_train, 1)
        print(json.dumps(row), flush=True)
        results.append(row)
        if seed == args.seeds[0] and args.picture:
            save_picture(args.picture, test_s[0], preds["base"][0], preds["voxelsplat"][0], FREE)
    keys = [k for k in results[0] if k != "seed"]
    mean = {k: float(np.mean([r[k] for r in results])) for k in keys}
    return {**{k: round(v, 4) for k, v in mean.items()}, "seeds": list(args.seeds), "steps": args.steps,
            "quick": bool(args.quick), "voxelsplat": {k: getattr(vs_cfg, k) for k in
                                                      ("w_sem2d", "w_depth2d", "w_flow2d", "w_flow3d", "depth_mode",
                                                       "depth_metric", "dynamic_speed", "adjacent_grad",
                                                       "sem2d_class_alpha", "pixel_weight", "sample_free",
                                                       "max_gaussians")}, "render_warmup": args.render_warmup}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed, small world, < 2 min on 2 cores")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--max-gaussians", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--picture", default="docs/occflow_frame.png")
    p.add_argument("--w-sem2d", type=float, default=None)
    p.add_argument("--w-depth2d", type=float, default=None)
    p.add_argument("--w-flow2d", type=float, default=None)
    p.add_argument("--depth-mode", choices=("accumulated", "expected"), default=None)
    p.add_argument("--depth-metric", choices=("l1", "log"), default=None)
    p.add_argument("--dynamic-speed", type=float, default=None)
    p.add_argument("--adjacent-grad", choices=("all", "motion"), default=None)
    p.add_argument("--sem2d-class-alpha", type=float, default=None)
    p.add_argument("--render-warmup", type=float, default=0.5,
                   help="fraction of the steps over which loss_sem2d / loss_depth2d ramp in from 0")
    p.add_argument("--pixel-weight", choices=("uniform", "voxel"), default=None)
    p.add_argument("--sample-free", type=lambda v: v.lower() in ("1", "true", "yes"), default=None,
                   help="true / false")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.steps is None:
        args.steps = 80 if args.quick else 200
    if args.max_gaussians is None:
        args.max_gaussians = 4000
    out = run(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
