"""Kernel bases and convolutions on position-orientation space (PΘNITA).

* :class:`PolynomialFeatures` + :class:`KernelBasis` embed invariant attributes
  into a basis that is sampled **once per forward pass** and shared by every
  layer; each layer only owns a linear map from that basis to its kernel
  (Bekkers et al. 2024, Sec. 4, "kernel basis").
* :class:`SeparableFiberBundleConv` is the separable group convolution on
  ``R^n × S^{n-1}`` (Sec. 3.3, Eq. 12): a spatial kernel per orientation on the
  spatial attributes, then a spherical kernel over orientations on the fiber
  attribute ``o_kᵀ o_l``, then a bias. Depthwise (one kernel per channel),
  as in the paper's ConvNeXt blocks.
* :class:`PointCloudConv` is the same message passing on a position-orientation
  *point cloud* (each lifted point has its own orientation).
* :class:`ConvNextBlock` wraps a conv as conv → LayerNorm → MLP → layer scale →
  residual.

Aggregation uses ``index_add_`` (no torch_scatter).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "polynomial_cutoff",
    "PolynomialFeatures",
    "KernelBasis",
    "SeparableFiberBundleConv",
    "PointCloudConv",
    "ConvNextBlock",
]


def polynomial_cutoff(dist: torch.Tensor, r_max: float, p: int = 6) -> torch.Tensor:
    """Smooth envelope, 1 at 0 and C^2-smoothly 0 from ``r_max`` on.

    Klicpera et al. (DimeNet, ICLR 2020), Eq. 8, as used by PΘNITA to window
    the spatial kernel.
    """
    u = dist / r_max
    env = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
    return env * (u < 1)


class PolynomialFeatures(nn.Module):
    """All monomials of the attributes up to ``degree`` (tensor powers, flattened).

    ``[..., a]`` → ``[..., a + a² + … + a^degree]``.
    """

    def __init__(self, degree: int):
        super().__init__()
        self.degree = degree

    @staticmethod
    def num_features(attr_dim: int, degree: int) -> int:
        return sum(attr_dim**k for k in range(1, degree + 1))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        feats = [a]
        for _ in range(self.degree - 1):
            feats.append((feats[-1][..., :, None] * a[..., None, :]).flatten(-2))
        return torch.cat(feats, -1)


class KernelBasis(nn.Sequential):
    """Invariant attributes ``[..., attr_dim]`` → basis ``[..., basis_dim]``.

    Polynomial embedding followed by a two-layer GELU MLP; the output is the
    basis every layer's kernel is a linear combination of.
    """

    def __init__(self, attr_dim: int, hidden: int, basis_dim: int, degree: int = 3):
        super().__init__(
            PolynomialFeatures(degree),
            nn.Linear(PolynomialFeatures.num_features(attr_dim, degree), hidden),
            nn.GELU(),
            nn.Linear(hidden, basis_dim),
            nn.GELU(),
        )


class _Calibrated(nn.Module):
    """Rescale kernels once, on the first training batch, to keep unit gain.

    The paper's code does this data-dependent re-initialisation so deep
    residual stacks start with activations of a sane size.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("calibrated", torch.tensor(False))

    def _maybe_calibrate(self, pairs):
        if self.training and not bool(self.calibrated):
            with torch.no_grad():
                for lin, before, after in pairs:
                    lin.weight.mul_(before.std() / after.std().clamp_min(1e-12))
                self.calibrated.fill_(True)
            return True
        return False


class SeparableFiberBundleConv(_Calibrated):
    """Depthwise separable convolution on ``R^n × S^{n-1}`` with a shared grid.

    ``f_out(x_i, o_p) = b + (1/O) Σ_o k_fib(o_pᵀo)  Σ_j k_sp(Δx_ij, o) f(x_j, o)``
    channel by channel (Eq. 12 of the paper, depthwise).

    Shapes (graph mode):
        x ``[N, O, C]``; spatial_basis ``[E, O, B]``; fiber_basis ``[O, O, B]``
        (indexed ``[o, p]``); edge_index ``[2, E]`` → ``[N, O, C]``.

    Dense mode (``edge_index=None``, fully connected clouds of equal size, as
    the reference code runs N-body): x ``[B, N, O, C]``; spatial_basis
    ``[B, N, N, O, B]`` indexed ``[b, receiver i, sender j]`` → ``[B, N, O, C]``.
    The sum over senders is a plain reduction, with no gather or scatter.
    """

    def __init__(self, channels: int, basis_dim: int, bias: bool = True):
        super().__init__()
        self.spatial = nn.Linear(basis_dim, channels, bias=False)
        self.fiber = nn.Linear(basis_dim, channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x, spatial_basis, fiber_basis, edge_index=None):
        k_sp = self.spatial(spatial_basis)  # [E, O, C] or [B, N, N, O, C]
        if edge_index is None:
            x1 = (k_sp * x[:, None]).sum(2)
        else:
            msg = x[edge_index[0]] * k_sp
            x1 = torch.zeros_like(x).index_add_(0, edge_index[1], msg)
        k_fib = self.fiber(fiber_basis)  # [O, O, C]
        x2 = torch.einsum("...oc,opc->...pc", x1, k_fib) / k_fib.shape[0]
        if self._maybe_calibrate([(self.spatial, x, x1), (self.fiber, x1, x2)]):
            return self.forward(x, spatial_basis, fiber_basis, edge_index)
        return x2 + self.bias if self.bias is not None else x2


class PointCloudConv(_Calibrated):
    """Depthwise convolution on a (lifted) point cloud: ``Σ_j k(a_ij) f_j + b``.

    Shapes: x ``[M, C]``; basis ``[E, B]``; edge_index ``[2, E]`` → ``[M, C]``.
    """

    def __init__(self, channels: int, basis_dim: int, bias: bool = True):
        super().__init__()
        self.kernel = nn.Linear(basis_dim, channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x, basis, edge_index):
        msg = x[edge_index[0]] * self.kernel(basis)
        out = torch.zeros_like(x).index_add_(0, edge_index[1], msg)
        if self._maybe_calibrate([(self.kernel, x, out)]):
            return self.forward(x, basis, edge_index)
        return out + self.bias if self.bias is not None else out


class ConvNextBlock(nn.Module):
    """ConvNeXt-style residual block: conv → LayerNorm → Linear → GELU → Linear → γ ⊙ · + input.

    ``layer_scale`` is the initial value of the per-channel scale γ (``None``
    disables it). Extra arguments of ``forward`` are passed to the conv.
    """

    def __init__(self, channels: int, conv: nn.Module, widening: int = 4, layer_scale: float | None = 1e-6):
        super().__init__()
        self.conv = conv
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, widening * channels), nn.GELU(), nn.Linear(widening * channels, channels)
        )
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale))) if layer_scale is not None else None

    def forward(self, x, *conv_args):
        y = self.mlp(self.norm(self.conv(x, *conv_args)))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y
