"""Capped voxel sampling weighted by inverse class frequency and speed bin.

VoxelSplat decodes one Gaussian per *sampled* voxel. The released code draws at most
``100 000`` voxels per sample, without replacement, with probability proportional to
``w_cls[label] * w_speed[bin(|flow|)]``, where ``w_cls[c] ∝ 1 / n_c ** alpha`` and
``w_speed[b] ∝ 1 / m_b ** beta`` (``alpha = beta = 0.5``, speed bins
``[0, 1, 2, 5, 10, inf)`` m/s), so rare classes and moving voxels are kept while
the frequent free / ground voxels are thinned. The release uses dataset-wide
counts ``n_c``, ``m_b``; here they default to the counts of the sample itself
and can be passed in (``class_counts``, ``speed_counts``) to use dataset-wide ones.

The draw is Efraimidis & Spirakis' weighted sampling without replacement (keys
``u ** (1 / w)``, keep the ``cap`` largest), which is exact, needs no category limit
(``torch.multinomial`` caps at 2**24) and takes a ``torch.Generator``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DEFAULT_SPEED_BINS", "speed_bin", "sampling_weights", "sample_voxels"]

DEFAULT_SPEED_BINS = (0.0, 1.0, 2.0, 5.0, 10.0)  # lower edges in m/s; the last bin is open


def speed_bin(flow: Tensor, edges=DEFAULT_SPEED_BINS) -> Tensor:
    """Bin index ``[...]`` of ``|flow|`` for flow ``[..., F]``; bin ``b`` is ``[edges[b], edges[b+1])``."""
    e = torch.as_tensor(edges[1:], dtype=flow.dtype, device=flow.device)
    return torch.bucketize(flow.norm(dim=-1), e, right=True)


def sampling_weights(labels: Tensor, flow: Tensor, num_classes: int, ignore_index: int = 255,
                     class_alpha: float = 0.5, speed_beta: float = 0.5, speed_edges=DEFAULT_SPEED_BINS,
                     class_counts: Tensor | None = None, speed_counts: Tensor | None = None) -> Tensor:
    """Unnormalised sampling weight per voxel.

    Args:
        labels: ``[...]`` integer labels in ``[0, num_classes)`` or ``ignore_index``.
        flow: ``[..., F]`` per-voxel flow (same leading shape as ``labels``).
        num_classes: ``K`` (the free class included).
        class_alpha, speed_beta: exponents of the inverse frequencies.
        class_counts: ``[K]`` counts to use instead of this sample's histogram.
        speed_counts: ``[len(speed_edges)]`` counts per speed bin, likewise.

    Returns:
        ``[...]`` float weights, 0 on ignored voxels.
    """
    valid = labels != ignore_index
    lab = torch.where(valid, labels, torch.zeros_like(labels)).long()
    bins = speed_bin(flow.float(), speed_edges)
    if class_counts is None:
        class_counts = torch.bincount(lab[valid], minlength=num_classes)
    if speed_counts is None:
        speed_counts = torch.bincount(bins[valid], minlength=len(speed_edges))
    w_cls = class_counts.float().clamp_min(1.0).pow(-class_alpha)
    w_spd = speed_counts.float().clamp_min(1.0).pow(-speed_beta)
    w = w_cls[lab] * w_spd[bins]
    return torch.where(valid, w, torch.zeros_like(w))


def sample_voxels(labels: Tensor, flow: Tensor, cap: int, num_classes: int, ignore_index: int = 255,
                  class_alpha: float = 0.5, speed_beta: float = 0.5, speed_edges=DEFAULT_SPEED_BINS,
                  class_counts: Tensor | None = None, speed_counts: Tensor | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """Flat indices (sorted) of at most ``cap`` non-ignored voxels, drawn without replacement.

    Args:
        labels: ``[X, Y, Z]`` labels; flow: ``[X, Y, Z, F]``; other arguments as in
            :func:`sampling_weights`.
        cap: maximum number of voxels; when fewer are valid, all are returned.
        generator: for reproducible draws.

    Returns:
        ``[M]`` long, ``M = min(cap, #valid)``, indices into ``labels.reshape(-1)``.

    Example:
        >>> lab = torch.tensor([0, 0, 0, 1, 255]).view(5, 1, 1)
        >>> sample_voxels(lab, torch.zeros(5, 1, 1, 2), cap=10, num_classes=2).tolist()
        [0, 1, 2, 3]
    """
    w = sampling_weights(labels, flow, num_classes, ignore_index, class_alpha, speed_beta, speed_edges,
                         class_counts, speed_counts).reshape(-1)
    valid = torch.nonzero(w > 0).squeeze(1)
    if valid.numel() <= cap:
        return valid
    u = torch.rand(valid.numel(), generator=generator, device=w.device if generator is None else generator.device)
    u = u.to(w.device)
    keys = torch.log(u.clamp_min(1e-30)) / w[valid]  # log(u ** (1 / w)); larger is kept
    keep = keys.topk(cap).indices
    return valid[keep].sort().values
