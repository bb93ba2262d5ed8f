"""Training shapes for the learned eigenbasis: real meshes, primitives, and random
smooth deformations and resamplings of both.

Held-out family: the **cactus** meshes of the shared data (``cactus.off``,
``cactus_deformed.off``, ``cactus_deformed_remeshed.off``) are never used for
training; ``tools/bench/spectral.py`` evaluates on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TRAIN_MESHES = ("spot/spot_triangulated.obj", "bunny/stanford-bunny.obj")
HELDOUT_MESHES = ("cactus/cactus.off", "cactus/cactus_deformed_remeshed.off")


def load_mesh(path):
    """``trimesh.Trimesh`` (single mesh, no processing beyond trimesh's merge)."""
    import trimesh

    m = trimesh.load(str(path), force="mesh", process=True)
    return m


def primitives(rng: np.random.Generator):
    """A list of primitive meshes with random proportions."""
    import trimesh
    from trimesh import creation

    def u(a, b):
        return float(rng.uniform(a, b))

    out = [
        creation.icosphere(subdivisions=4),
        creation.box(extents=[u(0.5, 2), u(0.5, 2), u(0.5, 2)]),
        creation.capsule(height=u(0.5, 3), radius=u(0.3, 1), count=[32, 32]),
        creation.cylinder(radius=u(0.3, 1), height=u(0.5, 3), sections=48),
        creation.cone(radius=u(0.5, 1), height=u(0.5, 2), sections=48),
        creation.torus(major_radius=1.0, minor_radius=u(0.2, 0.5), major_sections=64, minor_sections=24),
    ]
    ell = creation.icosphere(subdivisions=4)
    ell.apply_scale([u(0.4, 1.6), u(0.4, 1.6), u(0.4, 1.6)])
    out.append(ell)
    # blob: sphere with a random smooth radial displacement (low-order harmonics)
    blob = creation.icosphere(subdivisions=4)
    v = blob.vertices
    r = 1.0 + sum(u(-0.25, 0.25) * np.sin(rng.integers(1, 4) * (v @ rng.normal(size=3)) + u(0, 6)) for _ in range(4))
    blob = trimesh.Trimesh(v * np.clip(r, 0.4, None)[:, None], blob.faces, process=False)
    out.append(blob)
    return out


def smooth_deformation(vertices: np.ndarray, rng: np.random.Generator, strength: float = 0.25) -> np.ndarray:
    """Random smooth deformation: anisotropic scaling plus a few Gaussian RBF warps."""
    v = np.asarray(vertices, dtype=np.float64)
    c = v.mean(axis=0)
    rad = float(np.sqrt(((v - c) ** 2).sum(axis=1).mean()))
    v = (v - c) * rng.uniform(1 - strength, 1 + strength, size=3) + c
    for _ in range(int(rng.integers(2, 6))):
        center = v[rng.integers(len(v))]
        width = rad * rng.uniform(0.3, 0.8)
        disp = rng.normal(size=3) * rad * strength * 0.5
        w = np.exp(-((v - center) ** 2).sum(axis=1) / (2 * width**2))
        v = v + w[:, None] * disp
    return v


def sample_points(mesh, n: int, rng: np.random.Generator, nonuniform: float = 0.0) -> np.ndarray:
    """``[n, 3]`` points on the surface; area-uniform, or with a smooth random density
    varying by a factor ``1 + nonuniform`` across the shape."""
    import trimesh

    seed = int(rng.integers(2**31))
    if nonuniform <= 0:
        pts, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
        return np.asarray(pts)
    pts, _ = trimesh.sample.sample_surface(mesh, 4 * n, seed=seed)
    d = rng.normal(size=3)
    s = pts @ d
    s = (s - s.min()) / max(np.ptp(s), 1e-12)
    w = 1.0 + nonuniform * s
    keep = rng.choice(len(pts), n, replace=False, p=w / w.sum())
    return np.asarray(pts[keep])


class TrainingShapes:
    """Random training clouds: ``next(n_points)`` → ``[n_points, 3]``.

    Mixes the shared-data training meshes (``TRAIN_MESHES``) and primitives, each
    optionally smoothly deformed, resampled with uniform or mildly non-uniform density.
    """

    def __init__(self, data_dir=None, seed: int = 0, p_primitive: float = 0.4):
        import trimesh

        self.rng = np.random.default_rng(seed)
        data_dir = Path(data_dir or DEFAULT_DATA)
        self.meshes = []
        for rel in TRAIN_MESHES:
            path = data_dir / rel
            if path.exists():
                self.meshes.append(load_mesh(path))
        self.p_primitive = p_primitive if self.meshes else 1.0
        self._trimesh = trimesh

    def next_mesh(self):
        if self.rng.random() < self.p_primitive:
            prims = primitives(self.rng)
            base = prims[int(self.rng.integers(len(prims)))]
        else:
            base = self.meshes[int(self.rng.integers(len(self.meshes)))]
        v = base.vertices
        if self.rng.random() < 0.8:
            v = smooth_deformation(v, self.rng, strength=float(self.rng.uniform(0.05, 0.35)))
        return self._trimesh.Trimesh(v, base.faces, process=False)

    def next(self, n_points: int) -> np.ndarray:
        mesh = self.next_mesh()
        nonuni = float(self.rng.uniform(0.5, 2.0)) if self.rng.random() < 0.25 else 0.0
        return sample_points(mesh, n_points, self.rng, nonuniform=nonuni)
