"""Generalised eigensolver for ``L φ = λ M φ`` (the k smallest pairs).

Shift-invert Lanczos (``scipy.sparse.linalg.eigsh`` with ``sigma < 0``, so that
``L - σM`` is positive definite even when ``L`` is singular). The returned
eigenvectors are M-orthonormal (``Φᵀ M Φ = I``), sorted by eigenvalue, the first one
is the constant ``1/sqrt(area)`` with a positive sign, and every other column has its
sign fixed so that its largest-magnitude entry is positive (deterministic output).

Disconnected inputs (documented fallback): the eigenvalue 0 then has multiplicity
``c`` = number of connected components and its eigenspace is spanned by the component
indicator functions. The constant function lies in that space, so the null space is
rotated to put the constant first (the remaining ``c - 1`` null vectors are orthogonal
to it); a ``UserWarning`` says how many components were found.
"""

from __future__ import annotations

import warnings

import numpy as np


def connected_components(L) -> tuple[int, np.ndarray]:
    """Components of the graph of the sparse operator ``L``: ``(count, labels [N])``."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components as cc

    A = sp.csr_matrix(L, copy=True)
    A.setdiag(0)
    A.eliminate_zeros()
    return cc(A != 0, directed=False)


def _fix_signs(phi: np.ndarray) -> np.ndarray:
    idx = np.argmax(np.abs(phi), axis=0)
    s = np.sign(phi[idx, np.arange(phi.shape[1])])
    s[s == 0] = 1.0
    return phi * s


def generalized_eigsh(L, M, k: int, *, sigma: float | None = None, tol: float = 0.0, warn_components: bool = True):
    """k smallest eigenpairs of ``L φ = λ M φ``.

    Args:
        L: ``[N, N]`` sparse symmetric PSD stiffness.
        M: ``[N, N]`` sparse diagonal positive mass.
        k: number of pairs, ``1 <= k < N``.
        sigma: shift (default ``-1e-8 · trace(L)/trace(M)``, a tiny negative number on
            the scale of the operator).

    Returns:
        ``(evals [k], evecs [N, k])`` float64, ascending, ``evecsᵀ M evecs = I``,
        ``evecs[:, 0]`` constant and positive, ``evals[0] = 0`` (clamped at 0).
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    n = L.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= k < N for the eigensolver, got k={k}, N={n}")
    m = np.asarray(M.diagonal()).ravel()
    if np.any(m <= 0) or not np.all(np.isfinite(m)):
        raise ValueError("mass matrix must be positive: the shape has isolated points or zero-area vertices")
    area = float(m.sum())
    scale = float(L.diagonal().sum() / area)
    if sigma is None:
        sigma = -1e-8 * scale
    Ms = sp.diags(m).tocsc()
    if n <= 400:  # dense is faster and always converges on tiny problems
        import scipy.linalg as la

        w, phi = la.eigh(L.toarray(), np.diag(m), subset_by_index=[0, k - 1])
    else:
        # A generic (seeded) start vector: the constant one is M-orthogonal to every other
        # eigenvector, so Lanczos started from it misses members of degenerate clusters.
        v0 = np.random.default_rng(0).uniform(0.5, 1.5, size=n)
        kk = min(k + 2, n - 1)  # a little slack so a cluster cut at k is fully resolved
        w, phi = sla.eigsh(L.tocsc(), k=kk, M=Ms, sigma=sigma, which="LM", tol=tol, v0=v0)
    order = np.argsort(w)[:k]
    w, phi = w[order], phi[:, order]
    # Re-orthonormalise in the M inner product (eigsh is accurate, this removes drift).
    G = phi.T @ (m[:, None] * phi)
    C = np.linalg.cholesky(G)
    phi = np.linalg.solve(C, phi.T).T

    ncomp, labels = connected_components(L)
    if ncomp > 1 and warn_components:
        warnings.warn(
            f"shape has {ncomp} connected components: eigenvalue 0 has multiplicity {ncomp}; "
            "the null space is rotated so that the first eigenvector is constant",
            UserWarning,
            stacklevel=3,
        )
    nz = min(ncomp, k)
    const = np.full(n, 1.0 / np.sqrt(area))
    if nz == 1:
        phi[:, 0] = const
    else:
        # Rotate the numerical null space so that the constant comes first.
        Z = phi[:, :nz]
        c = Z.T @ (m * const)  # coordinates of the constant in the null basis
        c /= np.linalg.norm(c)
        u = c - np.eye(nz)[0]
        # Householder reflection swapping e0 and c: (Z H)[:, 0] = Z c = the constant.
        H = np.eye(nz) - 2.0 * np.outer(u, u) / (u @ u) if u @ u > 1e-24 else np.eye(nz)
        phi[:, :nz] = Z @ H
        phi[:, 0] = const
    w = np.maximum(w, 0.0)
    w[:nz] = 0.0
    rest = _fix_signs(phi[:, 1:])
    return w, np.concatenate([phi[:, :1], rest], axis=1)
