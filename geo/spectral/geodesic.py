"""Geodesic distances on meshes and point clouds.

* ``method="heat"`` — the heat method (Crane, Weischedel & Wardetzky, "Geodesics in
  Heat", TOG 2013) through ``potpourri3d`` (intrinsic-Delaunay mesh solver, or its
  point-cloud solver when there are no faces). Approximate, fast, any size.
* ``method="dijkstra"`` — exact shortest paths along mesh edges (or along the
  symmetrised kNN graph of a point cloud) with ``scipy.sparse.csgraph.dijkstra``.
  This is exact *on the graph*, an upper bound of the surface geodesic; it is meant
  for small shapes (at most ``max_dijkstra_vertices`` points).
"""

from __future__ import annotations

import numpy as np


def _graph(vertices, faces, knn: int = 8):
    import scipy.sparse as sp

    n = len(vertices)
    if faces is not None:
        e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    else:
        from scipy.spatial import cKDTree

        _, nn = cKDTree(vertices).query(vertices, k=min(knn + 1, n))
        e = np.stack([np.repeat(np.arange(n), nn.shape[1] - 1), nn[:, 1:].ravel()], axis=1)
    d = np.linalg.norm(vertices[e[:, 0]] - vertices[e[:, 1]], axis=1)
    G = sp.coo_matrix((d, (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    return G.maximum(G.T)


def geodesic_distances(shape, sources, method: str = "heat", *, max_dijkstra_vertices: int = 20000) -> np.ndarray:
    """Distances from one or more source vertices to every vertex.

    Args:
        shape: anything :func:`geo.spectral.eigenbasis` accepts.
        sources: an int or ``[S]`` vertex indices.
        method: ``"heat"`` or ``"dijkstra"``.

    Returns:
        ``[N]`` for a single int source (distance to the nearest source for the heat
        method with several sources), else ``[S, N]`` for Dijkstra with several sources.
    """
    from .surface import as_spectral_shape

    s = as_spectral_shape(shape)
    v = s._work_vertices
    f = s._work_faces
    src = np.atleast_1d(np.asarray(sources, dtype=np.int64))
    if src.min() < 0 or src.max() >= s.n_vertices:
        raise ValueError(f"source index out of range [0, {s.n_vertices})")
    wsrc = s._to_work[src]
    if method == "heat":
        import potpourri3d as pp3d

        if f is not None:
            solver = pp3d.MeshHeatMethodDistanceSolver(v, f)
        else:
            solver = pp3d.PointCloudHeatSolver(v)
        if len(wsrc) == 1:
            d = solver.compute_distance(int(wsrc[0]))
        else:
            d = solver.compute_distance_multisource(wsrc.tolist())
        return s.to_input(np.asarray(d))
    if method == "dijkstra":
        from scipy.sparse.csgraph import dijkstra

        if len(v) > max_dijkstra_vertices:
            raise ValueError(
                f"exact Dijkstra is limited to {max_dijkstra_vertices} vertices (got {len(v)}); use method='heat'"
            )
        d = dijkstra(_graph(v, f), directed=False, indices=wsrc)
        d = d[:, s._to_work]
        return d[0] if np.ndim(sources) == 0 else d
    raise ValueError(f"method must be 'heat' or 'dijkstra', got {method!r}")
