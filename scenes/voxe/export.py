"""Exports of a voxel grid: a coloured mesh, one Gaussian per voxel, and a turntable strip.

* Mesh: the ``sigma = iso`` level set of the density sampled at voxel centres, extracted
  by marching *tetrahedra* (each cell between 8 neighbouring centres split into the 6
  Kuhn tetrahedra that share the main diagonal, so faces of neighbouring cells agree);
  scikit-image is not a dependency here, and tetrahedra need no 256-case table. Triangles
  are oriented so their normals point from high to low density; vertices on shared edges
  are merged. Colours are the grid's trilinear colour at each vertex.
* Gaussians: one per voxel with opacity ``1 - exp(-sigma * voxel)`` above a threshold:
  mean at the centre, isotropic scale of half a voxel, colour as SH (degree 0 for RGB
  grids; the grid's own coefficients for SH grids, which use the 3DGS convention).
* Turntable: renders around the object, before (top row) and after (bottom row).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

__all__ = ["marching_tetrahedra", "grid_mesh", "grid_gaussians", "turntable_strip", "export_all"]


def _kuhn_tets() -> np.ndarray:
    """``[6, 4, 3]`` corner offsets of the Kuhn decomposition of the unit cube."""
    tets = []
    for perm in itertools.permutations(range(3)):
        p = np.zeros(3, int)
        verts = [p.copy()]
        for ax in perm:
            p[ax] = 1
            verts.append(p.copy())
        tets.append(verts)
    return np.array(tets)


def marching_tetrahedra(values: np.ndarray, iso: float, origin=(0.0, 0.0, 0.0), spacing=(1.0, 1.0, 1.0)):
    """Triangle mesh of ``{values = iso}`` for a scalar field on a regular grid.

    Args:
        values: ``[X, Y, Z]`` samples; sample ``(i, j, k)`` sits at ``origin + (i, j, k) * spacing``.
        iso: level; the "inside" is ``values > iso``.

    Returns:
        ``(vertices [V, 3] float64, faces [F, 3] int64)``, normals pointing to lower values.
    """
    v = np.asarray(values, np.float64)
    X, Y, Z = v.shape
    if min(v.shape) < 2:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    ii, jj, kk = np.meshgrid(np.arange(X - 1), np.arange(Y - 1), np.arange(Z - 1), indexing="ij")
    base = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], -1)  # [M, 3]
    inside_any = v > iso
    # cells with a sign change only
    corners = base[:, None, :] + np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])[None]
    cin = inside_any[corners[..., 0], corners[..., 1], corners[..., 2]]
    keep = cin.any(1) & ~cin.all(1)
    base = base[keep]
    org, sp = np.asarray(origin, np.float64), np.asarray(spacing, np.float64)
    lin = lambda p: (p[..., 0] * Y + p[..., 1]) * Z + p[..., 2]  # noqa: E731
    tris_a, tris_b, tris_out = [], [], []  # edge end points (global ids) of each triangle vertex, + outward hint
    for tet in _kuhn_tets():
        p = base[:, None, :] + tet[None]  # [M, 4, 3]
        f = v[p[..., 0], p[..., 1], p[..., 2]]
        gid = lin(p)
        ins = f > iso
        cnt = ins.sum(1)
        order = np.argsort(~ins, axis=1, kind="stable")  # inside vertices first
        g = np.take_along_axis(gid, order, 1)
        for c in (1, 3):
            m = cnt == c
            if not m.any():
                continue
            gm = g[m]
            odd = gm[:, 0] if c == 1 else gm[:, 3]
            others = gm[:, 1:4] if c == 1 else gm[:, 0:3]
            a = np.repeat(odd[:, None], 3, 1)
            tris_a.append(a if c == 1 else others)
            tris_b.append(others if c == 1 else a)
        m = cnt == 2
        if m.any():
            gm = g[m]
            i0, i1, o0, o1 = gm[:, 0], gm[:, 1], gm[:, 2], gm[:, 3]
            tris_a += [np.stack([i0, i0, i1], 1), np.stack([i0, i1, i1], 1)]
            tris_b += [np.stack([o0, o1, o1], 1), np.stack([o0, o1, o0], 1)]
    if not tris_a:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    A, B = np.concatenate(tris_a), np.concatenate(tris_b)  # [F, 3] inside end, outside end
    keys = A.astype(np.int64) * (X * Y * Z) + B
    uniq, inv = np.unique(keys.ravel(), return_inverse=True)
    ea, eb = uniq // (X * Y * Z), uniq % (X * Y * Z)
    fa, fb = v.ravel()[ea], v.ravel()[eb]
    t = np.clip((iso - fa) / (fb - fa), 0.0, 1.0)[:, None]
    pos = lambda g: np.stack(np.unravel_index(g, v.shape), -1).astype(np.float64)  # noqa: E731
    pa, pb = pos(ea), pos(eb)
    verts = org + (pa + t * (pb - pa)) * sp
    faces = inv.reshape(-1, 3).astype(np.int64)
    # orient: the normal must point from the inside ends to the outside ends
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out_dir = (pos(B.ravel()).reshape(-1, 3, 3) - pos(A.ravel()).reshape(-1, 3, 3)).mean(1) * sp
    flip = (n * out_dir).sum(1) < 0
    faces[flip] = faces[flip][:, ::-1]
    area_ok = np.linalg.norm(n, axis=1) > 1e-14
    return verts, faces[area_ok]


def grid_mesh(grid, iso_sigma: float = 5.0):
    """:class:`scenes.payloads.Mesh` of the grid's ``sigma = iso_sigma`` surface, vertex-coloured."""
    from scenes.payloads import Mesh

    vs = grid.voxel_size
    verts, faces = marching_tetrahedra(grid.sigma(), iso_sigma, origin=np.asarray(grid.bounds_min) + vs / 2, spacing=vs)
    if len(verts):
        _, rgb = grid.sample(verts)
        cols = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    else:
        cols = np.zeros((0, 3), np.uint8)
    return Mesh(verts.astype(np.float32), faces, vertex_colors=cols)


def grid_gaussians(grid, min_alpha: float = 0.05):
    """:class:`scenes.payloads.GaussianCloud`: one Gaussian per voxel with opacity >= ``min_alpha``."""
    from scenes.payloads import SH_C0, GaussianCloud

    vs = grid.voxel_size
    alpha = 1.0 - np.exp(-grid.sigma() * float(vs.mean()))
    sel = alpha >= min_alpha
    n = int(sel.sum())
    means = grid.voxel_centers()[sel]
    a = np.clip(alpha[sel], 1e-6, 1 - 1e-6)
    if grid.color == "sh":
        K = (grid.sh_degree + 1) ** 2
        sh = grid.features[sel][:, : 3 * K].reshape(n, K, 3)
    else:
        sh = ((grid.rgb()[sel] - 0.5) / SH_C0)[:, None, :]
    return GaussianCloud(
        means=means.astype(np.float32),
        quats=np.tile(np.array([1.0, 0, 0, 0], np.float32), (n, 1)),
        log_scales=np.tile(np.log(vs / 2).astype(np.float32), (n, 1)),
        opacity_logits=np.log(a / (1 - a)).astype(np.float32),
        sh=np.asarray(sh, np.float32),
    )


def turntable_strip(grids, n_views: int = 8, size: int = 128, elevation_deg: float = 20.0, up=(0.0, 1.0, 0.0),
                    front=(0.0, 0.0, 1.0)) -> np.ndarray:
    """``[rows * size, n_views * size, 3]`` uint8: one row of turntable renders per grid."""
    from scenes.voxe.edit import orbit_cameras
    from scenes.voxe.reconstruct import render_grid_view

    rows = []
    for g in grids:
        tens = g.tensors()
        cams = orbit_cameras(g, n_views, size, elevation_deg=elevation_deg, up=up, front=front)
        rows.append(np.concatenate([render_grid_view(g, m, c, tensors=tens)["rgb"] for m, c in cams], 1))
    return np.clip(np.rint(np.concatenate(rows, 0) * 255), 0, 255).astype(np.uint8)


def export_all(out: Path, edited, original=None, cfg=None, log=print) -> dict:
    """Write ``mesh.ply``, ``mesh.glb``, ``gaussians.ply`` and ``turntable.png`` into ``out``."""
    from PIL import Image

    from scenes.export.mesh import write_mesh_file
    from scenes.export.ply_gaussians import write_gaussian_ply
    from scenes.voxe.config import ExportConfig

    cfg = cfg or ExportConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    if cfg.mesh:
        mesh = grid_mesh(edited, cfg.iso_sigma)
        for suf in (".ply", ".glb"):
            files[f"mesh{suf}"] = str(write_mesh_file(out / f"mesh{suf}", mesh))
        log(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces")
    if cfg.gaussians:
        cloud = grid_gaussians(edited, cfg.gaussian_min_alpha)
        files["gaussians.ply"] = str(write_gaussian_ply(out / "gaussians.ply", cloud))
        log(f"gaussians: {cloud.num}")
    if cfg.turntable:
        grids = [original, edited] if original is not None else [edited]
        strip = turntable_strip(grids, cfg.turntable_views, cfg.turntable_size)
        Image.fromarray(strip).save(out / "turntable.png")
        files["turntable.png"] = str(out / "turntable.png")
    return files
