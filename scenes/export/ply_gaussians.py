"""3D Gaussian Splatting PLY in the INRIA layout: write and read.

One ``vertex`` element, binary little-endian float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3(K-1)-1} opacity
    scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

Values are raw, as the INRIA code stores them: ``opacity`` is the logit,
``scale_*`` are log standard deviations, ``rot_*`` a wxyz quaternion (not
necessarily normalised). ``f_rest`` is channel-major: ``f_rest_{c (K-1) + k - 1}``
is SH coefficient ``k >= 1`` of colour channel ``c``. Normals are written as 0.

:func:`write_gaussian_ply` and :func:`read_gaussian_ply` round-trip a
:class:`GaussianCloud` exactly at float32.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from geo.fileio import atomic_write_bytes
from scenes.export.plyfile import read_ply_element
from scenes.payloads import GaussianCloud

__all__ = ["write_gaussian_ply", "read_gaussian_ply", "finite_gaussians"]


def finite_gaussians(cloud, what: str = "export") -> GaussianCloud:
    """Drop Gaussians with any NaN / Inf parameter, with a warning naming how many.

    Args:
        cloud: a :class:`GaussianCloud`, or a dict of its arrays (``means``, ``quats``,
            ``log_scales``, ``opacity_logits``, ``sh``) that may hold non-finite values
            (a GaussianCloud refuses them at construction).

    Raises:
        ValueError: when no Gaussian is finite (an empty file is never written).
    """
    if isinstance(cloud, GaussianCloud):
        arrays = {k: np.asarray(getattr(cloud, k)) for k in GaussianCloud._ARRAYS}
    else:
        arrays = {k: np.asarray(cloud[k]) for k in GaussianCloud._ARRAYS}
    n = len(arrays["means"])
    ok = np.ones(n, bool)
    for a in arrays.values():
        ok &= np.isfinite(a.reshape(len(a), -1)).all(1)
    if not ok.any():
        raise ValueError(f"{what}: all {n} Gaussians have NaN/Inf parameters; refusing to write an empty file")
    if not ok.all():
        warnings.warn(f"{what}: dropping {int((~ok).sum())} of {n} Gaussians with NaN/Inf parameters", stacklevel=2)
        arrays = {k: a[ok] for k, a in arrays.items()}
    elif isinstance(cloud, GaussianCloud):
        return cloud
    return GaussianCloud(**arrays)


def _property_names(k: int, channels: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{c}" for c in range(channels)]
    names += [f"f_rest_{i}" for i in range(channels * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def write_gaussian_ply(path: str | os.PathLike, cloud: GaussianCloud) -> Path:
    """Write ``cloud`` as an INRIA 3DGS PLY (atomic). Non-finite Gaussians are dropped with a warning."""
    cloud = finite_gaussians(cloud, f"write_gaussian_ply({path})")
    n, k, ch = cloud.sh.shape
    names = _property_names(k, ch)
    sh = np.asarray(cloud.sh, np.float32)
    cols = [
        np.asarray(cloud.means, np.float32),
        np.zeros((n, 3), np.float32),
        sh[:, 0, :],
        sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1),  # channel-major
        np.asarray(cloud.opacity_logits, np.float32)[:, None],
        np.asarray(cloud.log_scales, np.float32),
        np.asarray(cloud.quats, np.float32),
    ]
    data = np.ascontiguousarray(np.concatenate(cols, 1).astype("<f4"))
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    return atomic_write_bytes(path, header.encode("ascii") + data.tobytes())


def read_gaussian_ply(path: str | os.PathLike) -> GaussianCloud:
    """Read an INRIA-layout 3DGS PLY into a :class:`GaussianCloud` (float32, raw values)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    t = read_ply_element(path.read_bytes(), path, "vertex")
    need = ["x", "y", "z", "f_dc_0", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [k for k in need if k not in t]
    if missing:
        raise ValueError(f"{path}: not a 3DGS PLY, missing properties {missing}")
    f32 = lambda names: np.stack([np.asarray(t[k], np.float32) for k in names], 1)  # noqa: E731
    ch = sum(1 for k in t if k.startswith("f_dc_"))
    n_rest = sum(1 for k in t if k.startswith("f_rest_"))
    k = 1 + n_rest // ch
    if math.isqrt(k) ** 2 != k or n_rest % ch:
        raise ValueError(f"{path}: {n_rest} f_rest properties do not form SH of degree 0..3 for {ch} channels")
    expected = [f"f_dc_{c}" for c in range(ch)] + [f"f_rest_{i}" for i in range(n_rest)]
    if any(name not in t for name in expected):
        raise ValueError(f"{path}: SH properties are not numbered f_dc_0..{ch - 1}, f_rest_0..{n_rest - 1}")
    n = len(t["x"])
    if n == 0:
        raise ValueError(f"{path}: the PLY holds no Gaussians")
    sh = np.zeros((n, k, ch), np.float32)
    sh[:, 0] = f32([f"f_dc_{c}" for c in range(ch)])
    if k > 1:
        sh[:, 1:] = f32([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, ch, k - 1).transpose(0, 2, 1)
    try:
        return GaussianCloud(
            means=f32(["x", "y", "z"]),
            quats=f32(["rot_0", "rot_1", "rot_2", "rot_3"]),
            log_scales=f32(["scale_0", "scale_1", "scale_2"]),
            opacity_logits=np.asarray(t["opacity"], np.float32),
            sh=sh,
        )
    except ValueError as e:
        raise ValueError(f"{path}: invalid Gaussians: {e}") from None
