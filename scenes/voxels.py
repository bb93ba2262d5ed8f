"""Dense voxel grids as scene payloads.

A data container only; rendering (sampling, softplus activation, volume
integration) belongs to the methods that use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from scenes.payloads import _Payload, check_array, register_payload

__all__ = ["VoxelGrid"]


def _corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 8 corners ``[8, 3]`` of the box ``[lo, hi]``."""
    sel = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=bool)
    return np.where(sel, hi, lo)


@register_payload
@dataclass(eq=False)
class VoxelGrid(_Payload):
    """A dense grid of densities and features over an axis-aligned box.

    Voxel ``(i, j, k)`` covers ``bounds_min + [i, j, k] * voxel_size`` to
    ``bounds_min + [i + 1, j + 1, k + 1] * voxel_size`` in the node's frame.

    Attributes:
        density: ``[X, Y, Z]`` float raw density (before softplus).
        features: ``[X, Y, Z, C]`` float per-voxel features (``C = 0`` for a density-only grid).
        bounds_min: ``[3]`` float, the box's minimum corner.
        bounds_max: ``[3]`` float, the box's maximum corner (> ``bounds_min``).
    """

    density: np.ndarray
    features: np.ndarray
    bounds_min: np.ndarray
    bounds_max: np.ndarray

    _ARRAYS: ClassVar[tuple[str, ...]] = ("density", "features", "bounds_min", "bounds_max")

    def validate(self, where: str) -> None:
        d: dict[str, int] = {}
        self.density = check_array(where, "density", self.density, ("X", "Y", "Z"), ("f",), d)
        self.features = check_array(where, "features", self.features, ("X", "Y", "Z", "C"), ("f",), d)
        self.bounds_min = check_array(where, "bounds_min", self.bounds_min, (3,), ("f",), d)
        self.bounds_max = check_array(where, "bounds_max", self.bounds_max, (3,), ("f",), d)
        if not np.all(self.bounds_max > self.bounds_min):
            raise ValueError(
                f"{where}: field 'bounds_max' must be > 'bounds_min' on every axis, "
                f"got min {self.bounds_min.tolist()} max {self.bounds_max.tolist()}"
            )

    @property
    def resolution(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.density.shape)  # type: ignore[return-value]

    @property
    def voxel_size(self) -> np.ndarray:
        """``[3]`` edge lengths of one voxel."""
        return (np.asarray(self.bounds_max, np.float64) - self.bounds_min) / np.array(self.density.shape)

    def bound_points(self) -> np.ndarray:
        return _corners(np.asarray(self.bounds_min, np.float64), np.asarray(self.bounds_max, np.float64))
