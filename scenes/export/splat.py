"""antimatter15 ``.splat`` (the WebGL viewer's format): write and read.

32 bytes per Gaussian, little-endian, no header::

    position  3 x float32
    scale     3 x float32   (linear standard deviations, exp of log-scales)
    colour    4 x uint8     (RGB = 0.5 + SH_C0 * dc, alpha = sigmoid(opacity), times 255)
    rotation  4 x uint8     (normalised wxyz quaternion, q * 128 + 128)

Gaussians are sorted by decreasing ``prod(scale) * opacity`` as the reference
converter does. The format is lossy (8-bit colour, opacity and rotation; SH
degree 0): :func:`read_splat` returns the quantised values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from geo.fileio import atomic_write_bytes
from scenes.export.ply_gaussians import finite_gaussians
from scenes.payloads import SH_C0, GaussianCloud

__all__ = ["write_splat", "read_splat", "SPLAT_DTYPE"]

SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def write_splat(path: str | os.PathLike, cloud: GaussianCloud) -> Path:
    """Write ``cloud`` as an antimatter15 ``.splat`` (atomic). Non-finite Gaussians are dropped with a warning."""
    cloud = finite_gaussians(cloud, f"write_splat({path})")
    if cloud.sh.shape[2] != 3:
        raise ValueError(f"write_splat: needs RGB SH (3 channels), got {cloud.sh.shape[2]}")
    scales = np.exp(np.asarray(cloud.log_scales, np.float64))
    opac = 1.0 / (1.0 + np.exp(-np.asarray(cloud.opacity_logits, np.float64)))
    order = np.argsort(-(scales.prod(1) * opac), kind="stable")
    q = np.asarray(cloud.quats, np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    rgb = 0.5 + SH_C0 * np.asarray(cloud.sh[:, 0, :], np.float64)
    rec = np.empty(cloud.num, SPLAT_DTYPE)
    rec["position"] = np.asarray(cloud.means, np.float32)
    rec["scale"] = scales.astype(np.float32)
    rec["rgba"][:, :3] = np.clip(np.rint(rgb * 255), 0, 255)
    rec["rgba"][:, 3] = np.clip(np.rint(opac * 255), 0, 255)
    rec["rot"] = np.clip(np.rint(q * 128 + 128), 0, 255)
    return atomic_write_bytes(path, rec[order].tobytes())


def read_splat(path: str | os.PathLike) -> GaussianCloud:
    """Read a ``.splat`` into a degree-0 :class:`GaussianCloud` (quantised values)."""
    raw = Path(path).read_bytes()
    if len(raw) == 0:
        raise ValueError(f"{path}: empty .splat file; expected {SPLAT_DTYPE.itemsize} bytes per splat")
    if len(raw) % SPLAT_DTYPE.itemsize:
        raise ValueError(f"{path}: size {len(raw)} is not a multiple of {SPLAT_DTYPE.itemsize} bytes per splat (truncated?)")
    rec = np.frombuffer(raw, SPLAT_DTYPE)
    rgba = rec["rgba"].astype(np.float64) / 255.0
    a = np.clip(rgba[:, 3], 0.5 / 255, 1 - 0.5 / 255)
    q = (rec["rot"].astype(np.float64) - 128.0) / 128.0
    bad = (q * q).sum(1) == 0
    q[bad] = (1.0, 0.0, 0.0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_scales = np.log(np.maximum(rec["scale"], 1e-30)).astype(np.float32)
    try:
        return GaussianCloud(
            means=rec["position"].astype(np.float32),
            quats=q.astype(np.float32),
            log_scales=log_scales,
            opacity_logits=np.log(a / (1 - a)).astype(np.float32),
            sh=((rgba[:, None, :3] - 0.5) / SH_C0).astype(np.float32),
        )
    except ValueError as e:
        raise ValueError(f"{path}: invalid splats: {e}") from None
