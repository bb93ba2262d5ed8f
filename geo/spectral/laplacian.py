"""Discrete Laplace–Beltrami operators: cotangent (meshes) and robust (point clouds).

Every operator is returned as the pair ``(L, M)``: ``L`` is the symmetric positive
semi-definite *stiffness* matrix (``f^T L f`` is the Dirichlet energy, rows sum to 0)
and ``M`` the diagonal lumped mass matrix, both ``scipy.sparse.csr_matrix [N, N]``
float64. The Laplacian acting on functions is ``Δ = -M^{-1} L`` (so the eigenvalues of
``L φ = λ M φ`` are non-negative).

``cotan_laplacian_dense_reference`` is the plain per-triangle loop kept as the oracle
for the vectorised :func:`cotan_laplacian`.
"""

from __future__ import annotations

import numpy as np


def _check_vf(vertices, faces):
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape [N, 3], got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape [F, 3] (triangles), got {f.shape}")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError("faces index vertices out of range")
    return v, f


def face_areas(vertices, faces) -> np.ndarray:
    """Triangle areas ``[F]`` of a mesh (``vertices [N, 3]``, ``faces [F, 3]``)."""
    v, f = _check_vf(vertices, faces)
    e1 = v[f[:, 1]] - v[f[:, 0]]
    e2 = v[f[:, 2]] - v[f[:, 0]]
    return 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)


def lumped_mass(vertices, faces):
    """Barycentric lumped mass: each vertex gets a third of its incident triangle areas.

    Returns ``scipy.sparse.csr_matrix [N, N]`` (diagonal); unreferenced vertices get 0.
    """
    import scipy.sparse as sp

    v, f = _check_vf(vertices, faces)
    a = face_areas(v, f)
    m = np.bincount(f.ravel(), weights=np.repeat(a / 3.0, 3), minlength=len(v))
    return sp.diags(m).tocsr()


def cotan_laplacian(vertices, faces):
    """Cotangent stiffness matrix ``L [N, N]`` (PSD, rows sum to zero).

    ``L_ij = -(cot α_ij + cot β_ij) / 2`` for an edge ij with opposite angles α, β
    (Pinkall & Polthier 1993; Meyer et al. 2003), ``L_ii = -Σ_j L_ij``. Works on
    non-manifold edges too (the sum runs over all incident triangles).

    Returns ``scipy.sparse.csr_matrix [N, N]`` float64.
    """
    import scipy.sparse as sp

    v, f = _check_vf(vertices, faces)
    n = len(v)
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, o = f[:, (k + 1) % 3], f[:, (k + 2) % 3], f[:, k]  # edge ij, opposite vertex o
        a = v[i] - v[o]
        b = v[j] - v[o]
        cross = np.linalg.norm(np.cross(a, b), axis=1)
        cot = np.einsum("ij,ij->i", a, b) / np.maximum(cross, 1e-300)
        w = 0.5 * cot
        rows += [i, j]
        cols += [j, i]
        vals += [-w, -w]
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    vals = np.concatenate(vals)
    off = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    diag = -np.asarray(off.sum(axis=1)).ravel()
    return (off + sp.diags(diag)).tocsr()


def cotan_laplacian_dense_reference(vertices, faces) -> np.ndarray:
    """Plain-loop oracle for :func:`cotan_laplacian` (dense ``[N, N]``; small meshes only)."""
    v, f = _check_vf(vertices, faces)
    L = np.zeros((len(v), len(v)))
    for tri in f:
        for k in range(3):
            i, j, o = tri[(k + 1) % 3], tri[(k + 2) % 3], tri[k]
            a, b = v[i] - v[o], v[j] - v[o]
            cot = float(a @ b) / float(np.linalg.norm(np.cross(a, b)))
            L[i, j] -= 0.5 * cot
            L[j, i] -= 0.5 * cot
            L[i, i] += 0.5 * cot
            L[j, j] += 0.5 * cot
    return L


def robust_laplacian(points, faces=None, *, n_neighbors: int = 30, mollify_factor: float = 1e-5):
    """Robust Laplacian (Sharp & Crane 2020) through the ``robust-laplacian`` package.

    Args:
        points: ``[N, 3]`` positions.
        faces: optional ``[F, 3]``; given, the intrinsic-Delaunay *mesh* variant is used
            (robust to non-manifold and degenerate triangles), else the point-cloud one
            built from local ``n_neighbors`` triangulations.
        mollify_factor: intrinsic mollification, relative to the mean edge length.

    Returns:
        ``(L, M)``: stiffness and lumped mass, ``scipy.sparse.csr_matrix [N, N]``.

    The points are centred first: ``robust-laplacian`` 1.1's point-cloud operator is
    not translation invariant (its mass changed by 0.5 / 6 / 25 % under shifts of
    0.1 / 1 / 10 in our measurements), and a Laplacian must not depend on the origin.
    """
    import robust_laplacian as rl

    p = np.asarray(points, dtype=np.float64)
    p = np.ascontiguousarray(p - p.mean(0))
    if faces is None:
        L, M = rl.point_cloud_laplacian(p, mollify_factor=mollify_factor, n_neighbors=int(n_neighbors))
    else:
        L, M = rl.mesh_laplacian(p, np.ascontiguousarray(faces, dtype=np.int64), mollify_factor=mollify_factor)
    return L.tocsr(), M.tocsr()
