"""Graph construction for batches of point clouds, in plain torch or scipy.

A batch of clouds of different sizes is stored PyG-style: points concatenated
into ``pos [N, n]`` with a *sorted* ``batch [N]`` vector of cloud ids. Every
builder here returns ``edge_index [2, E]`` (row 0 sender, row 1 receiver),
sorted by receiver, with no edge crossing between clouds.

``method="torch"`` computes distances with a chunked ``torch.cdist`` restricted
to the column range of the clouds in each chunk, so memory stays
``O(chunk × cloud size)``; ``method="kdtree"`` uses ``scipy.spatial.cKDTree``
per cloud (CPU, float64), which is faster for large sparse clouds.
"""

from __future__ import annotations

import torch

__all__ = [
    "batch_from_sizes",
    "collate_clouds",
    "radius_graph",
    "knn_graph",
    "fully_connected_graph",
    "lift_to_edge_orientations",
]


def batch_from_sizes(sizes, device=None) -> torch.Tensor:
    """``batch [sum(sizes)]`` with cloud ``b`` repeated ``sizes[b]`` times."""
    sizes = torch.as_tensor(sizes, dtype=torch.long, device=device)
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)


def collate_clouds(clouds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate ``[N_b, n]`` clouds into ``(pos [N, n], batch [N])``."""
    pos = torch.cat(clouds, 0)
    return pos, batch_from_sizes([len(c) for c in clouds], device=pos.device)


def _check(pos: torch.Tensor, batch: torch.Tensor | None) -> torch.Tensor:
    if pos.dim() != 2:
        raise ValueError(f"expected pos of shape [N, n], got {tuple(pos.shape)}")
    if batch is None:
        return torch.zeros(len(pos), dtype=torch.long, device=pos.device)
    if batch.shape != pos.shape[:1]:
        raise ValueError(f"batch must have shape [{len(pos)}], got {tuple(batch.shape)}")
    if len(batch) > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (clouds stored contiguously)")
    return batch


def _ptr(batch: torch.Tensor) -> torch.Tensor:
    counts = torch.bincount(batch)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _sort_by_receiver(src: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    order = torch.argsort(dst * n + src)
    return torch.stack([src[order], dst[order]])


def _torch_pairs(pos, batch, select, chunk):
    """Yield (rows, cols, dist) for each chunk of receivers, same-cloud columns only."""
    ptr = _ptr(batch)
    n = len(pos)
    for r0 in range(0, n, chunk):
        r1 = min(r0 + chunk, n)
        c0, c1 = int(ptr[batch[r0]]), int(ptr[batch[r1 - 1] + 1])
        d = torch.cdist(pos[r0:r1], pos[c0:c1])
        d = d.masked_fill(batch[r0:r1, None] != batch[None, c0:c1], float("inf"))
        yield from select(d, r0, c0)


def radius_graph(
    pos: torch.Tensor,
    r: float,
    batch: torch.Tensor | None = None,
    loop: bool = False,
    method: str = "torch",
    chunk: int = 4096,
) -> torch.Tensor:
    """All pairs closer than ``r`` (strictly), within each cloud.

    Args:
        pos: ``[N, n]`` points. batch: ``[N]`` sorted cloud ids (None: one cloud).
        loop: include self-edges ``i → i``.
        method: ``"torch"`` (chunked cdist, any device) or ``"kdtree"`` (scipy).

    Returns:
        ``edge_index [2, E]`` long, sorted by receiver.
    """
    batch = _check(pos, batch)
    n = len(pos)
    if method == "kdtree":
        return _kdtree_graph(pos, batch, loop, radius=r)
    if method != "torch":
        raise ValueError(f"method must be 'torch' or 'kdtree', got {method!r}")

    def select(d, r0, c0):
        rows, cols = torch.nonzero(d < r, as_tuple=True)
        yield rows + r0, cols + c0

    src, dst = _collect(_torch_pairs(pos.detach(), batch, select, chunk), pos.device)
    if not loop:
        keep = src != dst
        src, dst = src[keep], dst[keep]
    return _sort_by_receiver(src, dst, n)


def knn_graph(
    pos: torch.Tensor,
    k: int,
    batch: torch.Tensor | None = None,
    loop: bool = False,
    method: str = "torch",
    chunk: int = 4096,
) -> torch.Tensor:
    """Each point receives from its ``k`` nearest neighbours in its own cloud.

    Clouds with fewer than ``k`` (other) points connect to all of them. Ties are
    broken by index order of ``torch.topk`` / the KD-tree.

    Returns:
        ``edge_index [2, E]``, sorted by receiver.
    """
    batch = _check(pos, batch)
    n = len(pos)
    if method == "kdtree":
        return _kdtree_graph(pos, batch, loop, k=k)
    if method != "torch":
        raise ValueError(f"method must be 'torch' or 'kdtree', got {method!r}")

    def select(d, r0, c0):
        if not loop:
            idx = torch.arange(len(d), device=d.device)
            d[idx, idx + r0 - c0] = float("inf")
        kk = min(k, d.shape[1])
        val, cols = torch.topk(d, kk, dim=1, largest=False)
        rows = torch.arange(len(d), device=d.device)[:, None].expand_as(cols)
        ok = torch.isfinite(val)
        yield rows[ok] + r0, cols[ok] + c0

    src, dst = _collect(_torch_pairs(pos.detach(), batch, select, chunk), pos.device)
    return _sort_by_receiver(src, dst, n)


def _collect(gen, device):
    """Gather (receiver rows, sender cols) chunks into (senders, receivers)."""
    rows, cols = [], []
    for a, b in gen:
        rows.append(a)
        cols.append(b)
    if not rows:
        e = torch.zeros(0, dtype=torch.long, device=device)
        return e, e
    return torch.cat(cols), torch.cat(rows)


def _kdtree_graph(pos, batch, loop, radius=None, k=None):
    import numpy as np
    from scipy.spatial import cKDTree

    p = pos.detach().cpu().double().numpy()
    ptr = _ptr(batch).tolist()
    srcs, dsts = [], []
    for b in range(len(ptr) - 1):
        a, z = ptr[b], ptr[b + 1]
        if z == a:
            continue
        tree = cKDTree(p[a:z])
        if radius is not None:
            pairs = tree.query_pairs(np.nextafter(radius, 0), output_type="ndarray")
            s = np.concatenate([pairs[:, 0], pairs[:, 1]])
            d = np.concatenate([pairs[:, 1], pairs[:, 0]])
        else:
            kk = min(k + (0 if loop else 1), z - a)
            _, nb = tree.query(p[a:z], k=kk)
            nb = nb.reshape(z - a, kk)
            d = np.repeat(np.arange(z - a), kk)
            s = nb.reshape(-1)
            if not loop:
                keep = s != d
                s, d = s[keep], d[keep]
                # a point may be missing from its own list when duplicates tie: trim to k
                order = np.lexsort((np.arange(len(d)), d))
                s, d = s[order], d[order]
                rank = np.arange(len(d)) - np.searchsorted(d, d)
                s, d = s[rank < k], d[rank < k]
        if loop and radius is not None:
            s = np.concatenate([s, np.arange(z - a)])
            d = np.concatenate([d, np.arange(z - a)])
        srcs.append(torch.from_numpy(s + a))
        dsts.append(torch.from_numpy(d + a))
    src = torch.cat(srcs).to(pos.device) if srcs else torch.zeros(0, dtype=torch.long, device=pos.device)
    dst = torch.cat(dsts).to(pos.device) if dsts else src
    return _sort_by_receiver(src.long(), dst.long(), len(pos))


def fully_connected_graph(batch: torch.Tensor, loop: bool = True) -> torch.Tensor:
    """Every ordered pair within each cloud (with self-loops by default), sorted by receiver."""
    ptr = _ptr(batch)
    sizes = ptr[1:] - ptr[:-1]
    # for receiver i in cloud b: senders ptr[b] .. ptr[b+1]-1
    recv = torch.repeat_interleave(torch.arange(len(batch), device=batch.device), sizes[batch])
    start = ptr[batch][recv]
    offset = torch.arange(len(recv), device=batch.device) - torch.repeat_interleave(
        torch.cumsum(sizes[batch], 0) - sizes[batch], sizes[batch]
    )
    send = start + offset
    if not loop:
        keep = send != recv
        send, recv = send[keep], recv[keep]
    return torch.stack([send, recv])


def lift_to_edge_orientations(pos: torch.Tensor, edge_index: torch.Tensor):
    """Point-cloud mode: lift every edge to a position-orientation point.

    Edge ``j → i`` (self-loops are dropped, they have no direction) becomes the
    lifted point ``(x_i, (x_j − x_i)/‖x_j − x_i‖)`` based at the receiver. Lifted
    points ``a`` (based at ``i``) and ``b`` (based at ``k``) are connected when
    ``k → i`` is an edge of the base graph or ``k = i``, as in the paper's
    point-cloud mode.

    Args:
        pos: ``[N, n]``. edge_index: ``[2, E]`` base graph.

    Returns:
        ``(lifted_pos [M, n], lifted_ori [M, n], base_index [M], lifted_edge_index [2, E'])``;
        ``base_index`` maps each lifted point to its base point (for pooling back).
    """
    src, dst = edge_index
    keep = src != dst
    src, dst = src[keep], dst[keep]
    n = len(pos)
    order = torch.argsort(dst * n + src)
    src, dst = src[order], dst[order]
    rel = pos[src] - pos[dst]
    ori = rel / rel.norm(dim=-1, keepdim=True)
    counts = torch.bincount(dst, minlength=n)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    # base edges incl. self-loops, then all (lifted at sender) × (lifted at receiver) pairs
    loops = torch.arange(n, device=pos.device)
    b_src = torch.cat([src, loops])
    b_dst = torch.cat([dst, loops])
    n_pairs = counts[b_src] * counts[b_dst]
    e_id = torch.repeat_interleave(torch.arange(len(b_src), device=pos.device), n_pairs)
    first = torch.cumsum(n_pairs, 0) - n_pairs
    k = torch.arange(len(e_id), device=pos.device) - first[e_id]
    per_recv = counts[b_dst][e_id]
    lifted_src = ptr[b_src][e_id] + torch.div(k, per_recv, rounding_mode="floor")
    lifted_dst = ptr[b_dst][e_id] + k % per_recv
    lifted_edges = _sort_by_receiver(lifted_src, lifted_dst, len(src))
    return pos[dst], ori, dst, lifted_edges
