"""Rigid transforms and rotations, for numpy arrays and torch tensors alike.

Conventions used across the project:

* Quaternions are ``wxyz`` (scalar first) and need not be normalised; every
  function that consumes one normalises it (as gsplat does).
* A rigid transform is a ``[..., 4, 4]`` homogeneous matrix ``T`` acting on
  column vectors: ``p' = R @ p + t``. ``T_ab`` maps coordinates in frame ``b``
  to frame ``a``; composition is ``T_ac = T_ab @ T_bc``.
* Camera poses are camera-to-world in the OpenCV convention (x right, y down,
  z forward) unless a function says otherwise; see :mod:`geo.cameras` for the
  explicit OpenGL/Blender conversion.

Every function here accepts either numpy arrays or torch tensors and returns
the same kind it was given, so the scene graph (float64 numpy) and the
rasterizer (batched torch) share one implementation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "quat_to_rotmat",
    "rotmat_to_quat",
    "normalize_quat",
    "axis_angle_to_rotmat",
    "se3_from_rt",
    "se3_inverse",
    "transform_points",
    "is_rigid",
    "check_rigid",
    "look_at",
]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _stack(xs: list, axis: int, like: Any):
    if _is_torch(like):
        import torch

        return torch.stack(xs, axis)
    return np.stack(xs, axis)


def _swap_last(x: Any):
    return x.transpose(-1, -2) if _is_torch(x) else np.swapaxes(x, -1, -2)


def normalize_quat(q):
    """Unit quaternion of the same sign. Shape ``[..., 4]`` (wxyz)."""
    n = (q * q).sum(-1, keepdims=True) ** 0.5
    return q / n


def quat_to_rotmat(q):
    """Rotation matrices from (unnormalised) wxyz quaternions.

    Args:
        q: ``[..., 4]`` quaternions, scalar first.

    Returns:
        ``[..., 3, 3]`` rotation matrices.
    """
    w, x, y, z = [c[..., 0] for c in _split4(normalize_quat(q))]
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    m = _stack(rows, -1, q)
    return m.reshape(*m.shape[:-1], 3, 3)


def _split4(q):
    return [q[..., i : i + 1] for i in range(4)]


def rotmat_to_quat(R):
    """wxyz unit quaternions (with ``w >= 0``) from rotation matrices ``[..., 3, 3]``.

    Uses the numerically stable branch selection of Shepperd (1978): the
    largest of ``w, x, y, z`` is recovered from the trace/diagonal and the
    others from off-diagonal sums.
    """
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    tr = m00 + m11 + m22
    # four candidate (unnormalised) quaternions, one per branch
    cand = [
        [1 + tr, R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]],
        [R[..., 2, 1] - R[..., 1, 2], 1 + m00 - m11 - m22, R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0]],
        [R[..., 0, 2] - R[..., 2, 0], R[..., 0, 1] + R[..., 1, 0], 1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1]],
        [R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22],
    ]
    qs = _stack([_stack(c, -1, R) for c in cand], -2, R)  # [..., 4 branches, 4]
    key = _stack([tr, m00, m11, m22], -1, R)
    if _is_torch(R):
        idx = key.argmax(-1)[..., None, None].expand(*key.shape[:-1], 1, 4)
        q = qs.gather(-2, idx)[..., 0, :]
        q = q * q[..., :1].sign().where(q[..., :1] != 0, q.new_ones(()))
    else:
        idx = key.argmax(-1)[..., None, None]
        q = np.take_along_axis(qs, np.broadcast_to(idx, (*key.shape[:-1], 1, 4)), -2)[..., 0, :]
        q = q * np.where(q[..., :1] < 0, -1.0, 1.0)
    return normalize_quat(q)


def axis_angle_to_rotmat(v):
    """Rodrigues' formula. ``v``: ``[..., 3]`` axis times angle (radians)."""
    theta = ((v * v).sum(-1, keepdims=True)) ** 0.5
    half = theta / 2
    if _is_torch(v):
        import torch

        sinc = torch.where(theta > 1e-8, torch.sin(half) / theta.clamp_min(1e-8), 0.5 - theta**2 / 48)
        q = torch.cat([torch.cos(half), v * sinc], -1)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            sinc = np.where(theta > 1e-8, np.sin(half) / np.maximum(theta, 1e-8), 0.5 - theta**2 / 48)
        q = np.concatenate([np.cos(half), v * sinc], -1)
    return quat_to_rotmat(q)


def se3_from_rt(R, t):
    """``[..., 4, 4]`` homogeneous transform from ``R [..., 3, 3]`` and ``t [..., 3]``."""
    if _is_torch(R):
        import torch

        T = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype, device=R.device)
    else:
        T = np.zeros((*R.shape[:-2], 4, 4), dtype=np.result_type(R, t))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


def se3_inverse(T):
    """Inverse of rigid transforms ``[..., 4, 4]`` using ``R^T`` (no general inverse)."""
    R = T[..., :3, :3]
    Rt = _swap_last(R)
    t = T[..., :3, 3:4]
    return se3_from_rt(Rt, -(Rt @ t)[..., 0])


def transform_points(T, p):
    """Apply ``T [..., 4, 4]`` to points ``p [..., N, 3]``."""
    return p @ _swap_last(T[..., :3, :3]) + T[..., None, :3, 3]


def is_rigid(T, atol: float = 1e-5) -> bool:
    """True when ``T`` is a finite 4x4 proper rigid transform (within ``atol``)."""
    A = np.asarray(T.detach().cpu() if _is_torch(T) else T, dtype=np.float64)
    if A.shape[-2:] != (4, 4) or not np.all(np.isfinite(A)):
        return False
    R = A[..., :3, :3]
    eye = np.eye(3)
    ok_orth = np.allclose(np.swapaxes(R, -1, -2) @ R, eye, atol=atol)
    ok_det = np.allclose(np.linalg.det(R), 1.0, atol=atol)
    ok_row = np.allclose(A[..., 3, :], [0, 0, 0, 1], atol=0)
    return bool(ok_orth and ok_det and ok_row)


def check_rigid(T, what: str = "transform", atol: float = 1e-5) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``T`` is a valid rigid 4x4."""
    A = np.asarray(T.detach().cpu() if _is_torch(T) else T, dtype=np.float64)
    if A.shape[-2:] != (4, 4):
        raise ValueError(f"{what}: expected a 4x4 rigid transform, got shape {tuple(A.shape)}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{what}: transform contains NaN or Inf")
    if not is_rigid(A, atol=atol):
        R = A[..., :3, :3]
        err = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max()
        raise ValueError(
            f"{what}: not a rigid transform (|R^T R - I| = {err:.3g}, det R = "
            f"{np.linalg.det(R).ravel()[0]:.6g}, last row {A[..., 3, :].ravel()[:4].tolist()}); "
            "expected a rotation with det +1, a translation and last row [0, 0, 0, 1]"
        )


def look_at(eye, target, up=(0.0, 0.0, 1.0)):
    """Camera-to-world pose (OpenCV axes: x right, y down, z forward) looking at ``target``.

    Args:
        eye: ``[..., 3]`` camera centres.
        target: ``[..., 3]`` points to look at.
        up: world up direction; the camera's ``-y`` axis is aligned with it.

    Returns:
        ``[..., 4, 4]`` camera-to-world transforms.
    """
    if _is_torch(eye):
        import torch

        target = torch.as_tensor(target, dtype=eye.dtype, device=eye.device)
        up = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
        cross, norm = torch.linalg.cross, lambda a: a / torch.linalg.norm(a, dim=-1, keepdim=True)
    else:
        eye = np.asarray(eye, dtype=np.float64)
        target = np.asarray(target, dtype=np.float64)
        up = np.broadcast_to(np.asarray(up, dtype=np.float64), eye.shape)
        cross, norm = np.cross, lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
    z = norm(target - eye)
    x = norm(cross(z, up))
    y = cross(z, x)
    R = _stack([x, y, z], -1, eye)
    return se3_from_rt(R, eye)
