"""Dense reference rasterizer: every pixel against every Gaussian.

The oracle for :mod:`geo.raster`'s tiled compositor (tests) and the baseline
of ``tools/bench/raster.py``. It shares the projection and SH code with the
fast path and re-implements only the compositing, in the most direct way:
for each camera sort the visible Gaussians by depth (ties by index), evaluate
``alpha`` at all ``P`` pixels (``[P, N]`` memory), and composite with the same
rules as gsplat — ``alpha = min(0.999, o exp(-sigma))``, skip ``sigma < 0`` or
``alpha < 1/255``, and end a pixel before the Gaussian that would bring its
transmittance to ``<= 1e-4``. Plain autograd gives the gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geo.raster._project import ALPHA_THRESHOLD, project_gaussians
from geo.raster._tiles import MAX_ALPHA, T_STOP

__all__ = ["rasterize_dense", "composite_dense"]


def composite_dense(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D]
    depths: Tensor,  # [N]
    visible: Tensor,  # [N] bool
    width: int,
    height: int,
    rows: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Composite one image densely.

    Args:
        means2d, conics, opacities, colors, depths: projected Gaussians of one camera.
        visible: ``[N]`` mask of Gaussians that are not culled.
        width, height: image size.
        rows: optional ``(r0, r1)`` to render only pixel rows ``r0 <= i < r1``
            (the benchmark uses this to time the dense path on a band).

    Returns:
        ``render [h, W, D]`` (no background) and ``alpha [h, W, 1]``, ``h = r1 - r0``.
    """
    r0, r1 = rows if rows is not None else (0, height)
    ids = visible.nonzero().squeeze(1)
    ids = ids[torch.sort(depths.detach()[ids], stable=True).indices]
    m, q, o, c = means2d[ids], conics[ids], opacities[ids], colors[ids]
    dt = means2d.dtype
    ii, jj = torch.meshgrid(
        torch.arange(r0, r1, device=means2d.device), torch.arange(width, device=means2d.device), indexing="ij"
    )
    px = (jj.reshape(-1, 1) + 0.5).to(dt)  # [P, 1]
    py = (ii.reshape(-1, 1) + 0.5).to(dt)
    dx = m[None, :, 0] - px  # [P, M]
    dy = m[None, :, 1] - py
    sigma = 0.5 * (q[None, :, 0] * dx * dx + q[None, :, 2] * dy * dy) + q[None, :, 1] * dx * dy
    alpha = torch.clamp_max(o[None, :] * torch.exp(-sigma), MAX_ALPHA)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    T_after = torch.cumprod(1.0 - alpha, dim=1)  # transmittance after each Gaussian
    # transmittance only falls, so everything from the first Gaussian that
    # would reach T_STOP onwards is dropped
    alive = T_after > T_STOP
    a = torch.where(alive, alpha, torch.zeros_like(alpha))
    T_front = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1.0 - a[:, :-1]], 1), dim=1)
    w = a * T_front  # [P, M]
    render = w @ c
    acc = w.sum(1, keepdim=True)
    h = r1 - r0
    return render.reshape(h, width, -1), acc.reshape(h, width, 1)


def rasterize_dense(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    rows: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor, dict]:
    """Dense counterpart of :func:`geo.raster.rasterize` (same arguments and
    outputs; no input validation, no backend choice). ``rows`` renders a band
    of pixel rows only. Memory is ``O(pixels * N)``: tiny scenes only."""
    from geo.raster import _prepare_colors, _finish

    proj = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        radius_clip=radius_clip, antialiased=rasterize_mode == "antialiased",
    )
    cols, bgs = _prepare_colors(means, colors, viewmats, proj, sh_degree, backgrounds, render_mode)
    visible = (proj.radii > 0).all(-1)
    renders, alphas = [], []
    for ci in range(viewmats.shape[0]):
        r, a = composite_dense(
            proj.means2d[ci], proj.conics[ci], proj.opacities[ci], cols[ci], proj.depths[ci],
            visible[ci], width, height, rows,
        )
        renders.append(r)
        alphas.append(a)
    render, alpha = torch.stack(renders), torch.stack(alphas)
    render = _finish(render, alpha, bgs, render_mode)
    return render, alpha, {"means2d": proj.means2d, "radii": proj.radii, "depths": proj.depths}
