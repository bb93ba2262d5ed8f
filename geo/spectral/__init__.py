"""Spectral geometry: Laplace–Beltrami eigenbases of meshes and point clouds, classical
and learned, behind one function.

    >>> import geo.spectral as gs
    >>> basis, evals, mass = gs.eigenbasis(mesh, 30, method="cotan")   # or "robust", "learned"
    >>> h = gs.hks(evals, basis); w = gs.wks(evals, basis)
    >>> d = gs.geodesic_distances(mesh, 0, method="heat")

``shape`` may be a trimesh mesh or point cloud, an ``[N, 3]`` array or tensor, an Open3D
point cloud or triangle mesh, a scene-graph node whose ``.payload`` has
``.vertices``/``.faces`` or ``.points`` (duck-typed: ``geo`` never imports ``scenes``;
the payload's local frame is used — rigid transforms do not change intrinsic spectra),
or a :class:`SpectralShape`. For every method ``basis [N, k]`` is M-orthonormal
(``basisᵀ diag(mass) basis = I``), ``basis[:, 0]`` is the positive constant
``1/sqrt(area)``, ``eigenvalues [k]`` ascend from 0 (learned: approximately), and
``mass [N]`` is the lumped area per vertex.

Classical (:mod:`.laplacian`, :mod:`.eigen`): cotangent stiffness + barycentric lumped
mass for meshes; the robust Laplacian (Sharp & Crane, "A Laplacian for Nonmanifold
Triangle Meshes", SGP 2020, ``robust-laplacian`` package) for point clouds (or for
meshes with ``method="robust"``, intrinsic-Delaunay variant); shift-invert
``eigsh`` for the k smallest generalised pairs. Descriptors (:mod:`.descriptors`): HKS,
WKS. Geodesics (:mod:`.geodesic`): heat method (``potpourri3d``) or Dijkstra.
Caching and input cleaning: :mod:`.surface` (bad-input behaviour is documented there
and in :mod:`.eigen` for disconnected shapes).

Learned (:mod:`.learned`, :mod:`.train`, :mod:`.shapes`) — R. Velich, A. Piven,
D. Bensaïd, D. Cremers, T. Dagès, R. Kimmel, "Learning Eigenstructures of Unstructured
Data Manifolds", arXiv:2512.01103, 2025. A point network outputs K channels, QR makes
them an orthonormal ``Q``, and the loss is the nested reconstruction error of random
smooth probe functions averaged over k = 1..K; the density is ``q₁²`` and the
eigenvectors ``M^{-1/2} q``. Departures from the paper:

* Network: per-point MLP with Fourier features, two local kNN max-aggregation blocks,
  one *diffusion* block (features averaged along the surface by the kNN random walk
  for three fixed diffusion times, DiffusionNet-style, so global context is
  intrinsic), then *induced-point* attention (Set Transformer ISAB, 32 latents)
  instead of a full transformer, so inference is linear in N; inputs are
  canonicalised (centre, unit RMS radius, principal axes) instead of learning rotation
  invariance from scratch. Clouds larger than 4096 points are processed on a random
  4096-point subsample and the (smooth) eigenfunctions are extended by
  inverse-distance interpolation, the mass then being the kernel's area estimate.
* Probes: uniform fields smoothed by the α = 1 (density-normalised, Coifman–Lafon)
  Gaussian kNN kernel in symmetric form, so that ``q₁²`` converges to the *area* per
  point (the lumped mass) rather than to the raw sampling density, and ``v = M^{-1/2}q``
  to Laplace–Beltrami eigenfunctions independently of the sampling.
* Training minimises the closed-form *expectation* of the nested probe loss over the
  probe law (zero-variance; :func:`learned.expected_nested_loss`) with per-level
  weights ``1/EMA(err_k)``; the Monte Carlo form (:func:`learned.nested_reconstruction_loss`)
  is the same objective.
* Eigenvalues: the paper reads ``λ_{k+1} ≈ 1/err_k`` from the *worst-case* error of
  gradient-normalised probes. We use the *mean* error instead: the per-level decrement
  ``μ_k = e_{k-1} - e_k ∝ exp(-2tλ_k)`` under heat-smoothed probes, so
  ``λ_k = -log(μ_k/μ_1)/2t`` with the diffusion time ``t`` measured from the kernel
  (a surface, i.e. 2-manifold, is assumed; the kernel's step variance and area are
  corrected by constants measured once on spheres, :data:`learned.EIGENVALUE_CALIBRATION`).
  Columns are ordered by this estimate (the constant first).
* Mass: ``A · q₁²`` with the kernel's total-area estimate ``A``.
* Rayleigh–Ritz (default, ``rayleigh_ritz=True``): the network's span ``q_2..q_K`` is
  rotated to the minimiser of the same nested probe loss *within that span*
  (eigenvectors of ``Q₂ᵀ S^{2n} Q₂``, a K×K problem, free since ``S^n Q`` is computed
  for the eigenvalues anyway). No eigensolver on the N×N operator is involved; the
  network fixes the subspace, the loss fixes the order inside it. ``rayleigh_ritz=False``
  returns the raw network order (the benchmark reports both).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .surface import METHODS, SpectralShape, as_spectral_shape

__all__ = [
    "Eigenbasis",
    "SpectralShape",
    "eigenbasis",
    "hks",
    "wks",
    "geodesic_distances",
    "METHODS",
]


class Eigenbasis(NamedTuple):
    """``basis [N, k]``, ``eigenvalues [k]``, ``mass [N]`` (float64 numpy)."""

    basis: np.ndarray
    eigenvalues: np.ndarray
    mass: np.ndarray


def eigenbasis(shape, k: int, method: str = "cotan", **learned_kwargs) -> Eigenbasis:
    """First ``k`` Laplace–Beltrami eigenpairs of ``shape``.

    Args:
        shape: mesh, point cloud, ``[N, 3]`` array, Open3D geometry, scene node or
            :class:`SpectralShape` (see the module docstring).
        k: number of eigenpairs, ``1 <= k < N`` (distinct points).
        method: ``"cotan"`` (meshes), ``"robust"`` (point clouds or meshes) or
            ``"learned"`` (any; ``k`` at most the checkpoint's K = 30).
        learned_kwargs: passed to :func:`geo.spectral.learned.learned_eigenbasis_points`
            (``model=``, ``checkpoint=``, ...); results with these are not cached.

    Returns:
        :class:`Eigenbasis` ``(basis [N, k], eigenvalues [k], mass [N])``.

    Raises:
        ValueError: NaN/inf points, fewer than 2 distinct points, ``k >= N``, ``cotan``
            without faces, unknown method.

    Example:
        >>> basis, evals, mass = eigenbasis(np.random.randn(500, 3), 10, method="robust")
    """
    s = as_spectral_shape(shape)
    w, phi, mass = s.eigen(k, method, **learned_kwargs)
    return Eigenbasis(phi, w, mass)


def __getattr__(name):
    if name in ("hks", "wks"):
        from . import descriptors

        return getattr(descriptors, name)
    if name == "geodesic_distances":
        from .geodesic import geodesic_distances

        return geodesic_distances
    raise AttributeError(name)
