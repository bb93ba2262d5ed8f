"""``reconstruct``: the training loop shared by CoherentGS and the 3DGS baseline.

The user's path reads like the paper::

    views = prepare training views (undistort, downscale)
    depths = initial_depths(views)          # dataset depth / SfM-anchored / plane sweep
    flows = pair_flows(views)               # dataset / DIS
    model = PixelGaussians(views, depths)   # per-pixel Gaussians, depth layers
    align (flow loss on per-view scale/offset), then optimise decoders + colours

Steps are numbered globally (alignment steps first, then ``iters`` rendering
steps); every random choice (view, reference view of the flow loss,
multisampling factor) is a pure function of ``(seed, step)``, so a run resumed
from a checkpoint repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from geo.fileio import atomic_write, jsonable
from scenes.coherent.losses import disparity_tv, flow_consistency_loss, photometric_loss, psnr
from scenes.render import render_camera

__all__ = ["CoherentTrainer", "reconstruct", "step_random", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"


def step_random(seed: int, step: int, salt: int) -> torch.Generator:
    """A generator seeded from ``(seed, step, salt)`` only (resumable randomness)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 97 + salt) % (2**63))


def view_for_step(seed: int, step: int, n: int) -> int:
    """Views are visited in a fresh random order every ``n`` steps (as 3DGS' viewpoint stack)."""
    perm = torch.randperm(n, generator=step_random(seed, step // n, 1))
    return int(perm[step % n])


class CoherentTrainer:
    """CoherentGS optimisation state: the per-pixel Gaussians, their optimisers, and one step."""

    method = "coherent"

    def __init__(self, views, depths, flows, cfg, iters: int, seed: int = 0, background=(1.0, 1.0, 1.0)) -> None:
        from scenes.coherent.representation import PixelGaussians

        torch.manual_seed(seed)
        self.views, self.cfg, self.iters, self.seed = views, cfg, int(iters), int(seed)
        self.background = tuple(background)
        self.model = PixelGaussians(views, depths, cfg)
        self.gt = [torch.as_tensor(v.image, dtype=torch.float32) for v in views]
        self.flows = {k: (torch.as_tensor(f).permute(2, 0, 1)[None].contiguous(), torch.as_tensor(ok)[None, None])
                      for k, (f, ok) in flows.items()}
        self.align_steps = int(cfg.align_iters) if self.flows else 0
        self.total_steps = self.align_steps + self.iters
        m = self.model
        self.exposure = torch.nn.Parameter(torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).repeat(len(views), 1, 1))
        self.opt_align = torch.optim.Adam([m.align_log_scale, m.align_offset], lr=cfg.align_lr)
        groups = [
            {"params": [m.sh_dc], "lr": cfg.color_lr, "name": "sh_dc"},
            {"params": [m.sh_rest], "lr": cfg.color_lr / 20, "name": "sh_rest"},
            {"params": [m.log_scales], "lr": cfg.scale_lr, "name": "scales"},
            {"params": [m.quats], "lr": cfg.rotation_lr, "name": "quats"},
            {"params": list(m.depth_decoder.parameters()), "lr": cfg.decoder_lr, "name": "depth_decoder"},
            {"params": list(m.opacity_decoder.parameters()), "lr": cfg.opacity_decoder_lr, "name": "opacity_decoder"},
        ]
        if cfg.exposure_compensation:
            groups.append({"params": [self.exposure], "lr": cfg.exposure_lr, "name": "exposure"})
        for g in groups:
            g["base_lr"] = g["lr"]
        self.opt = torch.optim.Adam(groups, eps=1e-15)
        self.step_done = 0  # number of completed steps

    # ---------------------------------------------------------------- schedules
    def sh_degree_at(self, i: int) -> int:
        cfg = self.cfg
        t = (i - self.align_steps) / max(self.iters, 1)
        if t < cfg.sh_ramp_start:
            return 0
        return min(cfg.sh_degree, 1 + int((t - cfg.sh_ramp_start) / max(cfg.sh_ramp_every, 1e-9)))

    # ---------------------------------------------------------------- steps
    def step(self, i: int) -> dict:
        if i < self.align_steps:
            out = self._align_step(i)
        else:
            if i == self.align_steps and self.model.aligning:
                self.model.bake_alignment()
            out = self._main_step(i)
        self.step_done = i + 1
        return out

    def _align_step(self, i: int) -> dict:
        m = self.model
        m.aligning = True
        # cosine annealing (released code: CosineAnnealingLR over the alignment stage)
        lr = self.cfg.align_lr * 0.5 * (1 + math.cos(math.pi * i / max(self.align_steps, 1)))
        for g in self.opt_align.param_groups:
            g["lr"] = lr
        # every view as reference each step (the released code draws one at random): smoother, and free here
        xyz = m.xyz_maps()
        loss = sum(flow_consistency_loss(xyz, m.keep, self.flows, r, self.cfg.fb_check, m.median_depth) for r in range(m.V)) / m.V
        self.opt_align.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            self.opt_align.step()
        if i == self.align_steps - 1:
            m.bake_alignment()
        return {"loss": float(loss.detach()), "stage": "align"}

    def _main_step(self, i: int) -> dict:
        cfg, m = self.cfg, self.model
        m.aligning = False
        j = i - self.align_steps
        t = j / max(self.iters, 1)
        for g in self.opt.param_groups:  # exponential decay to 10% over the run
            g["lr"] = g["base_lr"] * (0.1 ** t) if g["name"] in ("depth_decoder", "opacity_decoder", "scales") else g["base_lr"]
        if cfg.scale_reset_every and j > 0 and j % cfg.scale_reset_every == 0 and t < cfg.sh_ramp_start:
            m.reset_scales(use_decoder=True)
        v = view_for_step(self.seed, j, m.V)
        deg = self.sh_degree_at(i)
        ss = 1
        if t >= cfg.multisample_start and cfg.multisample_max > 1:
            ss = 1 + int(torch.randint(cfg.multisample_max, (1,), generator=step_random(self.seed, i, 3)))
        z = m.depth_maps()
        means = m.means_from_depth(z)
        view = self.views[v]
        rgb, depth, alpha = render_camera(means, m.quats, torch.exp(m.log_scales), m.opacities(), m.sh(), deg,
                                          view.model, view.c2w, self.background, supersample=ss)
        pred = rgb
        if cfg.exposure_compensation:
            A = self.exposure[v]
            pred = rgb @ A[:, :3].T + A[:, 3]
        gt = self.gt[v]
        loss_rgb = photometric_loss(pred, gt, cfg.ssim_weight, cfg.l1_scales)
        loss = loss_rgb
        logs = {}
        if cfg.tv_weight > 0:
            gamma = cfg.tv_gamma_start + (1 - cfg.tv_gamma_start) * t
            tv = disparity_tv(depth, alpha, m.segments[v], gamma, m.median_depth)
            loss = loss + cfg.tv_weight * tv
            logs["tv"] = float(tv.detach())
        if cfg.flow_weight > 0 and self.flows:
            ref = int(torch.randint(m.V, (1,), generator=step_random(self.seed, i, 2)))
            fl = flow_consistency_loss(m.xyz_maps(z), m.keep, self.flows, ref, cfg.fb_check, m.median_depth)
            loss = loss + cfg.flow_weight * fl
            logs["flow"] = float(fl.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach()), "psnr": psnr(pred, gt), "stage": "main", **logs}

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "method": self.method,
            "step_done": self.step_done,
            "model": self.model.state_dict(),
            "aligning": self.model.aligning,
            "exposure": self.exposure.detach().clone(),
            "opt_align": self.opt_align.state_dict(),
            "opt": self.opt.state_dict(),
        }

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("method") != self.method:
            raise ValueError(f"checkpoint is for method {sd.get('method')!r}, not {self.method!r}")
        self.model.load_state_dict(sd["model"])
        self.model.aligning = sd["aligning"]
        with torch.no_grad():
            self.exposure.copy_(sd["exposure"])
        self.opt_align.load_state_dict(sd["opt_align"])
        self.opt.load_state_dict(sd["opt"])
        self.step_done = int(sd["step_done"])

    def cloud_arrays(self) -> dict:
        """Gaussian arrays at the SH degree reached (the decoders' current output baked in)."""
        return self.model.gaussian_arrays(self.sh_degree_at(max(self.step_done - 1, 0)) if self.step_done else 0)


# ====================================================================== the run


def build_trainer(method: str, graph, data_path, views, cfg, iters: int, seed: int, background, log=print):
    """Initialise the method's trainer on prepared ``views`` (depth init, flows, ...)."""
    if method == "coherent":
        from scenes.coherent.flow import pair_flows
        from scenes.coherent.mvs import initial_depths

        pts = None
        if "/points" in graph and getattr(graph["/points"].payload, "points", None) is not None:
            T = graph["/points"].world_transform
            pts = np.asarray(graph["/points"].payload.points, np.float64) @ T[:3, :3].T + T[:3, 3]
        t0 = time.perf_counter()
        depths, src = initial_depths(views, cfg.depth_source, pts, graph.meta, cfg.mvs_planes, cfg.mvs_window,
                                     cfg.mvs_near, cfg.mvs_far, cfg.mvs_min_confidence)
        log(f"coherent: initial depth from {src} ({time.perf_counter() - t0:.1f} s)")
        t0 = time.perf_counter()
        ds_dir = Path(graph.meta["source"]).parent if str(graph.meta.get("source", "")).endswith(".json") else None
        flows, fsrc = pair_flows(views, cfg.flow_source, ds_dir)
        log(f"coherent: optical flow from {fsrc} for {len(flows)} ordered pairs ({time.perf_counter() - t0:.1f} s)")
        tr = CoherentTrainer(views, depths, flows, cfg, iters, seed, background)
        log(f"coherent: {tr.model.num} per-pixel Gaussians, {cfg.num_segments} depth layers per view, "
            f"{tr.align_steps} alignment + {iters} training steps")
        return tr
    if method == "3dgs":
        from scenes.coherent.baseline import BaselineTrainer

        tr = BaselineTrainer(graph, views, cfg, iters, seed, background)
        log(f"3dgs: {tr.num} initial Gaussians ({tr.init_source}), {iters} training steps")
        return tr
    raise ValueError(f"unknown method {method!r}; expected 'coherent' or '3dgs'")


def reconstruct(data, out, *, method: str = "coherent", views: int = 3, iters: int = 300, resolution: int | None = 128,
                seed: int = 0, resume: bool = False, checkpoint_every: int = 100, coherent=None, baseline=None,
                data_cfg=None, exports: bool = True, progress: bool = True, log=print, stop_after: int | None = None):
    """Reconstruct ``data`` with ``method`` into the scene directory ``out``.

    ``out`` holds ``scene.json`` + payloads (cameras, ``/gaussians``), ``checkpoint.pt``,
    ``gaussians.ply`` (INRIA), ``gaussians.splat`` and ``mesh.ply`` / ``mesh.glb`` (TSDF).
    Ctrl-C saves a checkpoint and the current scene; ``resume=True`` continues from
    ``out/checkpoint.pt``. ``stop_after`` stops (with a checkpoint) after that many
    global steps — used by tests of resume.

    Returns:
        dict with ``trainer``, ``out``, ``seconds``, ``steps`` and the last step's logs.
    """
    from tqdm.auto import tqdm

    from scenes.coherent.config import BaselineConfig, CoherentConfig, DataConfig
    from scenes.coherent.views import dataset_frame_index, prepare_view, select_views
    from scenes.data import load_capture

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    coherent = coherent or CoherentConfig()
    baseline = baseline or BaselineConfig()
    data_cfg = data_cfg or DataConfig()
    cfg = coherent if method == "coherent" else baseline
    out = Path(out)
    t_start = time.perf_counter()
    graph = load_capture(data, holdout_every=data_cfg.holdout_every, holdout=list(data_cfg.holdout) or None)
    train_nodes, test_nodes = select_views(graph, views, data_cfg.view_selection)
    tviews = [prepare_view(n, resolution, data_cfg.use_masks, dataset_frame_index(graph, n)) for n in train_nodes]
    log(f"{method}: {len(tviews)} training views {[v.name for v in tviews]} at {tviews[0].width}x{tviews[0].height}, "
        f"{len(test_nodes)} held out")
    trainer = build_trainer(method, graph, data, tviews, cfg, iters, seed, data_cfg.background, log)
    ckpt_path = out / CHECKPOINT_NAME
    run_meta = {
        "method": method, "data": str(data), "views": [v.name for v in tviews], "iters": int(iters),
        "resolution": resolution, "seed": int(seed), "config": jsonable(asdict(cfg)),
        "data_config": jsonable(asdict(data_cfg)),
    }
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        sd = torch.load(ckpt_path, weights_only=False)
        if sd.get("run") and (sd["run"]["views"] != run_meta["views"] or sd["run"]["method"] != method):
            raise ValueError(f"--resume: {ckpt_path} was written for {sd['run']['method']} on views {sd['run']['views']}")
        trainer.load_state_dict(sd["trainer"])
        log(f"{method}: resumed from {ckpt_path} at step {trainer.step_done}/{trainer.total_steps}")
    else:
        out.mkdir(parents=True, exist_ok=True)

    def save_checkpoint():
        out.mkdir(parents=True, exist_ok=True)
        state = {"trainer": trainer.state_dict(), "run": run_meta}
        atomic_write(ckpt_path, lambda t: torch.save(state, t))

    last = {}
    bar = tqdm(total=trainer.total_steps, initial=trainer.step_done, desc=method, disable=not progress, dynamic_ncols=True)
    interrupted = False
    try:
        for i in range(trainer.step_done, trainer.total_steps):
            last = trainer.step(i)
            post = {"loss": f"{last['loss']:.4f}"}
            if "psnr" in last:
                post["psnr"] = f"{last['psnr']:.2f}"
            post["stage"] = last.get("stage", "")
            bar.set_postfix(post, refresh=False)
            bar.update(1)
            if checkpoint_every and (i + 1) % checkpoint_every == 0:
                save_checkpoint()
            if stop_after is not None and i + 1 >= stop_after:
                save_checkpoint()
                bar.close()
                return {"trainer": trainer, "out": out, "seconds": time.perf_counter() - t_start, "steps": i + 1, "last": last,
                        "stopped": True}
    except KeyboardInterrupt:
        interrupted = True
        bar.close()
        log(f"\n{method}: interrupted at step {trainer.step_done}; saving checkpoint and scene")
        # a second Ctrl-C must not leave a half-written checkpoint (writes are atomic anyway)
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            save_checkpoint()
        finally:
            signal.signal(signal.SIGINT, old)
    bar.close()
    seconds = time.perf_counter() - t_start
    run_meta["steps_done"] = trainer.step_done
    run_meta["seconds"] = round(seconds, 2)
    write_outputs(out, graph, train_nodes, test_nodes, tviews, trainer, run_meta, resolution, data_cfg, exports, log)
    save_checkpoint()
    if interrupted:
        log(f"{method}: resume with --resume (checkpoint {ckpt_path})")
    return {"trainer": trainer, "out": out, "seconds": seconds, "steps": trainer.step_done, "last": last,
            "stopped": interrupted}


def write_outputs(out: Path, graph, train_nodes, test_nodes, tviews, trainer, run_meta, resolution, data_cfg, exports, log):
    """Scene directory (cameras + /gaussians) and viewer exports."""
    import warnings

    from scenes import save_scene
    from scenes.coherent.views import prepare_view
    from scenes.export.ply_gaussians import finite_gaussians
    from scenes.graph import SceneGraph
    from scenes.payloads import Camera

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cloud = finite_gaussians(trainer.cloud_arrays(), "reconstruct")
    for w in caught:
        log(f"warning: {w.message}")
    g = SceneGraph(meta={"reconstruction": run_meta})
    test_views = [prepare_view(n, resolution, False) for n in test_nodes]
    for v, split in [(v, "train") for v in tviews] + [(v, "test") for v in test_views]:
        img = np.clip(np.rint(v.image * 255), 0, 255).astype(np.uint8)
        g.add(f"/cameras/{v.name}", payload=Camera(model=v.model, image=img), transform=v.c2w, meta={"split": split})
    g.add("/gaussians", payload=cloud, meta={"method": run_meta["method"]})
    # save_scene replaces the directory: keep the checkpoint across it
    ckpt = out / CHECKPOINT_NAME
    blob = ckpt.read_bytes() if ckpt.is_file() else None
    if out.exists() and not (out / "scene.json").exists():
        for p in out.iterdir():
            if p.name in (CHECKPOINT_NAME, "gaussians.ply", "gaussians.splat", "mesh.ply", "mesh.glb") and p.is_file():
                p.unlink()
    save_scene(g, out)
    if blob is not None:
        (out / CHECKPOINT_NAME).write_bytes(blob)
    log(f"{run_meta['method']}: scene with {cloud.num} Gaussians and {len(tviews) + len(test_views)} cameras saved to {out}")
    if not exports:
        return
    from scenes.export.ply_gaussians import write_gaussian_ply
    from scenes.export.splat import write_splat
    from scenes.export.mesh import write_mesh_file
    from scenes.export.tsdf import tsdf_mesh

    write_gaussian_ply(out / "gaussians.ply", cloud)
    write_splat(out / "gaussians.splat", cloud)
    try:
        mesh = tsdf_mesh(cloud, [(v.model, v.c2w) for v in tviews + test_views], background=data_cfg.background)
        write_mesh_file(out / "mesh.ply", mesh)
        write_mesh_file(out / "mesh.glb", mesh)
        log(f"{run_meta['method']}: exports gaussians.ply, gaussians.splat, mesh.ply/.glb ({mesh.num_faces} faces)")
    except ValueError as e:
        log(f"{run_meta['method']}: TSDF mesh skipped: {e}")
