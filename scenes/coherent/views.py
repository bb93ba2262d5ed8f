"""Training and evaluation views: selection, undistortion, downscaling.

A :class:`View` is what both methods train on: a pinhole camera at the training
resolution, its camera-to-world pose (OpenCV axes), the image as float ``[H, W, 3]``
in [0, 1], and the dataset's mask and depth when it has them. Real captures are
handled here once: lens distortion is removed first (``CameraModel.undistort_image``),
then images larger than ``resolution`` are area-downscaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenes.payloads import Camera

__all__ = ["View", "select_views", "prepare_view", "dataset_frame_index"]


@dataclass
class View:
    """One camera ready for training or evaluation (numpy arrays; torch tensors are made by the trainers)."""

    name: str
    path: str
    model: object  # geo.cameras.CameraModel, pinhole
    c2w: np.ndarray  # [4, 4] float64
    image: np.ndarray  # [H, W, 3] float32 in [0, 1]
    mask: np.ndarray | None  # [H, W] bool
    depth: np.ndarray | None  # [H, W] float32, 0 = unknown
    frame: int | None  # index in the dataset's frame list (for stored flow)

    @property
    def height(self) -> int:
        return int(self.model.height)

    @property
    def width(self) -> int:
        return int(self.model.width)


def select_views(graph, n: int, how: str = "spread"):
    """``(train, test)`` camera nodes: ``n`` of the train split and every test-split camera."""
    cams = graph.find(Camera)
    train = [c for c in cams if c.meta.get("split", "train") == "train"]
    test = [c for c in cams if c.meta.get("split") == "test"]
    if len(train) < n:
        raise ValueError(f"need {n} training views, the dataset has {len(train)} in its train split")
    if how == "first":
        idx = list(range(n))
    else:
        idx = np.linspace(0, len(train) - 1, n + 1)[:-1].round().astype(int).tolist() if n > 1 else [0]
    return [train[i] for i in idx], test


def _as_float_image(img: np.ndarray) -> np.ndarray:
    img = img[..., :3]
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)


def prepare_view(node, resolution: int | None, use_mask: bool = True, frame: int | None = None) -> View:
    """Undistort, then downscale so the longer side is at most ``resolution``.

    Depth and masks are resampled with nearest neighbour (averaging would invent
    depths at silhouettes).
    """
    from scenes.data.common import resize_image, resize_nearest

    cam: Camera = node.payload
    if cam.image is None:
        raise ValueError(f"{node.path}: camera has no image; load the capture with load_images=True")
    model, image, depth, mask = cam.model, cam.image, cam.depth, cam.mask
    if model.model == "fisheye" or model.has_distortion:
        image, pinhole = model.undistort_image(image)
        if depth is not None:
            depth = model.undistort_image(depth, interpolation="nearest")[0]
        m = np.ones(model.height * model.width, np.uint8).reshape(model.height, model.width) if mask is None else mask.astype(np.uint8)
        # pixels whose source lies outside the lens model come back as 0: mask them out
        mask = model.undistort_image(m, interpolation="nearest")[0].astype(bool)
        model = pinhole
    if resolution is not None and max(model.width, model.height) > resolution:
        s = resolution / max(model.width, model.height)
        model = model.resize(s)
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
        image = resize_image(np.ascontiguousarray(image[..., :3]), model.width, model.height)
        if depth is not None:
            depth = resize_nearest(depth, model.width, model.height)
        if mask is not None:
            mask = resize_nearest(mask, model.width, model.height)
    return View(
        name=node.name,
        path=node.path,
        model=model,
        c2w=np.asarray(node.world_transform, dtype=np.float64),
        image=_as_float_image(image),
        mask=(mask.astype(bool) if (mask is not None and use_mask) else None),
        depth=(depth.astype(np.float32) if depth is not None else None),
        frame=frame,
    )


def dataset_frame_index(graph, node) -> int | None:
    """Index of ``node``'s image in a ``transforms.json`` frame list (for stored flow), or None."""
    import json

    src = graph.meta.get("source")
    img = node.meta.get("image_path")
    if not src or not img or not str(src).endswith(".json"):
        return None
    try:
        meta = json.loads(Path(src).read_text())
    except OSError:
        return None
    if "flow" not in meta:
        return None
    root = Path(src).parent
    target = Path(img).resolve()
    for k, fr in enumerate(meta.get("frames", [])):
        if (root / fr.get("file_path", "")).resolve() == target:
            return k
    return None
