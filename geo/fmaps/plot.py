"""Pictures of correspondences: a colour field on the source, transferred to the target,
rendered side by side (what ``geo match --png`` writes).

Meshes are ray cast with Open3D's ``RaycastingScene`` (per-vertex colours interpolated
with the hit's barycentric coordinates, Lambert shading); point clouds are splatted as
discs far to near. Both use the same orthographic view of each shape's own bounding box,
so two shapes in the same frame appear in the same orientation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["position_colors", "render_shape", "save_transfer_png"]


def position_colors(vertices: np.ndarray) -> np.ndarray:
    """A smooth RGB field ``[N, 3]`` in [0, 1]: each coordinate rescaled to its range."""
    v = np.asarray(vertices, dtype=np.float64)
    lo, hi = v.min(0), v.max(0)
    return 0.15 + 0.8 * (v - lo) / np.maximum(hi - lo, 1e-12)


def _view(elevation_deg: float, azimuth_deg: float):
    el, az = np.deg2rad(elevation_deg), np.deg2rad(azimuth_deg)
    d = -np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])  # towards the scene
    right = np.cross(d, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, d)
    return d, right, up


def render_shape(vertices, faces, colors, size: int = 320, view=(20.0, 30.0)) -> np.ndarray:
    """Render ``[size, size, 3]`` uint8 of a coloured mesh (``faces`` given) or point cloud."""
    v = np.asarray(vertices, dtype=np.float64)
    c = np.clip(np.asarray(colors, dtype=np.float64), 0, 1)
    d, right, up = _view(*view)
    center = 0.5 * (v.min(0) + v.max(0))
    p = v - center
    extent = 1.1 * max(np.abs(p @ right).max(), np.abs(p @ up).max(), 1e-12)
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    if faces is not None:
        import open3d as o3d

        f = np.asarray(faces, dtype=np.int64)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(p.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
        s = (np.arange(size) + 0.5) / size * 2 - 1
        xs, ys = np.meshgrid(s * extent, -s * extent)
        origins = xs[..., None] * right + ys[..., None] * up - 3 * extent * d
        rays = np.concatenate([origins, np.broadcast_to(d, origins.shape)], -1).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        tri = hit["primitive_ids"].numpy()
        ok = tri != o3d.t.geometry.RaycastingScene.INVALID_ID
        uv = hit["primitive_uvs"].numpy()[ok]
        fi = f[tri[ok].astype(np.int64)]
        col = (1 - uv[:, :1] - uv[:, 1:]) * c[fi[:, 0]] + uv[:, :1] * c[fi[:, 1]] + uv[:, 1:] * c[fi[:, 2]]
        n = hit["primitive_normals"].numpy()[ok]
        shade = 0.35 + 0.65 * np.abs(n @ d)[:, None]
        img[ok] = np.clip(255 * col * shade, 0, 255).astype(np.uint8)
        return img
    from PIL import Image, ImageDraw

    u = (p @ right / extent + 1) / 2 * size
    w = (1 - (p @ up / extent + 1) / 2) * size
    depth = p @ d
    r = max(1.0, 0.9 * size / np.sqrt(len(v)))
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    for i in np.argsort(-depth):  # far first
        col = tuple(int(255 * x) for x in c[i])
        draw.ellipse([u[i] - r, w[i] - r, u[i] + r, w[i] + r], fill=col)
    return np.asarray(pil)


def save_transfer_png(path: str | os.PathLike, source, target, correspondence, size: int = 320, view=(20.0, 30.0)) -> Path:
    """Colour the source by position, transfer the colours with ``correspondence`` and
    write ``source | target`` side by side to ``path`` (atomically).

    ``source`` / ``target``: anything :func:`geo.fmaps.api.load_shape` reads.
    """
    from PIL import Image, ImageDraw

    from geo.fileio import atomic_write

    from .api import load_shape

    sv, sf, _ = load_shape(source, "source")
    tv, tf, _ = load_shape(target, "target")
    if len(sv) != correspondence.n_source or len(tv) != correspondence.n_target:
        raise ValueError(
            f"the correspondence maps {correspondence.n_source} → {correspondence.n_target} vertices, "
            f"but the shapes have {len(sv)} and {len(tv)}"
        )
    cs = position_colors(sv)
    ct = correspondence.transfer(cs, to="target")
    left, right = render_shape(sv, sf, cs, size, view), render_shape(tv, tf, ct, size, view)
    canvas = Image.new("RGB", (2 * size, size + 24), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, 24))
    canvas.paste(Image.fromarray(right), (size, 24))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), "source (colour = position)", fill=(0, 0, 0))
    draw.text((size + 8, 6), f"target (colours transferred, {correspondence.method})", fill=(0, 0, 0))
    return atomic_write(path, lambda t: canvas.save(t, format="PNG"))
