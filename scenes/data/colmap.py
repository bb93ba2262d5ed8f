"""COLMAP sparse models (``cameras``, ``images``, ``points3D``; ``.bin`` and ``.txt``).

Layout of the binary files (little-endian; COLMAP's documented format):

* ``cameras.bin``: ``uint64 n``; per camera ``int32 camera_id, int32 model_id,
  uint64 width, uint64 height, float64 params[num_params(model)]``.
* ``images.bin``: ``uint64 n``; per image ``int32 image_id, float64 qvec[4]
  (wxyz), float64 tvec[3], int32 camera_id, char name[] (NUL-terminated),
  uint64 num_points2D, {float64 x, float64 y, int64 point3D_id}[num_points2D]``.
* ``points3D.bin``: ``uint64 n``; per point ``uint64 point3D_id, float64 xyz[3],
  uint8 rgb[3], float64 error, uint64 track_length, {int32 image_id, int32
  point2D_idx}[track_length]``.

``qvec, tvec`` map world to camera (``x_cam = R(q) x_world + t``) with OpenCV
camera axes, and COLMAP puts the image's top-left corner at pixel (0, 0): both
already the project's conventions, so the pose is just the inverse.

Supported camera models: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL,
OPENCV, OPENCV_FISHEYE, and FULL_OPENCV when its rational coefficients
``k4, k5, k6`` are zero (it is then OPENCV plus ``k3``; the writer uses it for
``opencv`` cameras with ``k3 != 0``). Any other model is a ``ValueError``
naming it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from geo.cameras import CameraModel
from geo.transforms import quat_to_rotmat, rotmat_to_quat, se3_from_rt, se3_inverse

from .common import FrameRecord, atomic_write, build_capture_graph, write_camera_image

__all__ = [
    "ColmapCamera",
    "ColmapImage",
    "ColmapPoints",
    "find_colmap_model",
    "read_colmap_model",
    "read_cameras",
    "read_images",
    "read_points3d",
    "load_colmap",
    "write_colmap",
    "camera_to_colmap",
    "colmap_to_camera",
]

# name -> (model id, number of params); ids from COLMAP's src/colmap/sensor/models.h
CAMERA_MODELS: dict[str, tuple[int, int]] = {
    "SIMPLE_PINHOLE": (0, 3),
    "PINHOLE": (1, 4),
    "SIMPLE_RADIAL": (2, 4),
    "RADIAL": (3, 5),
    "OPENCV": (4, 8),
    "OPENCV_FISHEYE": (5, 8),
    "FULL_OPENCV": (6, 12),
    "FOV": (7, 5),
    "SIMPLE_RADIAL_FISHEYE": (8, 4),
    "RADIAL_FISHEYE": (9, 5),
    "THIN_PRISM_FISHEYE": (10, 12),
    "RAD_TAN_THIN_PRISM_FISHEYE": (11, 16),
}
_MODEL_BY_ID = {mid: name for name, (mid, _) in CAMERA_MODELS.items()}
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE", "FULL_OPENCV")


@dataclass(frozen=True)
class ColmapCamera:
    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True)
class ColmapImage:
    image_id: int
    qvec: np.ndarray  # [4] wxyz, world-to-camera rotation
    tvec: np.ndarray  # [3] world-to-camera translation
    camera_id: int
    name: str

    def c2w(self) -> np.ndarray:
        """``[4, 4]`` camera-to-world, OpenCV axes."""
        return se3_inverse(se3_from_rt(quat_to_rotmat(np.asarray(self.qvec, np.float64)), np.asarray(self.tvec, np.float64)))


@dataclass(frozen=True)
class ColmapPoints:
    ids: np.ndarray  # [N] int64
    xyz: np.ndarray  # [N, 3] float64
    rgb: np.ndarray  # [N, 3] uint8
    error: np.ndarray  # [N] float64


# --------------------------------------------------------------------------- camera models


def colmap_to_camera(cam: ColmapCamera, *, source: Path | str = "cameras") -> CameraModel:
    """``CameraModel`` of a COLMAP camera; ``ValueError`` naming ``source`` for unsupported models."""
    p = [float(x) for x in cam.params]
    w, h, m = int(cam.width), int(cam.height), cam.model
    if m == "SIMPLE_PINHOLE":
        return CameraModel(w, h, p[0], p[0], p[1], p[2], "pinhole")
    if m == "PINHOLE":
        return CameraModel(w, h, p[0], p[1], p[2], p[3], "pinhole")
    if m == "SIMPLE_RADIAL":
        return CameraModel(w, h, p[0], p[0], p[1], p[2], "opencv", k1=p[3])
    if m == "RADIAL":
        return CameraModel(w, h, p[0], p[0], p[1], p[2], "opencv", k1=p[3], k2=p[4])
    if m == "OPENCV":
        return CameraModel(w, h, p[0], p[1], p[2], p[3], "opencv", k1=p[4], k2=p[5], p1=p[6], p2=p[7])
    if m == "OPENCV_FISHEYE":
        return CameraModel(w, h, p[0], p[1], p[2], p[3], "fisheye", k1=p[4], k2=p[5], k3=p[6], k4=p[7])
    if m == "FULL_OPENCV" and not any(p[9:12]):
        # params: fx fy cx cy k1 k2 p1 p2 k3 k4 k5 k6; with k4..k6 = 0 the rational model is OPENCV + k3
        return CameraModel(w, h, p[0], p[1], p[2], p[3], "opencv", k1=p[4], k2=p[5], p1=p[6], p2=p[7], k3=p[8])
    why = "with non-zero rational coefficients k4..k6 " if m == "FULL_OPENCV" else ""
    raise ValueError(
        f"{source}: camera {cam.camera_id} uses the COLMAP camera model {m} {why}which is not supported "
        f"(supported: {', '.join(SUPPORTED_MODELS)}; FULL_OPENCV only with k4 = k5 = k6 = 0). "
        "Undistort the images with `colmap image_undistorter` or re-run SfM with a supported model."
    )


def camera_to_colmap(cam: CameraModel, camera_id: int) -> ColmapCamera:
    """The most specific COLMAP model that represents ``cam`` exactly.

    ``opencv`` cameras with ``k3 != 0`` become FULL_OPENCV with zero rational
    terms, since COLMAP's OPENCV model has no ``k3``.
    """
    w, h = int(cam.width), int(cam.height)
    if cam.model == "pinhole":
        return ColmapCamera(camera_id, "PINHOLE", w, h, (cam.fx, cam.fy, cam.cx, cam.cy))
    if cam.model == "opencv":
        base = (cam.fx, cam.fy, cam.cx, cam.cy, cam.k1, cam.k2, cam.p1, cam.p2)
        if cam.k3 == 0:
            return ColmapCamera(camera_id, "OPENCV", w, h, base)
        return ColmapCamera(camera_id, "FULL_OPENCV", w, h, base + (cam.k3, 0.0, 0.0, 0.0))
    if cam.model == "fisheye":
        return ColmapCamera(camera_id, "OPENCV_FISHEYE", w, h, (cam.fx, cam.fy, cam.cx, cam.cy, cam.k1, cam.k2, cam.k3, cam.k4))
    raise ValueError(f"camera model {cam.model!r} has no COLMAP equivalent")


# --------------------------------------------------------------------------- binary reading


class _Reader:
    """Bounds-checked little-endian reader that names the file and record on truncation."""

    def __init__(self, path: Path):
        self.path = path
        self.buf = path.read_bytes()
        self.pos = 0

    def take(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise ValueError(
                f"{self.path}: truncated file while reading {what} "
                f"(needs {size} bytes at offset {self.pos}, file has {len(self.buf)})"
            )
        out = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return out

    def array(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = dtype.itemsize * count
        if self.pos + nbytes > len(self.buf):
            raise ValueError(
                f"{self.path}: truncated file while reading {what} "
                f"(needs {nbytes} bytes at offset {self.pos}, file has {len(self.buf)})"
            )
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += nbytes
        return out

    def cstring(self, what: str) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise ValueError(f"{self.path}: truncated file while reading {what} (no terminating NUL)")
        s = self.buf[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return s

    def finish(self) -> None:
        if self.pos != len(self.buf):
            raise ValueError(f"{self.path}: {len(self.buf) - self.pos} unexpected trailing bytes after the last record")


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    (n,) = r.take("Q", "the number of cameras")
    cams = {}
    for i in range(n):
        cid, mid, w, h = r.take("iiQQ", f"camera record {i}")
        if mid not in _MODEL_BY_ID:
            raise ValueError(f"{path}: camera {cid} has unknown COLMAP camera model id {mid}")
        model = _MODEL_BY_ID[mid]
        params = r.take("d" * CAMERA_MODELS[model][1], f"the {model} parameters of camera {cid}")
        cams[cid] = ColmapCamera(cid, model, w, h, tuple(params))
    r.finish()
    return cams


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    (n,) = r.take("Q", "the number of images")
    imgs = {}
    for i in range(n):
        rec = r.take("i4d3di", f"image record {i}")
        name = r.cstring(f"the name of image {rec[0]}")
        (npts,) = r.take("Q", f"the number of 2D points of image {rec[0]} ({name})")
        r.array(np.uint8, 24 * npts, f"the 2D points of image {rec[0]} ({name})")  # x, y, point3D_id
        imgs[rec[0]] = ColmapImage(rec[0], np.array(rec[1:5]), np.array(rec[5:8]), rec[8], name)
    r.finish()
    return imgs


_POINT_DTYPE = np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("track_length", "<u8")])


def _read_points_bin(path: Path) -> ColmapPoints:
    # Records have variable length (the track), so one pass finds where each
    # starts and numpy then gathers the fixed-size heads (the files reach
    # millions of points; unpacking each one in Python is too slow).
    r = _Reader(path)
    (n,) = r.take("Q", "the number of points")
    head = _POINT_DTYPE.itemsize  # 51 bytes, packed
    starts = np.empty(n, np.int64)
    pos, size = r.pos, len(r.buf)
    for i in range(n):
        if pos + head > size:
            raise ValueError(
                f"{path}: truncated file while reading point record {i} "
                f"(needs {head} bytes at offset {pos}, file has {size})"
            )
        starts[i] = pos
        pos += head + 8 * int.from_bytes(r.buf[pos + head - 8 : pos + head], "little")
    if pos > size:
        raise ValueError(f"{path}: truncated file while reading the track of point record {n - 1}")
    r.pos = pos
    r.finish()
    raw = np.frombuffer(r.buf, np.uint8)
    recs = np.empty(n, _POINT_DTYPE)
    for k in range(0, n, 1 << 16):  # bounded index arrays
        chunk = starts[k : k + (1 << 16)]
        recs[k : k + len(chunk)] = raw[chunk[:, None] + np.arange(head)].reshape(-1).view(_POINT_DTYPE)
    return ColmapPoints(recs["id"].astype(np.int64), recs["xyz"].copy(), recs["rgb"].copy(), recs["error"].copy())


# --------------------------------------------------------------------------- text reading


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the non-comment lines; blank lines kept (an image may have no 2D points)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.lstrip().startswith("#"):
                out.append((k, line))
    return out


def _parse(path: Path, lineno: int, what: str, conv, tokens: Sequence[str]):
    try:
        return [conv(t) for t in tokens]
    except ValueError as e:
        raise ValueError(f"{path}:{lineno}: malformed {what}: {e}") from None


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for k, line in _data_lines(path):
        tok = line.split()
        if not tok:
            continue
        if len(tok) < 4:
            raise ValueError(f"{path}:{k}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...', got {line!r}")
        cid, w, h = _parse(path, k, "camera id/size", int, [tok[0], tok[2], tok[3]])
        model = tok[1]
        params = tuple(_parse(path, k, f"parameters of camera {cid}", float, tok[4:]))
        if model in CAMERA_MODELS and len(params) != CAMERA_MODELS[model][1]:
            raise ValueError(
                f"{path}:{k}: camera {cid} ({model}) has {len(params)} parameters, expected {CAMERA_MODELS[model][1]}"
            )
        cams[cid] = ColmapCamera(cid, model, w, h, params)
    return cams


def _read_images_txt(path: Path) -> dict[int, ColmapImage]:
    lines = _data_lines(path)
    imgs = {}
    i = 0
    while i < len(lines):
        k, line = lines[i]
        if not line.strip():
            i += 1
            continue
        tok = line.split(maxsplit=9)
        if len(tok) < 10:
            raise ValueError(f"{path}:{k}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {line!r}")
        (iid,) = _parse(path, k, "image id", int, tok[:1])
        q = _parse(path, k, f"qvec of image {iid}", float, tok[1:5])
        t = _parse(path, k, f"tvec of image {iid}", float, tok[5:8])
        (cid,) = _parse(path, k, f"camera id of image {iid}", int, tok[8:9])
        imgs[iid] = ColmapImage(iid, np.array(q), np.array(t), cid, tok[9].strip())
        i += 1
        # the next line lists the 2D points (possibly empty); tolerate writers that omit it
        if i < len(lines) and _is_numeric_line(lines[i][1]):
            i += 1
    return imgs


def _is_numeric_line(line: str) -> bool:
    try:
        [float(t) for t in line.split()]
    except ValueError:
        return False
    return True


def _read_points_txt(path: Path) -> ColmapPoints:
    ids, xyz, rgb, err = [], [], [], []
    for k, line in _data_lines(path):
        tok = line.split()
        if not tok:
            continue
        if len(tok) < 8:
            raise ValueError(f"{path}:{k}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK...', got {line!r}")
        ids.append(_parse(path, k, "point id", int, tok[:1])[0])
        xyz.append(_parse(path, k, "point position", float, tok[1:4]))
        rgb.append(_parse(path, k, "point colour", int, tok[4:7]))
        err.append(_parse(path, k, "point error", float, tok[7:8])[0])
    return ColmapPoints(
        np.array(ids, np.int64).reshape(-1),
        np.array(xyz, np.float64).reshape(-1, 3),
        np.array(rgb, np.int64).reshape(-1, 3).clip(0, 255).astype(np.uint8),
        np.array(err, np.float64).reshape(-1),
    )


# --------------------------------------------------------------------------- model files


def _model_file(model_dir: Path, stem: str, ext: str | None) -> Path:
    exts = [ext] if ext else [".bin", ".txt"]
    for e in exts:
        p = model_dir / f"{stem}{e}"
        if p.is_file():
            return p
    raise FileNotFoundError(f"COLMAP model file not found: {model_dir / stem}{{{','.join(exts)}}}")


def read_cameras(path: Path) -> dict[int, ColmapCamera]:
    """``cameras.bin`` or ``cameras.txt`` by suffix."""
    path = Path(path)
    return _read_cameras_bin(path) if path.suffix == ".bin" else _read_cameras_txt(path)


def read_images(path: Path) -> dict[int, ColmapImage]:
    """``images.bin`` or ``images.txt`` by suffix."""
    path = Path(path)
    return _read_images_bin(path) if path.suffix == ".bin" else _read_images_txt(path)


def read_points3d(path: Path) -> ColmapPoints:
    """``points3D.bin`` or ``points3D.txt`` by suffix."""
    path = Path(path)
    return _read_points_bin(path) if path.suffix == ".bin" else _read_points_txt(path)


def find_colmap_model(root: Path) -> Path | None:
    """The directory holding ``cameras.*`` and ``images.*``: ``root/sparse/0``, ``root/sparse`` or ``root``."""
    root = Path(root)
    for d in (root / "sparse" / "0", root / "sparse", root):
        has = lambda stem: any((d / f"{stem}{e}").is_file() for e in (".bin", ".txt"))  # noqa: E731
        if d.is_dir() and has("cameras") and has("images"):
            return d
    return None


def _model_files(model_dir: Path) -> tuple[Path, Path, Path | None]:
    """``cameras``, ``images`` and (optional) ``points3D`` files; ``.bin`` when both cameras and images have it."""
    ext = ".bin" if (model_dir / "cameras.bin").is_file() and (model_dir / "images.bin").is_file() else None
    try:
        pfile = _model_file(model_dir, "points3D", ext)
    except FileNotFoundError:
        pfile = None
    return _model_file(model_dir, "cameras", ext), _model_file(model_dir, "images", ext), pfile


def read_colmap_model(model_dir: Path):
    """``(cameras, images, points or None)`` of a sparse model dir; ``.bin`` preferred over ``.txt``."""
    cfile, ifile, pfile = _model_files(Path(model_dir))
    return read_cameras(cfile), read_images(ifile), (read_points3d(pfile) if pfile is not None else None)


def _images_root(root: Path, model_dir: Path, images_dir: str | Path) -> Path:
    if Path(images_dir).is_absolute():
        return Path(images_dir)
    # the model may be given directly (scene/sparse/0): look for images/ above it too
    for base in (root, *list(model_dir.parents)[:2]):
        if (base / images_dir).is_dir():
            return base / images_dir
    return root / images_dir


def load_colmap(
    path: Path | str,
    *,
    images_dir: str | Path = "images",
    downscale: int = 1,
    max_size: int | None = None,
    holdout_every: int | None = 8,
    holdout: Sequence[str | int] | None = None,
    load_images: bool = True,
):
    """SceneGraph of a COLMAP reconstruction (see :func:`scenes.data.load_capture`).

    Args:
        path: the scene root (containing ``sparse/0``, ``sparse`` or the model
            files themselves).
        images_dir: image folder, relative to the scene root (or absolute);
            image names in ``images.*`` are relative to it.

    Node meta carries ``colmap_image_id`` and ``colmap_camera_id``; SfM points
    (with colours) become a ``PointCloud`` at ``/points``.
    """
    from scenes.payloads import PointCloud

    root = Path(path)
    model_dir = find_colmap_model(root)
    if model_dir is None:
        raise FileNotFoundError(
            f"no COLMAP model in {root}: looked for cameras.{{bin,txt}} and images.{{bin,txt}} "
            f"in {root / 'sparse' / '0'}, {root / 'sparse'} and {root}"
        )
    cam_file, _, _ = _model_files(model_dir)
    cameras, images, points = read_colmap_model(model_dir)
    img_root = _images_root(root, model_dir, images_dir)

    models = {cid: colmap_to_camera(c, source=cam_file) for cid, c in cameras.items()}
    frames = []
    for im in images.values():
        if im.camera_id not in models:
            raise ValueError(f"{model_dir}: image {im.image_id} ({im.name}) refers to unknown camera {im.camera_id}")
        frames.append(
            FrameRecord(
                key=im.name,
                image_path=img_root / im.name,
                c2w=im.c2w(),
                camera=models[im.camera_id],
                meta={"colmap_image_id": int(im.image_id), "colmap_camera_id": int(im.camera_id)},
            )
        )
    cloud = None
    if points is not None:
        cloud = PointCloud(points=points.xyz, colors=points.rgb)
    return build_capture_graph(
        frames,
        fmt="colmap",
        source=root,
        downscale=downscale,
        max_size=max_size,
        holdout_every=holdout_every,
        holdout=holdout,
        load_images=load_images,
        graph_meta={"colmap_model": str(model_dir), "images_dir": str(img_root)},
        points=cloud,
    )


# --------------------------------------------------------------------------- writing


def _fmt(x: float) -> str:
    return repr(float(x))  # shortest repr that round-trips float64 exactly


def write_colmap(graph, out_dir: Path | str, *, binary: bool = True, image_format: str = "png") -> Path:
    """Write the graph's cameras (and ``/points``) as a COLMAP sparse model.

    Writes ``out_dir/sparse/0/{cameras,images,points3D}.{bin|txt}`` and each
    camera's image as ``out_dir/images/<node name>.<image_format>``. Cameras
    with identical intrinsics share one COLMAP camera. Cameras without an
    image payload have their ``meta["image_path"]`` file copied instead.
    Every file is written to a temporary sibling and renamed into place; the
    model files are written after the images.

    Points are taken from the ``PointCloud`` at ``/points`` if there is one
    (colours default to grey); tracks are left empty.

    Returns:
        the model directory ``out_dir/sparse/0``.
    """
    from scenes.payloads import Camera

    out_dir = Path(out_dir)
    if image_format.lower().lstrip(".") not in ("png", "jpg", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    ext = "." + image_format.lower().lstrip(".")
    nodes = graph.find(Camera)
    if not nodes:
        raise ValueError("write_colmap: the graph has no Camera nodes")

    cam_ids: dict[CameraModel, int] = {}
    cams: list[ColmapCamera] = []
    for node in nodes:
        m = node.payload.model
        if m not in cam_ids:
            cam_ids[m] = len(cam_ids) + 1
            cams.append(camera_to_colmap(m, cam_ids[m]))
    imgs: list[ColmapImage] = []
    for iid, node in enumerate(nodes, 1):
        cam: Camera = node.payload
        name = write_camera_image(node, out_dir / "images", ext)
        w2c = se3_inverse(np.asarray(node.world_transform, np.float64))
        q = rotmat_to_quat(w2c[:3, :3])
        imgs.append(ColmapImage(iid, q, w2c[:3, 3].copy(), cam_ids[cam.model], name))

    pts = _graph_points(graph)
    model_dir = out_dir / "sparse" / "0"
    if binary:
        atomic_write(model_dir / "cameras.bin", lambda t: t.write_bytes(_cameras_bin(cams)))
        atomic_write(model_dir / "images.bin", lambda t: t.write_bytes(_images_bin(imgs)))
        atomic_write(model_dir / "points3D.bin", lambda t: t.write_bytes(_points_bin(pts)))
    else:
        atomic_write(model_dir / "cameras.txt", lambda t: t.write_text(_cameras_txt(cams), encoding="utf-8"))
        atomic_write(model_dir / "images.txt", lambda t: t.write_text(_images_txt(imgs), encoding="utf-8"))
        atomic_write(model_dir / "points3D.txt", lambda t: t.write_text(_points_txt(pts), encoding="utf-8"))
    return model_dir


def _graph_points(graph) -> ColmapPoints:
    from scenes.payloads import PointCloud

    node = graph["/points"] if "/points" in graph else None
    if node is None or not isinstance(node.payload, PointCloud):
        return ColmapPoints(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0))
    pc = node.payload
    xyz = np.asarray(pc.points, np.float64).reshape(-1, 3)
    # the points' world positions: apply the node's transform if it is not the identity
    T = np.asarray(node.world_transform, np.float64)
    if not np.array_equal(T, np.eye(4)):
        xyz = xyz @ T[:3, :3].T + T[:3, 3]
    rgb = np.full((len(xyz), 3), 128, np.uint8) if pc.colors is None else np.asarray(pc.colors, np.uint8).reshape(-1, 3)
    return ColmapPoints(np.arange(1, len(xyz) + 1, dtype=np.int64), xyz, rgb, np.zeros(len(xyz)))


def _cameras_bin(cams: list[ColmapCamera]) -> bytes:
    out = [struct.pack("<Q", len(cams))]
    for c in cams:
        out.append(struct.pack("<iiQQ", c.camera_id, CAMERA_MODELS[c.model][0], c.width, c.height))
        out.append(struct.pack("<" + "d" * len(c.params), *c.params))
    return b"".join(out)


def _images_bin(imgs: list[ColmapImage]) -> bytes:
    out = [struct.pack("<Q", len(imgs))]
    for im in imgs:
        out.append(struct.pack("<i4d3di", im.image_id, *map(float, im.qvec), *map(float, im.tvec), im.camera_id))
        out.append(im.name.encode("utf-8") + b"\x00")
        out.append(struct.pack("<Q", 0))
    return b"".join(out)


def _points_bin(p: ColmapPoints) -> bytes:
    out = [struct.pack("<Q", len(p.ids))]
    for i in range(len(p.ids)):
        out.append(struct.pack("<Q3d3BdQ", int(p.ids[i]), *map(float, p.xyz[i]), *map(int, p.rgb[i]), float(p.error[i]), 0))
    return b"".join(out)


def _cameras_txt(cams: list[ColmapCamera]) -> str:
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines.append(f"# Number of cameras: {len(cams)}")
    for c in cams:
        lines.append(" ".join([str(c.camera_id), c.model, str(c.width), str(c.height), *map(_fmt, c.params)]))
    return "\n".join(lines) + "\n"


def _images_txt(imgs: list[ColmapImage]) -> str:
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(imgs)}",
    ]
    for im in imgs:
        lines.append(" ".join([str(im.image_id), *map(_fmt, im.qvec), *map(_fmt, im.tvec), str(im.camera_id), im.name]))
        lines.append("")
    return "\n".join(lines) + "\n"


def _points_txt(p: ColmapPoints) -> str:
    lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(p.ids)}",
    ]
    for i in range(len(p.ids)):
        lines.append(" ".join([str(int(p.ids[i])), *map(_fmt, p.xyz[i]), *map(str, map(int, p.rgb[i])), _fmt(p.error[i])]))
    return "\n".join(lines) + "\n"
