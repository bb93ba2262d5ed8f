"""Orientation grids on S^1 and S^2 (the fibers of position-orientation space).

PΘNITA discretises the sphere of directions S^{n-1} with a fixed grid that is
shared by every point (Bekkers et al. 2024, Sec. 3.3). On S^1 the grid is the
uniform one. On S^2 no perfectly uniform grid exists for most sizes, so, as in
the paper's code, points start from a *fixed-seed* random draw and are pushed
apart by a Coulomb-like repulsion. The result is deterministic and cached in
memory, so every model built with the same size shares the same grid.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["s1_grid", "s2_grid", "orientation_grid", "grid_covering_radius"]


def s1_grid(num: int) -> np.ndarray:
    """``[num, 2]`` unit vectors at angles ``2πk/num``, float64."""
    if num < 1:
        raise ValueError(f"s1_grid: need at least one orientation, got {num}")
    theta = 2 * np.pi * np.arange(num) / num
    return np.stack([np.cos(theta), np.sin(theta)], -1)


@functools.lru_cache(maxsize=64)
def _s2_repulsion(num: int, seed: int, steps: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num, 3))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    if num == 1:
        return x
    # Projected gradient descent on the Riesz s=1 (Coulomb) energy sum 1/|xi - xj|;
    # the step is scaled with the expected spacing (~ sqrt(4π/num)) so that the
    # same schedule works for every grid size.
    spacing = np.sqrt(4 * np.pi / num)
    for it in range(steps):
        d = x[:, None, :] - x[None, :, :]
        r = np.linalg.norm(d, axis=-1)
        np.fill_diagonal(r, np.inf)
        force = (d / r[..., None] ** 3).sum(1)
        force -= (force * x).sum(-1, keepdims=True) * x  # tangent part only
        step = 0.1 * spacing * (1.0 - it / steps)  # annealed
        force_norm = np.linalg.norm(force, axis=-1, keepdims=True).max()
        x = x + step * force / max(force_norm, 1e-12)
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def s2_grid(num: int, seed: int = 0, steps: int = 500) -> np.ndarray:
    """``[num, 3]`` near-uniform unit vectors on S^2 by deterministic repulsion.

    The same ``(num, seed, steps)`` always gives the same grid (bit for bit on
    one machine); results are cached, and a copy is returned.
    """
    if num < 1:
        raise ValueError(f"s2_grid: need at least one orientation, got {num}")
    return _s2_repulsion(int(num), int(seed), int(steps)).copy()


def orientation_grid(dim: int, num: int):
    """The grid for ``R^dim``: a float64 torch tensor ``[num, dim]`` on S^{dim-1}."""
    import torch

    if dim == 2:
        return torch.from_numpy(s1_grid(num))
    if dim == 3:
        return torch.from_numpy(s2_grid(num))
    raise ValueError(f"orientation_grid: dim must be 2 or 3, got {dim}")


def grid_covering_radius(grid: np.ndarray, probes: int = 20000, seed: int = 0) -> float:
    """Largest angle (radians) from a random direction to its nearest grid point.

    A rough measure of how finely the grid resolves orientations; the
    equivariance error of a fiber-bundle network shrinks with it.
    """
    g = np.asarray(grid, dtype=np.float64)
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((probes, g.shape[1]))
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    return float(np.arccos(np.clip((p @ g.T).max(1), -1, 1)).max())
