"""Conversions between functional maps and point-to-point maps.

``p2p_21 [N2]`` (long) sends each target vertex to a source vertex (``T21: 2 → 1``);
``C12 [k2, k1]`` maps source coefficients to target coefficients. They correspond
through ``Φ2 C12 ≈ Φ1[p2p_21]`` (pull-back; Ovsjanikov et al. 2012, Section 6.1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .solver import as_tensor, batched

__all__ = ["fmap_to_p2p", "p2p_to_fmap", "nearest_neighbor"]


def nearest_neighbor(query, points, chunk_size: int | None = 4096) -> Tensor:
    """Index of the nearest row of ``points [B?, N1, k]`` for every row of ``query [B?, N2, k]``.

    Distances are ``‖p‖² − 2 q·p`` (``‖q‖²`` is constant per row) computed at most
    ``chunk_size`` query rows at a time, so memory is ``O(chunk_size · N1)``; ``None`` does
    it in one go. Blocks are further cut to about 2²⁰ distances (4 MB), so that the
    argmin reads them from cache (about 2× faster at a few thousand points).

    Returns:
        ``[B?, N2]`` long.
    """
    q, unb = batched(query, 2)
    p, _ = batched(points, 2)
    if q.shape[-1] != p.shape[-1]:
        raise ValueError(f"query [.., N2, k] and points [.., N1, k] need the same k, got {q.shape[-1]} and {p.shape[-1]}")
    if q.dtype == torch.float64 and q.device.type == "cpu":
        # the search runs in float32 (twice the matmul speed on CPU; ZoomOut spends most of
        # its time here); a tie closer than float32 round-off may resolve differently
        q, p = q.float(), p.float()
    pp = (p * p).sum(-1).unsqueeze(-2)  # [B, 1, N1]
    pt = p.transpose(-1, -2)
    step = q.shape[-2] if not chunk_size else min(int(chunk_size), max(64, 2**20 // max(p.shape[-2], 1)))
    out = []
    for s in range(0, q.shape[-2], step):
        qs = q[:, s : s + step]
        # ‖p‖² − 2 q·p in one fused product (one [chunk, N1] temporary instead of three)
        d = torch.baddbmm(pp.expand(qs.shape[0], qs.shape[1], -1), qs, pt.expand(qs.shape[0], -1, -1), alpha=-2)
        out.append(torch.argmin(d, dim=-1))
    idx = torch.cat(out, dim=-1)
    return idx[0] if unb else idx


def fmap_to_p2p(C12, basis1, basis2, chunk_size: int | None = 4096) -> Tensor:
    """Point map ``p2p_21`` from ``C12``: nearest neighbour of ``Φ2[y]`` among the rows of ``Φ1 C12ᵀ``.

    This is the spectral-embedding search of Ovsjanikov et al. 2012 (and of pyFM /
    ZoomOut): the delta at ``x`` on shape 1 is carried by ``C12`` to ``C12 Φ1[x]ᵀ`` and
    compared with the deltas on shape 2.

    Args:
        C12: ``[B?, k2, k1]``.
        basis1: ``[B?, N1, K1]`` with ``K1 >= k1`` (the first ``k1`` columns are used).
        basis2: ``[B?, N2, K2]`` with ``K2 >= k2``.
        chunk_size: target vertices per distance block (``None``: all at once).

    Returns:
        ``p2p_21 [B?, N2]`` long, values in ``[0, N1)``.
    """
    C, unb_c = batched(as_tensor(C12), 2)
    b1, unb_1 = batched(as_tensor(basis1, dtype=C.dtype, device=C.device), 2)
    b2, unb_2 = batched(as_tensor(basis2, dtype=C.dtype, device=C.device), 2)
    unb = unb_c and unb_1 and unb_2
    Bn = max(C.shape[0], b1.shape[0], b2.shape[0])
    k2, k1 = C.shape[-2:]
    if k1 > b1.shape[-1] or k2 > b2.shape[-1]:
        raise ValueError(f"C12 is [{k2}, {k1}] but the bases have {b1.shape[-1]} (source) and {b2.shape[-1]} (target) columns")
    emb1 = b1[..., :k1] @ C.transpose(-1, -2)  # [B, N1, k2]
    idx = nearest_neighbor(b2[..., :k2].expand(Bn, -1, -1), emb1.expand(Bn, -1, -1), chunk_size)
    return idx[0] if unb else idx


def p2p_to_fmap(p2p_21, basis1, basis2, mass2=None, k1: int | None = None, k2: int | None = None) -> Tensor:
    """``C12 = Φ2⁺ Φ1[p2p_21]``: the functional map induced by a point map (least squares).

    With ``mass2`` the M-orthonormality of ``Φ2`` gives ``Φ2⁺ = Φ2ᵀ M2`` (exact on the
    discrete inner product); without it the Euclidean pseudo-inverse is used (``lstsq``).

    Args:
        p2p_21: ``[B?, N2]`` long, indices into shape 1.
        basis1: ``[B?, N1, K1]``. basis2: ``[B?, N2, K2]``. mass2: ``[B?, N2]`` or None.
        k1, k2: leading columns used (default: all).

    Returns:
        ``C12 [B?, k2, k1]``.
    """
    b1, unb_1 = batched(as_tensor(basis1), 2)
    b2, unb_2 = batched(as_tensor(basis2, device=b1.device), 2)
    p, unb_p = batched(torch.as_tensor(p2p_21, device=b1.device).long(), 1)
    unb = unb_1 and unb_2 and unb_p
    k1 = b1.shape[-1] if k1 is None else int(k1)
    k2 = b2.shape[-1] if k2 is None else int(k2)
    if k1 > b1.shape[-1] or k2 > b2.shape[-1]:
        raise ValueError(f"asked for ({k2}, {k1}) but the bases have {b2.shape[-1]} and {b1.shape[-1]} columns")
    if p.shape[-1] != b2.shape[-2]:
        raise ValueError(f"p2p_21 must have one entry per target vertex ({b2.shape[-2]}), got {p.shape[-1]}")
    if p.numel() and (p.min() < 0 or p.max() >= b1.shape[-2]):
        raise ValueError(f"p2p_21 indices must lie in [0, {b1.shape[-2]})")
    Bn = max(b1.shape[0], b2.shape[0], p.shape[0])
    b1, b2, p = b1.expand(Bn, -1, -1), b2.expand(Bn, -1, -1), p.expand(Bn, -1)
    pulled = torch.gather(b1[..., :k1], 1, p.unsqueeze(-1).expand(-1, -1, k1))  # Φ1[p2p] [B, N2, k1]
    phi2 = b2[..., :k2]
    if mass2 is not None:
        m, _ = batched(as_tensor(mass2, dtype=b1.dtype, device=b1.device), 1)
        C = phi2.transpose(-1, -2) @ (m.expand(Bn, -1).unsqueeze(-1) * pulled)
    else:
        C = torch.linalg.lstsq(phi2, pulled).solution
    return C[0] if unb else C
