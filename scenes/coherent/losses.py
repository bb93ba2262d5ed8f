"""CoherentGS loss glue. The terms themselves live in :mod:`geo.regularizers`
(TV, flow warp) and kornia (SSIM); this module only arranges them as the method does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["photometric_loss", "disparity_tv", "flow_consistency_loss", "psnr"]


def psnr(pred: Tensor, gt: Tensor) -> float:
    mse = float(((pred.detach().clamp(0, 1) - gt) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def photometric_loss(pred: Tensor, gt: Tensor, ssim_weight: float = 0.2, scales: int = 1) -> Tensor:
    """``(1 - lambda) * mean_s L1(pool_s(pred), pool_s(gt)) + lambda * (1 - SSIM)`` on ``[H, W, 3]`` images.

    The multi-scale L1 (the released code's ML1Loss) averages L1 over 2x average-pooled copies.
    """
    from kornia.metrics import ssim

    p = pred.permute(2, 0, 1)[None]
    g = gt.permute(2, 0, 1)[None]
    l1 = 0.0
    n = 0
    for s in range(max(1, scales)):
        if s:
            if min(p.shape[-2:]) < 4:
                break
            p, g = F.avg_pool2d(p, 2), F.avg_pool2d(g, 2)
        l1 = l1 + (p - g).abs().mean()
        n += 1
    l1 = l1 / n
    if ssim_weight <= 0:
        return l1
    s = ssim(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], 11).mean()
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - s)


def disparity_tv(depth: Tensor, alpha: Tensor, segments: Tensor, gamma: float, median_depth: float) -> Tensor:
    """Segment-aware TV of rendered disparity (CoherentGS Sec. 3.4, multi-view constraint).

    ``gamma * TV(disp | segments) + (1 - gamma) * TV(disp)`` with ``disp = median_depth / depth``
    (scale-free), counted where the render is opaque (``alpha > 0.5``); differences across
    segment boundaries are excluded from the first term.
    """
    from geo.regularizers import total_variation

    m = (alpha.detach() > 0.5)
    disp = median_depth / depth.clamp_min(1e-3 * median_depth)
    disp = torch.where(m, disp, torch.zeros_like(disp))[None, None]
    mask = m[None, None]
    seg = total_variation(disp, mask=mask, segments=segments[None, None].long())
    if gamma >= 1:
        return seg
    full = total_variation(disp, mask=mask)
    return gamma * seg + (1 - gamma) * full


def flow_consistency_loss(xyz: Tensor, keep: Tensor, flows: dict, ref: int, fb_check: bool, scale: float) -> Tensor:
    """CoherentGS flow loss for reference view ``ref``: every other view's xyz map is warped onto
    it along the flow and compared (masked L1), divided by ``scale`` (the median depth).

    Args:
        xyz: ``[V, 3, H, W]`` per-pixel Gaussian positions.
        keep: ``[V, H, W]`` bool, pixels that carry a Gaussian.
        flows: ``{(a, b): (flow [1, 2, H, W], valid [1, 1, H, W])}`` tensors.
    """
    from geo.regularizers import backward_warp, flow_warp_loss

    V = xyz.shape[0]
    total = xyz.new_zeros(())
    n = 0
    for b in range(V):
        if b == ref or (ref, b) not in flows:
            continue
        f_ab, ok = flows[(ref, b)]
        f_ba = flows[(b, ref)][0] if (fb_check and (b, ref) in flows) else None
        # exclude samples that would mix in pixels of b without a Gaussian (silhouettes)
        kb = backward_warp(keep[b][None, None].float(), f_ab)
        valid = ok & keep[ref][None, None] & (kb > 0.999)
        total = total + flow_warp_loss(xyz[ref][None], xyz[b][None], f_ab, valid, f_ba)
        n += 1
    return total / max(n, 1) / scale
