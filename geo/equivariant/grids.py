"""Orientation grids on S^1 and S^2 (the fibers of position-orientation space).

PΘNITA discretises the sphere of directions S^{n-1} with a fixed grid that is
shared by every point (Bekkers et al. 2024, Sec. 3.3). On S^1 the grid is the
uniform one. On S^2 no perfectly uniform grid exists for most sizes; the grid
is built in two deterministic stages and cached in memory, so every model
built with the same size shares the same grid:

1. *Repulsion*: points from a fixed-seed random draw are pushed apart by the
   Coulomb (1/r) energy until it reaches the Thomson minimum (as in the
   paper's code, which uses a 1/r² energy from an unseeded draw).
2. *Spherical design*: the repelled points are refined to an equal-weight
   quadrature rule that is exact for all polynomials up to the largest degree
   ``t`` reachable from that start (a spherical ``t``-design: t = 5 at 16
   points, 7 at 32, 9 at 64; the icosahedron at 12 already is a 5-design),
   keeping the points well spread.

Why the second stage: a fiber-bundle network integrates functions of the
orientation over the grid (the spherical convolution and the vector readout
are sums ``(1/O) Σ_o``), so its rotation-equivariance error is a quadrature
error. The Thomson grid minimises an energy that weighs all harmonic degrees
alike and leaves errors of a few percent at degrees 3–4 (16 points) or 4–6
(64 points); a design integrates the smooth, low-degree part exactly.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["s1_grid", "s2_grid", "orientation_grid", "grid_covering_radius", "design_error", "design_strength"]


def s1_grid(num: int) -> np.ndarray:
    """``[num, 2]`` unit vectors at angles ``2πk/num``, float64."""
    if num < 1:
        raise ValueError(f"s1_grid: need at least one orientation, got {num}")
    theta = 2 * np.pi * np.arange(num) / num
    return np.stack([np.cos(theta), np.sin(theta)], -1)


def _repulsion(num: int, seed: int, steps: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num, 3))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    if num == 1:
        return x
    # Projected gradient descent on the Riesz s=1 (Coulomb) energy sum 1/|xi - xj|;
    # the step is scaled with the expected spacing (~ sqrt(4π/num)) so that the
    # same annealed schedule works for every grid size.
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


def _legendre(c: np.ndarray, degree: int):
    """``P_l(c)`` and ``P_l'(c)`` for ``l = 0..degree`` (Bonnet's recursion)."""
    p, dp = [np.ones_like(c), c], [np.zeros_like(c), np.ones_like(c)]
    for l in range(1, degree):
        p.append(((2 * l + 1) * c * p[l] - l * p[l - 1]) / (l + 1))
        dp.append(dp[l - 1] + (2 * l + 1) * p[l])
    return p[: degree + 1], dp[: degree + 1]


def _design_functional(z: np.ndarray, num: int, degree: int):
    """Sloan–Womersley's ``A_t = (1/N²) Σ_ij Σ_{l=1..t} (2l+1) P_l(x_iᵀx_j)`` (≥ 0; 0 iff a t-design), with gradient."""
    x = z.reshape(num, 3)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    u = x / norm
    c = np.clip(u @ u.T, -1.0, 1.0)
    p, dp = _legendre(c, degree)
    f = sum((2 * l + 1) * p[l].sum() for l in range(1, degree + 1)) / num**2
    g = sum((2 * l + 1) * dp[l] for l in range(1, degree + 1)) / num**2
    gu = 2 * g @ u
    gx = (gu - (gu * u).sum(1, keepdims=True) * u) / norm  # through the normalisation
    return f, gx.ravel()


def design_error(grid: np.ndarray, degree: int) -> float:
    """Worst relative equal-weight quadrature error over the harmonics of one degree.

    ``sqrt(mean_ij P_l(x_iᵀx_j))``: the norm of the grid average of the
    degree-``l`` spherical harmonics relative to that of one harmonic at a point
    (0 when the grid integrates degree ``l`` exactly, 1 at worst).
    """
    g = np.asarray(grid, dtype=np.float64)
    p, _ = _legendre(np.clip(g @ g.T, -1, 1), max(degree, 1))
    return float(np.sqrt(max(p[degree].mean(), 0.0)))


def design_strength(grid: np.ndarray, tol: float = 1e-6, max_degree: int = 30) -> int:
    """Largest ``t`` such that the grid integrates all degrees ``1..t`` exactly (to ``tol``)."""
    for t in range(1, max_degree + 1):
        if design_error(grid, t) > tol:
            return t - 1
    return max_degree


def _min_chord(x: np.ndarray) -> float:
    d = np.linalg.norm(x[:, None] - x[None], axis=-1) + 9 * np.eye(len(x))
    return float(d.min())


def _refine_to_design(x: np.ndarray) -> np.ndarray:
    """Refine ``x`` to the strongest spherical design near it whose points stay spread.

    Tries ``t`` from just above the counting bound ``N ≳ (t+1)²/2`` downwards,
    each time from ``x``; the first exact, well-spread solution wins (``x`` if none).
    """
    from scipy.optimize import minimize

    num = len(x)
    # the points must stay at least 85% of the hexagonal-packing spacing apart
    min_sep = 0.85 * np.sqrt(8 * np.pi / (num * np.sqrt(3)))
    for t in range(int(np.sqrt(2 * num + 4)), 1, -1):
        res = minimize(_design_functional, x.ravel(), args=(num, t), jac=True, method="L-BFGS-B",
                       options={"maxiter": 3000, "gtol": 1e-15, "ftol": 1e-16})
        y = res.x.reshape(num, 3)
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        if res.fun < 1e-12 and _min_chord(y) >= min_sep:
            return y
    return x


@functools.lru_cache(maxsize=64)
def _s2_grid(num: int, seed: int, steps: int, design: bool) -> np.ndarray:
    x = _repulsion(num, seed, steps)
    if design and num >= 4:
        x = _refine_to_design(x)
    return x


def s2_grid(num: int, seed: int = 0, steps: int = 2000, design: bool = True) -> np.ndarray:
    """``[num, 3]`` near-uniform unit vectors on S^2: repulsion, then refinement to a spherical design.

    ``design=False`` returns the repulsion (Thomson) grid alone. The same
    arguments always give the same grid (bit for bit on one machine); results
    are cached, and a copy is returned.
    """
    if num < 1:
        raise ValueError(f"s2_grid: need at least one orientation, got {num}")
    return _s2_grid(int(num), int(seed), int(steps), bool(design)).copy()


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

    A rough measure of how finely the grid resolves orientations.
    """
    g = np.asarray(grid, dtype=np.float64)
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((probes, g.shape[1]))
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    return float(np.arccos(np.clip((p @ g.T).max(1), -1, 1)).max())
