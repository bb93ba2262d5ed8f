"""Train the DiffuMatch feature network offline, on our generated pairs, with the prior.

    python -m geo.fmaps.diffumatch.train_features --out assets/fmaps/diffumatch_features.pt

This is the paper's main (trained) setting: a DiffusionNet feature extractor is trained
*without correspondence labels* on a collection of shapes, with the prior replacing the
hand-made regularisers — the distilled mask in the row-wise solve, the SDS loss on the
map and the "proper map" loss (:func:`geo.fmaps.diffumatch.matching.pair_loss`, the same
objective the zero-shot mode optimises per pair). At test time the trained network's
features go straight into the distilled-mask solve and ZoomOut: one forward pass instead
of a per-pair optimisation (``DiffuMatchConfig(mode="trained")``, the default of
:func:`geo.match`).

Training shapes (:func:`build_shapes`; cached in ``--shape-cache``): groups of random
near-isometric deformations of one base shape — the bunny of the shared data and the
primitives of :func:`geo.spectral.shapes.primitives`, as for the prior
(:mod:`.data`), some remeshed, a fraction of the groups given as bare point clouds
(robust Laplacian, point-cloud operators). Pairs are drawn within a group (the paper
trains on pairs of one category). Spot and the cactus — the benchmark's shapes — are
held out. The point maps between the variants are known and used **only** to report
the validation error on held-back groups, never in the loss.

Departures from the paper: our deformation collection instead of FAUST/SCAPE/SMAL
training sets; WKS input instead of xyz (pose independence,
:mod:`geo.fmaps.diffumatch.matching`); the orientation term of Ren et al. 2018 in the
objective; a CPU budget (``--minutes``) and an EMA of the weights. The run shows a
progress bar, writes the EMA network to ``--out`` and the full state to ``--state``
every ``--checkpoint-every`` steps (atomically), and ``--resume`` continues from the
state.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geo.fmaps.config import DiffuMatchConfig


@dataclass
class FeatureTrainConfig:
    """Training settings; every field is a command-line flag (tyro)."""

    out: str = "assets/fmaps/diffumatch_features.pt"
    """where the EMA network is written (the shipped feature network)"""
    state: str = "out/diffumatch/features_state.pt"
    """full training state (weights, EMA, optimiser, step) for --resume"""
    shape_cache: str = "out/diffumatch/feature_shapes.pt"
    """cache of the generated training shapes (rebuilt when its settings differ)"""
    resume: bool = False
    n_groups: int = 32
    """groups of deformed copies of one base shape"""
    n_variants: int = 6
    """deformed copies per group (plus the undeformed base)"""
    n_vertices: int = 1500
    p_remesh: float = 0.4
    p_cloud: float = 0.35
    """fraction of the groups given as point clouds"""
    strength: tuple[float, float] = (0.1, 0.9)
    val_groups: int = 3
    """groups held back to report the validation error"""
    k: int = 30
    match: DiffuMatchConfig = field(default_factory=DiffuMatchConfig)
    """the network's architecture and the objective's settings (saved with the network)"""
    steps: int = 3000
    minutes: float = 30.0
    pairs_per_step: int = 2
    lr: float = 1e-3
    warmup: int = 100
    ema_halflife: float = 100.0
    """EMA half-life in steps"""
    val_every: int = 250
    checkpoint_every: int = 250
    threads: int = 2
    seed: int = 0


# ----------------------------------------------------------------------------------
# training shapes
# ----------------------------------------------------------------------------------
def build_shapes(cfg: FeatureTrainConfig, progress: bool = True) -> dict:
    """Groups of deformed variants: ``{"groups": [{"name", "cloud", "variants": [{"v", "f",
    "to_base", "from_base"}]}], "settings": {...}}`` (torch tensors, cached in ``cfg.shape_cache``).

    ``to_base [Ni]`` maps a variant's vertices to the base's, ``from_base [Nb]`` the base's
    to the variant's, so variant ``j → i`` is ``from_base_i[to_base_j]``.
    """
    import torch

    from geo.fileio import atomic_write

    from .data import HELDOUT, base_shapes, deformed_variants

    settings = dict(n_groups=cfg.n_groups, n_variants=cfg.n_variants, n_vertices=cfg.n_vertices, p_remesh=cfg.p_remesh,
                    p_cloud=cfg.p_cloud, strength=list(cfg.strength), seed=cfg.seed)
    cache = Path(cfg.shape_cache) if cfg.shape_cache else None
    if cache is not None and cache.exists():
        data = torch.load(cache, map_location="cpu", weights_only=True)
        if json.loads(data["settings"]) == settings:
            return data
    rng = np.random.default_rng(cfg.seed + 1)  # not the prior's stream: other deformations
    groups = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.n_groups, desc="shapes", unit="group")
    for name, v, f in base_shapes(rng, primitive_vertices=cfg.n_vertices, bunny_faces=2 * cfg.n_vertices):
        if len(groups) >= cfg.n_groups:
            break
        assert name not in HELDOUT
        variants = [dict(v=torch.as_tensor(a), f=torch.as_tensor(b), to_base=torch.as_tensor(t), from_base=torch.as_tensor(fr))
                    for a, b, t, fr in deformed_variants(v, f, rng, cfg.n_variants, cfg.p_remesh, cfg.strength)]
        groups.append(dict(name=name, cloud=bool(rng.random() < cfg.p_cloud), variants=variants))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    data = dict(groups=groups, settings=json.dumps(settings))
    if cache is not None:
        atomic_write(cache, lambda p: torch.save(data, p))
    return data


def prepare_group(group: dict, cfg: FeatureTrainConfig):
    """``[(PreparedShape, ShapeInputs), ...]`` of a group's variants, as :func:`geo.match`
    prepares them (unit area, cotan or — for point-cloud groups — robust Laplacian)."""
    from geo.fmaps.api import _prepare

    from .matching import shape_inputs

    k_basis = max(cfg.match.k_operators, cfg.match.proper_k, cfg.k)
    out = []
    for i, var in enumerate(group["variants"]):
        f = None if group["cloud"] else var["f"].numpy()
        s = _prepare(var["v"].numpy(), f, f"{group['name']}[{i}]", k_basis, "robust" if group["cloud"] else "cotan")
        out.append((s, shape_inputs(s, cfg.k, cfg.match, seed=i)))
    return out


def _gt_21(group: dict, i: int, j: int) -> np.ndarray:
    """Ground truth ``target j → source i`` on the input indexing."""
    vi, vj = group["variants"][i], group["variants"][j]
    return vi["from_base"].numpy()[vj["to_base"].numpy()]


def validation_error(net, val: list, prior, cfg: FeatureTrainConfig, wks: bool = False) -> float:
    """Mean Euclidean error (unit-area units) of the k-sized distilled-mask solve's point map
    on the validation pairs; ``wks=True``: of the WKS input's least-squares map instead."""
    import torch

    from geo.fmaps.convert import fmap_to_p2p

    from .matching import _lstsq_maps, masked_solves, normalise_orientation, pair_features

    g = torch.Generator().manual_seed(0)
    errs = []
    net.eval()
    with torch.no_grad():
        for group, prepared, i, j in val:
            (si, ai), (sj, aj) = prepared[i], prepared[j]
            a, b = normalise_orientation(ai, aj)
            if wks:
                C = _lstsq_maps(a.proj @ a.x, b.proj @ b.x)[0].double()
            else:
                C = masked_solves(*pair_features(net, a, b, cfg.match.bf16), prior, cfg.match, g)[0]
            p2p = fmap_to_p2p(C, torch.as_tensor(si.basis[:, : cfg.k]), torch.as_tensor(sj.basis[:, : cfg.k])).numpy()
            gt = _gt_21(group, i, j)[sj.work_ids]  # target working vertex -> source input vertex
            pred = si.work_ids[p2p]
            v = group["variants"][i]["v"].numpy() * si.scale
            errs.append(float(np.linalg.norm(v[pred] - v[gt], axis=1).mean()))
    net.train()
    return float(np.mean(errs))


# ----------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------
def save_features(path, net, cfg: DiffuMatchConfig, meta: dict | None = None) -> Path:
    """Atomically write a feature checkpoint (architecture, float32 weights, JSON-able ``meta``)."""
    import torch

    from geo.fileio import atomic_write, jsonable

    from .matching import ARCH_FIELDS

    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    arch = {f: getattr(cfg, f) for f in ARCH_FIELDS}
    payload = {"kind": "diffumatch-features", "arch": arch, "state_dict": state, "meta": json.dumps(jsonable(meta or {}))}
    return atomic_write(path, lambda p: torch.save(payload, p))


def train(cfg: FeatureTrainConfig, argv: list[str] | None = None) -> dict:
    import copy

    import torch
    from tqdm import tqdm

    from ._training import ema_update, load_train_state, save_train_state, warmup_cosine_lr
    from .data import HELDOUT
    from .matching import build_network, normalise_orientation, pair_features, pair_loss, proper_targets
    from .prior import load_prior

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    data = build_shapes(cfg)
    groups = data["groups"]
    if len(groups) <= cfg.val_groups:
        raise ValueError(f"--n-groups ({len(groups)}) must exceed --val-groups ({cfg.val_groups})")
    prepared = [prepare_group(gr, cfg) for gr in tqdm(groups, desc="operators", unit="group")]
    rng = np.random.default_rng(cfg.seed)
    # validation groups: shapes without symmetries first (the bunny, random blobs), on which
    # the Euclidean error of a map is meaningful; a symmetric primitive's flipped map is not wrong
    order = sorted(range(len(groups)), key=lambda gi: (groups[gi]["name"] not in ("bunny", "blob"), gi))
    val_ids = order[: cfg.val_groups]
    val = []
    for gi in val_ids:
        for _ in range(4):
            i, j = rng.choice(len(prepared[gi]), 2, replace=False)
            val.append((groups[gi], prepared[gi], int(i), int(j)))
    train_ids = [gi for gi in range(len(groups)) if gi not in val_ids]
    data_s = time.time() - t0
    print(f"{len(groups)} groups ({sum(len(p) for p in prepared)} shapes; validation: {[groups[gi]['name'] for gi in val_ids]}), "
          f"data {data_s:.0f}s", flush=True)

    prior = load_prior(cfg.match.prior)
    net = build_network(cfg.match)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    step, train_s, history = 0, 0.0, []
    if cfg.resume:
        step, train_s, history = load_train_state(cfg.state, net=net, ema=ema, opt=opt)
        rng = np.random.default_rng([cfg.seed, step])
    val_wks = validation_error(net, val, prior, cfg, wks=True)
    print(f"validation error of the WKS input's least-squares maps: {val_wks:.5f}", flush=True)
    command = "python -m geo.fmaps.diffumatch.train_features " + " ".join(argv if argv is not None else sys.argv[1:])

    def meta(partial: bool) -> dict:
        return dict(command=command, config=asdict(cfg), steps=step, train_minutes=round(train_s / 60, 2),
                    groups={gr["name"]: sum(1 for x in groups if x["name"] == gr["name"]) for gr in groups},
                    point_cloud_groups=sum(gr["cloud"] for gr in groups), heldout_shapes=list(HELDOUT),
                    val_error_wks=round(val_wks, 5), history=history[-1:] if history else None, partial=partial)

    def checkpoint(partial: bool):
        save_features(cfg.out, ema, cfg.match, meta(partial))
        save_train_state(cfg.state, step, train_s, history, net=net, ema=ema, opt=opt)

    bar = tqdm(total=cfg.steps, initial=step, desc="features", unit="step")
    run = None
    t_start = time.time() - train_s
    net.train()
    try:
        while step < cfg.steps and (time.time() - t_start) < cfg.minutes * 60:
            lr = warmup_cosine_lr(step, cfg.steps, cfg.warmup, cfg.lr)
            for gr in opt.param_groups:
                gr["lr"] = lr
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(cfg.pairs_per_step):
                gi = train_ids[int(rng.integers(len(train_ids)))]
                i, j = rng.choice(len(prepared[gi]), 2, replace=False)
                a, b = normalise_orientation(prepared[gi][i][1], prepared[gi][j][1])
                A, B = pair_features(net, a, b, cfg.match.bf16)
                targets = proper_targets(A, B, a, b, prior, cfg.match, cfg.k, g)
                loss, _ = pair_loss(A, B, a, b, prior, cfg.match, targets, g)
                (loss / cfg.pairs_per_step).backward()
                total += float(loss.detach()) / cfg.pairs_per_step
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            ema_update(ema, net, step, cfg.ema_halflife)
            step += 1
            train_s = time.time() - t_start
            run = total if run is None else 0.98 * run + 0.02 * total
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{run:.4f}", lr=f"{lr:.1e}")
            if step % cfg.val_every == 0:
                err = validation_error(ema, val, prior, cfg)
                history.append(dict(step=step, loss=round(run, 5), val_error=round(err, 5), minutes=round(train_s / 60, 2)))
                bar.write(json.dumps(history[-1]))
            if step % cfg.checkpoint_every == 0:
                checkpoint(partial=True)
    except KeyboardInterrupt:
        bar.write("interrupted: writing a checkpoint (continue with --resume)")
        checkpoint(partial=True)
        raise
    bar.close()
    err = validation_error(ema, val, prior, cfg)
    history.append(dict(step=step, loss=round(run or float("nan"), 5), val_error=round(err, 5), minutes=round(train_s / 60, 2)))
    checkpoint(partial=False)
    print(json.dumps({"done": True, "steps": step, "val_error": round(err, 5), "val_error_wks": round(val_wks, 5),
                      "train_minutes": round(train_s / 60, 2)}), flush=True)
    return meta(False)


def main(argv: list[str] | None = None) -> None:
    import tyro

    cfg = tyro.cli(FeatureTrainConfig, args=argv, description=__doc__)
    train(cfg, argv)


if __name__ == "__main__":
    main()
