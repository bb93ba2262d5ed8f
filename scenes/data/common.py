"""Shared machinery of the dataset readers and writers.

A reader parses its format into a list of :class:`FrameRecord` (one per image:
native-resolution intrinsics, an OpenCV camera-to-world pose and file paths)
and hands it to :func:`build_capture_graph`, which does everything that does
not depend on the format: stable ordering and unique names, the train/test
split, locating pre-downscaled image folders, loading and resizing images,
depth maps and masks, and building the :class:`~scenes.SceneGraph`.

Resampling follows the project's pixel-corner convention: scaling an image
from ``W`` to ``W'`` columns maps ``u -> u * W'/W``, so ``fx`` and ``cx`` scale
by the same ratio (``CameraModel.resize`` / ``downscale``, whose rounded size
the image is then resampled to). Images are resized with an area filter (PIL ``BOX``);
depth maps and masks with nearest-neighbour sampling at pixel centres, so no
depth is invented across silhouettes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from geo.cameras import CameraModel
from geo.fileio import atomic_write

__all__ = [
    "IMAGE_EXTENSIONS",
    "FrameRecord",
    "build_capture_graph",
    "assign_splits",
    "unique_names",
    "read_image",
    "read_image_size",
    "read_depth",
    "read_mask",
    "resize_image",
    "resize_nearest",
    "atomic_write",
    "copy_file",
    "write_image",
    "write_camera_image",
    "resolve_image_path",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


@dataclass
class FrameRecord:
    """One image of a capture as a reader parsed it, before loading or resizing.

    Attributes:
        key: the image's name as the format stores it (relative path); frames
            are ordered by it.
        image_path: absolute path of the full-resolution image.
        c2w: ``[4, 4]`` float64 camera-to-world pose, OpenCV axes.
        camera: intrinsics at the resolution ``(camera.width, camera.height)``
            the format states; rescaled to the image file's actual size when it
            differs by a uniform factor.
        depth_path: optional z-depth map (``.npy`` float metres, or an integer
            PNG multiplied by ``depth_scale``).
        mask_path: optional mask image; non-zero marks valid pixels.
        meta: extra JSON-serialisable node meta (e.g. LLFF near/far bounds).
    """

    key: str
    image_path: Path
    c2w: np.ndarray
    camera: CameraModel
    depth_path: Path | None = None
    depth_scale: float = 1.0
    mask_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- naming and split


def unique_names(stems: Sequence[str]) -> list[str]:
    """Make names unique: the first of a repeated stem keeps it, later ones get ``_1``, ``_2``, ...

    A suffix is never one that another image already has as its own stem.
    """
    taken = set(stems)
    used: set[str] = set()
    out = []
    for s in stems:
        name, k = s, 0
        while name in used or (k > 0 and name in taken):
            k += 1
            name = f"{s}_{k}"
        used.add(name)
        out.append(name)
    return out


def assign_splits(
    names: Sequence[str],
    *,
    holdout_every: int | None = 8,
    holdout: Sequence[str | int] | None = None,
    file_names: Sequence[str] | None = None,
) -> list[str]:
    """``"train"``/``"test"`` per frame (frames in their final order).

    An explicit ``holdout`` list (frame names, image file names, or indices
    into the sorted frame list) takes precedence over ``holdout_every``; with
    ``holdout_every = k`` every frame with ``index % k == 0`` is a test frame
    (the LLFF / RegNeRF convention). Both ``None`` puts every frame in train.
    """
    n = len(names)
    if holdout is not None:
        lookup: dict[str, int] = {}
        for i, nm in enumerate(names):
            lookup.setdefault(nm, i)
        for i, fn in enumerate(file_names or ()):
            lookup.setdefault(fn, i)
            lookup.setdefault(Path(fn).name, i)
        test = set()
        for h in holdout:
            if isinstance(h, (int, np.integer)) and not isinstance(h, bool):
                if not -n <= int(h) < n:
                    raise ValueError(f"holdout index {h} out of range for {n} images")
                test.add(int(h) % n)
            elif isinstance(h, str):
                if h not in lookup:
                    raise ValueError(
                        f"holdout image {h!r} is not in the capture; known names: "
                        f"{list(names)[:10]}{' ...' if n > 10 else ''}"
                    )
                test.add(lookup[h])
            else:
                raise TypeError(f"holdout entries must be str or int, got {type(h).__name__}")
        return ["test" if i in test else "train" for i in range(n)]
    if holdout_every is None:
        return ["train"] * n
    if int(holdout_every) < 1:
        raise ValueError(f"holdout_every must be a positive integer or None, got {holdout_every}")
    return ["test" if i % int(holdout_every) == 0 else "train" for i in range(n)]


# --------------------------------------------------------------------------- image files


def resolve_image_path(path: Path, *, what: str = "image") -> Path:
    """``path`` itself, or ``path`` plus an image extension when it has none on disk.

    Blender-synthetic ``transforms_*.json`` files omit ``.png``.

    Raises:
        FileNotFoundError: naming ``path`` (and the extensions tried).
    """
    if path.is_file():
        return path
    for ext in IMAGE_EXTENSIONS:
        cand = path.with_name(path.name + ext)
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{what} not found: {path} (also tried the extensions {', '.join(IMAGE_EXTENSIONS)})")


def _prescaled_path(path: Path, factor: int) -> Path | None:
    """``<dir>_<factor>/<same name or same stem>`` next to ``<dir>/``, as LLFF and nerfstudio lay it out."""
    folder = path.parent.with_name(f"{path.parent.name}_{factor}")
    if not folder.is_dir():
        return None
    cand = folder / path.name
    if cand.is_file():
        return cand
    for ext in IMAGE_EXTENSIONS:  # LLFF's minify writes PNGs next to JPG originals
        cand = folder / (path.stem + ext)
        if cand.is_file():
            return cand
    return None


def _open_pil(path: Path):
    from PIL import Image

    try:
        return Image.open(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # PIL raises several kinds for a corrupt file
        raise ValueError(f"cannot read image {path}: {e}") from e


def read_image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    with _open_pil(path) as im:
        return im.size


def read_image(path: Path) -> np.ndarray:
    """``uint8 [H, W, 3]``, or ``[H, W, 4]`` when the file has alpha (kept as channel 3)."""
    with _open_pil(path) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if im.mode.startswith("I;16") or im.mode in ("I", "F"):
            raise ValueError(f"{path}: {im.mode} image is not an 8-bit colour image")
        im = im.convert("RGBA" if has_alpha else "RGB")
        return np.asarray(im, dtype=np.uint8).copy()


def read_depth(path: Path, scale: float = 1.0) -> np.ndarray:
    """Z-depth ``float32 [H, W]``: a ``.npy`` array times ``scale``, or an integer image times ``scale``.

    Non-finite and negative values become 0 ("no depth").
    """
    if not path.is_file():
        raise FileNotFoundError(f"depth map not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            d = np.load(path)
        except Exception as e:
            raise ValueError(f"cannot read depth map {path}: {e}") from e
    else:
        with _open_pil(path) as im:
            d = np.asarray(im)
    d = np.asarray(d, dtype=np.float64)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"depth map {path}: expected shape [H, W], got {d.shape}")
    d = d * float(scale)
    d[~np.isfinite(d) | (d < 0)] = 0.0  # 0 marks "no depth" (architecture.md)
    return d.astype(np.float32)


def read_mask(path: Path) -> np.ndarray:
    """``bool [H, W]``: True where the mask's first channel (or alpha, for RGBA) is non-zero."""
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    with _open_pil(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        a = a[..., 3] if a.shape[-1] == 4 else a[..., 0]
    return a != 0


def resize_image(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaging (antialiased) resize of a ``uint8 [H, W, C]`` image."""
    from PIL import Image

    if img.shape[1] == width and img.shape[0] == height:
        return img
    # PIL premultiplies alpha for RGBA, so transparent pixels do not bleed colour
    out = Image.fromarray(np.ascontiguousarray(img)).resize((width, height), Image.Resampling.BOX)
    return np.asarray(out, dtype=np.uint8).copy()


def resize_nearest(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of ``[H, W, ...]``, sampling the source pixel under each target pixel centre."""
    h0, w0 = a.shape[:2]
    if (w0, h0) == (width, height):
        return a
    rows = np.minimum(((np.arange(height) + 0.5) * (h0 / height)).astype(np.int64), h0 - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w0 / width)).astype(np.int64), w0 - 1)
    return a[rows[:, None], cols[None, :]]


def _check_same_aspect(cam: CameraModel, size: tuple[int, int], path: Path) -> None:
    w, h = size
    # a uniform scale rounds each side to an integer, so allow one pixel of slack
    if abs(cam.height * w / cam.width - h) > 1.0 + 1e-9 and abs(cam.width * h / cam.height - w) > 1.0 + 1e-9:
        raise ValueError(
            f"{path}: image is {w}x{h} but its camera says {cam.width}x{cam.height} "
            "(not a uniformly scaled version of it)"
        )


# --------------------------------------------------------------------------- graph assembly


def build_capture_graph(
    frames: list[FrameRecord],
    *,
    fmt: str,
    source: Path,
    downscale: int = 1,
    max_size: int | None = None,
    holdout_every: int | None = 8,
    holdout: Sequence[str | int] | None = None,
    load_images: bool = True,
    graph_meta: dict[str, Any] | None = None,
    points=None,
):
    """Order, name, split, load and resize ``frames`` into a SceneGraph.

    Frames are sorted by ``FrameRecord.key``; each becomes a ``Camera`` node at
    ``/cameras/<image stem>`` (made unique). ``points`` (a ``PointCloud``), if
    given, goes to ``/points``.
    """
    from scenes import SceneGraph
    from scenes.payloads import Camera

    if int(downscale) != downscale or downscale < 1:
        raise ValueError(f"downscale must be a positive integer, got {downscale}")
    downscale = int(downscale)
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be a positive integer or None, got {max_size}")
    if not frames:
        raise ValueError(f"{source}: the capture has no images")

    frames = sorted(frames, key=lambda f: f.key)
    names = unique_names([Path(f.key).stem for f in frames])
    splits = assign_splits(names, holdout_every=holdout_every, holdout=holdout, file_names=[f.key for f in frames])

    g = SceneGraph()
    g.meta.update({"format": fmt, "source": str(source), "downscale": downscale})
    if max_size is not None:
        g.meta["max_size"] = int(max_size)
    g.meta.update(graph_meta or {})

    for fr, name, split in zip(frames, names, splits):
        path = resolve_image_path(fr.image_path)
        cam = fr.camera
        native = read_image_size(path)
        if native != (cam.width, cam.height):
            _check_same_aspect(cam, native, path)
            cam = cam.resize(width=native[0], height=native[1])

        # pick the source image and the camera at the target resolution
        src = _prescaled_path(path, downscale) if downscale > 1 else None
        if src is not None:
            size = read_image_size(src)
            _check_same_aspect(cam, size, src)
            cam = cam.resize(width=size[0], height=size[1])
        else:
            src = path
            if downscale > 1:
                cam = cam.downscale(downscale)
        if max_size is not None and max(cam.width, cam.height) > max_size:
            cam = cam.resize(width=max_size) if cam.width >= cam.height else cam.resize(height=max_size)
        target = (cam.width, cam.height)

        image = depth = mask = None
        if load_images:
            image = resize_image(read_image(src), *target)
            if fr.depth_path is not None:
                depth = resize_nearest(read_depth(fr.depth_path, fr.depth_scale), *target)
            if fr.mask_path is not None:
                mask = resize_nearest(read_mask(fr.mask_path), *target)

        meta = {"split": split, "image_path": str(src)}
        if fr.depth_path is not None:
            meta["depth_path"] = str(fr.depth_path)
        if fr.mask_path is not None:
            meta["mask_path"] = str(fr.mask_path)
        meta.update(fr.meta)
        g.add(
            f"/cameras/{name}",
            payload=Camera(cam, image=image, depth=depth, mask=mask, name=Path(fr.key).name, image_path=str(src)),
            transform=np.asarray(fr.c2w, dtype=np.float64),
            meta=meta,
        )
    if points is not None:
        g.add("/points", payload=points)
    return g


# --------------------------------------------------------------------------- atomic writing


def write_image(path: Path, img: np.ndarray) -> None:
    """Atomically write a ``uint8 [H, W, 3|4]`` (or bool/uint8 ``[H, W]``) image; format from the suffix."""
    from PIL import Image

    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        raise ValueError(f"{path}: images are written from uint8 arrays, got {a.dtype}")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image format {Path(path).suffix!r} (use png or jpg)")
    if fmt == "JPEG" and a.ndim == 3 and a.shape[-1] == 4:
        raise ValueError(f"{path}: JPEG has no alpha channel; write RGBA images as png")
    kw = {"quality": 95} if fmt == "JPEG" else {}
    atomic_write(Path(path), lambda t: Image.fromarray(a).save(t, format=fmt, **kw))


def copy_file(src: Path, dst: Path) -> None:
    """Atomic copy of ``src`` to ``dst``."""
    atomic_write(Path(dst), lambda t: shutil.copyfile(src, t))


def write_camera_image(node, folder: Path, ext: str) -> str:
    """Write a Camera node's image to ``folder/<node name><ext>`` and return the file name.

    A node without an image payload has its ``meta["image_path"]`` (or
    ``Camera.image_path``) file copied instead, keeping that file's extension.
    """
    cam = node.payload
    if cam.image is not None:
        img = np.asarray(cam.image)
        if img.dtype != np.uint8:  # float [0, 1] images are allowed in payloads
            img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        fname = node.name + ext
        write_image(folder / fname, img)
        return fname
    src = (node.meta or {}).get("image_path") or cam.image_path
    if src and Path(src).is_file():
        fname = node.name + Path(src).suffix
        copy_file(Path(src), folder / fname)
        return fname
    raise ValueError(f"{node.path}: the camera has no image and no existing image_path to copy")
