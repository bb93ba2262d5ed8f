"""Functional-map refinement: ZoomOut (Melzi et al. 2019) and ICP (Ovsjanikov et al. 2012)."""

from __future__ import annotations

import torch
from torch import Tensor

from .convert import fmap_to_p2p, p2p_to_fmap
from .solver import as_tensor, batched

__all__ = ["zoomout", "icp"]


def zoomout(
    C12, basis1, basis2, k_final: int | None = None, step: int = 1, mass2=None, chunk_size: int | None = 4096,
    return_p2p: bool = False,
):
    """ZoomOut spectral upsampling (Melzi et al., "ZoomOut", SIGGRAPH Asia 2019, Alg. 1).

    From ``C12 [k, k']``: repeat *point map from C, then C from the point map one size
    larger* (``k → k + step`` on both sides) until ``k_final``.

    Args:
        C12: ``[B?, k2, k1]`` initial map.
        basis1: ``[B?, N1, K1]``; basis2: ``[B?, N2, K2]``. mass2: ``[B?, N2]`` (see
            :func:`p2p_to_fmap`; recommended).
        k_final: final size of both sides (default ``min(K1, K2)``).
        step: size increase per iteration.
        return_p2p: also return the final ``p2p_21 [B?, N2]``.

    Returns:
        ``C12 [B?, k_final, k_final]`` (and ``p2p_21``).
    """
    C = as_tensor(C12)
    b1, b2 = as_tensor(basis1, device=C.device), as_tensor(basis2, device=C.device)
    K = min(b1.shape[-1], b2.shape[-1])
    k_final = K if k_final is None else int(k_final)
    k2, k1 = C.shape[-2:]
    if k_final > K:
        raise ValueError(f"k_final={k_final} exceeds the bases' sizes ({b1.shape[-1]}, {b2.shape[-1]})")
    if k_final < max(k1, k2):
        raise ValueError(f"k_final={k_final} is smaller than the initial map [{k2}, {k1}]")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    while True:
        p2p = fmap_to_p2p(C, b1, b2, chunk_size)
        if k1 >= k_final and k2 >= k_final:
            break
        k1, k2 = min(k1 + step, k_final), min(k2 + step, k_final)
        C = p2p_to_fmap(p2p, b1, b2, mass2, k1=k1, k2=k2)
    return (C, p2p) if return_p2p else C


def icp(C12, basis1, basis2, n_iter: int = 10, mass2=None, chunk_size: int | None = 4096, tol: float = 1e-10) -> Tensor:
    """Orthogonal ICP refinement in the spectral domain (Ovsjanikov et al. 2012, Section 6.1).

    Alternates the point map from ``C`` and the nearest orthogonal matrix (``U Vᵀ`` of the
    SVD) to the functional map of that point map, at fixed size.

    Args:
        C12: ``[B?, k2, k1]``. basis1, basis2, mass2: as in :func:`zoomout`.
        n_iter: maximum iterations; stops early once ``C`` moves less than ``tol``.

    Returns:
        ``C12 [B?, k2, k1]`` with orthonormal columns (``k2 >= k1``) or rows.
    """
    C = as_tensor(C12)
    C, unb = batched(C, 2)
    k2, k1 = C.shape[-2:]
    for _ in range(n_iter):
        p2p = fmap_to_p2p(C, basis1, basis2, chunk_size)
        F = p2p_to_fmap(p2p, basis1, basis2, mass2, k1=k1, k2=k2)
        F, _ = batched(F, 2)
        U, _, Vh = torch.linalg.svd(F, full_matrices=False)
        C_new = U @ Vh
        done = (C_new - C).abs().max() < tol
        C = C_new
        if done:
            break
    return C[0] if unb else C
