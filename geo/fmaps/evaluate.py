"""Evaluation of point maps: geodesic error, coverage, bijectivity (numpy, one pair at a time).

The geodesic error follows the protocol of Kim et al. 2011 ("Blended Intrinsic Maps")
used throughout the functional-map literature: for each target vertex ``y`` the
geodesic distance on the *source* between the predicted image ``p2p_21[y]`` and the
true one ``gt_21[y]``, divided by ``sqrt(area(source))``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["surface_area", "geodesic_error", "coverage", "bijectivity"]


def _np_index(p, name: str) -> np.ndarray:
    if hasattr(p, "detach"):
        p = p.detach().cpu().numpy()
    p = np.asarray(p)
    if p.ndim != 1 or not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer index array [N], got dtype {p.dtype} and shape {p.shape}")
    return p.astype(np.int64)


def surface_area(shape, method: str = "cotan") -> float:
    """Total area: the sum of the lumped mass of :mod:`geo.spectral` (the triangle area for meshes)."""
    from geo.spectral.surface import as_spectral_shape

    s = as_spectral_shape(shape)
    _, M = s.operator(method if s.is_mesh else "robust")
    return float(M.diagonal().sum())


def geodesic_error(
    p2p_21, gt_21, source, *, distances=None, method: str = "dijkstra", normalize: bool = True
) -> np.ndarray:
    """Per-target-vertex geodesic error of a point map, measured on the source.

    Args:
        p2p_21: ``[N2]`` predicted source index of each target vertex.
        gt_21: ``[N2]`` true source index.
        source: the source shape (anything :func:`geo.spectral.eigenbasis` accepts).
        distances: optional precomputed ``[N1, N1]`` geodesic matrix of the source.
        method: ``"dijkstra"`` (exact on the edge graph) or ``"heat"``, for
            :func:`geo.spectral.geodesic_distances` when ``distances`` is None.
        normalize: divide by ``sqrt(area(source))``.

    Returns:
        ``[N2]`` float64 errors; ``.mean()`` is the usual score.
    """
    import geo.spectral as gs

    p, g = _np_index(p2p_21, "p2p_21"), _np_index(gt_21, "gt_21")
    if p.shape != g.shape:
        raise ValueError(f"p2p_21 {p.shape} and gt_21 {g.shape} must have the same length")
    err = np.zeros(len(p))
    if distances is not None:
        err = np.asarray(distances)[g, p]
    else:
        src = np.unique(g)
        if method == "dijkstra":
            D = np.atleast_2d(gs.geodesic_distances(source, src, method="dijkstra"))  # [S, N1]
            row = np.searchsorted(src, g)
            err = D[row, p]
        elif method == "heat":
            for s in src:  # the heat method's multi-source call returns the distance to the nearest source
                sel = g == s
                err[sel] = gs.geodesic_distances(source, int(s), method="heat")[p[sel]]
        else:
            raise ValueError(f"method must be 'dijkstra' or 'heat', got {method!r}")
    err = np.where(p == g, 0.0, err)
    return err / np.sqrt(surface_area(source)) if normalize else err


def coverage(p2p_21, n_source: int, mass1=None) -> float:
    """Fraction of source vertices hit by the map (area-weighted with ``mass1 [N1]``)."""
    p = _np_index(p2p_21, "p2p_21")
    if p.size and (p.min() < 0 or p.max() >= n_source):
        raise ValueError(f"p2p_21 indices must lie in [0, {n_source})")
    hit = np.zeros(n_source, dtype=bool)
    hit[p] = True
    if mass1 is None:
        return float(hit.mean())
    m = np.asarray(mass1, dtype=np.float64)
    return float(m[hit].sum() / m.sum())


def bijectivity(p2p_21, p2p_12, *, distances2=None) -> float:
    """How close ``T12 ∘ T21`` is to the identity on the target.

    Returns the fraction of target vertices ``y`` with ``p2p_12[p2p_21[y]] == y``; with
    a ``[N2, N2]`` geodesic matrix ``distances2``, the mean geodesic distance between
    ``y`` and its round-trip image instead (0 for a bijection).
    """
    a, b = _np_index(p2p_21, "p2p_21"), _np_index(p2p_12, "p2p_12")
    if a.size and (a.max() >= len(b) or a.min() < 0):
        raise ValueError(f"p2p_21 indices must lie in [0, len(p2p_12)) = [0, {len(b)})")
    back = b[a]
    if distances2 is None:
        return float((back == np.arange(len(a))).mean())
    return float(np.asarray(distances2)[np.arange(len(a)), back].mean())
