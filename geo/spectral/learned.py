"""Learned eigenbasis of a point cloud (Velich et al., "Learning Eigenstructures of
Unstructured Data Manifolds", 2025; see the package docstring for the departures).

Pipeline for a cloud ``X [N, 3]``:

1. :func:`canonicalize` — centre, scale to unit RMS radius, rotate to principal axes.
2. :class:`PointSpectralNet` — per-point MLP, local kNN max-aggregation, a surface
   diffusion block, then a global context encoder (induced-point attention, linear in
   N) → ``K`` channels per point.
3. ``Q = qr(channels)`` — Euclidean-orthonormal ``[N, K]`` (the paper's QR step).
4. Density / mass ``m = A · q₁²`` (``A`` = area estimate), eigenvectors
   ``V = diag(m)^{-1/2} Q`` (so ``Vᵀ diag(m) V = QᵀQ = I`` and ``v₁`` is constant).
5. Eigenvalues from the per-level reconstruction error of the probe functions
   (:func:`eigenvalues_from_probes`).

Probe functions (:class:`ProbeSmoother`): uniform random fields ``u ~ U[-1, 1]^N``
smoothed by ``n`` steps of a Gaussian kernel on the kNN graph,
``g = S^n u`` with ``S = D̃^{-1/2} W̃ D̃^{-1/2}``, ``W̃ = D^{-1} W D^{-1}`` (the
density-normalised kernel of Coifman & Lafon, α = 1). ``S^n`` approximates the heat
semigroup ``exp(-t Δ)`` in the whitened (``M^{1/2}``) domain, with diffusion time
``t = n · t_step`` where ``t_step = E_i[Σ_j P_ij |x_i - x_j|²] / 4`` is measured from
the kernel itself (the 2D random-walk variance; assumes a surface). Its top
eigenvector is ``D̃^{1/2}``, i.e. ``q₁² ∝`` area per point: the learned first column
recovers the sampling density (its inverse, the area element), as in the paper.

Loss (:func:`nested_reconstruction_loss`): ``(1/K) Σ_k E_g ‖g - Q_k Q_kᵀ g‖² / E‖g‖²``
(the whitened "best basis" form); nesting over k gives the PCA-like order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "assets" / "spectral" / "learned_eigenbasis.pt"
PROBE_TIME = 0.03  # diffusion time of the inference probes, in unit-RMS-radius units
KNN = 16
# The kernel's measured step variance and area slightly overestimate the continuum
# values (truncated, discrete Gaussian): factors measured once on uniformly sampled
# unit spheres at N = 1536 and 4096 (ratios 0.83 and 0.86, stable to ±0.02 on Spot).
EIGENVALUE_CALIBRATION = 1.20
AREA_CALIBRATION = 1.16


# ----------------------------------------------------------------------------------
# geometry helpers (numpy)
# ----------------------------------------------------------------------------------
def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for tall float64 operands through torch's BLAS.

    Same product as numpy's, but it runs on torch's intra-op threads
    (``torch.set_num_threads``): numpy's multi-threaded OpenBLAS gemm with a long inner
    dimension (``[N, k]ᵀ [N, k]``, N ≥ 4096) was measured to stall for 0.1–1.6 s on a
    loaded 2-core machine, which dominated the whole learned inference.
    """
    import torch

    def t(m):
        m = np.asarray(m, dtype=np.float64)
        return torch.from_numpy(m if all(st >= 0 for st in m.strides) else np.ascontiguousarray(m))

    with torch.inference_mode():
        return (t(a) @ t(b)).numpy()


def canonicalize(points: np.ndarray):
    """Centre, scale to unit RMS radius and rotate to principal axes.

    Returns ``(x [N, 3], center [3], scale, R [3, 3])`` with ``x = (p - center) @ R / scale``.
    Axis signs are fixed by the sign of the third moment (skewness) along each axis.
    """
    p = np.asarray(points, dtype=np.float64)
    c = p.mean(axis=0)
    q = p - c
    scale = float(np.sqrt((q**2).sum(axis=1).mean()))
    if not scale > 0:
        raise ValueError("all points coincide")
    q = q / scale
    _, vecs = np.linalg.eigh(_mm(q.T, q))
    R = np.ascontiguousarray(vecs[:, ::-1])
    x = _mm(q, R)
    s = np.sign((x**3).sum(axis=0))
    s[s == 0] = 1.0
    R = R * s
    if np.linalg.det(R) < 0:
        R[:, 2] *= -1
    return _mm(q, R), c, scale, R


def _workers() -> int:
    """Threads for the kd-tree queries: torch's intra-op thread count when torch is
    loaded (so ``torch.set_num_threads`` bounds the whole inference), else all cores."""
    import sys

    torch = sys.modules.get("torch")
    return max(1, int(torch.get_num_threads())) if torch is not None else -1


def _query_ordered(tree, q: np.ndarray, k: int, order: np.ndarray, workers: int | None = None):
    """``tree.query(q, k)`` run in the spatially coherent point order ``order`` (better
    cache locality, same neighbours), rows scattered back: ``(idx [M, k], dist [M, k])``."""
    d_o, i_o = tree.query(q[order], k=k, workers=_workers() if workers is None else workers)
    idx = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k), dtype=np.float64)
    idx[order] = i_o.reshape(len(q), k)
    dist[order] = d_o.reshape(len(q), k)
    return idx, dist


def _knn_graph_ordered(x: np.ndarray, k: int = KNN, workers: int | None = None):
    """:func:`knn_graph` plus the kd-tree's point order ``[N]`` (a spatial sort of ``x``)."""
    from scipy.spatial import cKDTree

    k = min(k, len(x))
    tree = cKDTree(x)
    order = tree.indices
    return (*_query_ordered(tree, x, k, order, workers), order)


def knn_graph(x: np.ndarray, k: int = KNN, workers: int | None = None):
    """``(idx [N, k], dist [N, k])`` of the k nearest neighbours, self first.

    ``workers``: kd-tree query threads (default: torch's thread count when torch is
    loaded, else all cores)."""
    return _knn_graph_ordered(x, k, workers)[:2]


def _kernel_weights(idx, dist, sigma_scale: float):
    """``(σ, W)``: the symmetrised (max) Gaussian kNN kernel as scipy csr ``[N, N]``."""
    import scipy.sparse as sp

    n, k = idx.shape
    sigma = float(sigma_scale * np.median(dist[:, k // 2])) + 1e-12
    w = np.exp(-(dist**2) / sigma**2)
    W = sp.csr_matrix((w.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    W.sum_duplicates()
    return sigma, W.maximum(W.T).tocsr()


def kernel_area_weights(idx, dist, sigma_scale: float = 0.7) -> np.ndarray:
    """``ProbeSmoother(x, idx, dist, sigma_scale).area_weights`` without building the
    smoother's operators (only the α = 1 degrees ``D̃`` are needed): ``[N]``."""
    sigma, W = _kernel_weights(idx, dist, sigma_scale)
    inv_d = 1.0 / np.asarray(W.sum(axis=1)).ravel()
    dt = inv_d * (W @ inv_d)  # row sums of D^{-1} W D^{-1}
    return math.pi * sigma**2 * dt


def _scale_csr(A, left, right):
    """``diag(left) A diag(right)`` for a scipy csr ``A`` (same sparsity, no products)."""
    A = A.copy()
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    A.data *= left[rows] * right[A.indices]
    return A


def _torch_csr(A, dtype):
    """scipy csr -> torch sparse csr (CPU sparse-dense products are much faster than COO)."""
    import warnings

    import torch

    A = A.tocsr()
    A.sort_indices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.as_tensor(A.indptr, dtype=torch.int64),
            torch.as_tensor(A.indices, dtype=torch.int64),
            torch.as_tensor(A.data, dtype=dtype),
            A.shape,
        )


class ProbeSmoother:
    """Density-normalised Gaussian kNN smoother ``S`` (symmetric, sparse) on a cloud.

    Args:
        x: ``[N, 3]`` points. idx, dist: its kNN graph (see :func:`knn_graph`).
        sigma_scale: kernel width ``σ`` as a multiple of the median distance to the
            ``k/2``-th neighbour.
    Attributes: ``S`` (scipy csr ``[N, N]``), ``t_step``, ``area_weights`` ``[N]``
    (kernel estimate of the area per point, ``π σ² D̃``), ``sigma``.
    """

    def __init__(self, x, idx, dist, sigma_scale: float = 0.7):
        n = idx.shape[0]
        self.sigma, W = _kernel_weights(idx, dist, sigma_scale)
        inv_d = 1.0 / np.asarray(W.sum(axis=1)).ravel()
        Wt = _scale_csr(W, inv_d, inv_d)  # α = 1: remove the sampling density
        dt = np.asarray(Wt.sum(axis=1)).ravel()
        self.S = _scale_csr(Wt, dt**-0.5, dt**-0.5)
        # random-walk step variance -> diffusion time per step (2D: E|Δx|² = 4t)
        P = _scale_csr(Wt, 1.0 / dt, np.ones(n))
        self.P = P
        rows = np.repeat(np.arange(n), np.diff(P.indptr))
        sq = ((x[rows] - x[P.indices]) ** 2).sum(axis=1)
        var = np.bincount(rows, weights=P.data * sq, minlength=n)
        self.t_step = float((var * dt).sum() / dt.sum() / 4.0)
        self.area_weights = math.pi * self.sigma**2 * dt
        self.sqrt_density_vector = np.sqrt(dt / dt.sum())

    def n_steps(self, t: float) -> int:
        return max(1, int(round(t / self.t_step)))

    def probes(self, n_probes: int, t: float, rng: np.random.Generator) -> np.ndarray:
        """``[N, n_probes]`` smooth random probe functions ``S^n u``, ``u ~ U[-1, 1]``."""
        g = rng.uniform(-1.0, 1.0, size=(self.S.shape[0], n_probes))
        for _ in range(self.n_steps(t)):
            g = self.S @ g
        return g


# ----------------------------------------------------------------------------------
# network
# ----------------------------------------------------------------------------------
@dataclass
class NetConfig:
    k: int = 30  # output channels (levels)
    width: int = 96
    n_local: int = 2
    n_global: int = 2
    n_inducing: int = 32
    heads: int = 4
    fourier_levels: int = 3
    knn: int = KNN
    # diffusion blocks (0 = none): features averaged along the surface by the kNN
    # random walk for these diffusion times (unit-RMS-radius units)
    n_diffusion: int = 1
    diffusion_channels: int = 32
    diffusion_times: tuple = (0.002, 0.008, 0.03)


def _build_modules():
    import torch
    from torch import nn

    class LocalBlock(nn.Module):
        """Max-aggregation over kNN: ``max_j relu(A h_j + B (x_j - x_i))`` (PointNet++-style
        edge function, linear in the offset so it costs one gather per edge)."""

        def __init__(self, c):
            super().__init__()
            self.feat = nn.Linear(c, c)
            self.rel = nn.Linear(3, c, bias=False)
            self.out = nn.Sequential(nn.Linear(2 * c, c), nn.GELU(), nn.Linear(c, c))
            self.norm = nn.LayerNorm(c)

        def forward(self, h, x, idx):  # h [B,N,C], x [B,N,3], idx [B,N,k]
            B, N, k = idx.shape
            r = self.rel(x)
            # relu is monotone and B x_i is constant over j, so
            # max_j relu(A h_j + B (x_j - x_i)) = relu(max_j (A h_j + B x_j) - B x_i).
            src = (self.feat(h) + r).reshape(B * N, -1)
            flat = (idx + torch.arange(B, device=h.device).view(B, 1, 1) * N).reshape(B, -1)
            agg = []
            for s in range(0, N, 8192):  # chunk to bound memory at inference
                f = flat[:, s * k : (s + 8192) * k].reshape(-1)
                agg.append(src.index_select(0, f).view(B, -1, k, src.shape[-1]).max(dim=2).values)
            agg = torch.relu(torch.cat(agg, dim=1) - r)
            return h + self.out(torch.cat([self.norm(h), agg], dim=-1))

    class GlobalBlock(nn.Module):
        """Induced-set attention (Lee et al. 2019): latents read the points, points read back."""

        def __init__(self, c, m, heads):
            super().__init__()
            self.latents = nn.Parameter(torch.randn(m, c) / math.sqrt(c))
            self.read = nn.MultiheadAttention(c, heads, batch_first=True)
            self.write = nn.MultiheadAttention(c, heads, batch_first=True)
            self.n1, self.n2, self.n3 = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)
            self.ff_lat = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
            self.ff = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

        def forward(self, h):
            B = h.shape[0]
            hn = self.n1(h)
            z = self.latents.expand(B, -1, -1)
            z = z + self.read(z, hn, hn, need_weights=False)[0]
            z = z + self.ff_lat(self.n2(z))
            h = h + self.write(hn, z, z, need_weights=False)[0]
            return h + self.ff(self.n3(h))

    class DiffusionBlock(nn.Module):
        """Intrinsic global context: mix features with their surface-diffused copies
        ``P^{n_i} h`` (random walk of the kNN kernel, DiffusionNet-style, fixed times)."""

        def __init__(self, c, n_times, d):
            super().__init__()
            self.norm = nn.LayerNorm(c)
            self.down = nn.Linear(c, d)  # diffuse a narrow projection: sparse steps dominate the cost
            self.mix = nn.Sequential(nn.Linear(c + n_times * d, c), nn.GELU(), nn.Linear(c, c))

        def forward(self, h, diffuse):
            hn = self.norm(h)
            return h + self.mix(torch.cat([hn, *diffuse(self.down(hn))], dim=-1))

    class PointSpectralNet(nn.Module):
        """Point network → ``K`` raw channels per point.

        Input: canonical points ``x [B, N, 3]``, their kNN ``idx [B, N, knn]`` and, when
        ``cfg.n_diffusion > 0``, ``diffuse`` (see :func:`make_diffuser`).
        Output: ``[B, N, K]`` (orthonormalise with :func:`orthonormal_basis`).
        """

        def __init__(self, cfg: NetConfig):
            super().__init__()
            self.cfg = cfg
            c = cfg.width
            d_in = 3 + 6 * cfg.fourier_levels
            self.embed = nn.Sequential(nn.Linear(d_in, c), nn.GELU(), nn.Linear(c, c))
            self.local = nn.ModuleList([LocalBlock(c) for _ in range(cfg.n_local)])
            self.diff = nn.ModuleList(
                [DiffusionBlock(c, len(cfg.diffusion_times), cfg.diffusion_channels) for _ in range(cfg.n_diffusion)]
            )
            self.glob = nn.ModuleList([GlobalBlock(c, cfg.n_inducing, cfg.heads) for _ in range(cfg.n_global)])
            self.head = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, c), nn.GELU(), nn.Linear(c, cfg.k))

        def features(self, x):
            f = [x]
            for l in range(self.cfg.fourier_levels):
                f += [torch.sin(math.pi * 2**l * x), torch.cos(math.pi * 2**l * x)]
            return torch.cat(f, dim=-1)

        def forward(self, x, idx, diffuse=None):
            h = self.embed(self.features(x))
            for blk in self.local:
                h = blk(h, x, idx)
            for blk in self.diff:
                h = blk(h, diffuse)
            for blk in self.glob:
                h = blk(h)
            return self.head(h)

    return PointSpectralNet


_NET_CLS = None


def PointSpectralNet(cfg: NetConfig | None = None):
    """Construct the network (torch is imported lazily)."""
    global _NET_CLS
    if _NET_CLS is None:
        _NET_CLS = _build_modules()
    return _NET_CLS(cfg or NetConfig())


def orthonormal_basis(raw):
    """QR of ``raw [..., N, K]`` → ``Q [..., N, K]``, ``QᵀQ = I``, first column summing positive."""
    import torch

    Q, _ = torch.linalg.qr(raw)
    s = torch.sign(Q[..., :1].sum(dim=-2, keepdim=True))
    s = torch.where(s == 0, torch.ones_like(s), s)
    return torch.cat([Q[..., :1] * s, Q[..., 1:]], dim=-1)


# ----------------------------------------------------------------------------------
# loss
# ----------------------------------------------------------------------------------
def nested_reconstruction_loss(Q, G, level_weights=None):
    """Nested reconstruction error of probe functions (paper's loss, Monte Carlo form).

    Args:
        Q: ``[B, N, K]`` orthonormal basis.
        G: ``[B, N, P]`` probe functions (whitened domain).
        level_weights: optional ``[K]`` positive weights (every level error is
            minimised by the same PCA subspace, so weights change conditioning, not
            the optimum).

    Returns:
        ``(loss, err [B, K])`` — ``err[:, k-1] = E_g ‖g - Q_k Q_kᵀ g‖² / E‖g‖²``.
    """
    import torch

    c = Q.transpose(-1, -2) @ G  # [B, K, P]
    captured = torch.cumsum((c**2).sum(-1), dim=-1)  # [B, K]
    total = (G**2).sum(dim=(-1, -2)).unsqueeze(-1)  # [B, 1]
    err = 1.0 - captured / total
    w = err.new_ones(err.shape[-1]) if level_weights is None else level_weights
    return (err * w).mean(), err


def expected_nested_loss(Q, SnQ, trace, level_weights=None):
    """Closed-form expectation of :func:`nested_reconstruction_loss` over the probe law.

    For ``g = S^n u`` with iid ``u``: ``E‖Q_kᵀ g‖² ∝ Σ_{j≤k} ‖S^n q_j‖²`` and
    ``E‖g‖² ∝ tr(S^{2n})`` — zero-variance estimate of the same objective.

    Args: ``Q [B, N, K]``, ``SnQ = S^n Q [B, N, K]``, ``trace [B]`` = ``tr(S^{2n})``.
    Returns ``(loss, err [B, K], mu [B, K])`` with ``mu_k = ‖S^n q_k‖² / tr(S^{2n})``.
    """
    import torch

    mu = (SnQ**2).sum(dim=-2) / trace.unsqueeze(-1)
    err = 1.0 - torch.cumsum(mu, dim=-1)
    w = err.new_ones(err.shape[-1]) if level_weights is None else level_weights
    return (err * w).mean(), err, mu


def eigenvalues_from_levels(mu, t: float):
    """Eigenvalue estimates from the per-level error decrements ``mu_k = e_{k-1} - e_k``.

    Under the probe law ``mu_k ∝ exp(-2 t λ_k)``, so ``λ_k = -log(mu_k / mu_1) / 2t``
    (this is the *mean*-error estimate; see the package docstring).
    """
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-300)
    lam = -np.log(mu / mu[..., :1]) / (2.0 * t)
    lam[..., 0] = 0.0
    return np.maximum(lam, 0.0)


# ----------------------------------------------------------------------------------
# inference
# ----------------------------------------------------------------------------------
def save_checkpoint(path, model, extra: dict | None = None):
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(dtype=torch.float16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"config": asdict(model.cfg), "state_dict": state, "extra": extra or {}}, path)


def load_checkpoint(path=None):
    """Load a :class:`PointSpectralNet` (float32, eval mode) from ``path`` (default: the shipped one)."""
    import torch

    path = Path(path or DEFAULT_CHECKPOINT)
    if not path.exists():
        raise FileNotFoundError(
            f"no learned-eigenbasis checkpoint at {path}; train one with `python -m geo.spectral.train`"
        )
    ck = torch.load(path, map_location="cpu", weights_only=True)
    cfg = dict(ck["config"])
    if "diffusion_times" in cfg:
        cfg["diffusion_times"] = tuple(cfg["diffusion_times"])
    else:  # checkpoints from before the diffusion blocks
        cfg["n_diffusion"] = 0
    model = PointSpectralNet(NetConfig(**cfg))
    model.load_state_dict({k: v.float() for k, v in ck["state_dict"].items()})
    model.eval()
    model.extra = ck.get("extra", {})
    return model


_MODELS: dict = {}


def _default_model(checkpoint=None):
    key = str(checkpoint or DEFAULT_CHECKPOINT)
    if key not in _MODELS:
        _MODELS[key] = load_checkpoint(checkpoint)
    return _MODELS[key]


def rayleigh_ritz_in_span(Q: np.ndarray, SnQ: np.ndarray):
    """Best nested order inside a learned span for the probe loss.

    The nested probe loss restricted to ``span(Q₂)``, ``Q₂ = [q_2..q_K]``, is minimised
    (every level at once, Ky Fan) by ``Q₂ U`` with ``U`` the eigenvectors of
    ``Q₂ᵀ S^{2n} Q₂ = (S^n Q₂)ᵀ (S^n Q₂)``, in decreasing order; ``q_1`` (the density)
    is kept. Args: ``Q [N, K]`` orthonormal, ``SnQ = S^n Q``. Returns ``(Q', mu [K])``
    with ``mu_k = ‖S^n q'_k‖²``.
    """
    ev, U = np.linalg.eigh(_mm(SnQ[:, 1:].T, SnQ[:, 1:]))
    U, ev = U[:, ::-1], ev[::-1]
    mu = np.concatenate([[float((SnQ[:, 0] ** 2).sum())], ev])
    return np.concatenate([Q[:, :1], _mm(Q[:, 1:], U)], axis=1), mu


def make_diffuser(P_list, t_steps, times):
    """``diffuse(h [B, N, C]) -> [P^{n_1} h, P^{n_2} h, ...]`` for a batch of clouds.

    ``P_list``: per-cloud random-walk matrices (scipy, ``ProbeSmoother.P``); ``t_steps``:
    their diffusion time per step; ``times``: target diffusion times. Step counts are
    per cloud (``round(t / t_step)``), applied on the block-diagonal batch operator.
    """
    import scipy.sparse as sp
    import torch

    B = len(P_list)
    N = P_list[0].shape[0]
    steps = torch.tensor([[max(1, round(t / ts)) for t in times] for ts in t_steps])  # [B, T]
    Pt = Pcsr = None

    def csr():  # inference path: csr sparse-dense products (~8x faster than coo on CPU)
        nonlocal Pcsr
        if Pcsr is None:
            Pcsr = _torch_csr(sp.block_diag(P_list, format="csr") if B > 1 else P_list[0], torch.float32)
        return Pcsr

    def coo():  # autograd path (training): COO sparse-dense products
        nonlocal Pt
        if Pt is None:
            rows, cols, vals = [], [], []
            for b, P in enumerate(P_list):
                c = P.tocoo()
                rows.append(torch.as_tensor(c.row + b * N, dtype=torch.int64))
                cols.append(torch.as_tensor(c.col + b * N, dtype=torch.int64))
                vals.append(torch.as_tensor(c.data, dtype=torch.float32))
            index = torch.stack([torch.cat(rows), torch.cat(cols)])
            Pt = torch.sparse_coo_tensor(index, torch.cat(vals), (B * N, B * N), check_invariants=False).coalesce()
        return Pt

    def diffuse(h):
        C = h.shape[-1]
        y = h.reshape(B * N, C)
        P = coo() if (torch.is_grad_enabled() and y.requires_grad) else csr()
        out, done = [], 0
        for j in range(len(times)):
            for i in range(done, int(steps[:, j].max())):
                active = steps[:, j] > i
                if bool(active.all()):
                    y = torch.sparse.mm(P, y)
                else:
                    y = torch.where(active.repeat_interleave(N).unsqueeze(-1), torch.sparse.mm(P, y), y)
            done = int(steps[:, j].max())
            out.append(y.reshape(B, N, C))
        return out

    return diffuse


def predict_q(model, x: np.ndarray, idx: np.ndarray, smoother=None):
    """Run the network on canonical points: ``Q [N, K]`` (numpy float64, orthonormal)."""
    import torch

    diffuse = None
    if model.cfg.n_diffusion:
        if smoother is None:
            smoother = ProbeSmoother(x, idx, np.linalg.norm(x[idx] - x[:, None], axis=-1))
        diffuse = make_diffuser([smoother.P], [smoother.t_step], model.cfg.diffusion_times)
    with torch.inference_mode():
        xt = torch.as_tensor(x, dtype=torch.float32)[None]
        it = torch.as_tensor(idx[:, : model.cfg.knn], dtype=torch.int64)[None]
        raw = model(xt, it, diffuse)[0].double()
        Q = orthonormal_basis(raw)
    return Q.numpy()


def learned_eigenbasis_points(
    points,
    k: int,
    *,
    model=None,
    checkpoint=None,
    max_network_points: int = 4096,
    probe_time: float = PROBE_TIME,
    rayleigh_ritz: bool = True,
    refine_iters: int = 0,
    seed: int = 0,
):
    """Learned eigenbasis of a point cloud.

    Args:
        points: ``[N, 3]`` distinct finite points, ``N > k``.
        k: number of basis functions (at most the checkpoint's ``K``).
        model: a :class:`PointSpectralNet`; default loads ``checkpoint`` (the shipped one).
        max_network_points: larger clouds are handled on a random subsample of this
            size (close to the training resolution, where the local features are in
            distribution): the network, density and eigenvalues are computed there and
            the smooth eigenfunctions are extended to every point by inverse-distance
            interpolation over the 4 nearest subsample points; the mass then comes from
            the same α = 1 kernel estimate of the area per point that ``q₁²`` is trained
            to reproduce. This keeps inference O(N log N) with a small constant.
        rayleigh_ritz: rotate the learned span ``q_2..q_K`` to the minimiser of the
            nested probe loss within that span (eigenvectors of ``Qᵀ S^{2n} Q``),
            which also gives the per-level errors, hence eigenvalues, exactly for
            it. ``False`` returns the network's own nesting order.
        refine_iters: subspace-iteration steps on the probe covariance before that
            (0 = pure network span; each costs ``n`` sparse products on ``[N, K]``).

    Returns:
        ``(eigenvalues [k], basis [N, k], mass [N])``, float64, in the units of
        ``points``; ``basisᵀ diag(mass) basis = I``, ``basis[:, 0]`` constant.
    """
    import torch

    model = model if model is not None else _default_model(checkpoint)
    K = model.cfg.k
    if k > K:
        raise ValueError(f"the learned model gives at most K={K} basis functions, asked for k={k}")
    p = np.asarray(points, dtype=np.float64)
    if len(p) <= k:
        raise ValueError(f"k={k} basis functions need more than k points, got {len(p)}")
    n_knn = max(KNN, model.cfg.knn)
    x, _, scale, _ = canonicalize(p)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(len(p), max_network_points, replace=False)) if len(p) > max_network_points else None
    xs = x if sub is None else x[sub]
    idx_s, dist_s = knn_graph(xs, n_knn)
    sm_s = ProbeSmoother(xs, idx_s, dist_s)
    Qs = predict_q(model, xs, idx_s, sm_s)  # all K columns: the learned span
    n = sm_s.n_steps(probe_time)
    S_t = _torch_csr(sm_s.S, torch.float64)

    def smooth(A):  # S^n A (torch csr products: several times faster than scipy's)
        with torch.inference_mode():
            At = torch.from_numpy(np.ascontiguousarray(A))
            for _ in range(n):
                At = torch.sparse.mm(S_t, At)
            return At.numpy()

    for _ in range(refine_iters):  # optional subspace iteration on the probe covariance S^{2n}
        Qs, _ = np.linalg.qr(np.concatenate([Qs[:, :1], smooth(Qs)[:, 1:]], axis=1))
        Qs[:, 0] *= np.sign(Qs[:, 0].sum())
    # Per-level errors of the probe loss in closed form: mu_k = ‖S^n q_k‖² ∝ E(q_kᵀg)².
    Y = smooth(Qs)
    mu = (Y**2).sum(axis=0)
    if rayleigh_ritz:
        Qs, mu = rayleigh_ritz_in_span(Qs, Y)
    Qs, mu = Qs[:, :k], mu[:k]
    lam = EIGENVALUE_CALIBRATION * eigenvalues_from_levels(mu, n * sm_s.t_step) / scale**2
    # Without Rayleigh–Ritz the network's nesting order is used; where it is not quite
    # monotone, order the columns by their eigenvalue estimate (the constant stays first).
    order = np.concatenate([[0], 1 + np.argsort(lam[1:], kind="stable")])
    lam, Qs = lam[order], Qs[:, order]

    # density from the first column: m = A q1², v = m^{-1/2} q
    area = AREA_CALIBRATION * float(sm_s.area_weights.sum()) * scale**2
    q1sq = Qs[:, 0] ** 2
    q1sq = np.maximum(q1sq, 1e-3 * q1sq.mean())  # guard v = q / sqrt(m) against q1 ≈ 0
    mass = area * q1sq / q1sq.sum()
    basis = np.concatenate([np.ones((len(xs), 1)), Qs[:, 1:] / np.sqrt(mass)[:, None]], axis=1)
    if sub is not None:
        import scipy.sparse as sp
        from scipy.spatial import cKDTree

        idx, dist, order = _knn_graph_ordered(x, n_knn)
        mass = AREA_CALIBRATION * kernel_area_weights(idx, dist) * scale**2
        # inverse-distance interpolation over the 4 nearest subsample points, as a
        # sparse [N, n_sub] operator (queried in the full cloud's spatial order)
        j, d = _query_ordered(cKDTree(xs), x, 4, order)
        w = 1.0 / np.maximum(d, 1e-9 * float(np.median(dist_s[:, 1])))
        w /= w.sum(axis=1, keepdims=True)
        interp = sp.csr_matrix((w.ravel(), j.ravel(), np.arange(0, 4 * len(x) + 1, 4)), shape=(len(x), len(xs)))
        basis = interp @ basis
    # The first column is the constant; re-orthonormalise the rest in the M inner
    # product (Cholesky QR keeps column order) — a no-op at full resolution unless the
    # guard clipped or q1 changed sign.
    G = _mm(basis.T, mass[:, None] * basis)
    C_inv = np.linalg.inv(np.linalg.cholesky(G))  # k x k, lower triangular
    basis = _mm(basis, C_inv.T)
    sgn = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(k)])
    sgn[sgn == 0] = 1
    return lam, basis * sgn, mass
