"""Boundary checks shared by every regularizer.

Each public function calls these once on its inputs, so the maths below the
boundary stays free of defensive code (the kornia habit). Messages name the
argument and the expected shape.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def check_tensor(x, name: str, shape: str, ndims: Sequence[int] | None = None, min_ndim: int | None = None) -> Tensor:
    """Check that ``x`` is a non-empty, NaN-free floating tensor of an allowed rank.

    Args:
        x: the value to check.
        name: argument name, used in messages.
        shape: the expected shape in words, e.g. ``"[B, C, H, W]"``, used in messages.
        ndims: allowed numbers of dimensions (``None`` accepts any).
        min_ndim: smallest allowed number of dimensions.

    Returns:
        ``x`` unchanged.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if ndims is not None and x.ndim not in tuple(ndims):
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); expected {shape} with every size > 0")
    if x.is_floating_point() or x.is_complex():
        if torch.isnan(x).any():
            raise ValueError(f"{name} contains NaN values")
    return x


def check_float(x: Tensor, name: str) -> Tensor:
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def check_broadcastable_to(m: Tensor, x: Tensor, name: str, shape: str) -> None:
    """``m`` must broadcast to ``x`` with the same leading batch and spatial sizes (channel may be 1)."""
    ok = m.ndim == x.ndim and all(ms in (1, xs) for ms, xs in zip(m.shape, x.shape))
    ok = ok and m.shape[0] == x.shape[0] and m.shape[2:] == x.shape[2:]
    if not ok:
        raise ValueError(f"{name} must have shape {shape} matching {tuple(x.shape)}, got {tuple(m.shape)}")


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    if not (value > 0 or (allow_zero and value == 0)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def check_points(x, name: str) -> Tensor:
    """A point set ``[N, D]`` with ``N >= 1``."""
    return check_float(check_tensor(x, name, "[N, D]", ndims=(2,)), name)


def check_weights(w, n: int, name: str, like: Tensor) -> Tensor:
    """Histogram weights ``[N]``: non-negative, summing to one; ``None`` means uniform."""
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    check_tensor(w, name, f"[{n}]", ndims=(1,))
    if w.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one weight per point), got {tuple(w.shape)}")
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative")
    s = float(w.sum())
    if abs(s - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, sums to {s}")
    return w.to(like.dtype)
