"""Stage 3 of Vox-E (Sec. 4.3): local edits by attention grids and a 3D graph cut.

1. Two attention grids, ``A_edit`` and ``A_obj`` (logits, ``sigmoid`` after trilinear
   interpolation), are volume-rendered through the *frozen* edited density (the same
   compositing weights as the colour) and fitted to the UNet's cross-attention maps of the
   edit words and of the object word on renders of the edited grid (maps averaged over
   layers and upsampled, :meth:`Guidance.attention_maps`), with an L2 data term (the
   target is multiplied by the render's opacity, since attention on the background has no
   voxel to land on) plus ``tv_weight`` TV of the grids (:mod:`geo.regularizers`).
2. ``p = A_edit / (A_edit + A_obj)`` per voxel; a binary graph cut (PyMaxflow,
   Boykov-Kolmogorov) over the voxels occupied in the edited or the original grid:
   unaries ``-log p`` / ``-log (1 - p)``, hard seeds where ``p > seed_threshold`` (edit)
   or ``p < 1 - seed_threshold`` (object), and a 6-neighbour Potts term weighted by
   colour similarity ``smoothness exp(-|c_i - c_j|^2 / (2 color_sigma^2))`` of the edited
   grid's colours. Unoccupied voxels are hard "keep" seeds.
3. Every voxel outside the edit region gets the original density and features copied back
   (bit for bit).

Departure: the paper's unaries come from the attention grids' values, as here, but it
does not fix the exact data term of the attention fit; we use L2 against opacity-weighted
maps.
"""

from __future__ import annotations

import numpy as np

from scenes.voxe.config import LocalConfig

__all__ = ["edit_probability", "graph_cut_region", "restore_outside", "fit_attention_grids", "refine_local",
           "split_prompt_words"]


def split_prompt_words(prompt: str, object_word: str | None, edit_words) -> tuple[str, list[str]]:
    """Object word and edit words of a prompt (``"a cow wearing a party hat"`` -> ``cow``, ``[party, hat]``)."""
    from scenes.voxe.guidance import WordTokenizer

    stop = {"a", "an", "the", "with", "wearing", "of", "on", "in", "and", "made", "as", "is", "his", "her", "its"}
    words = [w for w in WordTokenizer.words(prompt) if w not in stop]
    if not words:
        raise ValueError(f"prompt {prompt!r} has no content words")
    obj = object_word or words[0]
    edits = list(edit_words) or [w for w in words if w != obj]
    if not edits:
        raise ValueError(f"prompt {prompt!r} names no edit besides the object {obj!r}; pass edit_words")
    return obj, edits


def edit_probability(attn_edit: np.ndarray, attn_obj: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``p(edit) = a_e / (a_e + a_o)`` per voxel (0.5 where both vanish)."""
    e, o = np.asarray(attn_edit, np.float64), np.asarray(attn_obj, np.float64)
    return (e + eps) / (e + o + 2 * eps)


def graph_cut_region(p_edit: np.ndarray, occupied: np.ndarray, colors: np.ndarray, *, seed_threshold: float = 0.85,
                     smoothness: float = 1.0, color_sigma: float = 0.1) -> np.ndarray:
    """Binary graph cut of the occupied voxels into edit / keep.

    Args:
        p_edit: ``[X, Y, Z]`` probability that a voxel belongs to the edit.
        occupied: ``[X, Y, Z]`` bool; only these voxels can be labelled edit.
        colors: ``[X, Y, Z, 3]`` colours in ``[0, 1]`` for the pairwise weights.

    Returns:
        ``[X, Y, Z]`` bool, True in the edit region.
    """
    import maxflow

    p = np.clip(np.asarray(p_edit, np.float64), 1e-6, 1 - 1e-6)
    occ = np.asarray(occupied, bool)
    if p.shape != occ.shape or colors.shape != (*p.shape, 3):
        raise ValueError(f"p_edit {p.shape}, occupied {occ.shape} and colors {colors.shape} must be [X, Y, Z] and [X, Y, Z, 3]")
    big = 1e9
    src = -np.log(1 - p)  # cost paid when the voxel is labelled keep (sink)
    snk = -np.log(p)  # cost paid when labelled edit (source)
    src = np.where(p > seed_threshold, big, src)
    snk = np.where(p < 1 - seed_threshold, big, snk)
    src = np.where(occ, src, 0.0)
    snk = np.where(occ, snk, big)
    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes(p.shape)
    c = np.asarray(colors, np.float64)
    for axis in range(3):
        # weight of the edge between voxel i and i + e_axis, stored at i (0 on the last slice)
        w = np.zeros(p.shape)
        sl_lo = [slice(None)] * 3
        sl_hi = [slice(None)] * 3
        sl_lo[axis], sl_hi[axis] = slice(0, -1), slice(1, None)
        diff = ((c[tuple(sl_hi)] - c[tuple(sl_lo)]) ** 2).sum(-1)
        both = occ[tuple(sl_lo)] & occ[tuple(sl_hi)]
        w[tuple(sl_lo)] = smoothness * np.exp(-diff / (2 * color_sigma**2)) * both
        struct = np.zeros((3, 3, 3))
        idx = [1, 1, 1]
        idx[axis] = 2
        struct[tuple(idx)] = 1
        g.add_grid_edges(nodes, weights=w, structure=struct, symmetric=True)
    g.add_grid_tedges(nodes, src, snk)
    g.maxflow()
    keep = g.get_grid_segments(nodes)  # True = sink side
    return ~keep & occ


def restore_outside(edited, original, region: np.ndarray):
    """A :class:`VoxelGrid` with ``edited`` inside ``region`` and ``original`` (bit for bit) outside."""
    from scenes.voxels import VoxelGrid

    if edited.density.shape != original.density.shape or edited.features.shape != original.features.shape:
        raise ValueError(f"edited and original grids differ in shape: {edited.features.shape} vs {original.features.shape}")
    r = np.asarray(region, bool)
    d = original.density.copy()
    d[r] = edited.density[r].astype(d.dtype)
    f = original.features.copy()
    f[r] = edited.features[r].astype(f.dtype)
    return VoxelGrid(d, f, original.bounds_min.copy(), original.bounds_max.copy(), original.color)


def fit_attention_grids(edited, guidance, prompt: str, object_word: str, edit_words: list[str], cfg: LocalConfig,
                        *, render_size: int = 64, n_samples: int = 96, fov_deg: float = 40.0, up=(0.0, 1.0, 0.0),
                        front=(0.0, 0.0, 1.0), seed: int = 0, progress: bool = False):
    """Fit the two attention grids; returns ``[2, R, R, R]`` activations in ``[0, 1]`` (edit, object)."""
    import torch

    from geo.regularizers import total_variation
    from scenes.voxe.config import EditConfig
    from scenes.voxe.edit import random_camera
    from scenes.voxels import occupancy_from_density, render_view

    dev = guidance.m.device
    d, f = edited.tensors(device=dev)
    occ = occupancy_from_density(d)  # the density is frozen: skip its empty space once and for all
    R = cfg.resolution
    logits = torch.full((2, R, R, R), -2.0, device=dev, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=cfg.lr)
    rng = np.random.default_rng(seed)
    cam_cfg = EditConfig(fov_deg=fov_deg, up=up, front_dir=front)
    words = [*edit_words, object_word]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iters, desc="attention grids", leave=False, dynamic_ncols=True)
    for _ in range(cfg.iters):
        model, c2w = random_camera(rng, edited, cam_cfg, render_size)
        with torch.no_grad():
            img = render_view(d, f, edited.bounds_min, edited.bounds_max, model, c2w, n_samples=n_samples,
                              background=torch.ones(3, device=dev), color=edited.color, occupancy=occ)
            maps = guidance.attention_maps(img["rgb"].permute(2, 0, 1)[None].clamp(0, 1), prompt, words)[0]
            target = torch.stack([maps[: len(edit_words)].amax(0), maps[-1]], -1) * img["alpha"][..., None]
        out = render_view(d, None, edited.bounds_min, edited.bounds_max, model, c2w, n_samples=n_samples,
                          extras=torch.sigmoid(logits), checkpoint=False, occupancy=occ)
        loss = ((out["extras"] - target) ** 2).mean() + cfg.tv_weight * total_variation(logits[None])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    if bar is not None:
        bar.close()
    return torch.sigmoid(logits.detach()).cpu()


def _upsample(att, shape):
    import torch
    import torch.nn.functional as F

    a = torch.as_tensor(att, dtype=torch.float32)
    return F.interpolate(a[None], size=tuple(shape), mode="trilinear", align_corners=False)[0].numpy()


def refine_local(edited, original, attention, cfg: LocalConfig | None = None):
    """Graph-cut the edit region from attention grids and restore everything outside it.

    Args:
        edited, original: :class:`VoxelGrid` s of the same shape.
        attention: ``[2, R, R, R]`` edit / object attention in ``[0, 1]`` (any ``R``; it is
            trilinearly resampled to the grid), e.g. from :func:`fit_attention_grids`.

    Returns:
        ``(grid, region)``: the restored grid and the ``[X, Y, Z]`` bool edit region.
    """
    cfg = cfg or LocalConfig()
    att = _upsample(attention, edited.resolution)
    p = edit_probability(att[0], att[1])
    occ = (edited.sigma() > cfg.occupied_sigma) | (original.sigma() > cfg.occupied_sigma)
    region = graph_cut_region(p, occ, edited.rgb(), seed_threshold=cfg.seed_threshold, smoothness=cfg.smoothness,
                              color_sigma=cfg.color_sigma)
    return restore_outside(edited, original, region), region
