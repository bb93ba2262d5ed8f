"""nerfstudio / instant-ngp / Blender-synthetic ``transforms.json``.

Keys read (top level, each overridable per frame):

* intrinsics ``fl_x, fl_y, cx, cy, w, h``; or ``camera_angle_x`` /
  ``camera_angle_y`` (horizontal / vertical field of view in radians, as in
  the Blender-synthetic scenes), giving ``fl_x = w / (2 tan(angle_x / 2))``.
  Missing ``w, h`` come from the image file; missing ``cx, cy`` are the image
  centre; a missing ``fl_y`` equals ``fl_x``. A frame-level key beats any
  top-level one, and an explicit focal length beats a field of view at the
  same level.
* distortion ``k1 k2 k3 k4 p1 p2`` and ``camera_model``: ``"OPENCV"``
  (k1, k2, k3, p1, p2), ``"OPENCV_FISHEYE"`` (k1..k4) or ``"PINHOLE"``;
  without ``camera_model`` (instant-ngp) any non-zero coefficient means
  OPENCV.
* ``frames[i].transform_matrix``: camera-to-world with OpenGL/Blender axes
  (x right, y up, z back), converted with :func:`geo.cameras.opengl_to_opencv`.
* ``frames[i].file_path`` relative to the JSON file, extension optional;
  ``depth_file_path`` (``.npy`` float z-depth in scene units, or an integer
  PNG times ``depth_unit_scale_factor``, default 1e-3 i.e. millimetres as in
  nerfstudio); ``mask_path`` (non-zero = valid).
* ``aabb_scale`` (instant-ngp) is copied into ``graph.meta``; a
  ``ply_file_path`` point cloud becomes ``/points``.

RGBA images keep alpha as ``image[..., 3]``; the reader does not turn alpha
into ``Camera.mask`` (masks come only from ``mask_path``), so a method can
choose to composite on a background or to use alpha as a mask.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from geo.cameras import CameraModel, opencv_to_opengl, opengl_to_opencv
from geo.transforms import check_rigid

from .common import (
    FrameRecord,
    atomic_write,
    build_capture_graph,
    read_image_size,
    resolve_image_path,
    write_camera_image,
    write_image,
)

__all__ = ["load_nerfstudio", "write_transforms_json", "parse_frame_camera"]

_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y", "camera_model")
_DIST_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_MODELS = {"OPENCV": "opencv", "OPENCV_FISHEYE": "fisheye", "PINHOLE": "pinhole"}


def _num(where: str, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{where}: field {key!r} must be a finite number, got {v!r}")
    return float(v)


def parse_frame_camera(top: dict, frame: dict, *, where: str, image_size: tuple[int, int] | None) -> CameraModel:
    """``CameraModel`` of one frame from the top-level keys overridden by the frame's.

    Args:
        top, frame: the JSON dicts.
        where: ``"<file>: frames[i]"`` for error messages.
        image_size: ``(w, h)`` of the image file, used when the JSON has no ``w``/``h``.
    """

    def get(key: str, level: dict | None = None):
        if level is not None:
            return _num(where, key, level[key]) if key in level else None
        for lv in (frame, top):
            if key in lv:
                return _num(where, key, lv[key])
        return None

    w, h = get("w"), get("h")
    if w is None or h is None:
        if image_size is None:
            raise ValueError(f"{where}: missing field 'w'/'h' and the image size is unknown")
        w = image_size[0] if w is None else w
        h = image_size[1] if h is None else h

    def focal(fl_key: str, angle_key: str, size: float):
        for lv in (frame, top):  # frame first; at each level fl beats the angle
            f = get(fl_key, lv)
            if f is not None:
                return f
            a = get(angle_key, lv)
            if a is not None:
                if not 0 < a < math.pi:
                    raise ValueError(f"{where}: field {angle_key!r} = {a} is not a field of view in (0, pi) radians")
                return 0.5 * size / math.tan(0.5 * a)
        return None

    fx = focal("fl_x", "camera_angle_x", w)
    fy = focal("fl_y", "camera_angle_y", h)
    if fx is None and fy is None:
        raise ValueError(f"{where}: missing field 'fl_x' (or 'camera_angle_x'): no focal length")
    fx = fy if fx is None else fx
    fy = fx if fy is None else fy
    cx = get("cx")
    cy = get("cy")
    cx = w / 2.0 if cx is None else cx
    cy = h / 2.0 if cy is None else cy

    dist = {k: (get(k) or 0.0) for k in _DIST_KEYS}
    name = frame.get("camera_model", top.get("camera_model"))
    if name is None:
        model = "opencv" if any(dist.values()) else "pinhole"
    elif name in _MODELS:
        model = _MODELS[name]
    else:
        raise ValueError(f"{where}: field 'camera_model' = {name!r} is not supported (use one of {sorted(_MODELS)})")
    unused = {"pinhole": _DIST_KEYS, "opencv": ("k4",), "fisheye": ("p1", "p2")}[model]
    bad = [k for k in unused if dist[k] != 0]
    if bad:
        raise ValueError(f"{where}: distortion {bad} is not part of camera_model {name or model!r}")
    if int(w) != w or int(h) != h or w <= 0 or h <= 0:
        raise ValueError(f"{where}: image size w={w}, h={h} must be positive integers")
    try:
        return CameraModel(int(w), int(h), fx, fy, cx, cy, model, **dist)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"transforms file not found: {path}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    if not isinstance(data.get("frames"), list):
        raise ValueError(f"{path}: missing field 'frames' (a list of frames)")
    return data


def _pose(frame: dict, where: str) -> np.ndarray:
    if "transform_matrix" not in frame:
        raise ValueError(f"{where}: missing field 'transform_matrix'")
    try:
        M = np.array(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field 'transform_matrix' is not a numeric matrix") from None
    if M.shape == (3, 4):
        M = np.vstack([M, [0.0, 0.0, 0.0, 1.0]])
    if M.shape != (4, 4):
        raise ValueError(f"{where}: field 'transform_matrix' must be 4x4 (or 3x4), got shape {list(M.shape)}")
    check_rigid(M, what=f"{where}: field 'transform_matrix'")
    return opengl_to_opencv(M)


def load_nerfstudio(
    path: Path | str,
    *,
    downscale: int = 1,
    max_size: int | None = None,
    holdout_every: int | None = 8,
    holdout: Sequence[str | int] | None = None,
    load_images: bool = True,
):
    """SceneGraph of a ``transforms.json`` capture (see :func:`scenes.data.load_capture`).

    Args:
        path: the JSON file (any name, e.g. ``transforms_train.json``), or a
            directory containing ``transforms.json``.
    """
    from scenes.payloads import PointCloud

    path = Path(path)
    json_path = path / "transforms.json" if path.is_dir() else path
    data = _read_json(json_path)
    base = json_path.parent
    top = {k: data[k] for k in (*_INTRINSIC_KEYS, *_DIST_KEYS) if k in data}

    frames = []
    for i, fr in enumerate(data["frames"]):
        where = f"{json_path}: frames[{i}]"
        if not isinstance(fr, dict):
            raise ValueError(f"{where}: expected an object, got {type(fr).__name__}")
        if not isinstance(fr.get("file_path"), str):
            raise ValueError(f"{where}: missing field 'file_path'")
        c2w = _pose(fr, where)
        try:
            img = resolve_image_path(base / fr["file_path"], what=f"image of {where}")
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} (field 'file_path' = {fr['file_path']!r})") from None
        need_size = not all(k in fr or k in top for k in ("w", "h"))
        cam = parse_frame_camera(top, fr, where=where, image_size=read_image_size(img) if need_size else None)
        depth = fr.get("depth_file_path")
        mask = fr.get("mask_path")
        key = Path(fr["file_path"]).as_posix().removeprefix("./")
        frames.append(
            FrameRecord(
                key=key,
                image_path=img,
                c2w=c2w,
                camera=cam,
                depth_path=None if depth is None else base / depth,
                depth_scale=1.0 if depth is None or str(depth).endswith(".npy") else float(
                    data.get("depth_unit_scale_factor", 1e-3)
                ),
                mask_path=None if mask is None else base / mask,
            )
        )

    graph_meta: dict[str, Any] = {}
    if "aabb_scale" in data:
        graph_meta["aabb_scale"] = data["aabb_scale"]
    points = None
    if isinstance(data.get("ply_file_path"), str):
        ply = base / data["ply_file_path"]
        if not ply.is_file():
            raise FileNotFoundError(f"{json_path}: field 'ply_file_path' names a missing file: {ply}")
        points = PointCloud.load(ply)
    return build_capture_graph(
        frames,
        fmt="nerfstudio",
        source=json_path,
        downscale=downscale,
        max_size=max_size,
        holdout_every=holdout_every,
        holdout=holdout,
        load_images=load_images,
        graph_meta=graph_meta,
        points=points,
    )


# --------------------------------------------------------------------------- writing


def _intrinsics_dict(cam: CameraModel) -> dict[str, Any]:
    d: dict[str, Any] = {
        "camera_model": {v: k for k, v in _MODELS.items()}[cam.model],
        "fl_x": float(cam.fx),
        "fl_y": float(cam.fy),
        "cx": float(cam.cx),
        "cy": float(cam.cy),
        "w": int(cam.width),
        "h": int(cam.height),
    }
    keys = {"pinhole": (), "opencv": ("k1", "k2", "k3", "p1", "p2"), "fisheye": ("k1", "k2", "k3", "k4")}[cam.model]
    d.update({k: float(getattr(cam, k)) for k in keys})
    return d


def _write_ply(path: Path, points: np.ndarray, colors: np.ndarray | None) -> None:
    """Binary little-endian PLY with double xyz (exact round trip) and uchar rgb."""
    n = len(points)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property double {c}" for c in "xyz"]
    dt = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    if colors is not None:
        header += [f"property uchar {c}" for c in ("red", "green", "blue")]
        dt += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    header.append("end_header")
    rec = np.empty(n, dtype=dt)
    for i, c in enumerate("xyz"):
        rec[c] = points[:, i]
    if colors is not None:
        for i, c in enumerate(("red", "green", "blue")):
            rec[c] = colors[:, i]
    atomic_write(path, lambda t: t.write_bytes(("\n".join(header) + "\n").encode("ascii") + rec.tobytes()))


def write_transforms_json(graph, out_dir: Path | str, *, image_format: str = "png", write_depth: bool = True) -> Path:
    """Write the graph's cameras as a nerfstudio ``transforms.json`` capture.

    Layout: ``out_dir/transforms.json``, ``images/<node name>.<image_format>``,
    ``depths/<node name>.npy`` (float32 z-depth, when ``write_depth`` and the
    camera has depth), ``masks/<node name>.png`` (when it has a mask) and
    ``sparse_pc.ply`` (the ``/points`` cloud, if any). Intrinsics shared by
    every camera are written once at the top level, otherwise per frame.
    ``graph.meta["aabb_scale"]`` is kept. Poses are written in OpenGL axes as
    nerfstudio expects; floats are written with full float64 precision, so
    the reader recovers them exactly. Every file goes to a temporary sibling
    and is renamed into place; ``transforms.json`` is written last.

    Returns:
        the path of ``transforms.json``.
    """
    from scenes.payloads import Camera, PointCloud

    out_dir = Path(out_dir)
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("png", "jpg", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    nodes = graph.find(Camera)
    if not nodes:
        raise ValueError("write_transforms_json: the graph has no Camera nodes")

    intr = [_intrinsics_dict(n.payload.model) for n in nodes]
    shared = all(d == intr[0] for d in intr)
    data: dict[str, Any] = dict(intr[0]) if shared else {}
    if "aabb_scale" in graph.meta:
        data["aabb_scale"] = graph.meta["aabb_scale"]

    frames = []
    for node, d in zip(nodes, intr):
        cam = node.payload
        fr: dict[str, Any] = {"file_path": "images/" + write_camera_image(node, out_dir / "images", "." + fmt)}
        fr["transform_matrix"] = opencv_to_opengl(np.asarray(node.world_transform, np.float64)).tolist()
        if not shared:
            fr.update(d)
        if write_depth and cam.depth is not None:
            rel = f"depths/{node.name}.npy"
            depth = np.asarray(cam.depth, np.float32)
            atomic_write(out_dir / rel, lambda t, a=depth: np.save(t, a))  # tmp name ends in .npy
            fr["depth_file_path"] = rel
        if cam.mask is not None:
            rel = f"masks/{node.name}.png"
            write_image(out_dir / rel, cam.mask)
            fr["mask_path"] = rel
        frames.append(fr)
    data["frames"] = frames

    if "/points" in graph and isinstance(graph["/points"].payload, PointCloud):
        node = graph["/points"]
        pc = node.payload
        pts = np.asarray(pc.points, np.float64).reshape(-1, 3)
        T = np.asarray(node.world_transform, np.float64)
        if not np.array_equal(T, np.eye(4)):
            pts = pts @ T[:3, :3].T + T[:3, 3]
        _write_ply(out_dir / "sparse_pc.ply", pts, None if pc.colors is None else np.asarray(pc.colors, np.uint8))
        data["ply_file_path"] = "sparse_pc.ply"

    out = out_dir / "transforms.json"
    atomic_write(out, lambda t: t.write_text(json.dumps(data, indent=2), encoding="utf-8"))
    return out
