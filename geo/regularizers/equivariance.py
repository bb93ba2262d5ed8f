r"""Equivariance regulariser towards soft equivariance under mixed symmetries.

Kim, Lee, Yang & Lee, "Regularizing Towards Soft Equivariance Under Mixed Symmetries",
ICML 2023. A linear layer ``y = W x`` is equivariant to a group ``G`` acting by
``rho_in`` on inputs and ``rho_out`` on outputs when ``rho_out(g) W = W rho_in(g)`` for
all ``g``. The equivariant matrices form a subspace; its orthogonal projector (for
orthogonal representations) is the Reynolds operator (group average)::

    P(W) = E_g[ rho_out(g)^{-1} W rho_in(g) ]

and the equivariance regulariser of one symmetry type is the squared distance of every
layer from its projection, ``R(W) = sum_layers ||W - P(W)||_F^2``. With several candidate
symmetry types (say rotations and reflections) there is one term per type,
``sum_k alpha_k s_k R_k``, and the strengths ``alpha_k`` say how equivariant the model
should be to each.

Projector: pass every element of a finite group (exact projector) or samples of a
compact group (``P`` then becomes a Monte Carlo estimate, still exactly ``W`` for an
exactly equivariant ``W``, so the regulariser is zero there for any samples). Inverses
are computed with ``linalg.solve`` so non-orthogonal representations work too (then
``P`` is a projection, not necessarily an orthogonal one).

Automatic rescaling, our reading. Different symmetry types give regularisers of very
different magnitudes (a small group leaves a large equivariant subspace and a small
``R_k``), so a shared strength would mean different things for each type. The paper
balances them automatically; what we implement is a one-shot normalisation: the first
time the module sees the weights (or when :meth:`EquivarianceRegularizer.calibrate` is
called, typically at initialisation) it sets ``s_k = 1 / R_k(W_0)``, detached and frozen
for the rest of training, so every term starts at ``alpha_k`` and ``alpha_k`` is a
fraction of the initial non-equivariance. We could not check this against the paper's
text here (only its abstract was reachable), so treat it as our interpretation; with
``auto_rescale=False`` the strengths apply to the raw ``R_k``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from ._checks import check_float, check_tensor
from .schedule import Regularizer, Schedule

__all__ = [
    "reynolds_projection",
    "equivariance_error",
    "equivariance_regularizer",
    "EquivarianceRegularizer",
    "cyclic_permutations",
]

Rep = tuple  # (rho_in [G, n, n], rho_out [G, m, m])


def _check_rep(w: Tensor, rho_in, rho_out) -> None:
    check_float(check_tensor(w, "w", "[m, n] (a linear layer's weight)", ndims=(2,)), "w")
    m, n = w.shape
    check_float(check_tensor(rho_in, "rho_in", f"[G, {n}, {n}]", ndims=(3,)), "rho_in")
    check_float(check_tensor(rho_out, "rho_out", f"[G, {m}, {m}]", ndims=(3,)), "rho_out")
    if rho_in.shape[1:] != (n, n):
        raise ValueError(f"rho_in must have shape [G, {n}, {n}] for w of shape {tuple(w.shape)}, got {tuple(rho_in.shape)}")
    if rho_out.shape[1:] != (m, m) or rho_out.shape[0] != rho_in.shape[0]:
        raise ValueError(f"rho_out must have shape [{rho_in.shape[0]}, {m}, {m}] (same group elements as rho_in), got {tuple(rho_out.shape)}")


def _project(w: Tensor, rho_in: Tensor, rho_out: Tensor) -> Tensor:
    return torch.linalg.solve(rho_out.to(w.dtype), w @ rho_in.to(w.dtype)).mean(0)


def reynolds_projection(w: Tensor, rho_in: Tensor, rho_out: Tensor) -> Tensor:
    r"""``P(W) = mean_g rho_out(g)^{-1} W rho_in(g)``.

    Args:
        w: weight ``[m, n]`` of ``y = W x``.
        rho_in: input representation of the group elements ``[G, n, n]``.
        rho_out: output representation of the same elements ``[G, m, m]``.

    Returns:
        ``[m, n]``.

    Example:
        >>> rho = cyclic_permutations(4)
        >>> p = reynolds_projection(torch.randn(4, 4), rho, rho)   # a circulant matrix
    """
    _check_rep(w, rho_in, rho_out)
    return _project(w, rho_in, rho_out)


def equivariance_error(w: Tensor, rho_in: Tensor, rho_out: Tensor) -> Tensor:
    """``||W - P(W)||_F^2`` for one layer (see :func:`reynolds_projection`)."""
    _check_rep(w, rho_in, rho_out)
    return ((w - _project(w, rho_in, rho_out)) ** 2).sum()


def equivariance_regularizer(weights: Sequence[Tensor], reps: Sequence[Rep]) -> Tensor:
    r"""One symmetry type's regulariser ``sum_l ||W_l - P_l(W_l)||_F^2``.

    Args:
        weights: layer weights ``[m_l, n_l]``.
        reps: one ``(rho_in, rho_out)`` pair per layer, ``[G, n_l, n_l]`` and ``[G, m_l, m_l]``.

    Returns:
        scalar.
    """
    weights = list(weights)
    if len(weights) == 0:
        raise ValueError("weights is empty; expected one [m, n] tensor per layer")
    if len(weights) != len(reps):
        raise ValueError(f"need one (rho_in, rho_out) pair per layer: {len(weights)} weights, {len(reps)} reps")
    return sum(equivariance_error(w, ri, ro) for w, (ri, ro) in zip(weights, reps))


def cyclic_permutations(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The cyclic group ``C_n`` acting on ``R^n`` by shifting coordinates: ``[n, n, n]`` permutation matrices."""
    eye = torch.eye(n, dtype=dtype)
    return torch.stack([torch.roll(eye, s, dims=0) for s in range(n)])


def _layer_weights(weights) -> list[Tensor]:
    if isinstance(weights, torch.nn.Module):
        return [m.weight for m in weights.modules() if isinstance(m, torch.nn.Linear)]
    return list(weights)


class EquivarianceRegularizer(Regularizer):
    r"""``sum_k alpha_k s_k R_k(W)`` over symmetry types ``k`` (see module docstring).

    Args:
        weight: overall weight (times the schedule).
        schedule: optional :class:`~geo.regularizers.schedule.Schedule`.
        symmetries: ``{type name: [(rho_in, rho_out) per layer]}``.
        strengths: ``{type name: alpha_k}`` (default 1 each).
        auto_rescale: one-shot ``s_k = 1 / R_k(W_0)`` at the first call or :meth:`calibrate`.

    ``forward(weights)`` takes the list of layer weights (or an ``nn.Module``, whose
    ``nn.Linear`` weights are used in ``modules()`` order).

    Example:
        >>> rho = cyclic_permutations(4)
        >>> reg = EquivarianceRegularizer(symmetries={"shift": [(rho, rho)]})
        >>> layer = torch.nn.Linear(4, 4).double()
        >>> loss = reg(layer)   # 1.0 at the first call (rescaled), then decreasing
    """

    name = "equivariance"

    def __init__(
        self,
        weight: float = 1.0,
        schedule: Schedule | None = None,
        symmetries: Mapping[str, Sequence[Rep]] | None = None,
        strengths: Mapping[str, float] | None = None,
        auto_rescale: bool = True,
    ) -> None:
        super().__init__(weight, schedule)
        self.symmetries = dict(symmetries or {})
        self.strengths = {k: float((strengths or {}).get(k, 1.0)) for k in self.symmetries}
        unknown = set(strengths or {}) - set(self.symmetries)
        if unknown:
            raise ValueError(f"strengths for unknown symmetry types {sorted(unknown)}; known: {sorted(self.symmetries)}")
        self.auto_rescale = auto_rescale
        self.scales: dict[str, float] | None = None

    def terms(self, weights) -> dict[str, Tensor]:
        """Raw ``R_k`` per symmetry type (for logging and calibration)."""
        if not self.symmetries:
            raise ValueError("EquivarianceRegularizer has no symmetries; pass symmetries={name: [(rho_in, rho_out), ...]}")
        ws = _layer_weights(weights)
        return {k: equivariance_regularizer(ws, reps) for k, reps in self.symmetries.items()}

    @torch.no_grad()
    def calibrate(self, weights) -> dict[str, float]:
        """Freeze ``s_k = 1 / R_k(W)`` (1 where ``R_k`` is 0: already equivariant)."""
        self.scales = {k: (1.0 / float(v) if float(v) > 0 else 1.0) for k, v in self.terms(weights).items()}
        return self.scales

    def loss(self, weights) -> Tensor:
        if self.auto_rescale and self.scales is None:
            self.calibrate(weights)
        terms = self.terms(weights)
        scales = self.scales if self.auto_rescale else {k: 1.0 for k in terms}
        return sum(self.strengths[k] * scales[k] * t for k, t in terms.items())
