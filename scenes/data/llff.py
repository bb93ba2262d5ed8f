"""LLFF ``poses_bounds.npy`` captures (Mildenhall et al. 2019, "Local Light Field Fusion").

``poses_bounds.npy`` is ``float [N, 17]``, one row per image in the sorted
order of the files in ``images/``: a row-major ``3 x 5`` matrix followed by
the ``near, far`` depth bounds of that view. The ``3 x 5`` matrix is
``[R | t | hwf]``: ``R``'s columns are the camera's *down*, *right* and
*backwards* axes in world coordinates (LLFF's "DRB" convention), ``t`` the
camera centre, and ``hwf = (height, width, focal)`` of the images COLMAP
saw. In OpenCV axes (x right, y down, z forward) the camera-to-world
rotation is therefore ``[R[:, 1], R[:, 0], -R[:, 2]]``.

The principal point is the image centre (LLFF assumes it), and ``hwf`` is
rescaled to the size of the image actually read, so ``images_<factor>/``
folders made by LLFF's ``minify`` are used when ``downscale`` matches one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from geo.cameras import CameraModel
from geo.transforms import check_rigid

from .common import IMAGE_EXTENSIONS, FrameRecord, build_capture_graph

__all__ = ["load_llff", "llff_to_opencv", "opencv_to_llff"]


def llff_to_opencv(pose_3x4: np.ndarray) -> np.ndarray:
    """``[..., 3, 4]`` LLFF ``[down, right, back | t]`` -> ``[..., 4, 4]`` OpenCV camera-to-world."""
    P = np.asarray(pose_3x4, np.float64)
    out = np.zeros((*P.shape[:-2], 4, 4))
    out[..., :3, 0] = P[..., :, 1]  # x = right
    out[..., :3, 1] = P[..., :, 0]  # y = down
    out[..., :3, 2] = -P[..., :, 2]  # z = forward = -backwards
    out[..., :3, 3] = P[..., :, 3]
    out[..., 3, 3] = 1.0
    return out


def opencv_to_llff(c2w: np.ndarray) -> np.ndarray:
    """Inverse of :func:`llff_to_opencv`: ``[..., 4, 4]`` -> ``[..., 3, 4]`` ``[down, right, back | t]``."""
    T = np.asarray(c2w, np.float64)
    return np.stack([T[..., :3, 1], T[..., :3, 0], -T[..., :3, 2], T[..., :3, 3]], -1)


def load_llff(
    path: Path | str,
    *,
    images_dir: str = "images",
    downscale: int = 1,
    max_size: int | None = None,
    holdout_every: int | None = 8,
    holdout: Sequence[str | int] | None = None,
    load_images: bool = True,
):
    """SceneGraph of an LLFF capture (see :func:`scenes.data.load_capture`).

    Each camera node's meta has ``near`` and ``far``; ``graph.meta`` has the
    capture's overall ``near`` (minimum) and ``far`` (maximum) bounds.
    """
    root = Path(path)
    if root.is_file():
        root = root.parent
    pb_path = root / "poses_bounds.npy"
    if not pb_path.is_file():
        raise FileNotFoundError(f"LLFF poses not found: {pb_path}")
    try:
        arr = np.load(pb_path)
    except Exception as e:
        raise ValueError(f"{pb_path}: cannot read: {e}") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{pb_path}: expected a numeric [N, 17] array, got {arr.dtype} {list(arr.shape)}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{pb_path}: contains NaN or Inf")

    img_dir = root / images_dir
    if not img_dir.is_dir():
        raise FileNotFoundError(f"LLFF image folder not found: {img_dir} (needed by {pb_path})")
    files = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix in IMAGE_EXTENSIONS)
    if len(files) != len(arr):
        raise ValueError(
            f"{pb_path}: has {len(arr)} poses but {img_dir} has {len(files)} images "
            f"(files with extensions {', '.join(IMAGE_EXTENSIONS)})"
        )

    poses = arr[:, :15].reshape(-1, 3, 5)
    bounds = arr[:, 15:17]
    frames = []
    for i, (P, nf, f) in enumerate(zip(poses, bounds, files)):
        h, w, focal = P[:, 4]
        if not (w > 0 and h > 0 and focal > 0):
            raise ValueError(f"{pb_path}: row {i} has invalid hwf column (h={h}, w={w}, focal={focal})")
        c2w = llff_to_opencv(P[:, :4])
        check_rigid(c2w, what=f"{pb_path}: row {i} pose")
        # hwf describes the images COLMAP saw; the common builder rescales to the file's size
        W, H = int(round(w)), int(round(h))
        cam = CameraModel(W, H, focal * W / w, focal * H / h, W / 2.0, H / 2.0, "pinhole")
        frames.append(
            FrameRecord(key=f.name, image_path=f, c2w=c2w, camera=cam, meta={"near": float(nf[0]), "far": float(nf[1])})
        )
    return build_capture_graph(
        frames,
        fmt="llff",
        source=root,
        downscale=downscale,
        max_size=max_size,
        holdout_every=holdout_every,
        holdout=holdout,
        load_images=load_images,
        graph_meta={"near": float(bounds[:, 0].min()), "far": float(bounds[:, 1].max())},
    )
