"""Real spherical harmonics up to degree 3, evaluated from view directions.

The basis, its ordering and its sign convention are those of the original
3D Gaussian Splatting code (and gsplat): index ``l * l + l + m`` holds the
band-``l`` order-``m`` basis, with the Condon-Shortley phase folded into the
constants. Coefficients fitted with gsplat or the INRIA code therefore render
identically here.

The renderer adds ``0.5`` to the result and clamps at zero
(:func:`sh_to_color`); the bare SH sum is :func:`eval_sh`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["eval_sh", "eval_sh_bases", "sh_to_color", "num_sh_bases"]

# Band constants: sqrt((2l + 1) / 4pi * (l - |m|)! / (l + |m|)!) times the
# polynomial prefactors of the Cartesian forms (Sloan 2013, "Efficient
# Spherical Harmonic Evaluation", JCGT 2(2)).
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, 0.31539156525252005, 0.5462742152960396)
_C3 = (0.5900435899266435, 2.890611442640554, 0.4570457994644658, 0.3731763325901154, 1.445305721320277)


def num_sh_bases(degree: int) -> int:
    """Number of basis functions of degree ``<= degree``: ``(degree + 1) ** 2``."""
    return (degree + 1) ** 2


def eval_sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis functions at unit directions.

    Args:
        degree: highest band, 0 to 3.
        dirs: ``[..., 3]`` unit vectors.

    Returns:
        ``[..., (degree + 1) ** 2]`` basis values.
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree: expected 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y,
            -_C2[0] * y * z,
            _C2[1] * (3.0 * zz - 1.0),
            -_C2[0] * x * z,
            _C2[2] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            -_C3[0] * y * (3.0 * xx - yy),
            _C3[1] * x * y * z,
            -_C3[2] * y * (5.0 * zz - 1.0),
            _C3[3] * z * (5.0 * zz - 3.0),
            -_C3[2] * x * (5.0 * zz - 1.0),
            _C3[4] * z * (xx - yy),
            -_C3[0] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, -1)


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Evaluate SH colours along (not necessarily unit) directions.

    Args:
        degree: number of active bands minus one (0 to 3); the coefficients
            may hold more bases than used, as in gsplat.
        dirs: ``[..., 3]`` directions, normalised here (e.g. Gaussian centre
            minus camera centre).
        coeffs: ``[..., K, F]`` coefficients with ``K >= (degree + 1) ** 2``
            (``F`` is 3 for RGB).

    Returns:
        ``[..., F]`` values, ``sum_k basis_k(dir) * coeffs[..., k, :]``.
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"colors: sh_degree={degree} needs at least {k} SH coefficients, got {coeffs.shape[-2]}")
    if degree == 0:
        return _C0 * coeffs[..., 0, :]
    d = dirs / torch.linalg.vector_norm(dirs, dim=-1, keepdim=True).clamp_min(1e-12)
    basis = eval_sh_bases(degree, d)  # [..., k]
    return (basis[..., None] * coeffs[..., :k, :]).sum(-2)


def sh_to_color(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour from SH as the renderer uses it: ``max(eval_sh + 0.5, 0)`` (gsplat / INRIA)."""
    return (eval_sh(degree, dirs, coeffs) + 0.5).clamp_min(0.0)
