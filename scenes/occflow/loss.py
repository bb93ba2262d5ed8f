r"""VoxelSplat: the occupancy + flow predictions, decoded into Gaussians and rendered.

Pipeline for one batch element (Zhu et al., CVPR 2025, Sec. 3 and Fig. 2):

1. sample at most ``max_gaussians`` non-ignored voxels, weighted by inverse class
   frequency and speed bin (:mod:`scenes.occflow.sampling`);
2. decode one Gaussian per sampled voxel: centre = voxel centre, identity rotation,
   isotropic std ``scale_fraction * voxel_size``, opacity ``sigmoid(-free logit)``,
   features = the non-free logits (rendered as their softmax with
   ``sem2d_render="probs"``) and the flow; the ground-truth Gaussians are
   the sampled *occupied* voxels with opacity 1 and features one-hot + true flow;
3. render both with :func:`geo.raster.rasterize` into every key-frame camera
   (alpha-normalised channels by default, ``RGB+D`` accumulations with
   ``depth_mode="accumulated"``; the flow separately with stop-gradient
   opacities unless ``flow_opacity_grad``); in each adjacent frame (time offset ``dt``) move the dynamic predicted
   Gaussians (true speed > ``dynamic_speed``) by ``dt * flow`` and the true ones by
   ``dt * flow_gt``, keep the static ones, and render again;
4. losses: ``loss_sem2d`` on pixels with ground-truth opacity > ``min_alpha_gt``:
   by default ``KL(q || P)`` between the rendered ground-truth class mixture ``q``
   and the rendered predicted class probabilities ``P`` (``sem2d_render``,
   ``sem2d_target``), class-weighted (``sem2d_class_alpha``); ``loss_depth2d``
   log-depth L1 (or metres L1, ``depth_metric``) on the same pixels plus
   ``w_alpha2d`` times the coverage L1 ``|alpha - alpha*|`` on all pixels;
   ``loss_flow2d`` = :math:`\sum_p w_p |f_p - f^*_p|_1 / \sum_p w_p` with
   :math:`w_p = |f^*_p| + 0.1` on the rendered flow, and ``loss_flow3d`` the same on
   the voxels. Both flow terms and the adjacent-frame renders follow
   ``flow_schedule`` (the warm-up), the semantic and depth terms
   ``render_schedule``; ``pixel_weight="voxel"`` weighs the surface pixels by
   ``depth**2`` so that near and far voxels count alike. In adjacent frames only
   the motion learns (``adjacent_grad="motion"``): the predicted features and opacities are constants there.

With given label images (:class:`LabelImages`) ``q`` is the one-hot label.
Memory: cameras are rendered ``cameras_per_chunk`` at a time, each chunk under activation checkpointing, so the
peak is one chunk's render and backward plus the ``[N, K]`` Gaussian features.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from geo.raster import rasterize

from .config import VoxelSplatConfig
from .raycast import voxel_centers
from .sampling import sample_voxels

__all__ = ["VoxelSplatConfig", "VoxelSplatLoss", "RigViews", "LabelImages", "Gaussians",
           "decode_gaussians", "weighted_flow_l1", "surface_pixel_weights"]


@dataclass
class RigViews:
    """Cameras of the key frame and of its adjacent frames.

    Attributes:
        Ks: ``[B, T, C, 3, 3]`` pinhole intrinsics (pixel centres at +0.5).
        cam_to_ego: ``[B, T, C, 4, 4]`` camera-to-key-frame-ego poses, OpenCV axes
            (x right, y down, z forward); frame ``t``'s cameras are where they were
            at time ``dt[t]``, expressed in the *key* frame's ego coordinates.
        dt: ``[T]`` time offsets from the key frame, in the flow's time unit
            (seconds for m/s flow); ``0`` marks key-frame cameras.
        width, height: image size in pixels.
    """

    Ks: Tensor
    cam_to_ego: Tensor
    dt: Sequence[float]
    width: int
    height: int


@dataclass
class LabelImages:
    """Optional 2D targets, replacing the rendered ground truth.

    Attributes:
        semantics: ``[B, T, C, H, W]`` long class ids (``ignore_index`` = unknown).
        depth: ``[B, T, C, H, W]`` z-depth, 0 = none.
        flow: optional ``[B, T, C, H, W, F]`` per-pixel flow; when ``None`` the
            flow target is rendered from the ground-truth Gaussians.
    """

    semantics: Tensor
    depth: Tensor
    flow: Tensor | None = None


@dataclass
class Gaussians:
    """Gaussians of one batch element: ``means [N, 3]``, ``opacities [N]``, ``features [N, D]``
    (``K - 1`` class channels then ``F`` flow channels), ``flow [N, 3]`` (zero-padded to 3D,
    used to move them) and the isotropic ``scale`` (std, metres)."""

    means: Tensor
    opacities: Tensor
    features: Tensor
    flow: Tensor
    scale: Tensor

    def moved(self, dt: float) -> Tensor:
        return self.means + dt * self.flow if dt != 0 else self.means


def _pad3(f: Tensor) -> Tensor:
    return f if f.shape[-1] == 3 else torch.cat([f, f.new_zeros(*f.shape[:-1], 3 - f.shape[-1])], -1)


def decode_gaussians(centers: Tensor, logits: Tensor, flow: Tensor, free_index: int, scale: Tensor,
                     moving: Tensor | None = None) -> Gaussians:
    """Predicted Gaussians from sampled voxels (Sec. 3.2): opacity ``sigmoid(-free logit)``,
    features = the other logits and the flow.

    Args:
        centers: ``[N, 3]``; logits: ``[N, K]``; flow: ``[N, F]``; scale: ``[3]`` std.
        moving: ``[N]`` bool, the dynamic Gaussians, which move by their flow in
            adjacent frames (all when ``None``).
    """
    K = logits.shape[-1]
    keep = [k for k in range(K) if k != free_index % K]
    motion = _pad3(flow) if moving is None else _pad3(flow) * moving[:, None].to(flow)
    return Gaussians(centers, torch.sigmoid(-logits[:, free_index]), torch.cat([logits[:, keep], flow], -1),
                     motion, scale)


def ground_truth_gaussians(centers: Tensor, labels: Tensor, flow: Tensor, num_classes: int, free_index: int,
                           scale: Tensor, moving: Tensor | None = None) -> Gaussians:
    """Ground-truth Gaussians: the occupied voxels among ``labels [N]``, opacity 1, one-hot features."""
    free = free_index % num_classes
    occ = labels != free
    lab = labels[occ]
    onehot = F.one_hot(lab, num_classes).to(centers.dtype)
    keep = [k for k in range(num_classes) if k != free]
    f = flow[occ].to(centers.dtype)
    motion = _pad3(f) if moving is None else _pad3(f) * moving[occ][:, None].to(f)
    return Gaussians(centers[occ], centers.new_ones(int(occ.sum())), torch.cat([onehot[:, keep], f], -1),
                     motion, scale)


def weighted_flow_l1(pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 0.1) -> Tensor:
    r"""``sum w |pred - target|_1 / sum w`` with ``w = |target|_2 + eps`` (the release's flow loss).

    Args:
        pred, target: ``[..., F]`` flows; mask: ``[...]`` bool, entries to use.
    """
    w = target.norm(dim=-1) + eps
    err = (pred - target).abs().sum(-1) * w
    if mask is not None:
        err, w = err[mask], w[mask]
    return err.sum() / w.sum().clamp_min(1e-12)


def _render(g: Gaussians, means: Tensor, viewmats: Tensor, Ks: Tensor, W: int, H: int, cfg: VoxelSplatConfig):
    """Features ``[c, H, W, D]``, depth ``[c, H, W]`` and alpha ``[c, H, W]``.

    ``depth_mode="expected"``: features and depth are the alpha-normalised
    (expected) values ``sum_i w_i x_i / max(sum_i w_i, alpha_floor)``; otherwise
    the raw accumulations ``sum_i w_i x_i`` (the release's ``RGB+D``).
    """
    n = means.shape[0]
    quats = means.new_zeros(n, 4)
    quats[:, 0] = 1.0
    scales = g.scale.to(means).expand(n, 3)
    img, alpha, _ = rasterize(means, quats, scales, g.opacities, g.features, viewmats, Ks, W, H,
                              near_plane=cfg.near_plane, far_plane=cfg.far_plane, render_mode="RGB+D")
    alpha = alpha[..., 0]
    if cfg.depth_mode == "expected":
        img = img / alpha.clamp_min(cfg.alpha_floor)[..., None]
    return img[..., :-1], img[..., -1], alpha


def _pred_sums(means, opacities, features, flow3, scale, viewmats, Ks, class_w, tgt_sem, sem_valid, tgt_depth,
               depth_valid, tgt_flow, flow_w, tgt_alpha, pix_w, *, W, H, n_cls, cfg):
    """Summed (not averaged) 2D terms of one camera chunk; the checkpointed unit."""
    if cfg.flow_opacity_grad:  # one render; the flow term also moves the opacities (the release)
        if cfg.sem2d_render == "probs":
            features = torch.cat([features[:, :n_cls].softmax(-1), features[:, n_cls:]], -1)
        feats, depth, alpha = _render(Gaussians(means, opacities, features, flow3, scale), means, viewmats, Ks, W, H, cfg)
        logits, flow = feats[..., :n_cls], feats[..., n_cls:]
    else:  # the flow render sees the opacities as constants: it trains the flow (values, motion) only
        sem_feat = features[:, :n_cls].softmax(-1) if cfg.sem2d_render == "probs" else features[:, :n_cls]
        logits, depth, alpha = _render(Gaussians(means, opacities, sem_feat, flow3, scale), means,
                                       viewmats, Ks, W, H, cfg)
        flow, _, _ = _render(Gaussians(means, opacities.detach(), features[:, n_cls:], flow3, scale), means,
                             viewmats, Ks, W, H, cfg)
    q = tgt_sem[sem_valid]
    if cfg.sem2d_render == "probs":  # rendered class probabilities (a mixture): KL(q || P)
        P = logits[sem_valid]
        P = P / P.sum(-1, keepdim=True).clamp_min(1e-6)
        sem = ((q * (q.clamp_min(1e-6).log() - P.clamp_min(1e-6).log()) * class_w).sum(-1) * pix_w[sem_valid]).sum()
    else:  # rendered logits (the release): cross-entropy against q
        sem = (F.cross_entropy(logits[sem_valid], q, weight=class_w, reduction="none") * pix_w[sem_valid]).sum()
    if cfg.depth_metric == "log":  # dimensionless: |log D - log D*| on pixels with a target depth
        dep = ((depth[depth_valid].clamp_min(cfg.near_plane).log()
                - tgt_depth[depth_valid].clamp_min(cfg.near_plane).log()).abs() * pix_w[depth_valid]).sum()
    else:
        dep = ((depth - tgt_depth).abs() * pix_w)[depth_valid].sum()
    flo = ((flow - tgt_flow).abs().sum(-1) * flow_w * pix_w).sum()
    cov = (alpha - tgt_alpha).abs().sum()  # coverage, on every pixel
    return torch.stack([sem, dep, flo, cov])


class VoxelSplatLoss(torch.nn.Module):
    """VoxelSplat regulariser (training only): render predicted voxels as Gaussians.

    Args:
        config: :class:`VoxelSplatConfig`.

    Forward args:
        logits: ``[B, K, X, Y, Z]`` semantic logits, one class (``free_index``) is free.
        flow: ``[B, F, X, Y, Z]`` predicted flow, ``F`` in {2, 3} (xy or xyz, per unit time).
        labels: ``[B, X, Y, Z]`` long ground truth, ``ignore_index`` = unknown.
        flow_gt: ``[B, F, X, Y, Z]`` true flow.
        grid_origin: minimum corner of the grid (3 floats, key-frame ego frame).
        voxel_size: float or 3 floats.
        views: :class:`RigViews`.
        step: training step (drives ``flow_schedule`` and ``render_schedule``).
        images: optional :class:`LabelImages` targets.
        generator: ``torch.Generator`` for the voxel sampling.

    Returns:
        dict with ``loss_sem2d``, ``loss_depth2d``, ``loss_flow2d``, ``loss_flow3d``
        (weighted, scalar tensors), mmdet-style.

    Example:
        >>> loss_fn = VoxelSplatLoss(VoxelSplatConfig(max_gaussians=20_000))
        >>> losses = loss_fn(logits, flow, labels, flow_gt, (-40, -40, -1), 0.4, views, step=it)
        >>> sum(losses.values()).backward()
    """

    def __init__(self, config: VoxelSplatConfig | None = None):
        super().__init__()
        self.config = config or VoxelSplatConfig()

    def forward(self, logits: Tensor, flow: Tensor, labels: Tensor, flow_gt: Tensor, grid_origin, voxel_size,
                views: RigViews, step: int = 0, images: LabelImages | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        cfg = self.config
        _check_inputs(logits, flow, labels, flow_gt, views, images)
        B, K = logits.shape[:2]
        grid = logits.shape[2:]
        flow_factor = float(cfg.flow_schedule(step))
        render_factor = float(cfg.render_schedule(step))
        dt = [float(t) for t in (views.dt.tolist() if isinstance(views.dt, Tensor) else views.dt)]
        frames = [t for t in range(len(dt)) if dt[t] == 0 or flow_factor > 0]
        vs = torch.as_tensor(voxel_size, dtype=logits.dtype, device=logits.device).expand(3)
        scale = cfg.scale_fraction * vs
        centers_all = voxel_centers(grid, grid_origin, vs, logits.dtype, logits.device).reshape(-1, 3)
        n_cls = K - 1

        sums = logits.new_zeros(4)
        counts = logits.new_zeros(4)
        for b in range(B):
            flow_gt_b = flow_gt[b].reshape(flow_gt.shape[1], -1).T
            lab_s = labels[b]
            if not cfg.sample_free:  # Gaussians at the ground truth's occupied voxels only
                lab_s = lab_s.masked_fill(lab_s == cfg.free_index % K, cfg.ignore_index)
            idx = sample_voxels(lab_s, flow_gt_b.reshape(*grid, -1), cfg.max_gaussians, K, cfg.ignore_index,
                                cfg.class_alpha, cfg.speed_beta, cfg.speed_edges, generator=generator)
            if idx.numel() == 0:
                continue
            centers = centers_all[idx]
            class_w = _class_weights(labels[b], K, cfg).to(logits)
            # dynamic Gaussians (true speed above dynamic_speed) move, the rest stay (Fig. 2, step 3)
            moving = flow_gt_b[idx].norm(dim=-1) > cfg.dynamic_speed if cfg.dynamic_speed >= 0 else None
            pred = decode_gaussians(centers, logits[b].reshape(K, -1)[:, idx].T, flow[b].reshape(flow.shape[1], -1)[:, idx].T,
                                    cfg.free_index, scale, moving)
            gt = ground_truth_gaussians(centers, labels[b].reshape(-1)[idx], flow_gt_b[idx], K, cfg.free_index, scale,
                                        moving)
            for t in frames:
                viewmats_t = torch.linalg.inv(views.cam_to_ego[b, t].to(logits.dtype))
                Ks_t = views.Ks[b, t].to(logits.dtype)
                pred_means = pred.moved(dt[t])
                gt_means = gt.moved(dt[t])
                for c0 in range(0, viewmats_t.shape[0], cfg.cameras_per_chunk):
                    cs = slice(c0, c0 + cfg.cameras_per_chunk)
                    tgt = self._targets(gt, gt_means, viewmats_t[cs], Ks_t[cs], views, images, b, t, cs, n_cls)
                    fn = functools.partial(_pred_sums, W=views.width, H=views.height, n_cls=n_cls, cfg=cfg)
                    if dt[t] != 0 and cfg.adjacent_grad == "motion":  # only the motion learns from adjacent frames
                        op, ft = pred.opacities.detach(), pred.features.detach()
                    else:
                        op, ft = pred.opacities, pred.features
                    args = (pred_means, op, ft, pred.flow, pred.scale, viewmats_t[cs], Ks_t[cs], class_w, *tgt)
                    part = checkpoint(fn, *args, use_reentrant=False) if cfg.checkpoint and torch.is_grad_enabled() else fn(*args)
                    sums = sums + part
                    pix_w = tgt[7]
                    sem_count = ((tgt[0][tgt[1]] @ class_w) * pix_w[tgt[1]]).sum()  # the weighted mean's denominator
                    counts = counts + torch.stack([sem_count, (pix_w * tgt[3]).sum(), (pix_w * tgt[5]).sum(),
                                                   torch.tensor(float(tgt[6].numel()))]).to(sums)

        out = sums / counts.clamp_min(1e-12)
        valid3d = labels != cfg.ignore_index
        flow3d = weighted_flow_l1(flow.movedim(1, -1), flow_gt.movedim(1, -1).to(flow), valid3d, cfg.flow_eps)
        return {
            "loss_sem2d": cfg.w_sem2d * render_factor * out[0],
            "loss_depth2d": render_factor * (cfg.w_depth2d * out[1] + cfg.w_alpha2d * out[3]),
            "loss_flow2d": cfg.w_flow2d * flow_factor * out[2],
            "loss_flow3d": cfg.w_flow3d * flow_factor * flow3d,
        }

    @torch.no_grad()
    def _targets(self, gt: Gaussians, gt_means, viewmats, Ks, views: RigViews, images, b, t, cs, n_cls):
        """Per-chunk targets: class distribution ``[c,H,W,K-1]``, its mask, depth, depth mask, flow, flow weight,
        alpha and the surface-pixel weights (ones unless ``pixel_weight="voxel"``)."""
        cfg = self.config
        W, H = views.width, views.height
        c = viewmats.shape[0]
        if gt_means.shape[0] > 0:
            feats, depth, alpha = _render(gt, gt_means, viewmats, Ks, W, H, cfg)
            cls, flow = feats[..., :n_cls], feats[..., n_cls:]
        else:
            F_ = gt.features.shape[1] - n_cls
            cls, flow = viewmats.new_zeros(c, H, W, n_cls), viewmats.new_zeros(c, H, W, F_)
            depth, alpha = viewmats.new_zeros(c, H, W), viewmats.new_zeros(c, H, W)
        if images is None:
            sem_valid = alpha > cfg.min_alpha_gt
            if cfg.sem2d_target == "soft":  # the pixel's class mixture (the release's soft labels)
                sem = cls / cls.sum(-1, keepdim=True).clamp_min(1e-6)
            else:
                sem = F.one_hot(cls.argmax(-1), n_cls).to(cls)
            if cfg.depth_mode == "expected":
                depth = torch.where(sem_valid, depth, torch.zeros_like(depth))
        else:
            sem = images.semantics[b, t, cs].long()
            depth = images.depth[b, t, cs].to(viewmats)
            sem_valid = (depth > 0) & (sem != cfg.ignore_index)
            sem = F.one_hot(torch.where(sem_valid, sem, torch.zeros_like(sem)), n_cls).to(viewmats)
            if images.flow is not None:
                flow = images.flow[b, t, cs].to(viewmats)
            alpha = (depth > 0).to(viewmats)
        depth_valid = torch.ones_like(sem_valid) if cfg.depth_mode == "accumulated" else sem_valid
        flow_w = flow.norm(dim=-1) + cfg.flow_eps
        if cfg.depth_mode == "expected":  # the expected flow is defined where the target has a surface only
            flow_w = flow_w * sem_valid.to(flow_w)
        pix_w = surface_pixel_weights(depth, sem_valid, Ks) if cfg.pixel_weight == "voxel" else torch.ones_like(depth)
        return sem, sem_valid, depth, depth_valid, flow, flow_w, alpha, pix_w


def surface_pixel_weights(depth: Tensor, valid: Tensor, Ks: Tensor) -> Tensor:
    """Pixel weights ``[c, H, W]`` under which every surface voxel counts alike (``pixel_weight="voxel"``).

    A voxel face at z-depth ``d`` covers ``fx * fy * s**2 / d**2`` pixels of a pinhole camera, so a
    pixel mean weighs a surface voxel by ``1 / d**2``; the weight ``d**2 / (fx * fy)`` on ``valid``
    (target-surface) pixels undoes that (up to the face's inclination, which is not corrected). The
    weights are normalised to mean 1 over the valid pixels of the chunk, and are 1 elsewhere, so the
    pixels' total weight -- and the balance against the other terms -- is unchanged.

    Args:
        depth: ``[c, H, W]`` target z-depth; valid: ``[c, H, W]`` bool; Ks: ``[c, 3, 3]``.
    """
    w = depth.square() / (Ks[:, 0, 0] * Ks[:, 1, 1]).to(depth)[:, None, None]
    n = valid.sum()
    if n == 0:
        return torch.ones_like(depth)
    w = w * (n / w[valid].sum().clamp_min(1e-12))
    return torch.where(valid, w, torch.ones_like(w))


def _class_weights(labels: Tensor, K: int, cfg: VoxelSplatConfig) -> Tensor:
    """``[K - 1]`` weights of the rendered classes for ``loss_sem2d``: ``(n_c / n) ** -sem2d_class_alpha``
    from the non-free, non-ignored voxel counts ``n_c`` of one sample (1 where ``sem2d_class_alpha = 0``)."""
    free = cfg.free_index % K
    lab = labels[(labels != cfg.ignore_index) & (labels != free)].long()
    lab = torch.where(lab > free, lab - 1, lab)  # class id -> rendered channel
    n = torch.bincount(lab, minlength=K - 1).float()
    if cfg.sem2d_class_alpha == 0 or n.sum() == 0:
        return torch.ones(K - 1, device=labels.device)
    w = (n / n.sum()).clamp_min(1.0 / n.sum()).pow(-cfg.sem2d_class_alpha)
    return w / w[n > 0].mean()


def _check_inputs(logits, flow, labels, flow_gt, views, images):
    if logits.dim() != 5:
        raise ValueError(f"logits: expected [B, K, X, Y, Z], got {tuple(logits.shape)}")
    B, K, X, Y, Z = logits.shape
    if flow.dim() != 5 or flow.shape[0] != B or flow.shape[1] not in (2, 3) or flow.shape[2:] != logits.shape[2:]:
        raise ValueError(f"flow: expected [B, 2 or 3, X, Y, Z] = [{B}, F, {X}, {Y}, {Z}], got {tuple(flow.shape)}")
    if labels.shape != (B, X, Y, Z) or labels.dtype.is_floating_point:
        raise ValueError(f"labels: expected integer [B, X, Y, Z] = {(B, X, Y, Z)}, got {labels.dtype} {tuple(labels.shape)}")
    if flow_gt.shape != flow.shape:
        raise ValueError(f"flow_gt: expected {tuple(flow.shape)} like flow, got {tuple(flow_gt.shape)}")
    T = len(views.dt)
    if views.Ks.dim() != 5 or views.Ks.shape[:2] != (B, T) or views.Ks.shape[-2:] != (3, 3):
        raise ValueError(f"views.Ks: expected [B, T, C, 3, 3] with B={B}, T={T}, got {tuple(views.Ks.shape)}")
    if views.cam_to_ego.shape[:3] != views.Ks.shape[:3] or views.cam_to_ego.shape[-2:] != (4, 4):
        raise ValueError(f"views.cam_to_ego: expected [B, T, C, 4, 4] = {tuple(views.Ks.shape[:3])} + (4, 4), "
                         f"got {tuple(views.cam_to_ego.shape)}")
    if images is not None:
        exp = (*views.Ks.shape[:3], views.height, views.width)
        if images.semantics.shape != exp or images.depth.shape != exp:
            raise ValueError(f"images: semantics and depth must be [B, T, C, H, W] = {exp}, got "
                             f"{tuple(images.semantics.shape)} and {tuple(images.depth.shape)}")
