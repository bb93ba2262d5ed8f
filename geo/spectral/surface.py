"""`SpectralShape`: one surface (mesh or point cloud) with lazily cached spectral data.

Following trimesh, derived quantities (operators, eigenpairs) are computed on first
use and kept in a per-shape cache that is dropped whenever the geometry changes.
The shape holds its own *read-only* copy of the vertices, so the only way to change
them is the ``vertices`` setter, which clears the cache. For foreign objects passed
to :func:`geo.spectral.eigenbasis` (trimesh meshes, arrays, Open3D clouds, scene
nodes) a small module-level cache is keyed by a content hash of the vertices and
faces, so editing the object's vertices in place also invalidates it.

Input cleaning (done once, at construction, with a ``UserWarning`` for each fix):

* NaN / inf coordinates, fewer than two distinct points: ``ValueError``.
* degenerate triangles (repeated index or zero area) and duplicate triangles: dropped.
* vertices at identical positions: merged for the computation; every input vertex
  gets the value of its representative and the mass is split evenly among the copies
  (so ``Φᵀ diag(mass) Φ = I`` still holds on the input indexing).
* unreferenced mesh vertices: left out of the computation; they take the values of
  the nearest referenced vertex and get zero mass.
* non-manifold edges (more than two triangles): kept, warned about (the cotangent
  formula is still defined; ``method="robust"`` uses the intrinsic-Delaunay mesh
  Laplacian, which is designed for them).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict

import numpy as np

METHODS = ("cotan", "robust", "learned")


def _as_arrays(shape):
    """Duck-typed conversion to ``(vertices [N, 3] float64, faces [F, 3] int64 | None)``.

    Accepts ``SpectralShape``, trimesh ``Trimesh``/``PointCloud``, Open3D
    ``TriangleMesh``/``PointCloud``, a scene-graph node (anything with a ``.payload``
    holding ``.vertices``/``.faces`` or ``.points``), a torch tensor or an array-like.
    """
    if isinstance(shape, SpectralShape):
        return shape.vertices, shape.faces
    if hasattr(shape, "payload") and not isinstance(shape, np.ndarray):  # scene-graph node
        if shape.payload is None:
            raise ValueError("the scene node has no payload: expected a Mesh or PointCloud payload")
        return _as_arrays(shape.payload)
    if hasattr(shape, "triangles") and hasattr(shape, "vertices") and not hasattr(shape, "faces"):  # Open3D
        return np.asarray(shape.vertices, dtype=np.float64), np.asarray(shape.triangles, dtype=np.int64)
    if hasattr(shape, "vertices") and hasattr(shape, "faces"):  # trimesh.Trimesh, scenes Mesh
        f = np.asarray(shape.faces, dtype=np.int64)
        return np.asarray(shape.vertices, dtype=np.float64), (f if f.size else None)
    if hasattr(shape, "points"):  # Open3D PointCloud, scenes PointCloud
        return np.asarray(shape.points, dtype=np.float64), None
    if hasattr(shape, "vertices"):  # trimesh.PointCloud
        return np.asarray(shape.vertices, dtype=np.float64), None
    if hasattr(shape, "detach"):  # torch tensor
        shape = shape.detach().cpu().numpy()
    arr = np.asarray(shape, dtype=np.float64)
    return arr, None


def fingerprint(vertices: np.ndarray, faces: np.ndarray | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(vertices).tobytes())
    h.update(str(vertices.shape).encode())
    if faces is not None:
        h.update(np.ascontiguousarray(faces).tobytes())
    return h.hexdigest()


class SpectralShape:
    """A surface for spectral processing.

    Args:
        vertices: ``[N, 3]`` positions (mesh vertices or cloud points).
        faces: optional ``[F, 3]`` triangles; ``None`` for a point cloud.

    Attributes (read-only arrays): ``vertices [N, 3]``, ``faces [F, 3] | None``.
    Derived (cached): :meth:`operator`, :meth:`eigen`.

    Example:
        >>> s = SpectralShape(mesh.vertices, mesh.faces)
        >>> evals, evecs, mass = s.eigen(30, "cotan")
    """

    def __init__(self, vertices, faces=None):
        self._cache: dict = {}
        self._set(vertices, faces)

    # -- geometry -------------------------------------------------------------------
    def _set(self, vertices, faces):
        v = np.array(vertices, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"expected points of shape [N, 3], got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{int((~np.isfinite(v)).any(axis=1).sum())} points have NaN or inf coordinates")
        if len(v) < 2:
            raise ValueError(f"a spectral basis needs at least 2 points, got {len(v)}")
        f = None if faces is None else np.array(faces, dtype=np.int64)
        if f is not None and (f.ndim != 2 or f.shape[1] != 3):
            raise ValueError(f"faces must have shape [F, 3], got {f.shape}")
        v.flags.writeable = False
        if f is not None:
            f.flags.writeable = False
        self._vertices, self._faces = v, f
        self._cache.clear()
        self._clean()

    @property
    def vertices(self) -> np.ndarray:
        return self._vertices

    @vertices.setter
    def vertices(self, value) -> None:
        value = np.asarray(value, dtype=np.float64)
        if value.shape != self._vertices.shape:
            raise ValueError(f"new vertices must keep the shape {self._vertices.shape}, got {value.shape}")
        self._set(value, self._faces)

    @property
    def faces(self) -> np.ndarray | None:
        return self._faces

    @property
    def is_mesh(self) -> bool:
        return self._faces is not None

    @property
    def n_vertices(self) -> int:
        return len(self._vertices)

    # -- cleaning -----------------------------------------------------------------
    def _clean(self):
        """Compute the cleaned working arrays and the map back to the input indexing."""
        v, f = self._vertices, self._faces
        n = len(v)
        uniq, rep, inverse = np.unique(v, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        # keep the distinct points in input order (np.unique sorts them by coordinates,
        # which would make the point order, and with it the order-dependent robust
        # point-cloud Laplacian, change when the shape is rotated)
        order = np.argsort(rep, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        uniq, inverse = uniq[order], rank[inverse]
        if len(uniq) < n:
            msg = f"{n - len(uniq)} duplicate points merged for the spectral computation"
            warnings.warn(msg, UserWarning, stacklevel=4)
        if len(uniq) < 2:
            raise ValueError("all points coincide: a spectral basis needs at least 2 distinct points")
        used = np.ones(len(uniq), dtype=bool)
        wf = None
        if f is not None:
            if len(f) and (f.min() < 0 or f.max() >= n):
                raise ValueError("faces index vertices out of range")
            wf = inverse[f]
            bad = (wf[:, 0] == wf[:, 1]) | (wf[:, 1] == wf[:, 2]) | (wf[:, 0] == wf[:, 2])
            e1 = uniq[wf[:, 1]] - uniq[wf[:, 0]]
            e2 = uniq[wf[:, 2]] - uniq[wf[:, 0]]
            area = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
            scale = float(np.median(area[~bad])) if (~bad).any() else 0.0
            bad |= area <= 1e-12 * max(scale, 1e-300)
            if bad.any():
                warnings.warn(f"{int(bad.sum())} degenerate triangles removed", UserWarning, stacklevel=4)
                wf = wf[~bad]
            key = np.sort(wf, axis=1)
            _, first = np.unique(key, axis=0, return_index=True)
            if len(first) < len(wf):
                warnings.warn(f"{len(wf) - len(first)} duplicate triangles removed", UserWarning, stacklevel=4)
                wf = wf[np.sort(first)]
            if len(wf) == 0:
                raise ValueError("the mesh has no non-degenerate triangles")
            edges = np.sort(np.concatenate([wf[:, [0, 1]], wf[:, [1, 2]], wf[:, [2, 0]]]), axis=1)
            _, counts = np.unique(edges, axis=0, return_counts=True)
            if (counts > 2).any():
                warnings.warn(
                    f"mesh is non-manifold ({int((counts > 2).sum())} edges with more than two triangles); "
                    "method='robust' is the safer operator here",
                    UserWarning,
                    stacklevel=4,
                )
            used = np.zeros(len(uniq), dtype=bool)
            used[wf.ravel()] = True
            if not used.all():
                warnings.warn(
                    f"{int((~used).sum())} vertices belong to no triangle: they take the values of the nearest "
                    "referenced vertex and get zero mass",
                    UserWarning,
                    stacklevel=4,
                )
        # working index space = the used unique points
        work_ids = np.flatnonzero(used)
        remap = -np.ones(len(uniq), dtype=np.int64)
        remap[work_ids] = np.arange(len(work_ids))
        uniq_to_work = remap.copy()
        if not used.all():
            from scipy.spatial import cKDTree

            _, nn = cKDTree(uniq[work_ids]).query(uniq[~used])
            uniq_to_work[~used] = nn
        self._work_vertices = uniq[work_ids]
        self._work_faces = None if wf is None else remap[wf]
        self._to_work = uniq_to_work[inverse]  # [N] input vertex -> working vertex
        # mass share: working mass split evenly over the input vertices that are real copies
        real = used[inverse]
        copies = np.bincount(self._to_work[real], minlength=len(work_ids)).astype(np.float64)
        self._mass_share = np.where(real, 1.0 / np.maximum(copies[self._to_work], 1.0), 0.0)

    @property
    def n_work(self) -> int:
        """Number of distinct, referenced points the operators are built on."""
        return len(self._work_vertices)

    def to_input(self, values: np.ndarray) -> np.ndarray:
        """Map per-working-vertex values ``[n_work, ...]`` to the input indexing ``[N, ...]``."""
        return np.asarray(values)[self._to_work]

    def mass_to_input(self, mass: np.ndarray) -> np.ndarray:
        return np.asarray(mass)[self._to_work] * self._mass_share

    # -- cached derived data -----------------------------------------------------
    def operator(self, method: str = "cotan"):
        """``(L, M)`` on the working vertices (see :mod:`geo.spectral.laplacian`)."""
        if method not in ("cotan", "robust"):
            raise ValueError(f"operator method must be 'cotan' or 'robust', got {method!r}")
        key = ("operator", method)
        if key not in self._cache:
            from . import laplacian

            if method == "cotan":
                if not self.is_mesh:
                    raise ValueError("method='cotan' needs a triangle mesh; use 'robust' or 'learned' for point clouds")
                L = laplacian.cotan_laplacian(self._work_vertices, self._work_faces)
                M = laplacian.lumped_mass(self._work_vertices, self._work_faces)
            else:
                L, M = laplacian.robust_laplacian(self._work_vertices, self._work_faces)
            self._cache[key] = (L, M)
        return self._cache[key]

    def set_eigen(self, method: str, evals, basis, mass) -> None:
        """Provide eigenpairs computed elsewhere for this geometry (input indexing, as
        :meth:`eigen` returns them), so that later :meth:`eigen` calls with ``k <= len(evals)``
        reuse them instead of solving again."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        evals, basis, mass = np.asarray(evals), np.asarray(basis), np.asarray(mass)
        n = len(self._vertices)
        if basis.shape != (n, len(evals)) or mass.shape != (n,):
            raise ValueError(f"expected basis [{n}, {len(evals)}] and mass [{n}], got {basis.shape} and {mass.shape}")
        self._cache[("eigen", method, len(evals))] = (evals, basis, mass)

    def eigen(self, k: int, method: str = "cotan", **learned_kwargs):
        """First ``k`` eigenpairs on the *input* indexing.

        Returns:
            ``(eigenvalues [k], basis [N, k], mass [N])`` float64 with
            ``basisᵀ diag(mass) basis = I`` and ``basis[:, 0]`` constant.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k >= self.n_work:
            raise ValueError(
                f"k={k} eigenpairs need more than k distinct points; this shape has {self.n_work}"
            )
        for key, val in list(self._cache.items()):
            if key[0] == "eigen" and key[1] == method and key[2] >= k and not learned_kwargs:
                w, phi, mass = val
                return val if key[2] == k else (w[:k], phi[:, :k], mass)
        if method == "learned":
            from .learned import learned_eigenbasis_points

            w, phi, mass = learned_eigenbasis_points(self._work_vertices, k, **learned_kwargs)
        else:
            from .eigen import generalized_eigsh

            L, M = self.operator(method)
            w, phi = generalized_eigsh(L, M, k)
            mass = np.asarray(M.diagonal()).ravel()
        out = (w, self.to_input(phi), self.mass_to_input(mass))
        if not learned_kwargs:
            self._cache[("eigen", method, k)] = out
        return out


_SHAPES: OrderedDict[str, SpectralShape] = OrderedDict()
_MAX_SHAPES = 8


def as_spectral_shape(shape) -> SpectralShape:
    """The cached :class:`SpectralShape` for ``shape`` (content-hash keyed, LRU of 8)."""
    if isinstance(shape, SpectralShape):
        return shape
    v, f = _as_arrays(shape)
    if v.ndim != 2 or v.shape[-1] != 3:
        raise ValueError(f"expected an [N, 3] point array, a mesh, a point cloud or a scene node; got shape {v.shape}")
    key = fingerprint(v, f)
    s = _SHAPES.get(key)
    if s is None:
        s = SpectralShape(v, f)
        _SHAPES[key] = s
        while len(_SHAPES) > _MAX_SHAPES:
            _SHAPES.popitem(last=False)
    else:
        _SHAPES.move_to_end(key)
    return s
