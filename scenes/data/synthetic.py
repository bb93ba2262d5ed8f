"""Synthetic ground truth: render a mesh from known cameras into a nerfstudio dataset.

A mesh (textured through UVs, vertex- or face-coloured, or plain) is ray cast on
the CPU with Open3D's ``RaycastingScene`` from N pinhole cameras, giving per
view an RGB image, alpha, z-depth, world-space normals and the world point of
every pixel; from those, optical flow between every ordered pair of views with
an occlusion mask. :func:`render_synthetic` writes the lot as a nerfstudio
``transforms.json`` dataset that :func:`scenes.data.load_capture` reads.

The user's path::

    cfg = SyntheticConfig(views=12, resolution=128)
    render_synthetic("assets/spot/spot_triangulated.obj", "out/spot", cfg)
    flow, valid = load_flow("out/spot", 0, 1)

or, in memory, ``render_views(mesh, [(CameraModel, c2w), ...], flow=True)``.

Conventions (``docs/architecture.md``): poses are camera-to-world with OpenCV
axes in memory and OpenGL/Blender axes in ``transforms.json`` (nerfstudio's
convention); the ray of pixel ``(i, j)`` passes through its centre
``(j + .5, i + .5)``; depth is z-depth with 0 for background; flow is
``[H, W, 2]`` pixels from view a to view b.

Design choices, each deliberate:

* **One ray per pixel, no anti-aliasing.** RGB, alpha, depth, normals and flow
  all describe the same ray, so they agree exactly; alpha is binary.
* **Unlit albedo by default.** The colour of a surface point is the same in
  every view, so photometric consistency (which reconstruction methods assume)
  holds exactly up to texture resampling. ``shading="headlight"`` adds a
  Lambertian light at the camera (in linear RGB), which breaks that on purpose.
* **Flow validity** (:func:`flow_between`): pixel a hits the surface at world
  point ``p``; ``p`` projects in front of camera b, inside its image; and the
  pixel of b nearest to the projection sees the same surface, i.e. ``p`` lies
  on the tangent plane of b's hit point there, within ``1e-3 z`` plus a
  quarter of b's pixel footprint. This is a depth test made slope-aware:
  comparing depths at the nearest pixel centre falsely flags slanted surfaces
  as occluded, the distance to the hit's tangent plane does not. Flow is
  stored for every pixel of a that hits the surface and lands in front of b
  (also where occluded or outside b, as in Sintel); it is 0 where pixel a
  misses.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from geo.fileio import jsonable

__all__ = [
    "SyntheticConfig",
    "render_views",
    "flow_between",
    "camera_layout",
    "pinhole_camera",
    "render_synthetic",
    "load_flow",
]

_FLOW_REL_TOL = 1e-3
_FLOW_PX_TOL = 0.25
_FLOW_ABS_TOL = 1e-6
_DEFAULT_ALBEDO = (0.7, 0.7, 0.7)


@dataclass
class SyntheticConfig:
    """How to render a synthetic multi-view dataset of a mesh.

    Attributes:
        views: number of cameras.
        resolution: image width and height in pixels (images are square).
        layout: camera placement: ``"ring"`` (a circle at ``elevation_deg``
            around the up axis), ``"sphere"`` (a Fibonacci spiral over the whole
            sphere, randomly turned about the up axis by ``seed``), or
            ``"forward"`` (LLFF-like: a small planar spiral of cameras in front
            of the object, all looking at its centre).
        fov_deg: horizontal (= vertical) field of view in degrees.
        distance: camera distance from the object's centre in scene units;
            ``None`` picks the distance at which the bounding sphere just fits
            the view.
        elevation_deg: height of the ring (and of the forward cameras) above the
            plane normal to ``up``, in degrees.
        up: world up direction of the mesh (Spot's is +y).
        seed: seed of the random turn of the ``"sphere"`` layout.
        flow: write optical flow for every ordered pair of views.
        flow_dtype: ``"float32"``, or ``"float16"`` to halve the files; float16
            rounds a flow of magnitude ``m`` by at most ``m * 2**-11``, i.e.
            <= 0.0625 px while ``|flow| < 256`` px.
        background: RGB in ``[0, 1]`` that images are composited onto.
        shading: ``"unlit"`` (albedo; multi-view consistent) or ``"headlight"``
            (Lambertian, light at the camera).
        normalize: centre the mesh at the origin and scale its bounding sphere
            to radius 1; the applied similarity is stored in ``transforms.json``.
        texture: texture image for a UV-mapped mesh whose file names none (an
            OBJ without ``mtllib``); ``None`` uses the material's image, else
            the only image file next to the mesh.
    """

    views: int = 16
    resolution: int = 256
    layout: Literal["ring", "sphere", "forward"] = "ring"
    fov_deg: float = 40.0
    distance: float | None = None
    elevation_deg: float = 20.0
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)
    seed: int = 0
    flow: bool = True
    flow_dtype: Literal["float32", "float16"] = "float32"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    shading: Literal["unlit", "headlight"] = "unlit"
    normalize: bool = True
    texture: Path | None = None


# --------------------------------------------------------------------------- surface


@dataclass
class _Surface:
    """Triangles plus per-corner attributes, ready to be ray cast and shaded."""

    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64
    corner_uv: np.ndarray | None  # [F, 3, 2]
    texture: np.ndarray | None  # [Ht, Wt, 3] float32 sRGB in [0, 1]
    corner_color: np.ndarray | None  # [F, 3, 3] float32 sRGB in [0, 1]
    corner_normal: np.ndarray  # [F, 3, 3] unit
    face_normal: np.ndarray  # [F, 3] unit, by winding


def _as_surface(mesh: Any, texture: Any = None, crease_angle_deg: float = 60.0) -> _Surface:
    """Read vertices, faces, UVs, texture and colours from a trimesh-like mesh.

    Accepts a ``trimesh.Trimesh`` (a ``Scene`` is concatenated) or any object
    with ``vertices``/``faces`` and optionally ``uv``, ``texture``,
    ``vertex_colors`` (duck typing, so ``scenes.payloads.Mesh`` works too).
    """
    if hasattr(mesh, "to_geometry"):  # trimesh.Scene
        mesh = mesh.to_geometry()
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"mesh: expected vertices [V, 3] and triangles [F, 3], got {vertices.shape} and {faces.shape}")
    if len(faces) == 0:
        raise ValueError("mesh has no triangles")

    uv = tex = colors = None
    visual = getattr(mesh, "visual", None)
    kind = getattr(visual, "kind", None)
    if kind == "texture":
        uv = getattr(visual, "uv", None)
        material = getattr(visual, "material", None)
        image = getattr(material, "image", None)
        if image is None:
            image = getattr(material, "baseColorTexture", None)
        tex = image if texture is None else texture
    elif kind == "vertex":
        colors = np.asarray(visual.vertex_colors)[:, :3][faces]
    elif kind == "face":
        colors = np.repeat(np.asarray(visual.face_colors)[:, None, :3], 3, axis=1)
    elif visual is None:  # duck-typed payload
        uv = getattr(mesh, "uv", None)
        tex = texture if texture is not None else getattr(mesh, "texture", None)
        vc = getattr(mesh, "vertex_colors", None)
        colors = None if vc is None else np.asarray(vc)[:, :3][faces]

    corner_uv = None
    if uv is not None and tex is not None:
        uv = np.asarray(uv, dtype=np.float64)
        if uv.shape != (len(vertices), 2):
            raise ValueError(f"mesh uv: expected [V, 2] = [{len(vertices)}, 2], got {uv.shape}")
        corner_uv = uv[faces]
        tex = _to_float_rgb(tex)
    else:
        tex = None
    if colors is not None:
        colors = _to_float_rgb(colors)
    cross = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    area2 = np.linalg.norm(cross, axis=1)
    face_normal = cross / np.maximum(area2, 1e-300)[:, None]
    corner_normal = _corner_normals(vertices, faces, face_normal, area2, crease_angle_deg)
    return _Surface(vertices, faces, corner_uv, tex, colors, corner_normal, face_normal)


def _to_float_rgb(x: Any) -> np.ndarray:
    """PIL image / uint8 / float array -> float32 RGB in [0, 1] (alpha dropped)."""
    if hasattr(x, "convert"):
        x = x.convert("RGB")
    a = np.asarray(x)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)
    a = a[..., :3]
    return (a.astype(np.float32) / 255.0) if a.dtype == np.uint8 else a.astype(np.float32)


def _corner_normals(
    vertices: np.ndarray, faces: np.ndarray, fn: np.ndarray, area2: np.ndarray, crease_angle_deg: float
) -> np.ndarray:
    """Smooth normals per face corner, not smoothed across creases.

    The normal at corner (f, k) is the area-weighted mean of the normals of the
    faces around that position whose normal is within ``crease_angle_deg`` of
    face f's. Positions are welded first, so UV seams (split vertices) stay
    smooth; a crease angle of 0 gives flat shading.
    """
    if crease_angle_deg <= 0:
        return np.repeat(fn[:, None], 3, axis=1)
    _, weld = np.unique(vertices, axis=0, return_inverse=True)
    cv = weld.reshape(-1)[faces.reshape(-1)]  # welded vertex of each corner
    order = np.argsort(cv, kind="stable")
    counts = np.bincount(cv)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    deg = counts[cv[order]]  # group size of each sorted corner
    # pair every corner with every corner sharing its position (sum of deg^2 pairs)
    rep = np.repeat(np.arange(len(order)), deg)
    offs = np.arange(len(rep)) - np.repeat(np.cumsum(deg) - deg, deg)
    ci = order[rep]
    cj = order[starts[cv[order]][rep] + offs]
    fi, fj = ci // 3, cj // 3
    keep = (fn[fi] * fn[fj]).sum(1) >= math.cos(math.radians(crease_angle_deg)) - 1e-9
    acc = np.zeros((len(cv), 3))
    w = (area2[fj] * keep)[:, None] * fn[fj]
    for d in range(3):
        acc[:, d] = np.bincount(ci, weights=w[:, d], minlength=len(cv))
    n = acc / np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-300)
    return n.reshape(-1, 3, 3)


def _sample_bilinear(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup with repeat wrapping. ``uv [N, 2]`` -> ``[N, 3]``.

    OBJ/OpenGL convention: ``v = 0`` is the bottom row of the image, and texel
    ``(r, c)`` has its centre at ``uv = ((c + .5) / W, 1 - (r + .5) / H)``.
    """
    h, w = tex.shape[:2]
    x = np.mod(uv[:, 0], 1.0) * w - 0.5
    y = np.mod(1.0 - uv[:, 1], 1.0) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64) % w, y0.astype(np.int64) % h
    x1, y1 = (x0 + 1) % w, (y0 + 1) % h
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
    bot = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.clip(c, 0, None) ** (1 / 2.4) - 0.055)


# --------------------------------------------------------------------------- cameras


def pinhole_camera(resolution: int, fov_deg: float):
    """Square pinhole ``CameraModel`` with the principal point at the image centre."""
    from geo.cameras import CameraModel

    f = 0.5 * resolution / math.tan(math.radians(fov_deg) / 2)
    return CameraModel(width=resolution, height=resolution, fx=f, fy=f, cx=resolution / 2, cy=resolution / 2)


def _pixel_rays(cam, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Origins ``[H, W, 3]`` and directions ``[H, W, 3]`` through pixel centres.

    Directions have unit z in the camera frame, so the ray parameter of a hit
    is its z-depth.
    """
    j, i = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    d_cam = np.stack([(j - cam.cx) / cam.fx, (i - cam.cy) / cam.fy, np.ones_like(j)], -1)
    d = d_cam @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], d.shape), d


def _project(cam, c2w: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[..., 3]`` -> pixel coordinates ``[..., 2]`` and z-depth ``[...]``."""
    from geo.transforms import se3_inverse

    w2c = se3_inverse(c2w)
    x = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = x[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([cam.fx * x[..., 0] / z + cam.cx, cam.fy * x[..., 1] / z + cam.cy], -1)
    return uv, z


def _check_cameras(cameras: Sequence) -> list[tuple[Any, np.ndarray]]:
    from geo.transforms import check_rigid

    out = []
    for k, (cam, c2w) in enumerate(cameras):
        model = getattr(cam, "model", "pinhole")
        coeffs = [getattr(cam, n, 0.0) for n in ("k1", "k2", "k3", "k4", "p1", "p2")]
        if not (model == "pinhole" or (model == "opencv" and not any(coeffs))):
            raise ValueError(f"camera {k}: only undistorted (pinhole) cameras are rendered, got model={cam.model!r}")
        c2w = np.asarray(c2w, dtype=np.float64)
        check_rigid(c2w, f"camera {k} c2w")
        out.append((cam, c2w))
    if not out:
        raise ValueError("cameras: need at least one (CameraModel, c2w) pair")
    if len({(c.width, c.height) for c, _ in out}) != 1:
        raise ValueError("cameras: all views must share one image size")
    return out


def camera_layout(cfg: SyntheticConfig, center=(0.0, 0.0, 0.0), radius: float = 1.0) -> list[np.ndarray]:
    """Camera-to-world poses (OpenCV axes) of ``cfg.views`` cameras around a bounding sphere.

    Args:
        cfg: layout, views, fov_deg, distance, elevation_deg, up and seed are used.
        center: ``[3]`` centre the cameras look at.
        radius: bounding-sphere radius, used when ``cfg.distance`` is None.

    Returns:
        list of ``[4, 4]`` float64 c2w matrices.
    """
    from geo.transforms import look_at

    if cfg.views < 1:
        raise ValueError(f"views must be >= 1, got {cfg.views}")
    c = np.asarray(center, dtype=np.float64)
    up = np.asarray(cfg.up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    # azimuth 0 looks from +z towards the centre when up is +y (the front of a y-up model)
    ref = np.array([0.0, 0.0, 1.0]) if abs(up[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = ref - (ref @ up) * up
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    dist = cfg.distance if cfg.distance is not None else radius / math.sin(math.radians(cfg.fov_deg) / 2)
    el = math.radians(cfg.elevation_deg)
    n = cfg.views

    if cfg.layout == "ring":
        az = 2 * np.pi * np.arange(n) / n
        dirs = math.cos(el) * (np.cos(az)[:, None] * e1 + np.sin(az)[:, None] * e2) + math.sin(el) * up
        eyes = c + dist * dirs
    elif cfg.layout == "sphere":
        # Fibonacci spiral: near-uniform, never exactly at the poles (look_at is singular there)
        h = 1 - (2 * np.arange(n) + 1) / n
        az = np.pi * (3 - math.sqrt(5)) * np.arange(n) + np.random.default_rng(cfg.seed).uniform(0, 2 * np.pi)
        s = np.sqrt(1 - h * h)
        dirs = s[:, None] * (np.cos(az)[:, None] * e1 + np.sin(az)[:, None] * e2) + h[:, None] * up
        eyes = c + dist * dirs
    elif cfg.layout == "forward":
        # golden-angle spiral on a disc of radius `radius / 2` in the plane facing the object
        fwd = math.cos(el) * e1 + math.sin(el) * up
        a1 = np.cross(up, fwd)
        a1 /= np.linalg.norm(a1)
        a2 = np.cross(fwd, a1)
        r = 0.5 * radius * np.sqrt((np.arange(n) + 0.5) / n) if n > 1 else np.zeros(1)
        th = np.pi * (3 - math.sqrt(5)) * np.arange(n)
        eyes = c + dist * fwd + r[:, None] * (np.cos(th)[:, None] * a1 + np.sin(th)[:, None] * a2)
    else:
        raise ValueError(f"layout must be 'ring', 'sphere' or 'forward', got {cfg.layout!r}")
    return list(look_at(eyes, np.broadcast_to(c, eyes.shape), up))


# --------------------------------------------------------------------------- rendering


def render_views(
    mesh: Any,
    cameras: Sequence[tuple[Any, np.ndarray]],
    *,
    texture: Any = None,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    shading: Literal["unlit", "headlight"] = "unlit",
    crease_angle_deg: float = 60.0,
    flow: bool = False,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Ray cast a mesh from pinhole cameras.

    Args:
        mesh: ``trimesh.Trimesh`` (textured, vertex/face-coloured or plain
            grey), or an object with ``vertices``, ``faces`` and optional
            ``uv``, ``texture``, ``vertex_colors``.
        cameras: N pairs ``(CameraModel, c2w)``, pinhole, one shared image
            size; ``c2w`` is ``[4, 4]`` with OpenCV axes.
        texture: image (PIL, uint8 or float ``[Ht, Wt, 3]``) overriding the
            mesh material's.
        background: RGB in ``[0, 1]`` composited behind the mesh.
        shading: ``"unlit"`` (albedo) or ``"headlight"`` (Lambertian in linear
            RGB with the light at the camera, 10 % ambient).
        crease_angle_deg: shading normals are smoothed across edges whose
            faces differ by less than this angle; sharper edges stay sharp
            (0: flat shading).
        flow: also compute flow between every ordered pair (``N^2 H W``
            memory; :func:`render_synthetic` streams pairs instead).

    Returns:
        dict with, for N views of size H x W:

        * ``rgb`` ``[N, H, W, 3]`` float32 in ``[0, 1]`` (sRGB, composited);
        * ``alpha`` ``[N, H, W]`` float32, 1 where the ray hits;
        * ``depth`` ``[N, H, W]`` float32 z-depth, 0 on background;
        * ``normals`` ``[N, H, W, 3]`` float32 world-space unit shading normals
          facing the camera, 0 on background;
        * ``points`` ``[N, H, W, 3]`` float64 world hit points, 0 on background;
        * ``face_normals`` ``[N, H, W, 3]`` float32 geometric normals facing the camera;
        * ``face_ids`` ``[N, H, W]`` int64, -1 on background;
        * with ``flow``: ``flow`` ``[N, N, H, W, 2]`` float32 and
          ``flow_valid`` ``[N, N, H, W]`` bool, ``[a, b]`` from view a to b.
    """
    import open3d as o3d
    from tqdm.auto import tqdm

    cams = _check_cameras(cameras)
    if shading not in ("unlit", "headlight"):
        raise ValueError(f"shading must be 'unlit' or 'headlight', got {shading!r}")
    surf = _as_surface(mesh, texture, crease_angle_deg)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(surf.vertices.astype(np.float32), surf.faces.astype(np.uint32))
    bg = np.asarray(background, dtype=np.float32)

    out: dict[str, list] = {k: [] for k in ("rgb", "alpha", "depth", "normals", "points", "face_normals", "face_ids")}
    for cam, c2w in tqdm(cams, desc="render views", disable=not progress):
        o, d = _pixel_rays(cam, c2w)
        rays = np.concatenate([o, d], -1).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy().astype(np.float64)
        m = np.isfinite(t)
        fid = np.where(m, hit["primitive_ids"].numpy().astype(np.int64), -1)
        f = fid[m]
        bu, bv = hit["primitive_uvs"].numpy()[m].astype(np.float64).T
        bary = np.stack([1 - bu - bv, bu, bv], -1)[:, :, None]  # p = w0 v0 + w1 v1 + w2 v2
        dm = d[m]
        # Open3D intersects in float32; redo the ray/hit-triangle intersection in
        # float64 so points lie on both the pixel's ray and the triangle's plane.
        ng = surf.face_normal[f]
        t[m] = ((surf.vertices[surf.faces[f, 0]] - o[m]) * ng).sum(-1) / (dm * ng).sum(-1)
        pts = o[m] + t[m][:, None] * dm
        flip = np.where((ng * dm).sum(-1, keepdims=True) > 0, -1.0, 1.0)  # two-sided: face the camera
        ns = (bary * surf.corner_normal[f]).sum(1) * flip
        ns /= np.maximum(np.linalg.norm(ns, axis=-1, keepdims=True), 1e-12)

        if surf.texture is not None:
            albedo = _sample_bilinear(surf.texture, (bary * surf.corner_uv[f]).sum(1))
        elif surf.corner_color is not None:
            albedo = (bary * surf.corner_color[f]).sum(1)
        else:
            albedo = np.broadcast_to(np.asarray(_DEFAULT_ALBEDO), (len(f), 3))
        if shading == "headlight":
            cos = np.abs((ns * dm).sum(-1, keepdims=True)) / np.linalg.norm(dm, axis=-1, keepdims=True)
            albedo = _linear_to_srgb(_srgb_to_linear(albedo) * (0.1 + 0.9 * cos))

        rgb = np.broadcast_to(bg, (*m.shape, 3)).copy()
        rgb[m] = np.clip(albedo, 0, 1)
        depth = np.zeros(m.shape)
        depth[m] = t[m]
        full = lambda x: _scatter(m, x)  # noqa: E731
        out["rgb"].append(rgb.astype(np.float32))
        out["alpha"].append(m.astype(np.float32))
        out["depth"].append(depth.astype(np.float32))
        out["normals"].append(full(ns).astype(np.float32))
        out["points"].append(full(pts))
        out["face_normals"].append(full(ng * flip).astype(np.float32))
        out["face_ids"].append(fid)
    views = {k: np.stack(v) for k, v in out.items()}
    if flow:
        n = len(cams)
        h, w = views["depth"].shape[1:]
        views["flow"] = np.zeros((n, n, h, w, 2), np.float32)
        views["flow_valid"] = np.zeros((n, n, h, w), bool)
        for a, b, fl, ok in _iter_flows(views, cams, progress):
            views["flow"][a, b], views["flow_valid"][a, b] = fl, ok
        for a in range(n):
            views["flow_valid"][a, a] = views["alpha"][a] > 0
    return views


def _scatter(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    full = np.zeros((*mask.shape, values.shape[-1]), values.dtype)
    full[mask] = values
    return full


def flow_between(
    views: dict[str, np.ndarray],
    cameras: Sequence[tuple[Any, np.ndarray]],
    a: int,
    b: int,
    rel_tol: float = _FLOW_REL_TOL,
    px_tol: float = _FLOW_PX_TOL,
    abs_tol: float = _FLOW_ABS_TOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth optical flow from view a to view b of :func:`render_views` output.

    For each pixel of a that hits the surface at world point ``p``:
    ``flow = project_b(p) - (j + .5, i + .5)``. ``valid`` is true where ``p``
    is in front of b, projects inside b's image, and b's pixel nearest to the
    projection sees ``p``'s surface: with ``q``, ``n_q`` that pixel's hit point
    and geometric normal, ``|n_q . (p - q)| <= z (rel_tol + px_tol / f_b) + abs_tol``
    with ``z`` the depth of ``p`` in b and ``f_b`` b's focal length, i.e. a
    relative depth tolerance plus a fraction of b's pixel footprint ``z / f_b``
    (the tangent plane deviates from a curved surface by the square of the
    sub-pixel offset times the curvature, so coarse images need more slack).

    Returns:
        ``flow [H, W, 2]`` float32 (0 where pixel a misses or ``p`` is behind
        b) and ``valid [H, W]`` bool.
    """
    cams = _check_cameras(cameras)
    cam_b, c2w_b = cams[b]
    hit_a = views["alpha"][a] > 0
    h, w = hit_a.shape
    p = views["points"][a]
    uv_b, z = _project(cam_b, c2w_b, p)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    fl = uv_b - np.stack([jj, ii], -1)
    front = hit_a & (z > 0)
    u, v = uv_b[..., 0], uv_b[..., 1]
    inside = front & (u >= 0) & (u < cam_b.width) & (v >= 0) & (v < cam_b.height)
    valid = np.zeros_like(hit_a)
    if inside.any():
        col = np.floor(uv_b[inside, 0]).astype(np.int64)
        row = np.floor(uv_b[inside, 1]).astype(np.int64)
        hb = views["alpha"][b][row, col] > 0
        q = views["points"][b][row, col]
        nq = views["face_normals"][b][row, col].astype(np.float64)
        off = np.abs(((p[inside] - q) * nq).sum(-1))
        tol = z[inside] * (rel_tol + px_tol / min(cam_b.fx, cam_b.fy)) + abs_tol
        valid[inside] = hb & (off <= tol)
    fl[~front] = 0
    return fl.astype(np.float32), valid


def _iter_flows(views, cams, progress: bool) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    from tqdm.auto import tqdm

    n = len(cams)
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    for a, b in tqdm(pairs, desc="flow pairs", disable=not progress):
        yield (a, b, *flow_between(views, cams, a, b))


# --------------------------------------------------------------------------- dataset


def _normalization(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (of the bounding box) and radius of a bounding sphere of the vertices."""
    center = 0.5 * (vertices.min(0) + vertices.max(0))
    return center, float(np.linalg.norm(vertices - center, axis=1).max())


def _names_material(mesh_path: Path) -> bool:
    """False for an OBJ without ``mtllib`` (its texture must be found elsewhere)."""
    if mesh_path.suffix.lower() != ".obj":
        return True
    with open(mesh_path, errors="replace") as f:
        return any(line.startswith("mtllib") for line in f)


def _find_texture(mesh_path: Path) -> Path | None:
    images = sorted(p for p in mesh_path.parent.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return images[0] if len(images) == 1 else None


def render_synthetic(
    mesh_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: SyntheticConfig | None = None
) -> Path:
    """Render ``mesh_path`` with ``cfg`` and write a nerfstudio dataset to ``out_dir``.

    Layout written (``NNN`` = zero-padded view index)::

        transforms.json        nerfstudio, plus the "flow" and "synthetic" keys below
        images/r_NNN.png       RGB (uint8), composited on cfg.background
        masks/r_NNN.png        alpha, 8-bit (0 or 255)
        depth/r_NNN.npy        float32 z-depth in scene units, 0 = background
        normals/r_NNN.npy      float16 world-space unit normals [H, W, 3], 0 = background
        flow/AAA_BBB.npz       "flow" [H, W, 2] (cfg.flow_dtype) and "valid" [H, W] bool

    ``transforms.json`` extension keys:

    * ``"flow": {"dir": "flow", "pairs": "all", "pattern": "{a:03d}_{b:03d}.npz",
      "dtype": ..., "convention": ...}`` — one file per ordered pair; read
      with :func:`load_flow`.
    * ``"synthetic"``: the config, the source mesh name and
      ``"normalization"``: ``{"center", "scale", "matrix"}`` where ``matrix``
      (4x4) maps original mesh coordinates to the dataset's (``x' = scale *
      (x - center)``); identity when ``cfg.normalize`` is off.

    The dataset is written to a temporary sibling directory and renamed into
    place; an existing ``out_dir`` is replaced only if it is empty or holds a
    ``transforms.json``.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    import trimesh
    from PIL import Image
    from tqdm.auto import tqdm

    from geo.cameras import opencv_to_opengl

    cfg = cfg or SyntheticConfig()
    mesh_path, out_dir = Path(mesh_path), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "transforms.json").exists():
        raise FileExistsError(f"{out_dir} exists and is not a dataset written here; refusing to replace it")
    if cfg.resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {cfg.resolution}")

    mesh = trimesh.load(mesh_path, process=False, force="mesh")
    texture = cfg.texture
    if texture is None and getattr(mesh.visual, "kind", None) == "texture" and not _names_material(mesh_path):
        # trimesh gives UVs without a material a placeholder image; look for the real one
        texture = _find_texture(mesh_path)
    if texture is not None:
        texture = Image.open(texture)
    center, radius = _normalization(np.asarray(mesh.vertices))
    sim, norm_center, scale = np.eye(4), np.zeros(3), 1.0
    if cfg.normalize:
        norm_center, scale = center, 1.0 / radius
        sim[:3, :3] *= scale
        sim[:3, 3] = -scale * center + 0.0  # no -0.0 in the JSON
        mesh.vertices = (np.asarray(mesh.vertices) - center) * scale
        center, radius = np.zeros(3), 1.0
    cam = pinhole_camera(cfg.resolution, cfg.fov_deg)
    poses = camera_layout(cfg, center, radius)
    cams = [(cam, c2w) for c2w in poses]

    views = render_views(mesh, cams, texture=texture, background=cfg.background, shading=cfg.shading, progress=True)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for sub in ("images", "masks", "depth", "normals") + (("flow",) if cfg.flow else ()):
            (tmp / sub).mkdir()
        frames = []
        for k, c2w in enumerate(tqdm(poses, desc="write views")):
            name = f"r_{k:03d}"
            Image.fromarray(_to_uint8(views["rgb"][k])).save(tmp / "images" / f"{name}.png", optimize=True)
            Image.fromarray(_to_uint8(views["alpha"][k])).save(tmp / "masks" / f"{name}.png", optimize=True)
            np.save(tmp / "depth" / f"{name}.npy", views["depth"][k].astype(np.float32))
            np.save(tmp / "normals" / f"{name}.npy", views["normals"][k].astype(np.float16))
            frames.append({
                "file_path": f"images/{name}.png",
                "transform_matrix": (opencv_to_opengl(np.asarray(c2w, dtype=np.float64)) + 0.0).tolist(),  # no -0.0
                "depth_file_path": f"depth/{name}.npy",
                "mask_path": f"masks/{name}.png",
                "normal_file_path": f"normals/{name}.npy",
            })
        if cfg.flow:
            for a, b, fl, ok in _iter_flows(views, cams, progress=True):
                np.savez_compressed(tmp / "flow" / f"{a:03d}_{b:03d}.npz", flow=fl.astype(cfg.flow_dtype), valid=ok)
        meta = {
            "camera_model": "PINHOLE",
            "fl_x": cam.fx, "fl_y": cam.fy, "cx": cam.cx, "cy": cam.cy, "w": cam.width, "h": cam.height,
            "frames": frames,
            "synthetic": {
                "source_mesh": mesh_path.name,
                "config": jsonable(asdict(cfg)),
                "normalization": {
                    "center": norm_center.tolist(),
                    "scale": scale,
                    "matrix": sim.tolist(),
                },
                "depth": "z-depth in scene units, 0 = background",
                "normals": "world-space unit shading normals facing the camera, 0 = background",
                "images": f"RGB composited on background {list(cfg.background)}; alpha in mask_path",
            },
        }
        if cfg.flow:
            meta["flow"] = {
                "dir": "flow",
                "pairs": "all",
                "pattern": "{a:03d}_{b:03d}.npz",
                "dtype": cfg.flow_dtype,
                "convention": (
                    "flow[i, j] = (du, dv) pixels from frame a to frame b, also where occluded; "
                    "0 where frame a misses the mesh; valid = visible in b and inside it"
                ),
            }
        (tmp / "transforms.json").write_text(json.dumps(meta, indent=2))
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir``, replacing an old copy only after the new one is in place."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_flow(dataset_dir: str | os.PathLike, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Flow from frame a to frame b of a dataset written by :func:`render_synthetic`.

    Returns:
        ``flow [H, W, 2]`` float32 pixels and ``valid [H, W]`` bool.
    """
    root = Path(dataset_dir)
    meta = json.loads((root / "transforms.json").read_text())
    spec = meta.get("flow")
    if spec is None:
        raise FileNotFoundError(f"{root}/transforms.json has no 'flow' entry (rendered with flow=False?)")
    n = len(meta["frames"])
    if not (0 <= a < n and 0 <= b < n):
        raise IndexError(f"frames a={a}, b={b} out of range for {n} frames")
    if a == b:
        h, w = int(meta["h"]), int(meta["w"])
        mask = np.asarray(_read_mask(root / meta["frames"][a]["mask_path"]))
        return np.zeros((h, w, 2), np.float32), mask
    with np.load(root / spec["dir"] / spec.get("pattern", "{a:03d}_{b:03d}.npz").format(a=a, b=b)) as z:
        return z["flow"].astype(np.float32), z["valid"].astype(bool)


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path)) > 127


def main() -> None:
    """``python -m scenes.data.synthetic MESH OUT [--views N --resolution R ...]``."""
    import tyro

    def render_synthetic_cli(mesh, out, cfg=SyntheticConfig()) -> None:
        """Render a mesh into a nerfstudio dataset with depth, masks, normals and flow."""
        print(render_synthetic(mesh, out, cfg))

    # real objects, not strings: this module postpones annotations and tyro is local
    render_synthetic_cli.__annotations__ = {
        "mesh": tyro.conf.Positional[Path],
        "out": tyro.conf.Positional[Path],
        "cfg": SyntheticConfig,
        "return": None,
    }
    tyro.cli(render_synthetic_cli, config=(tyro.conf.OmitArgPrefixes,))


if __name__ == "__main__":
    main()
