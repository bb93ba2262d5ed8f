"""Functional-map solver: descriptor preservation with a per-entry mask, row by row.

Convention (pyFM's): ``C [k2, k1]`` maps coefficients of functions on the *source*
(shape 1, basis ``Φ1 [N1, k1]``) to the *target* (shape 2, ``Φ2 [N2, k2]``), so
``Φ2 C ≈ Π21 Φ1`` where ``Π21`` is the pull-back by the point map ``T21: 2 → 1``.
Every function takes an optional leading batch dimension ``B``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ShapeSpectrum",
    "preprocess",
    "project",
    "resolvent_mask",
    "solve_fmap",
    "solve_fmap_bijective",
    "fmap_energy",
    "fit",
]


def as_tensor(x, dtype=torch.float64, device=None) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(device=device or x.device, dtype=dtype if x.is_floating_point() else x.dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def batched(x: Tensor, ndim: int) -> tuple[Tensor, bool]:
    """Add a batch dimension to an unbatched tensor of rank ``ndim``; report whether it was added."""
    if x.ndim == ndim:
        return x.unsqueeze(0), True
    if x.ndim != ndim + 1:
        raise ValueError(f"expected {ndim} dims (or {ndim + 1} with a batch dimension), got shape {tuple(x.shape)}")
    return x, False


class ShapeSpectrum(NamedTuple):
    """One shape ready for a functional map (float64 tensors).

    ``basis [N, k]`` M-orthonormal, ``evals [k]``, ``mass [N]``, ``descriptors [N, d]``
    (each column of unit M-norm).
    """

    basis: Tensor
    evals: Tensor
    mass: Tensor
    descriptors: Tensor


def preprocess(
    shape,
    k: int,
    descriptors: str | Sequence[str] = "wks",
    n_descriptors: int = 100,
    method: str = "cotan",
    n_descriptor_evals: int | None = None,
    device=None,
) -> ShapeSpectrum:
    """Eigenbasis and descriptors of ``shape`` (the "preprocess" step of the pipeline).

    Args:
        shape: anything :func:`geo.spectral.eigenbasis` accepts.
        k: number of eigenfunctions kept (the largest basis ZoomOut will use).
        descriptors: ``"wks"``, ``"hks"`` or a list of them (concatenated).
        n_descriptors: energies / times per descriptor.
        method: Laplacian, ``"cotan"`` or ``"robust"`` (see :mod:`geo.spectral`).
        n_descriptor_evals: eigenpairs used to build the descriptors (default ``k``).

    Returns:
        :class:`ShapeSpectrum`.
    """
    import geo.spectral as gs

    basis, evals, mass = gs.eigenbasis(shape, k, method=method)
    f = spectral_descriptors(basis, evals, mass, descriptors, n_descriptors, n_descriptor_evals)
    t = lambda a: as_tensor(a, device=device)  # noqa: E731
    return ShapeSpectrum(t(basis), t(evals), t(mass), t(f))


def spectral_descriptors(basis, evals, mass, names: str | Sequence[str] = "wks", n: int = 100, n_evals: int | None = None) -> np.ndarray:
    """WKS and/or HKS (``n`` energies / times each, concatenated) from the first
    ``n_evals`` eigenpairs (default all), each column scaled to unit M-norm (as pyFM).

    Returns:
        ``[N, n · len(names)]`` float64.
    """
    import geo.spectral as gs

    k = basis.shape[1]
    nd = k if n_evals is None else min(int(n_evals), k)
    feats = []
    for name in [names] if isinstance(names, str) else list(names):
        if name == "wks":
            feats.append(gs.wks(evals[:nd], basis[:, :nd], n_energies=n))
        elif name == "hks":
            feats.append(gs.hks(evals[:nd], basis[:, :nd], n_times=n))
        else:
            raise ValueError(f"descriptor must be 'wks' or 'hks', got {name!r}")
    f = np.concatenate(feats, axis=1)
    return f / np.sqrt((mass[:, None] * f**2).sum(0, keepdims=True))


def project(values, basis, mass) -> Tensor:
    """Spectral coefficients ``Φᵀ M F``: ``values [..., N, d]``, ``basis [..., N, k]``, ``mass [..., N]`` → ``[..., k, d]``."""
    return basis.transpose(-1, -2) @ (mass.unsqueeze(-1) * values)


def resolvent_mask(evals1, evals2, gamma: float = 0.5) -> Tensor:
    """Laplacian-commutativity mask in resolvent form (Ren et al. 2019, Eq. 10–11).

    ``‖R(Δ2) C − C R(Δ1)‖²`` with the resolvent ``R(λ) = 1/(λ^γ − i)`` is diagonal in
    the eigenbases, so it equals ``Σ_ij mask_ij C_ij²`` with
    ``mask_ij = (Re_i − Re_j)² + (Im_i − Im_j)²``, ``Re = λ^γ/(λ^{2γ}+1)``,
    ``Im = 1/(λ^{2γ}+1)``, eigenvalues scaled by the joint maximum first.

    Args:
        evals1: ``[..., k1]`` source eigenvalues. evals2: ``[..., k2]`` target.
        gamma: resolvent exponent ``γ`` (0.5 in the paper).

    Returns:
        ``[..., k2, k1]`` non-negative mask, zero where the eigenvalues match.
    """
    e1, e2 = as_tensor(evals1), as_tensor(evals2)
    scale = torch.maximum(e1.amax(-1, keepdim=True), e2.amax(-1, keepdim=True)).clamp_min(1e-300)
    g1 = (e1.clamp_min(0) / scale) ** gamma
    g2 = (e2.clamp_min(0) / scale) ** gamma
    g1, g2 = g1.unsqueeze(-2), g2.unsqueeze(-1)
    re = g2 / (g2**2 + 1) - g1 / (g1**2 + 1)
    im = 1 / (g2**2 + 1) - 1 / (g1**2 + 1)
    return re**2 + im**2


def _check_ab(A, B, mask):
    A, B = as_tensor(A), as_tensor(B, device=A.device if isinstance(A, Tensor) else None)
    if A.ndim not in (2, 3) or B.ndim != A.ndim:
        raise ValueError(f"A must be [k1, d] and B [k2, d] (optionally with a batch dim), got {tuple(A.shape)} and {tuple(B.shape)}")
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(f"A [.., k1, d] and B [.., k2, d] need the same descriptor count d, got {A.shape[-1]} and {B.shape[-1]}")
    unb = A.ndim == 2
    A, B = (A.unsqueeze(0), B.unsqueeze(0)) if unb else (A, B)
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"batch sizes differ: A {A.shape[0]}, B {B.shape[0]}")
    k1, k2 = A.shape[-2], B.shape[-2]
    if mask is not None:
        mask = as_tensor(mask, dtype=A.dtype, device=A.device)
        if mask.shape[-2:] != (k2, k1):
            raise ValueError(f"mask must be [.., k2, k1] = [.., {k2}, {k1}], got {tuple(mask.shape)}")
        mask = mask.expand(A.shape[0], k2, k1)
    return A, B, mask, unb


def _row_solve(G, rhs, diag, extra=None):
    """Solve ``(G + extra + diag(diag_i)) c_i = rhs_i`` for every row ``i``: ``G [B,k1,k1]``, ``rhs, diag [B,k2,k1]``."""
    lhs = G.unsqueeze(1) + torch.diag_embed(diag)
    if extra is not None:
        lhs = lhs + extra.unsqueeze(1)
    try:
        return torch.linalg.solve(lhs, rhs.unsqueeze(-1)).squeeze(-1)
    except RuntimeError as err:  # torch.linalg.LinAlgError subclasses RuntimeError
        raise ValueError(
            "singular row system: use at least k1 independent descriptors or a positive mask weight"
        ) from err


def solve_fmap(A, B, mask=None, mask_weight: float = 1e-3, *, ortho_weight: float = 0.0, n_iter: int = 50) -> Tensor:
    r"""Least-squares functional map with a per-entry penalty, in closed form row by row.

    Minimises ``‖C A − B‖²_F + w Σ_ij mask_ij C_ij²`` (Ovsjanikov et al. 2012 descriptor
    preservation; Ren et al. 2019 mask). The penalty is diagonal in ``vec C`` and the
    data term couples only entries of one row, so row ``i`` solves the ``k1 × k1``
    system ``(A Aᵀ + w diag(mask_i)) c_i = A b_i`` — ``k2`` small solves, batched.

    With ``ortho_weight = μ > 0`` the term ``μ‖CᵀC − I‖²`` (:func:`geo.regularizers.orthogonality`)
    is added; the problem is no longer quadratic, so the closed-form solution is the
    start of ``n_iter`` L-BFGS iterations on the full energy (:func:`fmap_energy`).

    Args:
        A: ``[B?, k1, d]`` source descriptor coefficients (:func:`project`).
        B: ``[B?, k2, d]`` target descriptor coefficients.
        mask: ``[B?, k2, k1]`` non-negative weights (e.g. :func:`resolvent_mask`), or None.
        mask_weight: ``w``.
        ortho_weight: ``μ``.

    Returns:
        ``C [B?, k2, k1]``.
    """
    A, B, mask, unb = _check_ab(A, B, mask)
    if mask is None and A.shape[-1] < A.shape[-2]:
        raise ValueError(
            f"without a mask the {A.shape[-1]} descriptors cannot determine the k1={A.shape[-2]} columns of C; "
            "use at least k1 descriptors or a mask"
        )
    diag = torch.zeros(A.shape[0], B.shape[-2], A.shape[-2], dtype=A.dtype, device=A.device)
    if mask is not None:
        diag = mask_weight * mask
    C = _row_solve(A @ A.transpose(-1, -2), B @ A.transpose(-1, -2), diag)
    if ortho_weight > 0:
        C = _lbfgs(C, A, B, mask, mask_weight, ortho_weight, n_iter)
    return C[0] if unb else C


def fmap_energy(C, A, B, mask=None, mask_weight: float = 1e-3, ortho_weight: float = 0.0) -> Tensor:
    """``Σ_batch ‖C A − B‖² + w Σ mask ⊙ C² + μ‖CᵀC − I‖²`` (scalar), the energy :func:`solve_fmap` minimises."""
    from geo.regularizers import orthogonality

    e = ((C @ A - B) ** 2).sum()
    if mask is not None:
        e = e + mask_weight * (mask * C**2).sum()
    if ortho_weight > 0:
        e = e + ortho_weight * orthogonality(C)
    return e


def _lbfgs(C0, A, B, mask, mask_weight, ortho_weight, n_iter):
    C = C0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([C], lr=1.0, max_iter=n_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        e = fmap_energy(C, A, B, mask, mask_weight, ortho_weight)
        e.backward()
        return e

    with torch.enable_grad():
        opt.step(closure)
    return C.detach()


def solve_fmap_bijective(
    A, B, mask12=None, mask21=None, mask_weight: float = 1e-3, bijective_weight: float = 1.0, n_iter: int = 10
) -> tuple[Tensor, Tensor]:
    r"""Both maps ``C12 [k2, k1]`` and ``C21 [k1, k2]`` with a bijectivity coupling.

    Alternates two row-wise closed-form solves: ``C12`` minimises
    ``‖C12 A − B‖² + w Σ mask12 ⊙ C12² + β‖C12 C21 − I‖²`` with ``C21`` fixed, then
    ``C21`` the mirrored problem with ``C12`` fixed. ``‖C12 C21 − I‖²`` splits over
    the rows of ``C12`` (row ``i`` of the product is ``c_iᵀ C21``), so each row keeps
    a ``k1 × k1`` system, now ``A Aᵀ + β C21 C21ᵀ + w diag(mask_i)``.

    Args:
        A: ``[B?, k1, d]``; B: ``[B?, k2, d]``; masks ``[B?, k2, k1]`` and ``[B?, k1, k2]``
        (``mask21`` defaults to ``mask12ᵀ``). bijective_weight: ``β``. n_iter: alternations.

    Returns:
        ``(C12, C21)``.
    """
    A, B, mask12, unb = _check_ab(A, B, mask12)
    if mask21 is None and mask12 is not None:
        mask21 = mask12.transpose(-1, -2)
    _, _, mask21, _ = _check_ab(B, A, mask21)
    Bn, k1, k2 = A.shape[0], A.shape[-2], B.shape[-2]
    d12 = mask_weight * mask12 if mask12 is not None else A.new_zeros(Bn, k2, k1)
    d21 = mask_weight * mask21 if mask21 is not None else A.new_zeros(Bn, k1, k2)
    GA, GB = A @ A.transpose(-1, -2), B @ B.transpose(-1, -2)
    C12 = _row_solve(GA, B @ A.transpose(-1, -2), d12)
    C21 = _row_solve(GB, A @ B.transpose(-1, -2), d21)
    beta = bijective_weight
    for _ in range(n_iter):
        # row i of ‖C12 C21 − I‖²: (C21 C21ᵀ) c_i = C21 e_i, i.e. the i-th column of C21
        C12 = _row_solve(GA, B @ A.transpose(-1, -2) + beta * C21.transpose(-1, -2), d12, beta * C21 @ C21.transpose(-1, -2))
        C21 = _row_solve(GB, A @ B.transpose(-1, -2) + beta * C12.transpose(-1, -2), d21, beta * C12 @ C12.transpose(-1, -2))
    return (C12[0], C21[0]) if unb else (C12, C21)


def fit(
    source: ShapeSpectrum,
    target: ShapeSpectrum,
    k: int | tuple[int, int] = 30,
    mask_weight: float = 1e-3,
    gamma: float = 0.5,
    ortho_weight: float = 0.0,
) -> Tensor:
    """The "fit" step: project descriptors on the first ``k`` eigenfunctions and solve.

    Args:
        source, target: from :func:`preprocess`.
        k: basis size, or ``(k1, k2)``; at most each spectrum's size.
        mask_weight: weight of the :func:`resolvent_mask` term (0 disables it).
        gamma: resolvent exponent.
        ortho_weight: see :func:`solve_fmap`.

    Returns:
        ``C [k2, k1]`` (source → target coefficients).
    """
    k1, k2 = (k, k) if isinstance(k, int) else k
    for name, s, kk in (("source", source, k1), ("target", target, k2)):
        if not 1 <= kk <= s.basis.shape[-1]:
            raise ValueError(f"k={kk} must be in [1, {s.basis.shape[-1]}] (the {name} spectrum's size); preprocess with a larger k")
    A = project(source.descriptors, source.basis[..., :k1], source.mass)
    B = project(target.descriptors, target.basis[..., :k2], target.mass)
    mask = resolvent_mask(source.evals[..., :k1], target.evals[..., :k2], gamma) if mask_weight > 0 else None
    return solve_fmap(A, B, mask, mask_weight, ortho_weight=ortho_weight)
