"""Differentiable 3D Gaussian rasterization: the project's one renderer.

:func:`rasterize` follows ``gsplat.rasterization`` (1.5) argument for argument
for the pinhole, non-batched, ``packed=False`` case. Two backends:

* ``"gsplat"``: gsplat's CUDA kernels (CUDA tensors only).
* ``"torch"``: a tiled rasterizer in plain torch (:mod:`geo.raster._tiles`)
  that runs on any device, with a recomputing custom backward pass; this is
  the CPU path.

``backend="auto"`` picks gsplat for CUDA tensors and torch otherwise. The
dense oracle lives in :mod:`geo.raster.reference`; SH evaluation in
:mod:`geo.raster.sh`.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from geo.raster._project import Projected, project_gaussians
from geo.raster.sh import sh_to_color

__all__ = ["rasterize", "RENDER_MODES", "RASTERIZE_MODES", "BACKENDS"]

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
BACKENDS = ("auto", "torch", "gsplat")

# Compositor block shape: `_CHUNK` Gaussians per step along each tile's list,
# and as many tiles per batch as keep a block near `_BUDGET` elements.
_CHUNK = 64
_BUDGET = 1 << 20


def rasterize(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
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
    absgrad: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Rasterize ``N`` 3D Gaussians into ``C`` pinhole cameras.

    Semantics are those of ``gsplat.rasterization(..., packed=False)``.

    Args:
        means: ``[N, 3]`` world-space centres.
        quats: ``[N, 4]`` rotations, wxyz (scalar first), need not be normalised.
        scales: ``[N, 3]`` standard deviations along the Gaussian's axes
            (post-activation, i.e. already ``exp``-ed).
        opacities: ``[N]`` opacities in ``[0, 1]`` (post-sigmoid).
        colors: per-Gaussian features. Without ``sh_degree``: ``[N, D]`` or
            per camera ``[C, N, D]``, any ``D >= 1`` (RGB, semantic logits,
            flow vectors...). With ``sh_degree``: SH coefficients ``[N, K, 3]``
            or ``[C, N, K, 3]``, ``K >= (sh_degree + 1) ** 2``; the colour is
            ``max(SH(dir) + 0.5, 0)`` with ``dir`` from the camera centre to
            the Gaussian centre.
        viewmats: ``[C, 4, 4]`` world-to-camera transforms (OpenCV axes:
            x right, y down, z forward).
        Ks: ``[C, 3, 3]`` pinhole intrinsics.
        width, height: image size in pixels. Pixel ``(i, j)`` has its centre at
            ``(u, v) = (j + 0.5, i + 0.5)``.
        near_plane, far_plane: Gaussians with camera z outside this range are culled.
        radius_clip: cull Gaussians whose pixel radii are both ``<= radius_clip``.
        eps2d: added to the 2D covariance diagonal (screen-space low-pass filter).
        sh_degree: ``None`` for plain features, else the SH degree 0..3 to use.
        backgrounds: ``[C, D]`` colours behind the Gaussians (``D`` colour
            channels; ignored for the depth channel).
        render_mode: ``"RGB"`` (features), ``"D"`` (accumulated z,
            ``sum_i w_i z_i``), ``"ED"`` (expected z, ``D / alpha``), ``"RGB+D"``,
            ``"RGB+ED"`` (depth appended as the last channel).
        rasterize_mode: ``"classic"`` or ``"antialiased"`` (opacity times
            ``sqrt(det(S) / det(S + eps2d I))``, Mip-Splatting).
        absgrad: also accumulate ``meta["means2d"].absgrad`` (AbsGS) in backward.
        backend: ``"auto"`` (gsplat on CUDA, torch elsewhere), ``"torch"`` or ``"gsplat"``.

    Returns:
        A tuple:

        - **colors** ``[C, height, width, X]``: ``X = D`` for ``"RGB"``, 1 for
          ``"D"``/``"ED"``, ``D + 1`` for ``"RGB+D"``/``"RGB+ED"``.
        - **alphas** ``[C, height, width, 1]``: accumulated opacity.
        - **meta**: dict with ``means2d`` ``[C, N, 2]`` (the tensor in the
          autograd graph; ``retain_grad()`` is called when grad is enabled, so
          ``meta["means2d"].grad`` feeds densification), ``radii`` ``[C, N, 2]``
          int32 (0 = culled), ``depths`` ``[C, N]``, ``conics`` ``[C, N, 3]``,
          ``opacities`` ``[C, N]``, ``width``, ``height``, ``n_cameras``,
          ``n_batches`` (1), ``tile_size``, ``gaussian_ids`` / ``camera_ids``
          (``None``: dense layout), ``tiles_per_gauss`` and ``backend``. This
          is what ``gsplat.strategy.DefaultStrategy`` reads with ``packed=False``.

    Raises:
        ValueError: on a wrong shape, dtype, device, option, or NaN/Inf input,
            naming the argument and the expected shape.

    Example:
        >>> N = 100
        >>> means = torch.randn(N, 3) + torch.tensor([0.0, 0.0, 4.0])
        >>> quats, scales = torch.randn(N, 4), torch.rand(N, 3) * 0.1
        >>> opacities, rgb = torch.rand(N), torch.rand(N, 3)
        >>> viewmats = torch.eye(4)[None]
        >>> Ks = torch.tensor([[[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]])
        >>> img, alpha, meta = rasterize(means, quats, scales, opacities, rgb, viewmats, Ks, 64, 48)
        >>> img.shape, alpha.shape
        (torch.Size([1, 48, 64, 3]), torch.Size([1, 48, 64, 1]))
    """
    _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
              backgrounds, render_mode, rasterize_mode, backend)
    width, height = int(width), int(height)
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "torch"
    if backend == "gsplat":
        from geo.raster._gsplat import rasterize_gsplat

        render, alpha, meta = rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
            sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode,
            rasterize_mode=rasterize_mode, absgrad=absgrad,
        )
    else:
        render, alpha, meta = _rasterize_torch(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane, far_plane, radius_clip, eps2d, sh_degree, backgrounds,
            render_mode, rasterize_mode, absgrad,
        )
    if torch.is_grad_enabled() and meta["means2d"].requires_grad:
        meta["means2d"].retain_grad()
    meta["backend"] = backend
    return render, alpha, meta


def _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                     near_plane, far_plane, radius_clip, eps2d, sh_degree, backgrounds,
                     render_mode, rasterize_mode, absgrad):
    from geo.raster._tiles import TILE, CompositeTiles, intersect_tiles

    proj = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        radius_clip=radius_clip, antialiased=rasterize_mode == "antialiased",
    )
    cols, bgs = _prepare_colors(means, colors, viewmats, proj, sh_degree, backgrounds, render_mode)
    plan = intersect_tiles(proj.means2d, proj.radii, proj.depths, width, height)
    render, alpha = CompositeTiles.apply(
        proj.means2d, proj.conics, proj.opacities, cols, plan, _CHUNK, _BUDGET, absgrad
    )
    render = _finish(render, alpha, bgs, render_mode)
    C = viewmats.shape[0]
    meta = {
        "means2d": proj.means2d,
        "radii": proj.radii,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": proj.opacities,
        "camera_ids": None,
        "gaussian_ids": None,
        "batch_ids": None,
        "tiles_per_gauss": plan.tiles_per_gauss.to(torch.int32),
        "flatten_ids": plan.flat_ids,
        "n_isects": plan.n_isects,
        "tile_size": TILE,
        "tile_width": plan.tiles_x,
        "tile_height": plan.tiles_y,
        "width": width,
        "height": height,
        "n_cameras": C,
        "n_batches": 1,
    }
    return render, alpha, meta


def _prepare_colors(means, colors, viewmats, proj: Projected, sh_degree, backgrounds, render_mode):
    """Per-camera features ``[C, N, D']`` (SH evaluated, depth appended) and backgrounds ``[C, D']``."""
    C, N = proj.depths.shape
    if render_mode in ("D", "ED"):
        return proj.depths[..., None], None
    if sh_degree is None:
        cols = colors if colors.dim() == 3 else colors[None].expand(C, *colors.shape)
    else:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
        dirs = means[None, :, :] - campos[:, None, :]  # [C, N, 3]
        coeffs = colors if colors.dim() == 4 else colors[None].expand(C, *colors.shape)
        cols = sh_to_color(sh_degree, dirs, coeffs)  # [C, N, 3]
    if render_mode in ("RGB+D", "RGB+ED"):
        cols = torch.cat([cols, proj.depths[..., None]], -1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], -1)
    return cols, backgrounds


def _finish(render, alpha, backgrounds, render_mode):
    """Add the background and turn accumulated depth into expected depth for the ``ED`` modes."""
    if backgrounds is not None:
        render = render + (1.0 - alpha) * backgrounds[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp_min(1e-10)], -1)
    return render


def _check(name: str, x, shape: tuple, expected: str):
    """Shape check; ``None`` in ``shape`` matches any size."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and s != t for s, t in zip(shape, x.shape)):
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")


def _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
              backgrounds, render_mode, rasterize_mode, backend):
    _check("means", means, (None, 3), "[N, 3]")
    N = means.shape[0]
    _check("quats", quats, (N, 4), f"[N, 4] with N={N}")
    _check("scales", scales, (N, 3), f"[N, 3] with N={N}")
    _check("opacities", opacities, (N,), f"[N] with N={N}")
    _check("viewmats", viewmats, (None, 4, 4), "[C, 4, 4]")
    C = viewmats.shape[0]
    if C == 0:
        raise ValueError("viewmats: expected shape [C, 4, 4] with C >= 1, got C = 0")
    _check("Ks", Ks, (C, 3, 3), f"[C, 3, 3] with C={C}")
    if sh_degree is None:
        if not isinstance(colors, Tensor) or colors.dim() not in (2, 3):
            raise ValueError(f"colors: expected shape [N, D] or [C, N, D], got {_shape(colors)}")
        exp = (N, None) if colors.dim() == 2 else (C, N, None)
        _check("colors", colors, exp, f"[N, D] or [C, N, D] with C={C}, N={N}")
        D = colors.shape[-1]
        if D == 0:
            raise ValueError("colors: expected at least one channel, got D = 0")
    else:
        if not isinstance(sh_degree, int) or not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree: expected None or an int in 0..3, got {sh_degree!r}")
        if not isinstance(colors, Tensor) or colors.dim() not in (3, 4):
            raise ValueError(f"colors: with sh_degree, expected shape [N, K, 3] or [C, N, K, 3], got {_shape(colors)}")
        k = (sh_degree + 1) ** 2
        exp = (N, None, 3) if colors.dim() == 3 else (C, N, None, 3)
        _check("colors", colors, exp, f"[N, K, 3] or [C, N, K, 3] with C={C}, N={N}, K>={k}")
        if colors.shape[-2] < k:
            raise ValueError(f"colors: sh_degree={sh_degree} needs K >= {k} coefficients, got shape {tuple(colors.shape)}")
        D = 3
    if backgrounds is not None:
        _check("backgrounds", backgrounds, (C, D), f"[C, D] with C={C}, D={D}")
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode: expected one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode: expected one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    tensors = {"means": means, "quats": quats, "scales": scales, "opacities": opacities,
               "colors": colors, "viewmats": viewmats, "Ks": Ks}
    if backgrounds is not None:
        tensors["backgrounds"] = backgrounds
    for name, t in tensors.items():
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{name}: expected a float32 or float64 tensor, got dtype {t.dtype}")
        if t.dtype != means.dtype:
            raise ValueError(f"{name}: dtype {t.dtype} differs from means' {means.dtype}")
        if t.device != means.device:
            raise ValueError(f"{name}: on {t.device}, expected means' device {means.device}")
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: contains NaN or Inf")
    if backend == "gsplat" and not means.is_cuda:
        raise ValueError("backend: 'gsplat' needs CUDA tensors; use backend='torch' (or 'auto') on CPU")


def _shape(x):
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
