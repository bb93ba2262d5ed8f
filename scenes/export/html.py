"""A standalone HTML page that shows a scene, opened straight from disk.

One file, no server and no network: three.js (vendored from the npm package
``three``, MIT, see ``web/vendor/``) and the viewer code (``web/viewer.js``) are
inlined as one module script, and the scene's arrays are inlined as base64.
The viewer draws:

* Gaussian splats: sorted back to front by view depth on every camera move
  (16-bit counting sort) and alpha-blended with premultiplied colour; each
  Gaussian is projected with the EWA Jacobian to a 2D ellipse covering
  3 standard deviations, as in 3DGS. Colour is the SH DC term only.
* meshes (vertex colours or texture, unlit), point clouds and camera frustums.

It has orbit controls (drag, right-drag to pan, wheel), a node list with
visibility toggles, and keys 1-9 jump to the scene's cameras.

Splat record, 8 little-endian uint32 per Gaussian, all in world coordinates
(node transforms are applied at export)::

    x y z (float32 bits)   rgba (r | g << 8 | b << 16 | a << 24, uint8 each)
    half2(sx, sy)  half2(sz, qw)  half2(qx, qy)  half2(qz, 0)      (IEEE half floats, low half first)
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np

from scenes.graph import SceneGraph
from scenes.payloads import SH_C0, Camera, GaussianCloud, Mesh, PointCloud

__all__ = ["write_html", "pack_splats", "WEB_DIR"]

WEB_DIR = Path(__file__).resolve().parent / "web"
THREE_JS = WEB_DIR / "vendor" / "three.module.min.js"


def pack_splats(cloud: GaussianCloud, to_world: np.ndarray | None = None) -> np.ndarray:
    """``[N, 8]`` uint32 splat records (see the module docstring) of ``cloud`` placed by ``to_world``."""
    import torch

    from geo.transforms import quat_to_rotmat, rotmat_to_quat

    n = cloud.num
    means = np.asarray(cloud.means, np.float64)
    q = np.asarray(cloud.quats, np.float64)
    if to_world is not None:
        T = np.asarray(to_world, np.float64)
        means = means @ T[:3, :3].T + T[:3, 3]
        R = torch.as_tensor(T[:3, :3]) @ quat_to_rotmat(torch.as_tensor(q))
        q = rotmat_to_quat(R).numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    rgb = np.clip(0.5 + SH_C0 * np.asarray(cloud.sh[:, 0, :3], np.float64), 0, 1)
    alpha = 1.0 / (1.0 + np.exp(-np.asarray(cloud.opacity_logits, np.float64)))
    c = np.rint(np.concatenate([rgb, alpha[:, None]], 1) * 255).astype(np.uint32)
    out = np.zeros((n, 8), np.uint32)
    out[:, :3] = means.astype("<f4").view("<u4")
    out[:, 3] = c[:, 0] | (c[:, 1] << 8) | (c[:, 2] << 16) | (c[:, 3] << 24)
    halves = np.zeros((n, 8), np.float16)
    halves[:, :3] = np.clip(np.exp(np.asarray(cloud.log_scales, np.float64)), 0, 65000)
    halves[:, 3:7] = q  # w x y z
    out[:, 4:] = halves.view("<u4")
    return out


def _b64(a) -> str:
    return base64.b64encode(a if isinstance(a, bytes) else np.ascontiguousarray(a).tobytes()).decode("ascii")


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _row_major(T: np.ndarray) -> list[float]:
    return np.asarray(T, np.float64).reshape(-1).tolist()


def _scene_document(graph: SceneGraph, background: str) -> tuple[dict, list[str]]:
    from scenes.export.ply_gaussians import finite_gaussians
    from scenes.voxels import VoxelGrid

    buffers: list[str] = []

    def add(data) -> int:
        buffers.append(_b64(data))
        return len(buffers) - 1

    objects, views = [], []
    for node in graph:
        p, T = node.payload, node.world_transform
        if isinstance(p, GaussianCloud):
            cloud = finite_gaussians(p, f"write_html: {node.path}")
            objects.append({"kind": "splats", "path": node.path, "count": cloud.num, "buffer": add(pack_splats(cloud, T))})
        elif isinstance(p, Mesh):
            e = {"kind": "mesh", "path": node.path, "matrix": _row_major(T),
                 "positions": add(np.asarray(p.vertices, "<f4")), "indices": add(np.asarray(p.faces, "<u4"))}
            if p.uv is not None:
                e["uv"] = add(np.asarray(p.uv, "<f4"))
                if p.texture is not None:
                    e["texture"] = add(_png(p.texture))
            elif p.vertex_colors is not None:
                e["colors"] = add(np.ascontiguousarray(p.vertex_colors, np.uint8))
                e["color_channels"] = int(p.vertex_colors.shape[1])
            objects.append(e)
        elif isinstance(p, (PointCloud, VoxelGrid)):
            if isinstance(p, VoxelGrid):
                idx = np.argwhere(p.density > 0)
                pts, colors = np.asarray(p.bounds_min, np.float64) + (idx + 0.5) * p.voxel_size, None
            else:
                pts, colors = p.points, p.colors
            e = {"kind": "points", "path": node.path, "matrix": _row_major(T), "positions": add(np.asarray(pts, "<f4"))}
            if colors is not None:
                e["colors"] = add(np.ascontiguousarray(colors, np.uint8))
            objects.append(e)
        elif isinstance(p, Camera):
            m = p.model
            v = {"c2w": _row_major(T), "fx": m.fx, "fy": m.fy, "cx": m.cx, "cy": m.cy, "w": m.width, "h": m.height}
            views.append(v)
            objects.append({"kind": "camera", "path": node.path, "view": v})
    bounds = graph.world_bounds()
    content = [n for n in graph if n.payload is not None and not isinstance(n.payload, Camera)]
    cb = None
    for n in content:  # frame the content, not the cameras around it
        b = graph.world_bounds(n.path)
        if b is not None:
            cb = b if cb is None else (np.minimum(cb[0], b[0]), np.maximum(cb[1], b[1]))
    lo, hi = cb if cb is not None else bounds if bounds is not None else (np.zeros(3) - 1, np.zeros(3) + 1)
    center, extent = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) or 1.0
    up = [0.0, 1.0, 0.0]
    if views:  # "up" is the average of the cameras' -y axes (OpenCV), when they agree
        ys = np.array([-np.asarray(v["c2w"]).reshape(4, 4)[:3, 1] for v in views]).mean(0)
        if np.linalg.norm(ys) > 0.5:
            up = (ys / np.linalg.norm(ys)).tolist()
    else:  # a default camera looking at the content from +z, 1.5 extents away
        f = 800.0
        c2w = np.eye(4)
        c2w[:3, :3] = np.diag([1.0, -1.0, -1.0])
        c2w[:3, 3] = center + np.array([0, 0, 1.5 * extent])
        views.append({"c2w": _row_major(c2w), "fx": f, "fy": f, "cx": 400.0, "cy": 300.0, "w": 800, "h": 600})
    doc = {"objects": objects, "views": views, "center": center.tolist(), "extent": extent, "up": up,
           "near": 1e-3 * extent, "far": 100.0 * extent, "background": background}
    return doc, buffers


def write_html(path: str | os.PathLike, graph: SceneGraph, *, title: str = "geo scene", background: str = "ffffff") -> Path:
    """Write a self-contained viewer page for ``graph`` (atomic).

    Args:
        path: a directory (the page is ``index.html`` in it) or a ``.html`` file.
        graph: the scene; Gaussians with NaN/Inf parameters are dropped with a warning.
        title: page title.
        background: page colour as 6 hex digits.

    Returns:
        The HTML file's path.
    """
    from html import escape

    from geo.fileio import atomic_write_bytes

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path / "index.html"
    if len(background) != 6 or any(c not in "0123456789abcdefABCDEF" for c in background):
        raise ValueError(f"write_html: background must be 6 hex digits, got {background!r}")
    doc, buffers = _scene_document(graph, background)
    three = THREE_JS.read_text(encoding="utf-8")
    head, sep, exports = three.rpartition("export{")
    if not sep or not exports.rstrip().endswith("};"):
        raise RuntimeError(f"{THREE_JS}: expected one trailing 'export{{...}};' statement")
    pairs = [p.strip().split(" as ") for p in exports.rstrip()[:-2].split(",")]
    # three's minified top-level names live in their own function scope, apart from the viewer's
    three_script = "const THREE=(()=>{" + head + "return{" + ",".join(f"{p[-1]}:{p[0]}" for p in pairs) + "};})();"
    blocks = "\n".join(f'<script type="application/octet-stream" id="geo-buf-{i}">{b}</script>' for i, b in enumerate(buffers))
    fields = {
        "__TITLE__": escape(title),
        "__BG__": background,
        "__SCENE__": json.dumps(doc, separators=(",", ":")).replace("</", "<\\/"),
        "__BUFFERS__": blocks,
        "__THREE__": three_script,
        "__VIEWER__": (WEB_DIR / "viewer.js").read_text(encoding="utf-8"),
    }
    template = (WEB_DIR / "viewer.html").read_text(encoding="utf-8")
    page = re.sub("|".join(fields), lambda m: fields[m.group(0)], template)  # one pass: inserted text is never rescanned
    return atomic_write_bytes(path, page.encode("utf-8"))
