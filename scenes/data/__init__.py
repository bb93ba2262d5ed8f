"""Dataset readers and writers that turn captures into scene graphs.

One entry point reads any supported capture::

    g = load_capture("data/garden", downscale=4)          # COLMAP, nerfstudio or LLFF
    train = [n for n in g.find(Camera) if n.meta["split"] == "train"]

Every reader returns a :class:`~scenes.SceneGraph` with one ``Camera`` node
per image at ``/cameras/<image stem>`` (made unique with ``_1``, ``_2``, ...),
ordered by image file name; its world transform is the camera-to-world pose
in OpenCV axes. Node meta: ``split`` (``"train"``/``"test"``) and
``image_path`` (the file actually read). ``graph.meta``: ``format``,
``source``, ``downscale`` and format-specific entries (``aabb_scale``, LLFF
``near``/``far``, ...). SfM points become a ``PointCloud`` at ``/points``.

Writers: :func:`write_transforms_json` and :func:`write_colmap`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .colmap import find_colmap_model, load_colmap, write_colmap
from .llff import load_llff
from .nerfstudio import load_nerfstudio, write_transforms_json

__all__ = [
    "FORMATS",
    "detect_format",
    "load_capture",
    "load_colmap",
    "load_llff",
    "load_nerfstudio",
    "write_colmap",
    "write_transforms_json",
]

FORMATS = ("nerfstudio", "colmap", "llff")


def detect_format(path: Path | str) -> str:
    """``"nerfstudio"``, ``"colmap"`` or ``"llff"`` for a capture path.

    Checked in this order: a ``.json`` file or a directory with
    ``transforms.json`` (nerfstudio); a directory with a COLMAP model in
    ``sparse/0/``, ``sparse/`` or itself (COLMAP); a directory with
    ``poses_bounds.npy`` (LLFF) or that file itself.

    Raises:
        FileNotFoundError: the path does not exist, or matches no format (the
            message lists what was looked for).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"capture not found: {p}")
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "nerfstudio"
        if p.name == "poses_bounds.npy":
            return "llff"
    else:
        if (p / "transforms.json").is_file():
            return "nerfstudio"
        if find_colmap_model(p) is not None:
            return "colmap"
        if (p / "poses_bounds.npy").is_file():
            return "llff"
    raise FileNotFoundError(
        f"no supported capture at {p}: looked for a transforms.json file (nerfstudio / instant-ngp / Blender), "
        f"a COLMAP model (cameras.{{bin,txt}} + images.{{bin,txt}} in sparse/0/, sparse/ or the directory itself), "
        f"and poses_bounds.npy (LLFF)"
    )


def load_capture(
    path: Path | str,
    *,
    downscale: int = 1,
    max_size: int | None = None,
    holdout_every: int | None = 8,
    holdout: Sequence[str | int] | None = None,
    load_images: bool = True,
    format: str | None = None,
    images_dir: str | None = None,
):
    """Read a capture (nerfstudio ``transforms.json``, COLMAP, LLFF) into a SceneGraph.

    Args:
        path: a ``transforms*.json`` file, ``poses_bounds.npy``, or a capture
            directory (format detected by :func:`detect_format`).
        downscale: integer factor; intrinsics follow ``CameraModel.downscale``
            and images are area-resampled to its size (depth and masks with
            nearest). A ``<images>_<downscale>/`` folder next to the images
            (LLFF / nerfstudio layout) is read instead when present, with the
            intrinsics scaled to its files' actual size.
        max_size: after ``downscale``, shrink further so the longer side is at
            most this many pixels.
        holdout_every: every frame with ``index % holdout_every == 0`` (in the
            sorted order) is ``"test"`` (LLFF / RegNeRF convention).
        holdout: explicit test frames as node names, image file names or
            indices; takes precedence over ``holdout_every``. With both None
            every frame is ``"train"``.
        load_images: False reads only poses and intrinsics (image headers are
            still read for their size); payloads then have no pixels and
            ``meta["image_path"]`` says where they are.
        format: force ``"nerfstudio"``, ``"colmap"`` or ``"llff"`` instead of
            detecting it.
        images_dir: image folder relative to the capture root for COLMAP
            (default ``images``) and LLFF (default ``images``).

    Returns:
        A SceneGraph with ``Camera`` nodes under ``/cameras`` and, for COLMAP
        (or a nerfstudio ``ply_file_path``), a ``PointCloud`` at ``/points``.
    """
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown capture format {fmt!r}; expected one of {FORMATS}")
    kw = dict(downscale=downscale, max_size=max_size, holdout_every=holdout_every, holdout=holdout, load_images=load_images)
    if fmt == "nerfstudio":
        if images_dir is not None:
            raise ValueError("images_dir does not apply to transforms.json, whose file_path entries locate the images")
        return load_nerfstudio(path, **kw)
    if fmt == "colmap":
        return load_colmap(path, images_dir=images_dir or "images", **kw)
    return load_llff(path, images_dir=images_dir or "images", **kw)
