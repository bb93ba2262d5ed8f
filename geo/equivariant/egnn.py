"""EGNN baseline (Satorras, Hoogeboom, Welling. "E(n) Equivariant Graph Neural
Networks", ICML 2021), the velocity variant used for N-body (Sec. 3.2, Eq. 7).

Per layer, with ``h`` invariant node features, ``x`` positions, ``v`` velocities:

* ``m_ij = φ_e(h_i, h_j, ‖x_i − x_j‖², a_ij)``
* ``x_i ← x_i + φ_v(h_i) v_i + (1/(N−1)) Σ_j (x_i − x_j) φ_x(m_ij)``
* ``h_i ← h_i + φ_h(h_i, Σ_j m_ij)``

Exactly E(n) equivariant. Plain torch, ``index_add_`` for aggregation.
"""

from __future__ import annotations

import torch
from torch import nn

from .graph import fully_connected_graph

__all__ = ["EGNNLayer", "EGNN", "NBodyEGNN"]


class EGNNLayer(nn.Module):
    def __init__(self, hidden: int, edge_dim: int = 0):
        super().__init__()
        act = nn.SiLU()
        self.phi_e = nn.Sequential(nn.Linear(2 * hidden + 1 + edge_dim, hidden), act, nn.Linear(hidden, hidden), act)
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=1e-3)  # small initial coordinate updates, as in EGNN
        self.phi_x = nn.Sequential(nn.Linear(hidden, hidden), act, last)
        self.phi_v = nn.Sequential(nn.Linear(hidden, hidden), act, nn.Linear(hidden, 1))
        self.phi_h = nn.Sequential(nn.Linear(2 * hidden, hidden), act, nn.Linear(hidden, hidden))

    def forward(self, h, x, v, edge_index, edge_attr=None):
        src, dst = edge_index  # messages j=src → i=dst
        rel = x[dst] - x[src]
        parts = [h[dst], h[src], (rel**2).sum(-1, keepdim=True)]
        if edge_attr is not None:
            parts.append(edge_attr)
        m = self.phi_e(torch.cat(parts, -1))
        deg = torch.bincount(dst, minlength=len(x)).clamp_min(1).to(x.dtype)[:, None]
        dx = torch.zeros_like(x).index_add_(0, dst, rel * self.phi_x(m)) / deg
        x = x + dx + self.phi_v(h) * v
        agg = torch.zeros_like(h).index_add_(0, dst, m)
        h = h + self.phi_h(torch.cat([h, agg], -1))
        return h, x


class EGNN(nn.Module):
    """Stack of :class:`EGNNLayer`. forward(h0 [N, in], x [N, n], v [N, n], edge_index, edge_attr) → x."""

    def __init__(self, in_dim: int, hidden: int = 64, layers: int = 4, edge_dim: int = 0):
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(EGNNLayer(hidden, edge_dim) for _ in range(layers))

    def forward(self, h, x, v, edge_index, edge_attr=None):
        h = self.embed(h)
        for layer in self.layers:
            h, x = layer(h, x, v, edge_index, edge_attr)
        return x


class NBodyEGNN(nn.Module):
    """EGNN N-body head (paper setting): node input ‖v‖, edge input q_i q_j, fully connected, no loops.

    Shapes: pos, vel ``[N, 3]``; charges ``[N]``; batch ``[N]`` → predicted positions ``[N, 3]``.
    """

    def __init__(self, hidden: int = 64, layers: int = 4):
        super().__init__()
        self.net = EGNN(1, hidden, layers, edge_dim=1)

    def forward(self, pos, vel, charges, batch, edge_index=None):
        if edge_index is None:
            edge_index = fully_connected_graph(batch, loop=False)
        q = charges.reshape(-1)
        attr = (q[edge_index[0]] * q[edge_index[1]])[:, None]
        return self.net(vel.norm(dim=-1, keepdim=True), pos, vel, edge_index, attr)
