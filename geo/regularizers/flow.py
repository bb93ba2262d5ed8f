r"""Optical-flow terms: backward warping, forward-backward consistency, flow-warp loss.

Conventions (docs/architecture.md): flow is in pixels, ``flow[:, 0] = du`` (along x /
columns), ``flow[:, 1] = dv`` (along y / rows), from view a to view b; pixel ``(i, j)``
has its centre at ``(u, v) = (j + 0.5, i + 0.5)``. Tensors here are batched
``[B, 2, H, W]`` (a payload's ``[H, W, 2]`` flow is ``flow.permute(2, 0, 1)[None]``).
Sampling uses ``grid_sample(..., align_corners=False)``, whose normalised coordinate
``-1`` / ``+1`` is the outer *edge* of the first / last pixel, which is exactly the
pixel-centre convention: ``u -> 2 u / W - 1``.

* :func:`backward_warp` pulls ``x`` (defined on view b) onto view a:
  ``out[i, j] = x(j + 0.5 + du, i + 0.5 + dv)``, bilinear.
* :func:`fb_consistency_mask` is the occlusion test of Sundaram, Brox & Keutzer,
  "Dense point trajectories by GPU-accelerated large displacement optical flow"
  (ECCV 2010), in the form used by UnFlow (Meister, Hur & Roth, AAAI 2018, Eq. 1):
  a pixel is consistent when ``|f + b~|^2 < alpha1 (|f|^2 + |b~|^2) + alpha2`` with
  ``b~ = backward_warp(b, f)``; UnFlow's defaults ``alpha1 = 0.01``, ``alpha2 = 0.5``.
* :func:`flow_warp_loss` is CoherentGS's flow regulariser (Paliwal et al., "CoherentGS:
  Sparse Novel View Synthesis with Coherent 3D Gaussians", ECCV 2024): per-pixel
  attribute maps (there, rendered xyz maps) of two views must agree after warping
  ``map_b`` onto view a along the flow, under a validity / consistency mask. We use the
  masked mean L1; departures: the mask combines the caller's ``valid`` with the
  in-image test and (optionally) the forward-backward test above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_choice, check_float, check_positive, check_tensor
from .schedule import Regularizer, Schedule

__all__ = ["backward_warp", "flow_in_bounds", "fb_consistency_mask", "flow_warp_loss", "FlowWarpLoss"]


def _check_flow(flow, name: str, like: Tensor | None = None) -> Tensor:
    check_float(check_tensor(flow, name, "[B, 2, H, W] (pixels)", ndims=(4,)), name)
    if flow.shape[1] != 2:
        raise ValueError(f"{name} must have shape [B, 2, H, W] (du, dv in pixels), got {tuple(flow.shape)}")
    if like is not None and (flow.shape[0] != like.shape[0] or flow.shape[2:] != like.shape[2:]):
        raise ValueError(f"{name} must have shape [B, 2, H, W] = [{like.shape[0]}, 2, {like.shape[2]}, {like.shape[3]}], got {tuple(flow.shape)}")
    return flow


def _sample_points(flow: Tensor) -> tuple[Tensor, Tensor]:
    """Continuous pixel coordinates ``(u, v)`` each ``[B, H, W]`` that pixel centres move to."""
    _, _, h, w = flow.shape
    jj = torch.arange(w, dtype=flow.dtype, device=flow.device) + 0.5
    ii = torch.arange(h, dtype=flow.dtype, device=flow.device) + 0.5
    return jj.view(1, 1, w) + flow[:, 0], ii.view(1, h, 1) + flow[:, 1]


def _warp(x: Tensor, flow: Tensor, mode: str, padding_mode: str) -> Tensor:
    _, _, h, w = flow.shape
    u, v = _sample_points(flow)
    grid = torch.stack((2.0 * u / w - 1.0, 2.0 * v / h - 1.0), dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding_mode, align_corners=False)


def backward_warp(x: Tensor, flow: Tensor, mode: str = "bilinear", padding_mode: str = "border") -> Tensor:
    r"""Warp ``x`` (on view b) onto view a: ``out[i, j] = x(j + 0.5 + du[i, j], i + 0.5 + dv[i, j])``.

    Args:
        x: values on view b ``[B, C, H, W]``.
        flow: flow from a to b in pixels ``[B, 2, H, W]``.
        mode: ``"bilinear"`` or ``"nearest"`` (``grid_sample`` modes).
        padding_mode: ``"border"`` (default), ``"zeros"`` or ``"reflection"`` for samples
            outside the image; see :func:`flow_in_bounds` to mask them.

    Returns:
        ``[B, C, H, W]``. An integer flow shifts ``x`` exactly in float64; in float32,
        ``grid_sample``'s coordinate (un)normalisation leaves weights of ~1e-7.

    Example:
        >>> img = torch.rand(1, 3, 4, 6)
        >>> flow = torch.zeros(1, 2, 4, 6); flow[:, 0] = 1.0   # one pixel to the right
        >>> torch.allclose(backward_warp(img, flow)[..., :5], img[..., 1:])
        True
    """
    check_float(check_tensor(x, "x", "[B, C, H, W]", ndims=(4,)), "x")
    _check_flow(flow, "flow", like=x)
    check_choice(mode, "mode", ("bilinear", "nearest"))
    check_choice(padding_mode, "padding_mode", ("border", "zeros", "reflection"))
    return _warp(x, flow, mode, padding_mode)


def flow_in_bounds(flow: Tensor) -> Tensor:
    """``[B, 1, H, W]`` bool: True where the flow lands inside the hull of pixel centres,
    ``0.5 <= u <= W - 0.5`` and ``0.5 <= v <= H - 0.5``, so bilinear sampling uses only
    pixels of the image (no padding)."""
    _check_flow(flow, "flow")
    _, _, h, w = flow.shape
    u, v = _sample_points(flow)
    tol = 1e-4
    ok = (u >= 0.5 - tol) & (u <= w - 0.5 + tol) & (v >= 0.5 - tol) & (v <= h - 0.5 + tol)
    return ok.unsqueeze(1)


def fb_consistency_mask(
    flow_fw: Tensor, flow_bw: Tensor, alpha1: float = 0.01, alpha2: float = 0.5, check_bounds: bool = False
) -> Tensor:
    r"""Forward-backward consistency (non-occlusion) mask for view a.

    ``|f + b~|^2 < alpha1 (|f|^2 + |b~|^2) + alpha2`` with ``b~ = backward_warp(flow_bw, flow_fw)``.

    Args:
        flow_fw: flow a -> b ``[B, 2, H, W]``.
        flow_bw: flow b -> a ``[B, 2, H, W]``.
        alpha1, alpha2: UnFlow's thresholds (relative and absolute, in pixels^2).
        check_bounds: also mark pixels whose flow leaves the image as inconsistent.

    Returns:
        ``[B, 1, H, W]`` bool, True where consistent (visible in both views).
    """
    _check_flow(flow_fw, "flow_fw")
    _check_flow(flow_bw, "flow_bw", like=flow_fw)
    check_positive(alpha1, "alpha1", allow_zero=True)
    check_positive(alpha2, "alpha2", allow_zero=True)
    b = _warp(flow_bw, flow_fw, "bilinear", "border")
    lhs = ((flow_fw + b) ** 2).sum(1, keepdim=True)
    rhs = alpha1 * ((flow_fw**2).sum(1, keepdim=True) + (b**2).sum(1, keepdim=True)) + alpha2
    ok = lhs < rhs
    if check_bounds:
        ok = ok & flow_in_bounds(flow_fw)
    return ok


def flow_warp_loss(
    map_a: Tensor,
    map_b: Tensor,
    flow_ab: Tensor,
    valid: Tensor | None = None,
    flow_ba: Tensor | None = None,
    alpha1: float = 0.01,
    alpha2: float = 0.5,
) -> Tensor:
    r"""Masked mean L1 between ``map_a`` and ``map_b`` warped onto view a.

    ``L = sum_{b,c,i} m[i] |map_a - backward_warp(map_b, flow_ab)|[c, i] / (C sum_{b,i} m[i])``,
    ``m = valid & flow_in_bounds(flow_ab) & fb_consistency_mask(flow_ab, flow_ba)`` (the last
    factor only when ``flow_ba`` is given). Zero (with a graph) when nothing is valid.
    The mask is not differentiated; gradients flow to both maps (and to ``flow_ab`` through
    the bilinear sampling).

    Args:
        map_a: per-pixel attributes of view a ``[B, C, H, W]`` (e.g. rendered xyz).
        map_b: the same attributes rendered for view b ``[B, C, H, W]``.
        flow_ab: flow a -> b in pixels ``[B, 2, H, W]``.
        valid: optional ``[B, 1, H, W]`` bool mask on view a (e.g. flow-network confidence).
        flow_ba: optional flow b -> a for the forward-backward occlusion test.
        alpha1, alpha2: thresholds of :func:`fb_consistency_mask`.

    Returns:
        scalar.

    Example:
        >>> xyz_a, xyz_b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
        >>> loss = flow_warp_loss(xyz_a, xyz_b, torch.zeros(1, 2, 8, 8))
    """
    check_float(check_tensor(map_a, "map_a", "[B, C, H, W]", ndims=(4,)), "map_a")
    check_float(check_tensor(map_b, "map_b", "[B, C, H, W]", ndims=(4,)), "map_b")
    if map_a.shape != map_b.shape:
        raise ValueError(f"map_a and map_b must have the same shape [B, C, H, W], got {tuple(map_a.shape)} and {tuple(map_b.shape)}")
    _check_flow(flow_ab, "flow_ab", like=map_a)
    m = flow_in_bounds(flow_ab)
    if valid is not None:
        check_tensor(valid, "valid", "[B, 1, H, W]", ndims=(4,))
        if valid.shape != (map_a.shape[0], 1, *map_a.shape[2:]):
            raise ValueError(f"valid must have shape [B, 1, H, W] = {(map_a.shape[0], 1, *map_a.shape[2:])}, got {tuple(valid.shape)}")
        m = m & valid.bool()
    if flow_ba is not None:
        _check_flow(flow_ba, "flow_ba", like=map_a)
        m = m & fb_consistency_mask(flow_ab.detach(), flow_ba.detach(), alpha1, alpha2)
    warped = _warp(map_b, flow_ab, "bilinear", "border")
    mf = m.to(map_a.dtype)
    num = (mf * (map_a - warped).abs()).sum()
    return num / (map_a.shape[1] * mf.sum()).clamp_min(1.0)


class FlowWarpLoss(Regularizer):
    """Module form of :func:`flow_warp_loss`; ``forward(map_a, map_b, flow_ab, valid=None, flow_ba=None)``."""

    name = "flow_warp"

    def __init__(self, weight: float = 1.0, schedule: Schedule | None = None, alpha1: float = 0.01, alpha2: float = 0.5) -> None:
        super().__init__(weight, schedule)
        self.alpha1, self.alpha2 = alpha1, alpha2

    def loss(self, map_a: Tensor, map_b: Tensor, flow_ab: Tensor, valid: Tensor | None = None, flow_ba: Tensor | None = None) -> Tensor:
        return flow_warp_loss(map_a, map_b, flow_ab, valid, flow_ba, self.alpha1, self.alpha2)
