"""Train the learned eigenbasis network (CPU friendly).

    python -m geo.spectral.train --out assets/spectral/learned_eigenbasis.pt --minutes 42 --points 1024,1536,2048

Each step draws a batch of training clouds (see :mod:`geo.spectral.shapes`; the cactus
family is held out), runs :class:`~geo.spectral.learned.PointSpectralNet`, QR, and
minimises the closed-form expectation of the nested probe reconstruction error
(:func:`~geo.spectral.learned.expected_nested_loss`) with per-level weights
``1 / EMA(err_k)`` (same optimum, better conditioned for the high levels).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class TrainConfig:
    out: str = "assets/spectral/learned_eigenbasis.pt"
    minutes: float = 40.0
    max_steps: int = 10**9
    points: str = "1024,1536,2048"  # cloud sizes; a batch shares one size
    k: int = 30
    width: int = 96
    n_diffusion: int = 1
    batch: int = 4
    pool: int = 192
    refresh_every: int = 25
    refresh_count: int = 8
    lr: float = 2e-3
    t_min: float = 0.015
    t_max: float = 0.06
    threads: int = 1
    seed: int = 0
    data: str | None = None
    log_every: int = 25
    save_every_s: float = 120.0


def make_item(points: np.ndarray, t: float, rng: np.random.Generator, augment: bool = True):
    """One training cloud: canonical points, kNN, smoother, steps, ``tr(S^{2n})``."""
    import torch

    from .learned import KNN, ProbeSmoother, canonicalize, knn_graph

    x, _, _, _ = canonicalize(points)
    if augment:  # robustness to canonicalisation: random axis flips and a small rotation
        x = x * rng.choice([-1.0, 1.0], size=3)
        a = rng.normal(size=3) * 0.15
        K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        from scipy.linalg import expm

        x = x @ expm(K).T
    idx, dist = knn_graph(x, KNN)
    sm = ProbeSmoother(x, idx, dist)
    n = sm.n_steps(t)
    g = sm.probes(64, t, rng)
    trace = 3.0 * float((g**2).sum(axis=0).mean())  # E‖S^n u‖² = tr(S^{2n}) / 3 for u ~ U[-1, 1]
    coo = sm.S.tocoo()
    return {
        "x": torch.as_tensor(x, dtype=torch.float32),
        "idx": torch.as_tensor(idx, dtype=torch.int64),
        "rows": torch.as_tensor(coo.row, dtype=torch.int64),
        "cols": torch.as_tensor(coo.col, dtype=torch.int64),
        "vals": torch.as_tensor(coo.data, dtype=torch.float32),
        "n": n,
        "t": n * sm.t_step,
        "P": sm.P,
        "t_step": sm.t_step,
        "trace": trace,
    }


def batch_forward(model, items, level_weights=None):
    """Loss on a list of items with equal N: ``(loss, err [B, K], mu [B, K])``."""
    import torch

    from .learned import expected_nested_loss, make_diffuser, orthonormal_basis

    x = torch.stack([it["x"] for it in items])
    idx = torch.stack([it["idx"] for it in items])
    B, N, _ = x.shape
    diffuse = None
    if model.cfg.n_diffusion:
        diffuse = make_diffuser([it["P"] for it in items], [it["t_step"] for it in items], model.cfg.diffusion_times)
    Q = orthonormal_basis(model(x, idx, diffuse))  # [B, N, K]
    K = Q.shape[-1]
    rows = torch.cat([it["rows"] + b * N for b, it in enumerate(items)])
    cols = torch.cat([it["cols"] + b * N for b, it in enumerate(items)])
    vals = torch.cat([it["vals"] for it in items])
    S = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (B * N, B * N), check_invariants=False).coalesce()
    steps = torch.tensor([it["n"] for it in items])
    Y = Q.reshape(B * N, K)
    for i in range(int(steps.max())):
        active = (steps > i).repeat_interleave(N).unsqueeze(-1)
        Y = torch.where(active, torch.sparse.mm(S, Y), Y)
    trace = torch.tensor([it["trace"] for it in items], dtype=Q.dtype)
    return expected_nested_loss(Q, Y.reshape(B, N, K), trace, level_weights)


def train(cfg: TrainConfig, argv: list[str] | None = None) -> dict:
    import torch

    from .learned import NetConfig, PointSpectralNet, save_checkpoint
    from .shapes import TrainingShapes

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    shapes = TrainingShapes(cfg.data, seed=cfg.seed)
    t0 = time.time()

    sizes = [int(v) for v in str(cfg.points).split(",")]

    def new_item(i):
        return make_item(shapes.next(sizes[i % len(sizes)]), float(rng.uniform(cfg.t_min, cfg.t_max)), rng)

    pool = [new_item(i) for i in range(cfg.pool)]
    print(f"pool of {cfg.pool} clouds x {sizes} points built in {time.time() - t0:.1f}s", flush=True)
    model = PointSpectralNet(NetConfig(k=cfg.k, width=cfg.width, n_diffusion=cfg.n_diffusion))
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    budget = cfg.minutes * 60.0
    ema = None
    step, last_save = 0, time.time()
    history = []
    command = "python -m geo.spectral.train " + " ".join(argv if argv is not None else sys.argv[1:])
    t_train = time.time()
    while step < cfg.max_steps and time.time() - t_train < budget:
        frac = min((time.time() - t_train) / budget, 1.0)
        lr = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))) * min(1.0, (step + 1) / 100)
        for gparam in opt.param_groups:
            gparam["lr"] = lr
        group = np.arange(int(rng.integers(len(sizes))), len(pool), len(sizes))  # same-size clouds
        items = [pool[i] for i in rng.choice(group, cfg.batch, replace=False)]
        w = None if ema is None else (1.0 / ema) / (1.0 / ema).mean()
        loss, err, _ = batch_forward(model, items, w)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        e = err.detach().mean(0).clamp_min(1e-6)
        ema = e if ema is None else 0.95 * ema + 0.05 * e
        step += 1
        if step % cfg.refresh_every == 0:
            for i in rng.choice(len(pool), cfg.refresh_count, replace=False):
                pool[i] = new_item(i)
        if step % cfg.log_every == 0:
            rec = {
                "step": step,
                "min": round((time.time() - t_train) / 60, 2),
                "loss_unweighted": round(float(err.detach().mean()), 5),
                "err_k10": round(float(e[min(9, cfg.k - 1)]), 5),
                "err_k30": round(float(e[-1]), 5),
                "lr": round(lr, 6),
            }
            history.append(rec)
            print(json.dumps(rec), flush=True)
        if time.time() - last_save > cfg.save_every_s:
            save_checkpoint(cfg.out, model, {"command": command, "steps": step, "partial": True})
            last_save = time.time()
    wall = time.time() - t0
    extra = {
        "command": command,
        "steps": step,
        "wall_time_s": round(wall, 1),
        "points_per_cloud": sizes,
        "batch": cfg.batch,
        "heldout_family": "cactus",
        "n_params": n_params,
        "final": history[-1] if history else None,
    }
    save_checkpoint(cfg.out, model, extra)
    print(json.dumps({"done": True, **extra}), flush=True)
    return extra


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, val in TrainConfig().__dict__.items():
        typ = type(val) if val is not None else str
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=val)
    args = p.parse_args(argv)
    train(TrainConfig(**vars(args)), argv)


if __name__ == "__main__":
    main()
