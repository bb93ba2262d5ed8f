r"""Total variation for 1D, 2D and 3D signals: ``[B, C, L]``, ``[B, C, H, W]``, ``[B, C, D, H, W]``.

One implementation serves renders, depth maps and flow fields (2D) and voxel
grids (3D). kornia's ``total_variation`` differences only the last two axes;
here every spatial axis is differenced, so a voxel grid gets its depth term.

Exact formula. Let ``x`` have spatial axes ``k = 1..n`` and let
``d_k[i] = x[i + e_k] - x[i]`` be the forward difference, defined where
``i_k < S_k - 1`` (no wrap-around, no padding).

* anisotropic: ``TV = sum_{b,c} sum_k sum_i  w_k[i] * rho(d_k[i])``;
* isotropic:   ``TV = sum_{b,c} sum_i  w[i] * rho(||(d_1[i], ..., d_n[i])||_2)`` over the
  interior grid ``i_k < S_k - 1`` for *all* k, where every forward difference exists
  (for ``l2`` this is ``sum_k d_k^2``, with no square root).

Penalties ``rho``: ``l1`` = ``|t|``; ``l2`` = ``t^2``; ``huber`` = ``t^2 / (2 delta)`` if
``|t| <= delta`` else ``|t| - delta / 2`` (the smooth-L1 form: it tends to ``l1`` as
``delta -> 0`` and its quadratic part is ``l2 / (2 delta)``).

Weights ``w`` (all default to 1):

* ``mask`` (``[B, 1 or C, *S]``, bool or float): a difference counts with weight
  ``mask[i] * mask[i + e_k]`` (both end points must be inside); isotropic terms use
  ``mask[i] * prod_k mask[i + e_k]``.
* ``segments`` (``[B, 1, *S]`` integer map): a difference whose two end points carry the
  same label ``s`` is weighted by ``segment_weights[s]`` (1 if not given); a difference
  across a segment boundary is weighted by ``boundary_weight`` (default 0: excluded, so
  TV smooths inside segments and never across their edges). Isotropic terms count as
  "inside" only when all ``n + 1`` points of the stencil share the label.

Reduction: ``sum`` returns ``sum w * rho``; ``mean`` returns ``sum w * rho / sum w``
(sums over batch, channel, axis and position; every channel counts the weight once),
i.e. the average penalty per counted difference; ``none`` returns the per-sample sums
``[B]``. Without weights, anisotropic ``mean`` on ``[B, C, H, W]`` divides by
``B C ((H - 1) W + H (W - 1))`` and isotropic ``mean`` by ``B C (H - 1)(W - 1)``.

Reference: Rudin, Osher & Fatemi, "Nonlinear total variation based noise removal
algorithms", Physica D 1992 (anisotropic/isotropic discretisations as in
Chambolle 2004).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_broadcastable_to, check_choice, check_float, check_positive, check_tensor
from .schedule import Regularizer, Schedule

__all__ = ["total_variation", "TotalVariation", "spatial_differences"]

_SHAPE = "[B, C, L], [B, C, H, W] or [B, C, D, H, W]"


def spatial_differences(x: Tensor) -> list[Tensor]:
    """Forward differences along every spatial axis (axes ``2..``) of ``[B, C, *S]``.

    Returns:
        a list with one tensor per spatial axis ``k``, of shape ``S`` with ``S_k - 1`` on axis k.
    """
    return [x.narrow(d, 1, x.shape[d] - 1) - x.narrow(d, 0, x.shape[d] - 1) for d in range(2, x.ndim)]


def _pair_weight(m: Tensor, dim: int) -> Tensor:
    return m.narrow(dim, 1, m.shape[dim] - 1) * m.narrow(dim, 0, m.shape[dim] - 1)


def _interior(t: Tensor, ndim_spatial: int, skip: int | None = None) -> Tensor:
    """Crop ``t`` to ``S_j - 1`` on every spatial axis (except ``skip``, already cropped)."""
    for j in range(ndim_spatial):
        if j != skip:
            t = t.narrow(2 + j, 0, t.shape[2 + j] - 1)
    return t


def _rho(t: Tensor, penalty: str, delta: float) -> Tensor:
    if penalty == "l1":
        return t.abs()
    if penalty == "l2":
        return t * t
    a = t.abs()
    return torch.where(a <= delta, 0.5 * t * t / delta, a - 0.5 * delta)


def _safe_norm(sq: Tensor) -> Tensor:
    # sqrt with a zero (sub)gradient at 0: flat regions are common in images.
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def total_variation(
    x: Tensor,
    penalty: str = "l1",
    isotropic: bool = False,
    delta: float = 1.0,
    mask: Tensor | None = None,
    segments: Tensor | None = None,
    segment_weights: Tensor | None = None,
    boundary_weight: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Total variation of a 1D, 2D or 3D signal (exact formula in the module docstring).

    Args:
        x: signal ``[B, C, *S]`` with 1 to 3 spatial axes.
        penalty: ``"l1"``, ``"l2"`` or ``"huber"``.
        isotropic: penalise the gradient norm on the interior grid instead of each
            axis' differences separately.
        delta: Huber threshold (``penalty="huber"`` only), > 0.
        mask: optional ``[B, 1 or C, *S]`` weights in ``[0, 1]`` (bool allowed).
        segments: optional integer label map ``[B, 1, *S]``.
        segment_weights: optional ``[K]`` weight per label (labels must lie in ``[0, K)``).
        boundary_weight: weight of differences across segment boundaries (0 excludes them).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        a scalar, or ``[B]`` per-sample sums for ``reduction="none"``.

    Shape:
        - x: ``[B, C, L]``, ``[B, C, H, W]`` or ``[B, C, D, H, W]``
        - mask: like ``x`` with ``C`` or 1 channels; segments: like ``x`` with 1 channel.

    Example:
        >>> x = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])  # [1, 1, 4] step edge
        >>> float(total_variation(x, reduction="sum"))
        1.0
    """
    check_float(check_tensor(x, "x", _SHAPE, ndims=(3, 4, 5)), "x")
    check_choice(penalty, "penalty", ("l1", "l2", "huber"))
    check_choice(reduction, "reduction", ("mean", "sum", "none"))
    if penalty == "huber":
        check_positive(delta, "delta")
    check_positive(boundary_weight, "boundary_weight", allow_zero=True)
    n = x.ndim - 2
    if isotropic and min(x.shape[2:]) < 2:
        raise ValueError(f"isotropic TV needs every spatial size >= 2, got x of shape {tuple(x.shape)}")
    if not isotropic and max(x.shape[2:]) < 2:
        raise ValueError(f"TV needs a spatial size >= 2 on some axis, got x of shape {tuple(x.shape)}")

    m = None
    if mask is not None:
        check_tensor(mask, "mask", f"[B, 1 or C, *S] for x of shape {tuple(x.shape)}")
        check_broadcastable_to(mask, x, "mask", "[B, 1 or C, *S]")
        m = mask.to(x.dtype)
    seg = segw = None
    if segments is not None:
        check_tensor(segments, "segments", f"[B, 1, *S] integer labels for x of shape {tuple(x.shape)}")
        if segments.is_floating_point() or segments.dtype == torch.bool:
            raise TypeError(f"segments must be an integer label map, got dtype {segments.dtype}")
        if segments.ndim != x.ndim or segments.shape[1] != 1 or segments.shape[0] != x.shape[0] or segments.shape[2:] != x.shape[2:]:
            raise ValueError(f"segments must have shape [B, 1, *S] = {(x.shape[0], 1, *x.shape[2:])}, got {tuple(segments.shape)}")
        seg = segments.long()
        if segment_weights is not None:
            check_tensor(segment_weights, "segment_weights", "[K]", ndims=(1,))
            if seg.min() < 0 or seg.max() >= segment_weights.shape[0]:
                raise ValueError(f"segment labels must lie in [0, {segment_weights.shape[0]}) to index segment_weights")
            segw = segment_weights.to(x.dtype)
    elif segment_weights is not None:
        raise ValueError("segment_weights needs a segments map")

    def seg_weight(same: Tensor, label: Tensor) -> Tensor:
        inside = segw[label] if segw is not None else torch.ones_like(label, dtype=x.dtype)
        return torch.where(same, inside, torch.full_like(inside, boundary_weight))

    terms, weights = [], []
    if not isotropic:
        for k in range(n):
            dim = 2 + k
            if x.shape[dim] < 2:
                continue
            d = x.narrow(dim, 1, x.shape[dim] - 1) - x.narrow(dim, 0, x.shape[dim] - 1)
            w = torch.ones((), dtype=x.dtype, device=x.device)
            if m is not None:
                w = w * _pair_weight(m, dim)
            if seg is not None:
                lo = seg.narrow(dim, 0, seg.shape[dim] - 1)
                w = w * seg_weight(lo == seg.narrow(dim, 1, seg.shape[dim] - 1), lo)
            terms.append(_rho(d, penalty, delta))
            weights.append(w.expand_as(d))
    else:
        diffs = [_interior(d, n, skip=k) for k, d in enumerate(spatial_differences(x))]
        sq = sum(d * d for d in diffs)
        terms.append(sq if penalty == "l2" else _rho(_safe_norm(sq), penalty, delta))
        w = torch.ones((), dtype=x.dtype, device=x.device)
        if m is not None:
            w = w * _interior(m, n)
            for k in range(n):
                w = w * _interior(m.narrow(2 + k, 1, m.shape[2 + k] - 1), n, skip=k)
        if seg is not None:
            base = _interior(seg, n)
            same = torch.ones_like(base, dtype=torch.bool)
            for k in range(n):
                same = same & (_interior(seg.narrow(2 + k, 1, seg.shape[2 + k] - 1), n, skip=k) == base)
            w = w * seg_weight(same, base)
        weights.append(w.expand_as(terms[0]))

    per_sample = sum((t * w).flatten(1).sum(1) for t, w in zip(terms, weights))
    if reduction == "none":
        return per_sample
    total = per_sample.sum()
    if reduction == "sum":
        return total
    count = sum(w.sum() for w in weights)
    return total / count.clamp_min(torch.finfo(x.dtype).tiny)


class TotalVariation(Regularizer):
    """Module form of :func:`total_variation`, with a weight and an optional schedule.

    Example:
        >>> tv = TotalVariation(weight=0.1, penalty="huber", delta=0.05)
        >>> loss = tv(torch.rand(2, 3, 8, 8))          # image batch
        >>> loss = tv(torch.rand(1, 4, 16, 16, 16))    # voxel grid: same module
    """

    name = "tv"

    def __init__(
        self,
        weight: float = 1.0,
        schedule: Schedule | None = None,
        penalty: str = "l1",
        isotropic: bool = False,
        delta: float = 1.0,
        boundary_weight: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, schedule)
        self.penalty, self.isotropic, self.delta = penalty, isotropic, delta
        self.boundary_weight, self.reduction = boundary_weight, reduction

    def loss(self, x: Tensor, mask: Tensor | None = None, segments: Tensor | None = None, segment_weights: Tensor | None = None) -> Tensor:
        return total_variation(
            x, self.penalty, self.isotropic, self.delta, mask, segments, segment_weights, self.boundary_weight, self.reduction
        )
