"""PΘNITA networks: fiber-bundle mode, point-cloud mode, and task heads.

The forward pass reads like Sec. 4 of Bekkers et al. (2024):

1. lift inputs onto the orientation grid (:func:`lift_scalars`, :func:`lift_vectors`);
2. compute the invariant attributes and sample the kernel bases once;
3. run ConvNeXt blocks of separable fiber-bundle convolutions;
4. read out scalars (mean over orientations) and vectors (``(1/O) Σ_o f_o o``),
   averaged over the per-layer readouts, optionally pooled per cloud.

Equivariance: everything is exactly invariant/equivariant to translations and
to permutations of the points. Rotations act on the (fixed) grid only
approximately, so the rotation equivariance error is non-zero and shrinks as
the grid grows; it is measured in ``tests/test_equivariant_ponita.py``. The
point-cloud mode (:class:`PonitaPointCloud`) takes its orientations from the
data and is exactly SE(n) equivariant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .conv import ConvNextBlock, KernelBasis, PointCloudConv, SeparableFiberBundleConv, polynomial_cutoff
from .graph import fully_connected_graph, knn_graph, lift_to_edge_orientations
from .grids import orientation_grid
from .invariants import fiber_invariant, kernel_attributes, pair_distance, point_cloud_invariants, relative_positions

__all__ = [
    "PonitaConfig",
    "Ponita",
    "PonitaPointCloud",
    "NBodyPonita",
    "PointCloudInvariantHead",
    "PointVectorHead",
    "lift_scalars",
    "lift_vectors",
    "scalar_readout",
    "vector_readout",
    "pool_clouds",
]


# ---------------------------------------------------------------- lifting / readout


def lift_scalars(x: torch.Tensor, num_ori: int) -> torch.Tensor:
    """Scalars are constant over the fiber: ``[..., C]`` → ``[..., O, C]``."""
    return x[..., None, :].expand(*x.shape[:-1], num_ori, x.shape[-1])


def lift_vectors(vec: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """A vector ``v`` becomes the spherical signal ``o ↦ vᵀo``: ``[..., C, n]``, ``[O, n]`` → ``[..., O, C]``."""
    return torch.einsum("...cd,od->...oc", vec, grid)


def scalar_readout(f: torch.Tensor) -> torch.Tensor:
    """Invariant scalars by averaging over orientations: ``[..., O, C]`` → ``[..., C]``."""
    return f.mean(-2)


def vector_readout(f: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Equivariant vectors ``(1/O) Σ_o f_o · o``: ``[..., O, C]``, ``[O, n]`` → ``[..., C, n]``."""
    return torch.einsum("...oc,od->...cd", f, grid) / grid.shape[0]


def pool_clouds(y: torch.Tensor, batch: torch.Tensor, num_clouds: int | None = None, reduce: str = "mean"):
    """Per-cloud ``sum`` or ``mean`` of ``y [N, ...]`` → ``[B, ...]`` (``index_add_``)."""
    b = int(batch.max()) + 1 if num_clouds is None else num_clouds
    out = y.new_zeros((b, *y.shape[1:])).index_add_(0, batch, y)
    if reduce == "mean":
        cnt = torch.bincount(batch, minlength=b).clamp_min(1).to(y.dtype)
        out = out / cnt.view(-1, *([1] * (y.dim() - 1)))
    elif reduce != "sum":
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    return out


# ---------------------------------------------------------------- config


@dataclass
class PonitaConfig:
    """Hyper-parameters of a PΘNITA network (paper N-body setting in brackets)."""

    in_scalars: int = 1
    in_vectors: int = 0
    out_scalars: int = 0
    out_vectors: int = 0
    hidden: int = 64  # [128]
    layers: int = 4  # [5]
    dim: int = 3  # n of R^n
    num_ori: int = 12  # [20]; ignored in point-cloud mode
    basis_dim: int | None = None  # [256]; None: = hidden
    degree: int = 3  # polynomial embedding degree
    widening: int = 4
    layer_scale: float | None = None  # paper N-body: None
    radius: float | None = None  # smooth cutoff of the spatial kernel; None: no window
    length_scale: float | None = None  # spatial attributes are divided by it; None: radius, or 1
    pool: str | None = None  # "mean" / "sum": per-cloud pooling of the outputs
    multiple_readouts: bool = True
    edge_dim: int = 0  # invariant edge attributes the spatial kernel is also conditioned on [0]


class _Trunk(nn.Module):
    """Shared parts: input embedding, blocks and per-layer readouts."""

    def __init__(self, cfg: PonitaConfig, make_conv):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.basis_dim = cfg.basis_dim or h
        self.embed = nn.Linear(cfg.in_scalars + cfg.in_vectors, h, bias=False)
        self.blocks = nn.ModuleList(
            ConvNextBlock(h, make_conv(h, self.basis_dim), cfg.widening, cfg.layer_scale) for _ in range(cfg.layers)
        )
        n_out = cfg.out_scalars + cfg.out_vectors
        n_read = cfg.layers if cfg.multiple_readouts else 1
        self.readouts = nn.ModuleList(nn.Linear(h, n_out) for _ in range(n_read))

    def run(self, f, *conv_args):
        f = self.embed(f)
        outs = []
        for i, block in enumerate(self.blocks):
            f = block(f, *conv_args)
            if self.cfg.multiple_readouts:
                outs.append(self.readouts[i](f))
        if not self.cfg.multiple_readouts:
            outs.append(self.readouts[0](f))
        return sum(outs) / len(outs)

    def _pool(self, y, batch):
        if y is None or self.cfg.pool is None:
            return y
        return pool_clouds(y, batch, reduce=self.cfg.pool)


def _check_inputs(cfg, pos, x, vec):
    if pos.dim() != 2 or pos.shape[1] != cfg.dim:
        raise ValueError(f"expected pos [N, {cfg.dim}], got {tuple(pos.shape)}")
    n = len(pos)
    if cfg.in_scalars and (x is None or tuple(x.shape) != (n, cfg.in_scalars)):
        raise ValueError(f"expected x [{n}, {cfg.in_scalars}], got {None if x is None else tuple(x.shape)}")
    if cfg.in_vectors and (vec is None or tuple(vec.shape) != (n, cfg.in_vectors, cfg.dim)):
        raise ValueError(
            f"expected vec [{n}, {cfg.in_vectors}, {cfg.dim}], got {None if vec is None else tuple(vec.shape)}"
        )


def _check_edge_attr(cfg, edge_attr, lead):
    if cfg.edge_dim and (edge_attr is None or tuple(edge_attr.shape) != (*lead, cfg.edge_dim)):
        raise ValueError(f"expected edge_attr {[*lead, cfg.edge_dim]}, got {None if edge_attr is None else tuple(edge_attr.shape)}")


# ---------------------------------------------------------------- fiber-bundle mode


class Ponita(_Trunk):
    """PΘNITA on ``R^n × S^{n-1}`` with a shared orientation grid (fiber-bundle mode).

    Args (forward):
        pos: ``[N, n]`` positions. edge_index: ``[2, E]`` (sender, receiver);
            see :mod:`geo.equivariant.graph`. batch: ``[N]`` sorted cloud ids
            (needed for pooling). x: ``[N, in_scalars]`` invariant inputs.
            vec: ``[N, in_vectors, n]`` vector inputs.

    Returns:
        ``(scalars, vectors)``: ``[N, out_scalars]`` and ``[N, out_vectors, n]``
        (``[B, …]`` when ``cfg.pool`` is set); ``None`` for an empty part.

    :meth:`forward_dense` is the same network on a batch of equal-size,
    fully connected clouds (self-loops included) stored as dense tensors, as
    the reference code runs N-body: the same numbers as :meth:`forward` on
    :func:`~geo.equivariant.graph.fully_connected_graph`, without gather /
    scatter (the convolution's sum over senders is a plain reduction). On CPU
    this makes the convolutions ~20 % faster, but a whole N-body training step
    is dominated by the kernel and MLP matmuls and is within noise of the
    graph path.

    ``cfg.edge_dim > 0`` conditions the spatial kernel also on invariant edge
    attributes (``edge_attr [E, edge_dim]``, or ``[B, N, N, edge_dim]`` in
    dense mode), appended to the spatial attributes before the basis
    embedding; they must be invariant for the network to stay equivariant.
    """

    def __init__(self, cfg: PonitaConfig):
        super().__init__(cfg, SeparableFiberBundleConv)
        self.register_buffer("grid", orientation_grid(cfg.dim, cfg.num_ori).to(torch.get_default_dtype()))
        h = cfg.hidden
        # Both bases are shared by all layers (sampled once per forward).
        self.spatial_basis = KernelBasis(2 + cfg.edge_dim, h, self.basis_dim, cfg.degree)
        self.fiber_basis = KernelBasis(1, h, self.basis_dim, cfg.degree)

    def lift(self, x, vec):
        parts = []
        if self.cfg.in_scalars:
            parts.append(lift_scalars(x, self.cfg.num_ori))
        if self.cfg.in_vectors:
            parts.append(lift_vectors(vec, self.grid))
        return torch.cat(parts, -1)

    def _spatial_attributes(self, rel, edge_attr):
        """``[..., n]`` relative positions (+ ``[..., edge_dim]``) → ``[..., O, 2 + edge_dim]``."""
        scale = self.cfg.length_scale or self.cfg.radius or 1.0
        attr = kernel_attributes(rel.reshape(-1, rel.shape[-1]), self.grid, scale)
        attr = attr.reshape(*rel.shape[:-1], *attr.shape[1:])
        if self.cfg.edge_dim:
            attr = torch.cat([attr, edge_attr[..., None, :].expand(*attr.shape[:-1], self.cfg.edge_dim)], -1)
        return attr

    def kernel_bases(self, pos, edge_index, edge_attr=None):
        """Spatial ``[E, O, B]`` (windowed when ``cfg.radius``) and fiber ``[O, O, B]`` bases."""
        rel = relative_positions(pos, edge_index)
        spatial = self.spatial_basis(self._spatial_attributes(rel, edge_attr))
        if self.cfg.radius is not None:
            spatial = spatial * polynomial_cutoff(rel.norm(dim=-1), self.cfg.radius)[:, None, None]
        return spatial, self.fiber_basis(fiber_invariant(self.grid))

    def forward(self, pos, edge_index, batch=None, x=None, vec=None, edge_attr=None):
        _check_inputs(self.cfg, pos, x, vec)
        _check_edge_attr(self.cfg, edge_attr, edge_index.shape[1:])
        spatial, fiber = self.kernel_bases(pos, edge_index, edge_attr)
        y = self.run(self.lift(x, vec), spatial, fiber, edge_index)  # [N, O, out]
        ys, yv = torch.split(y, [self.cfg.out_scalars, self.cfg.out_vectors], -1)
        scal = scalar_readout(ys) if self.cfg.out_scalars else None
        vecs = vector_readout(yv, self.grid) if self.cfg.out_vectors else None
        return self._pool(scal, batch), self._pool(vecs, batch)

    def dense_kernel_bases(self, pos, edge_attr=None):
        """Dense spatial ``[B, N, N, O, B]`` (``[b, receiver, sender]``) and fiber ``[O, O, B]`` bases."""
        rel = pos[:, None, :, :] - pos[:, :, None, :]  # [B, N, N, n]: x_sender - x_receiver
        spatial = self.spatial_basis(self._spatial_attributes(rel, edge_attr))
        if self.cfg.radius is not None:
            spatial = spatial * polynomial_cutoff(rel.norm(dim=-1), self.cfg.radius)[..., None, None]
        return spatial, self.fiber_basis(fiber_invariant(self.grid))

    def forward_dense(self, pos, x=None, vec=None, edge_attr=None):
        """Fully connected clouds of equal size as dense tensors.

        Args:
            pos: ``[B, N, n]``. x: ``[B, N, in_scalars]``. vec: ``[B, N, in_vectors, n]``.
            edge_attr: ``[B, N, N, edge_dim]`` indexed ``[b, receiver, sender]``.

        Returns:
            ``(scalars, vectors)``: ``[B, N, out_scalars]`` and ``[B, N, out_vectors, n]``
            (``[B, …]`` when ``cfg.pool`` is set); ``None`` for an empty part.
        """
        if pos.dim() != 3 or pos.shape[-1] != self.cfg.dim:
            raise ValueError(f"expected pos [B, N, {self.cfg.dim}], got {tuple(pos.shape)}")
        b, n = pos.shape[:2]
        flat = lambda a: None if a is None else a.reshape(b * n, *a.shape[2:])  # noqa: E731
        _check_inputs(self.cfg, flat(pos), flat(x), flat(vec))
        _check_edge_attr(self.cfg, edge_attr, (b, n, n))
        spatial, fiber = self.dense_kernel_bases(pos, edge_attr)
        y = self.run(self.lift(x, vec), spatial, fiber)  # [B, N, O, out]
        ys, yv = torch.split(y, [self.cfg.out_scalars, self.cfg.out_vectors], -1)
        scal = scalar_readout(ys) if self.cfg.out_scalars else None
        vecs = vector_readout(yv, self.grid) if self.cfg.out_vectors else None
        if self.cfg.pool is not None:
            red = torch.sum if self.cfg.pool == "sum" else torch.mean
            scal = None if scal is None else red(scal, 1)
            vecs = None if vecs is None else red(vecs, 1)
        return scal, vecs


# ---------------------------------------------------------------- point-cloud mode


class PonitaPointCloud(_Trunk):
    """PΘNITA in point-cloud mode: every edge direction is an orientation.

    Each base edge ``j → i`` is lifted to the point ``(x_i, (x_j−x_i)/‖·‖)``
    (:func:`~geo.equivariant.graph.lift_to_edge_orientations`); convolutions
    run on the lifted graph with the 3 invariants of
    :func:`~geo.equivariant.invariants.point_cloud_invariants`, and outputs are
    averaged back to the base points. Exactly SE(n) equivariant; the cost grows
    with the square of the node degree.

    Same forward signature and outputs as :class:`Ponita` (``cfg.num_ori`` unused).
    """

    def __init__(self, cfg: PonitaConfig):
        super().__init__(cfg, PointCloudConv)
        self.basis = KernelBasis(3, cfg.hidden, self.basis_dim, cfg.degree)

    def forward(self, pos, edge_index, batch=None, x=None, vec=None):
        _check_inputs(self.cfg, pos, x, vec)
        lpos, lori, base, ledges = lift_to_edge_orientations(pos, edge_index)
        basis = self.basis(point_cloud_invariants(lpos, lori, ledges))
        if self.cfg.radius is not None:
            basis = basis * polynomial_cutoff(pair_distance(lpos, ledges), self.cfg.radius)
        parts = []
        if self.cfg.in_scalars:
            parts.append(x[base])
        if self.cfg.in_vectors:
            parts.append(torch.einsum("mcd,md->mc", vec[base], lori))
        y = self.run(torch.cat(parts, -1), basis, ledges)  # [M, out]
        ys, yv = torch.split(y, [self.cfg.out_scalars, self.cfg.out_vectors], -1)
        n = len(pos)
        scal = pool_clouds(ys, base, n) if self.cfg.out_scalars else None
        vecs = pool_clouds(yv[..., None] * lori[:, None, :], base, n) if self.cfg.out_vectors else None
        return self._pool(scal, batch), self._pool(vecs, batch)


# ---------------------------------------------------------------- task heads


class NBodyPonita(nn.Module):
    """N-body trajectory head: ``x_T = x_0 + Δ`` with ``Δ`` the vector readout.

    Inputs follow the paper: charges as the scalar, velocity as the vector, on
    the fully connected graph with self-loops. With ``edge_charges`` the
    spatial kernel is also conditioned on ``q_i q_j`` (the edge attribute the
    EGNN N-body model gets; not in the paper's PΘNITA). Equal-size systems
    (the N-body batches) run through :meth:`Ponita.forward_dense`.

    Shapes: pos, vel ``[N, 3]``; charges ``[N]`` or ``[N, 1]``; batch ``[N]`` → ``[N, 3]``.
    """

    def __init__(self, hidden: int = 64, layers: int = 4, num_ori: int = 12, basis_dim: int | None = None,
                 degree: int = 3, widening: int = 4, layer_scale: float | None = None, length_scale: float = 4.0,
                 edge_charges: bool = False):
        super().__init__()
        self.edge_charges = edge_charges
        self.net = Ponita(PonitaConfig(in_scalars=1, in_vectors=1, out_vectors=1, hidden=hidden, layers=layers,
                                       num_ori=num_ori, basis_dim=basis_dim, degree=degree, widening=widening,
                                       layer_scale=layer_scale, length_scale=length_scale,
                                       edge_dim=int(edge_charges)))

    def forward(self, pos, vel, charges, batch, edge_index=None):
        q = charges.reshape(-1, 1)
        if edge_index is None:
            sizes = torch.bincount(batch)
            if bool((sizes == sizes[0]).all()):  # equal-size systems: dense, fully connected
                b, n = len(sizes), int(sizes[0])
                qd = q.reshape(b, n, 1)
                ea = (qd[:, :, None] * qd[:, None, :]) if self.edge_charges else None  # [B, N, N, 1]
                _, v = self.net.forward_dense(pos.reshape(b, n, -1), qd, vel.reshape(b, n, 1, -1), ea)
                return pos + v.reshape(len(pos), -1)
            edge_index = fully_connected_graph(batch, loop=True)
        ea = (q[edge_index[0]] * q[edge_index[1]]) if self.edge_charges else None
        _, v = self.net(pos, edge_index, batch, x=q, vec=vel[:, None, :], edge_attr=ea)
        return pos + v[:, 0]


class PointCloudInvariantHead(nn.Module):
    """Classification / regression of whole clouds: invariant logits ``[B, num_outputs]``.

    Builds a kNN graph (``k``) per cloud, runs :class:`Ponita`, averages over
    orientations and points. Inputs: pos ``[N, n]``, batch ``[N]``, optional
    per-point scalars ``x [N, in_scalars]`` (default: a constant 1).
    """

    def __init__(self, num_outputs: int, k: int = 16, in_scalars: int = 1, **cfg):
        super().__init__()
        self.k = k
        self.net = Ponita(PonitaConfig(in_scalars=in_scalars, out_scalars=num_outputs, pool="mean", **cfg))

    def forward(self, pos, batch, x=None):
        if x is None:
            x = pos.new_ones(len(pos), 1)
        s, _ = self.net(pos, knn_graph(pos, self.k, batch, loop=True), batch, x=x)
        return s


class PointVectorHead(nn.Module):
    """Per-point equivariant vectors (e.g. normals or scene flow): ``[N, n]``.

    kNN graph per cloud, :class:`Ponita` without pooling, one vector readout.
    Optional inputs: scalars ``x [N, in_scalars]``, vectors ``vec [N, in_vectors, n]``.
    """

    def __init__(self, k: int = 16, in_scalars: int = 1, in_vectors: int = 0, **cfg):
        super().__init__()
        self.k = k
        self.net = Ponita(PonitaConfig(in_scalars=in_scalars, in_vectors=in_vectors, out_vectors=1, **cfg))

    def forward(self, pos, batch, x=None, vec=None):
        if x is None and self.net.cfg.in_scalars:
            x = pos.new_ones(len(pos), self.net.cfg.in_scalars)
        _, v = self.net(pos, knn_graph(pos, self.k, batch, loop=True), batch, x=x, vec=vec)
        return v[:, 0]
