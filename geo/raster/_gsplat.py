"""The CUDA backend: a thin adapter over ``gsplat.rasterization``.

Inputs are already validated by :func:`geo.raster.rasterize`. gsplat runs in
its dense (``packed=False``) layout so ``meta`` has the same ``[C, N, ...]``
shapes as the torch backend.
"""

from __future__ import annotations

from torch import Tensor


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float,
    far_plane: float,
    radius_clip: float,
    eps2d: float,
    sh_degree: int | None,
    backgrounds: Tensor | None,
    render_mode: str,
    rasterize_mode: str,
    absgrad: bool,
) -> tuple[Tensor, Tensor, dict]:
    """Call gsplat; same arguments and outputs as :func:`geo.raster.rasterize`."""
    from gsplat import rasterization

    render, alpha, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
        sh_degree=sh_degree, packed=False, backgrounds=backgrounds, render_mode=render_mode,
        absgrad=absgrad, rasterize_mode=rasterize_mode,
    )
    meta = dict(meta)
    meta.setdefault("n_cameras", viewmats.shape[0])
    return render, alpha, meta
