"""Per-pixel Gaussians on rays: CoherentGS' structured representation (Sec. 3.1-3.3).

Every pixel of every training view with a depth carries one Gaussian, placed on
that pixel's ray at z-depth ``z``: ``mean = o + z * r`` with ``r`` the world
direction of ``(x / z, y / z, 1)``. Only ``z`` moves the mean. ``z`` is the
initial depth, first aligned per view by a scale and an offset (alignment
stage), then corrected by a residual from the depth decoder, combined per depth
segment. Opacity is a fixed initial logit plus the opacity decoder's residual.
Colour (SH), scale and rotation are free per-Gaussian parameters; scales are
reset from the pixel footprint periodically early on (as the released code).
There is no densification or pruning.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from scenes.coherent.decoder import ImplicitDecoder, combine_segments, view_encoding
from scenes.payloads import SH_C0, GaussianCloud

__all__ = ["depth_segments", "PixelGaussians", "footprint_log_scale"]


def depth_segments(depth: np.ndarray, valid: np.ndarray, k: int, iters: int = 30) -> np.ndarray:
    """Depth layering: 1D k-means on disparity ``1 / depth`` of the valid pixels.

    Returns ``[H, W]`` int64 labels in ``[0, k)``, ordered near (0) to far; invalid pixels get 0.
    Departure: the released code clusters with scikit-learn's agglomerative
    clustering on a subsampled grid; k-means in 1D is deterministic, fast and
    gives the same kind of disparity bands.
    """
    labels = np.zeros(depth.shape, np.int64)
    disp = 1.0 / depth[valid].astype(np.float64)
    if k <= 1 or disp.size == 0:
        return labels
    centres = np.quantile(disp, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        lab = np.abs(disp[:, None] - centres[None]).argmin(1)
        new = np.array([disp[lab == j].mean() if np.any(lab == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    order = np.argsort(-centres)  # largest disparity (nearest) first
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    labels[valid] = rank[np.abs(disp[:, None] - centres[None]).argmin(1)]
    return labels


def footprint_log_scale(z: Tensor, focal: Tensor, radius_mult: float) -> Tensor:
    """``log(radius_mult * z / (2 f))``: half the pixel footprint at depth z, times radius_mult."""
    return torch.log(radius_mult * 0.5 * z.clamp_min(1e-6) / focal)


class PixelGaussians(nn.Module):
    """One Gaussian per valid pixel of ``V`` equally sized training views.

    Args:
        views: :class:`scenes.coherent.views.View` list (same ``H x W``).
        depths: initial z-depth per view ``[H, W]`` (0 = no Gaussian).
        cfg: :class:`scenes.coherent.config.CoherentConfig`.
        num_views_for_opacity: views count used to pick the initial opacity.
    """

    def __init__(self, views, depths, cfg) -> None:
        super().__init__()
        from scenes.coherent.config import INIT_OPACITY_BY_VIEWS

        V = len(views)
        H, W = views[0].height, views[0].width
        if any((v.height, v.width) != (H, W) for v in views):
            raise ValueError("PixelGaussians: all training views must share one image size")
        self.V, self.H, self.W = V, H, W
        self.cfg = cfg
        z0 = np.stack([np.asarray(d, np.float32) for d in depths])
        keep = z0 > 0
        for k, v in enumerate(views):
            if v.mask is not None:
                keep[k] &= v.mask
        if not keep.any():
            raise ValueError("PixelGaussians: no pixel has a depth; nothing to initialise")
        z0 = np.where(keep, z0, 0.0).astype(np.float32)
        segs = np.stack([depth_segments(z0[k], keep[k], cfg.num_segments) for k in range(V)])
        K = max(1, cfg.num_segments)

        # per-pixel rays in world frame, for (x/z, y/z, 1) directions
        v_, u_ = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
        dirs, origins, focal = [], [], []
        for v in views:
            m = v.model
            d_cam = np.stack([(u_ - m.cx) / m.fx, (v_ - m.cy) / m.fy, np.ones_like(u_)], -1)
            dirs.append(d_cam @ v.c2w[:3, :3].T)
            origins.append(np.broadcast_to(v.c2w[:3, 3], (H, W, 3)))
            focal.append(np.full((H, W), math.sqrt(m.fx * m.fy)))
        keep_t = torch.as_tensor(keep)
        self.register_buffer("keep", keep_t)
        self.register_buffer("index", keep_t.flatten().nonzero().squeeze(1))  # into V*H*W
        self.register_buffer("z0", torch.as_tensor(z0))
        self.register_buffer("segments", torch.as_tensor(segs))
        self.register_buffer("onehot", torch.nn.functional.one_hot(torch.as_tensor(segs), K).permute(0, 3, 1, 2).float() * keep_t[:, None].float())
        self.register_buffer("dirs", torch.as_tensor(np.stack(dirs), dtype=torch.float32).reshape(-1, 3)[self.index])
        self.register_buffer("origins", torch.as_tensor(np.stack(origins), dtype=torch.float32).reshape(-1, 3)[self.index])
        self.register_buffer("focal", torch.as_tensor(np.stack(focal), dtype=torch.float32).reshape(-1)[self.index])
        self.register_buffer("encoding", view_encoding(V, cfg.encoding_freqs))
        self.median_depth = float(np.median(z0[keep]))
        N = int(self.index.numel())

        opacity = cfg.init_opacity if cfg.init_opacity is not None else INIT_OPACITY_BY_VIEWS.get(V, 0.35 if V > 4 else 0.5)
        self.register_buffer("opacity_logit0", torch.full((N,), math.log(opacity / (1 - opacity))))
        rgb = torch.as_tensor(np.stack([v.image for v in views]), dtype=torch.float32).reshape(-1, 3)[self.index]
        sh = torch.zeros(N, (cfg.sh_degree + 1) ** 2, 3)
        sh[:, 0] = (rgb - 0.5) / SH_C0
        self.sh_dc = nn.Parameter(sh[:, :1].contiguous())
        self.sh_rest = nn.Parameter(sh[:, 1:].contiguous())
        self.log_scales = nn.Parameter(footprint_log_scale(self.z0.reshape(-1)[self.index], self.focal, cfg.radius_mult)[:, None].repeat(1, 3))
        quats = torch.zeros(N, 4)
        quats[:, 0] = 1.0
        self.quats = nn.Parameter(quats)
        # alignment stage: z = z0 * exp(a_v) + b_v * median_depth
        self.align_log_scale = nn.Parameter(torch.zeros(V))
        self.align_offset = nn.Parameter(torch.zeros(V))
        cin = 2 * cfg.encoding_freqs
        self.depth_decoder = ImplicitDecoder(H, W, K, cin, cfg.decoder_width)
        self.opacity_decoder = ImplicitDecoder(H, W, K, cin, cfg.opacity_decoder_width)
        self.aligning = False

    # ------------------------------------------------------------------ attributes
    @property
    def num(self) -> int:
        return int(self.index.numel())

    def depth_maps(self, use_decoder: bool = True) -> Tensor:
        """``[V, H, W]`` z-depth of each pixel's Gaussian (0 where none)."""
        if self.aligning:
            z = self.z0 * torch.exp(self.align_log_scale)[:, None, None] + (self.align_offset * self.median_depth)[:, None, None]
        elif use_decoder:
            res = combine_segments(self.depth_decoder(self.encoding), self.onehot)
            z = self.z0 + self.cfg.depth_residual * self.median_depth * res
        else:
            z = self.z0
        return torch.where(self.keep, z.clamp_min(1e-4 * self.median_depth), torch.zeros_like(z))

    def means_from_depth(self, z: Tensor) -> Tensor:
        return self.origins + z.reshape(-1)[self.index, None] * self.dirs

    def xyz_maps(self, z: Tensor | None = None) -> Tensor:
        """``[V, 3, H, W]`` world position of each pixel's Gaussian (0 where none)."""
        z = self.depth_maps() if z is None else z
        out = torch.zeros(self.V * self.H * self.W, 3, dtype=z.dtype)
        out = out.index_copy(0, self.index, self.means_from_depth(z))
        return out.reshape(self.V, self.H, self.W, 3).permute(0, 3, 1, 2)

    def opacities(self) -> Tensor:
        res = combine_segments(self.opacity_decoder(self.encoding), self.onehot).reshape(-1)[self.index]
        return torch.sigmoid(self.opacity_logit0 + self.cfg.opacity_residual * res)

    def sh(self) -> Tensor:
        return torch.cat([self.sh_dc, self.sh_rest], 1)

    # ------------------------------------------------------------------ stage changes
    @torch.no_grad()
    def bake_alignment(self) -> None:
        """End of the alignment stage: fold each view's scale/offset into ``z0``; scales follow."""
        self.aligning = True
        z = self.depth_maps()
        self.aligning = False
        self.z0.copy_(z)
        self.align_log_scale.zero_()
        self.align_offset.zero_()
        self.reset_scales(use_decoder=False)

    @torch.no_grad()
    def reset_scales(self, use_decoder: bool = True) -> None:
        z = self.depth_maps(use_decoder).reshape(-1)[self.index]
        self.log_scales.copy_(footprint_log_scale(z, self.focal, self.cfg.radius_mult)[:, None].expand(-1, 3))

    @torch.no_grad()
    def gaussian_arrays(self, sh_degree: int | None = None) -> dict:
        """The current Gaussians as numpy arrays named like :class:`GaussianCloud`'s fields (may hold NaN)."""
        z = self.depth_maps()
        k = (self.cfg.sh_degree + 1) ** 2 if sh_degree is None else (sh_degree + 1) ** 2
        op = self.opacities().clamp(1e-6, 1 - 1e-6)
        return {
            "means": self.means_from_depth(z).numpy().astype(np.float32),
            "quats": self.quats.detach().numpy().astype(np.float32),
            "log_scales": self.log_scales.detach().numpy().astype(np.float32),
            "opacity_logits": torch.log(op / (1 - op)).numpy().astype(np.float32),
            "sh": self.sh()[:, :k].detach().numpy().astype(np.float32),
        }

    def to_cloud(self, sh_degree: int | None = None) -> GaussianCloud:
        """The current Gaussians as a :class:`GaussianCloud` (non-finite ones dropped with a warning)."""
        from scenes.export.ply_gaussians import finite_gaussians

        return finite_gaussians(self.gaussian_arrays(sh_degree), "PixelGaussians.to_cloud")
