"""Train the DiffuMatch spectral prior (:mod:`.prior`) on our generated maps (:mod:`.data`).

    python -m geo.fmaps.diffumatch.train --out assets/fmaps/diffumatch_prior.pt

builds (or loads from ``--data-cache``) the ``|C|`` training maps, fits the VP loss
(EDM Table 1) with AdamW, warm-up + cosine learning rate, an EMA of the weights, a tqdm
progress bar, periodic atomic checkpoints (the EMA model at ``--out``, the full training
state at ``--state``) and ``--resume`` from that state. The run stops at ``--steps``
or after ``--minutes`` of training, whichever comes first.

Paper (official config ``dfaust_fmap.yaml``): batch 256, lr 1e-3, EMA half-life 500
samples, DiT-S/4, GPU. Ours: CPU-sized model and budget (see :mod:`.prior`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .prior import PriorConfig


@dataclass
class PriorTrainConfig:
    """Training settings; every field is a command-line flag (tyro)."""

    out: str = "assets/fmaps/diffumatch_prior.pt"
    """where the EMA model is written (the shipped prior)"""
    state: str = "out/diffumatch/train_state.pt"
    """full training state (weights, EMA, optimiser, step) for --resume"""
    data_cache: str = "out/diffumatch/fmaps_k30.npz"
    """npz cache of the generated maps (rebuilt when its settings differ)"""
    resume: bool = False
    n_maps: int = 3600
    n_variants: int = 9
    n_vertices: int = 2000
    p_remesh: float = 0.4
    strength: tuple[float, float] = (0.1, 0.9)
    prior: PriorConfig = field(default_factory=PriorConfig)
    """the denoiser's architecture and noise schedule (saved in the checkpoint)"""
    steps: int = 4000
    minutes: float = 18.0
    batch: int = 128
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 1e-4
    ema_halflife: float = 150.0
    """EMA half-life in steps"""
    val_fraction: float = 0.05
    checkpoint_every: int = 500
    threads: int = 2
    seed: int = 0


def _val_figures(model, val, sigmas=(0.05, 0.1, 0.2, 0.5, 1.0), seed: int = 0) -> dict:
    """``‖D(x) − C‖ / ‖x − C‖`` (mean over maps) on held-back maps at a few σ (units of |C|)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for s in sigmas:
            x = val + s * torch.randn(val.shape, generator=g)
            d = model(x, s)
            out[str(s)] = round(float(((d - val).flatten(1).norm(dim=1) / (x - val).flatten(1).norm(dim=1)).mean()), 4)
    return out


def train(cfg: PriorTrainConfig, argv: list[str] | None = None) -> dict:
    import torch
    from tqdm import tqdm

    from ._training import ema_update, load_train_state, save_train_state, warmup_cosine_lr
    from .data import HELDOUT, build_dataset
    from .prior import build_prior, save_prior

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    data = build_dataset(cfg.n_maps, cfg.prior.k, cfg.seed, cfg.n_variants, cfg.p_remesh, cfg.strength, cfg.n_vertices, cache=cfg.data_cache)
    maps = torch.as_tensor(data["maps"], dtype=torch.float32)
    rng = np.random.default_rng(cfg.seed)
    perm = torch.as_tensor(rng.permutation(len(maps)))
    n_val = max(int(cfg.val_fraction * len(maps)), 8)
    val, tr = maps[perm[:n_val]], maps[perm[n_val:]]
    data_s = time.time() - t0
    print(f"{len(maps)} maps ({data['meta']['maps_per_shape']}), data {data_s:.0f}s", flush=True)

    model = build_prior(cfg.prior)
    with torch.no_grad():
        model.mean.copy_(tr.mean(0))
        model.scale.copy_((tr - tr.mean(0)).std())
    ema = build_prior(cfg.prior)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, train_s, history = 0, 0.0, []
    if cfg.resume:
        step, train_s, history = load_train_state(cfg.state, model=model, ema=ema, opt=opt)

    command = "python -m geo.fmaps.diffumatch.train " + " ".join(argv if argv is not None else sys.argv[1:])
    t_max = float(model.t_of_sigma(torch.tensor(cfg.prior.sigma_max)))

    def meta(partial: bool) -> dict:
        return dict(
            command=command,
            config=asdict(cfg),
            steps=step,
            train_minutes=round(train_s / 60, 2),
            data=data["meta"],
            heldout_shapes=list(HELDOUT),
            loss=history[-1] if history else None,
            n_params=sum(p.numel() for p in model.parameters()),
            preconditioning="EDM Table 1, VP",
            partial=partial,
        )

    def checkpoint(partial: bool):
        save_prior(cfg.out, ema, meta(partial))
        save_train_state(cfg.state, step, train_s, history, model=model, ema=ema, opt=opt)

    bar = tqdm(total=cfg.steps, initial=step, desc="prior", unit="step")
    run_ema = None
    t_start = time.time() - train_s
    while step < cfg.steps and (time.time() - t_start) < cfg.minutes * 60:
        lr = warmup_cosine_lr(step, cfg.steps, cfg.warmup, cfg.lr)
        for gr in opt.param_groups:
            gr["lr"] = lr
        x = tr[torch.randint(len(tr), (cfg.batch,))]
        xn = (x - model.mean) / model.scale
        t = cfg.prior.eps_t + torch.rand(cfg.batch) * (t_max - cfg.prior.eps_t)
        sn = model.sigma_of_t(t)
        noisy = xn + sn.view(-1, 1, 1) * torch.randn_like(xn)
        d = model.denoise_normalized(noisy, sn)
        loss = (((d - xn) ** 2) / sn.view(-1, 1, 1) ** 2).mean()  # VP loss, λ(σ) = 1/σ²
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, step, cfg.ema_halflife)
        step += 1
        train_s = time.time() - t_start
        run_ema = float(loss) if run_ema is None else 0.98 * run_ema + 0.02 * float(loss)
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{run_ema:.4f}", lr=f"{lr:.1e}")
        if step % 100 == 0:
            history.append(dict(step=step, loss=round(run_ema, 5), minutes=round(train_s / 60, 2)))
        if step % cfg.checkpoint_every == 0:
            checkpoint(partial=True)
    bar.close()
    if not history or history[-1]["step"] != step:
        history.append(dict(step=step, loss=round(run_ema or float("nan"), 5), minutes=round(train_s / 60, 2)))
    ema.eval()
    figs = _val_figures(ema, val)
    checkpoint(partial=False)
    final = meta(False)
    final["val_denoise_ratio"] = figs  # ‖D(x)−C‖/‖x−C‖ on held-back training-distribution maps
    save_prior(cfg.out, ema, final)
    print(json.dumps({"done": True, "steps": step, "train_minutes": final["train_minutes"], "loss": history[-1], "val_denoise_ratio": figs}), flush=True)
    return final


def main(argv: list[str] | None = None) -> None:
    import tyro

    cfg = tyro.cli(PriorTrainConfig, args=argv, description=__doc__)
    train(cfg, argv)


if __name__ == "__main__":
    main()
