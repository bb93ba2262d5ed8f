"""Plain 3D Gaussian Splatting (Kerbl et al., SIGGRAPH 2023) on the project's renderer: the baseline.

Free means, scales, rotations, opacities and SH; L1 + D-SSIM; densification and
pruning by gsplat's ``DefaultStrategy`` (its strategy code is plain torch and runs
on CPU with the meta that :func:`geo.raster.rasterize` returns). Initialised from
the dataset's SfM points, or else from random points: each on a random training
pixel's ray at a depth uniform in inverse depth over the scene's depth range, with
that pixel's colour (a generous random init: it knows the rays, not the depths).

Departures from 3DGS' schedule, for CPU-length runs (hundreds of steps, not 30k):
learning rates are multiplied by ``lr_boost``, and densification windows, SH ramp
and the position-rate decay are fractions of ``--iters``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from scenes.coherent.losses import photometric_loss, psnr
from scenes.render import render_camera
from scenes.payloads import SH_C0

__all__ = ["BaselineTrainer"]


class BaselineTrainer:
    method = "3dgs"

    def __init__(self, graph, views, cfg, iters: int, seed: int = 0, background=(1.0, 1.0, 1.0)) -> None:
        from gsplat.strategy import DefaultStrategy

        from scenes.coherent.mvs import depth_range

        torch.manual_seed(seed)
        self.views, self.cfg, self.iters, self.seed = views, cfg, int(iters), int(seed)
        self.total_steps = self.iters
        self.background = tuple(background)
        self.gt = [torch.as_tensor(v.image, dtype=torch.float32) for v in views]
        rng = np.random.default_rng(seed)
        pts = cols = None
        if cfg.init in ("auto", "sfm") and "/points" in graph:
            pc = graph["/points"].payload
            pts = np.asarray(pc.points, np.float64) @ graph["/points"].world_transform[:3, :3].T + graph["/points"].world_transform[:3, 3]
            cols = np.asarray(pc.colors, np.float64) / 255.0 if getattr(pc, "colors", None) is not None else rng.random((len(pts), 3))
            self.init_source = "sfm"
        if pts is None:
            if cfg.init == "sfm":
                raise ValueError("baseline init='sfm' but the dataset has no SfM points at /points")
            near, far = depth_range(views, None, graph.meta)
            n = cfg.num_random
            vi = rng.integers(len(views), size=n)
            P, C = [], []
            for k, v in enumerate(views):
                sel = vi == k
                m = sel.sum()
                if not m:
                    continue
                ok = np.flatnonzero(v.mask.reshape(-1)) if v.mask is not None else np.arange(v.height * v.width)
                pix = ok[rng.integers(len(ok), size=m)]
                i, j = pix // v.width, pix % v.width
                inv = rng.uniform(1.0 / far, 1.0 / near, size=m)
                z = 1.0 / inv
                d = np.stack([(j + 0.5 - v.model.cx) / v.model.fx, (i + 0.5 - v.model.cy) / v.model.fy, np.ones(m)], 1)
                P.append((d * z[:, None]) @ v.c2w[:3, :3].T + v.c2w[:3, 3])
                C.append(v.image[i, j])
            pts, cols = np.concatenate(P), np.concatenate(C)
            self.init_source = f"random ({n} points on training rays)"
        centres = np.stack([v.c2w[:3, 3] for v in views])
        self.scene_scale = float(np.linalg.norm(centres - centres.mean(0), axis=1).max() * 1.1) or 1.0
        self.params = self._init_params(pts, cols)
        self.strategy = DefaultStrategy(
            grow_grad2d=cfg.grow_grad2d,
            refine_start_iter=int(cfg.refine_start * iters),
            refine_stop_iter=int(cfg.refine_stop * iters) if cfg.densify else 0,
            refine_every=cfg.refine_every,
            reset_every=cfg.reset_every,
            verbose=False,
        )
        self.optimizers = self._make_optimizers()
        self.strategy.check_sanity(self.params, self.optimizers)
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene_scale)
        self.step_done = 0

    # ------------------------------------------------------------------ setup
    def _init_params(self, pts, cols) -> torch.nn.ParameterDict:
        from scipy.spatial import cKDTree

        cfg = self.cfg
        n = len(pts)
        k = min(4, n)
        dist, _ = cKDTree(pts).query(pts, k=k)
        s = np.sqrt(np.mean(dist[:, 1:] ** 2, axis=1)) if n > 1 else np.full(n, 0.01)
        s = np.maximum(s, 1e-7)
        sh = np.zeros((n, (cfg.sh_degree + 1) ** 2, 3), np.float32)
        sh[:, 0] = (cols - 0.5) / SH_C0
        quats = np.zeros((n, 4), np.float32)
        quats[:, 0] = 1
        f = lambda a: torch.nn.Parameter(torch.as_tensor(np.asarray(a), dtype=torch.float32))  # noqa: E731
        return torch.nn.ParameterDict({
            "means": f(pts),
            "scales": f(np.log(s)[:, None].repeat(3, 1)),
            "quats": f(quats),
            "opacities": f(np.full(n, math.log(cfg.init_opacity / (1 - cfg.init_opacity)))),
            "sh0": f(sh[:, :1]),
            "shN": f(sh[:, 1:]),
        })

    def _lrs(self) -> dict:
        c, b = self.cfg, self.cfg.lr_boost
        return {"means": c.means_lr * self.scene_scale * b, "scales": c.scale_lr * b, "quats": c.rotation_lr * b,
                "opacities": c.opacity_lr * b, "sh0": c.color_lr * b, "shN": c.color_lr * b / 20}

    def _make_optimizers(self) -> dict:
        lrs = self._lrs()
        return {k: torch.optim.Adam([{"params": [p], "lr": lrs[k], "name": k}], eps=1e-15) for k, p in self.params.items()}

    @property
    def num(self) -> int:
        return int(self.params["means"].shape[0])

    def sh_degree_at(self, i: int) -> int:
        return min(self.cfg.sh_degree, int(i / max(self.cfg.sh_ramp_every * self.iters, 1)))

    # ------------------------------------------------------------------ step
    def step(self, i: int) -> dict:
        from scenes.coherent.train import view_for_step

        p = self.params
        # 3DGS: position rate decays exponentially to 1% over the run
        lr0 = self._lrs()["means"]
        for g in self.optimizers["means"].param_groups:
            g["lr"] = lr0 * (0.01 ** (i / max(self.iters, 1)))
        v = view_for_step(self.seed, i, len(self.views))
        view = self.views[v]
        deg = self.sh_degree_at(i)
        sh = torch.cat([p["sh0"], p["shN"]], 1)
        rgb, depth, alpha, meta = render_camera(
            p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]), sh, deg,
            view.model, view.c2w, self.background, return_meta=True,
        )
        gt = self.gt[v]
        loss = photometric_loss(rgb, gt, self.cfg.ssim_weight, 1)
        if self.cfg.densify:
            self.strategy.step_pre_backward(p, self.optimizers, self.strategy_state, i, meta)
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in self.optimizers.values():
            o.step()
        if self.cfg.densify:
            self.strategy.step_post_backward(p, self.optimizers, self.strategy_state, i, meta, packed=False)
        self.step_done = i + 1
        return {"loss": float(loss.detach()), "psnr": psnr(rgb, gt), "n": self.num, "stage": f"n={self.num}"}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "method": self.method,
            "step_done": self.step_done,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "strategy_state": {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self.strategy_state.items()},
        }

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("method") != self.method:
            raise ValueError(f"checkpoint is for method {sd.get('method')!r}, not {self.method!r}")
        self.params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in sd["params"].items()})
        self.optimizers = self._make_optimizers()
        for k, o in self.optimizers.items():
            o.load_state_dict(sd["optimizers"][k])
        self.strategy_state = dict(sd["strategy_state"])
        self.step_done = int(sd["step_done"])

    def cloud_arrays(self) -> dict:
        p = self.params
        k = (self.sh_degree_at(max(self.step_done - 1, 0)) + 1) ** 2
        return {
            "means": p["means"].detach().numpy().astype(np.float32),
            "quats": p["quats"].detach().numpy().astype(np.float32),
            "log_scales": p["scales"].detach().numpy().astype(np.float32),
            "opacity_logits": p["opacities"].detach().numpy().astype(np.float32),
            "sh": torch.cat([p["sh0"], p["shN"]], 1)[:, :k].detach().numpy().astype(np.float32),
        }
