"""DiffusionNet: learned per-point features on surfaces by spectral diffusion.

N. Sharp, S. Attaiki, K. Crane, M. Ovsjanikov, "DiffusionNet: Discretization Agnostic
Learning on Surfaces", ACM ToG 2022.

    >>> import geo.spectral as gs
    >>> from geo.fmaps.diffusionnet import DiffusionNet, spectral_operators
    >>> ops = spectral_operators(mesh, k=128)                      # once per shape
    >>> x = torch.as_tensor(gs.wks(ops.evals.double().numpy(), ops.evecs.double().numpy()), dtype=torch.float32)
    >>> net = DiffusionNet(c_in=x.shape[1], c_out=64, width=64)
    >>> feats = net(x, ops)                                        # [N, 64]

What the paper does. A network of ``n_blocks`` identical blocks between a first and a
last linear layer acts on per-vertex features ``x [N, C]``. Each block

1. *diffuses* every channel for its own learned time ``t_c ≥ 0`` with the heat
   equation, evaluated in a truncated Laplace–Beltrami eigenbasis
   (``x_d = Φ (e^{-λ t} ⊙ Φᵀ M x)``, Section 3.2) — the only global communication, and
   independent of the sampling because ``Φ``, ``λ`` and ``M`` converge under refinement;
2. computes *spatial gradient features* (Section 3.3): the tangent gradients
   ``g_c ∈ ℂ`` of every diffused channel, expressed in an arbitrary per-vertex
   tangent frame, a learned complex-linear map ``b = A g`` (a rotation and scaling in the
   tangent plane mixing channels), and ``tanh(Re(conj(g) ⊙ b))`` — a dot product, so
   independent of the frame choice, which makes the features invariant to rigid motions
   and sensitive to orientation (anisotropic filters);
3. applies a per-vertex MLP (``[3C → C → C → C]``, ReLU, dropout) to
   ``[x, x_d, gradient features]`` with a residual connection.

The gradient operator (their Appendix) is a per-vertex least-squares fit of a tangent
vector to the finite differences along the mesh edges of the one-ring (point clouds:
the kNN neighbours), with edge vectors projected onto the tangent plane of the vertex;
frames come from vertex normals (meshes) or local PCA (point clouds).

Where this code departs from the paper and its reference code:

* **Fused evaluation.** Both gradient components come from one sparse matmul with the
  stacked ``[2N, N]`` operator (transpose precomputed for the backward). For large
  stencils (point clouds: 30 neighbours) it is cheaper to use that the diffused features
  lie in the span of ``Φ``: their gradients are ``(GΦ) s``, so one dense matmul
  ``[Φ; G_xΦ; G_yΦ] s`` (``[3N, K] @ [K, C]``) gives the diffused values and both
  gradient components; :func:`spectral_operators` picks the cheaper form per shape.
  Both equal the paper's ``G (Φ s)`` up to float rounding; :func:`diffuse` and
  :func:`gradient` are the plain reference forms (tested against the network's paths).
  The complex map ``A = A_re + i A_im`` is applied as one real ``[2C, 2C]`` matmul on
  ``[g_x, g_y]``.
* **Operators come from** :mod:`geo.spectral` (cleaned input, cotangent or robust
  Laplacian, M-orthonormal bases on the *input* indexing). The gradient is built on the
  cleaned working vertices and carried to the input indexing (duplicates average their
  values, each copy gets its representative's gradient; unreferenced vertices get
  their nearest vertex's gradient and take no part in others').
* **Point-cloud normals are oriented** away from the centroid (the reference code
  leaves the PCA sign arbitrary). A flipped normal mirrors the tangent frame, which the
  learned rotation ``A`` is not invariant to; a rotation-equivariant choice keeps the
  network invariant to rigid motions of clouds too. Mesh normals are area-weighted
  face normals (the reference averages unit face normals).
* **Regularisation** of the 2×2 normal equations is relative (``1e-10 · tr``) rather
  than the reference's absolute ``1e-5``, so the operator is scale-equivariant and
  exact on linear functions; the fit is computed in float64.
* The learned diffusion times start at 0 (identity diffusion, as in the reference) and
  are projected onto ``t ≥ 0`` before every forward pass (projected gradient descent).
  Features are not scale-invariant (nor in the paper): normalise the shape's scale
  (e.g. unit area) before building the operators.
* No batching over shapes (one shape per call, ``x [N, C]``); outputs live on vertices.

Speed (CPU): the cost per block is about ``N·C·(18C + 4..8K)`` flops forward, three
times that with the backward, so ``width`` dominates. On CPUs with bfloat16 units
(AVX512-BF16 / AMX) wrap the calls in ``torch.autocast("cpu", dtype=torch.bfloat16)``:
~3x faster at ~0.5% relative output error (the sparse gradient stays in float32).
Dropout is active in ``train()`` mode; turn it off for per-shape optimisation.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "SpectralOperators",
    "spectral_operators",
    "diffuse",
    "gradient",
    "gradient_features",
    "DiffusionNet",
    "DiffusionNetBlock",
]


class SpectralOperators(NamedTuple):
    """Per-shape operators for :class:`DiffusionNet`, all on the input vertex indexing.

    Fields (torch, ``dtype`` of :func:`spectral_operators`, float32 by default):

    * ``vertices [N, 3]`` input positions;
    * ``mass [N]`` lumped area per vertex; ``evals [K]`` ascending; ``evecs [N, K]``
      with ``evecsᵀ diag(mass) evecs = I``;
    * ``grad_x``, ``grad_y``: sparse CSR ``[N, N]``; ``grad_x @ f`` is the component of
      the tangent gradient of ``f`` along ``frames[:, 0]``, ``grad_y`` along ``frames[:, 1]``;
    * ``frames [N, 3, 3]``: rows ``(X, Y, n)`` per vertex, right-handed (``Y = n × X``);
    * ``analysis [K, N] = evecsᵀ diag(mass)`` (coefficients of a function);
    * ``grad [2N, N]`` = ``[grad_x; grad_y]`` and ``grad_t [N, 2N]`` its transpose
      (sparse CSR; one fused sparse matmul, and its backward, per block);
    * ``synthesis [3N, K] = [evecs; grad_x evecs; grad_y evecs]`` or ``None``: values and
      tangent gradients of a spectral function in one dense matmul, built where that is
      cheaper than the sparse product (large stencils: point clouds).
    """

    vertices: torch.Tensor
    mass: torch.Tensor
    evals: torch.Tensor
    evecs: torch.Tensor
    grad_x: torch.Tensor
    grad_y: torch.Tensor
    frames: torch.Tensor
    analysis: torch.Tensor
    grad: torch.Tensor
    grad_t: torch.Tensor
    synthesis: torch.Tensor | None

    @property
    def n_vertices(self) -> int:
        return self.mass.shape[0]

    def to(self, device=None, dtype=None) -> "SpectralOperators":
        """Move (and optionally cast) every tensor."""
        return SpectralOperators(*(None if t is None else t.to(device=device, dtype=dtype) for t in self))


# -- geometry (numpy, float64) -----------------------------------------------------------


def _knn(points: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]`` indices of the ``k`` nearest other points."""
    from scipy.spatial import cKDTree

    k = min(k, len(points) - 1)
    _, idx = cKDTree(points).query(points, k=k + 1)
    return idx[:, 1:]


def _pca_normals(points: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
    """Smallest principal direction of each neighbourhood, oriented away from the centroid."""
    d = points[nbrs] - points[:, None, :]  # [n, k, 3]
    cov = np.einsum("nki,nkj->nij", d, d)
    _, vecs = np.linalg.eigh(cov)
    n = vecs[:, :, 0]
    # rotation-equivariant sign choice (see module docstring)
    s = np.sign(np.einsum("ni,ni->n", n, points - points.mean(axis=0)))
    return n * np.where(s == 0, 1.0, s)[:, None]


def _mesh_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (unnormalised sums of face cross products)."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    n = np.zeros_like(vertices)
    for c in range(3):
        n[:, c] = np.bincount(faces.ravel(), weights=np.repeat(fn[:, c], 3), minlength=len(vertices))
    return n


def _frames(normals: np.ndarray) -> np.ndarray:
    """``[n, 3, 3]`` rows ``(X, Y, n)``; X is a fixed axis projected onto the tangent plane."""
    n = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    ex, ey = np.eye(3)[0], np.eye(3)[1]
    cand = np.where((np.abs(n @ ex) < 0.9)[:, None], ex, ey)
    x = cand - n * np.einsum("ni,ni->n", cand, n)[:, None]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.stack([x, np.cross(n, x), n], axis=1)


def _gradient_matrix(vertices: np.ndarray, frames: np.ndarray, src: np.ndarray, dst: np.ndarray):
    """Least-squares tangent gradient (paper Appendix) as a scipy CSR ``[2n, n]``.

    For vertex ``i`` with neighbours ``j`` (edges ``src → dst``) and tangent edge
    coordinates ``u_ij = (X_i·e_ij, Y_i·e_ij)``, the gradient ``g_i`` minimises
    ``Σ_j (u_ij·g − (f_j − f_i))²``, i.e. ``g_i = Σ_j A_i⁻¹ u_ij (f_j − f_i)`` with
    ``A_i = Σ_j u_ij u_ijᵀ``. Rows ``[:n]`` give the X component, ``[n:]`` the Y component.
    """
    import scipy.sparse as sp

    n = len(vertices)
    e = vertices[dst] - vertices[src]
    u = np.stack([np.einsum("ei,ei->e", e, frames[src, 0]), np.einsum("ei,ei->e", e, frames[src, 1])], axis=1)
    axx = np.bincount(src, weights=u[:, 0] ** 2, minlength=n)
    axy = np.bincount(src, weights=u[:, 0] * u[:, 1], minlength=n)
    ayy = np.bincount(src, weights=u[:, 1] ** 2, minlength=n)
    reg = 1e-10 * (axx + ayy) + 1e-300
    axx, ayy = axx + reg, ayy + reg
    det = axx * ayy - axy**2
    # c_ij = A_i⁻¹ u_ij (closed-form 2×2 inverse)
    cx = (ayy[src] * u[:, 0] - axy[src] * u[:, 1]) / det[src]
    cy = (axx[src] * u[:, 1] - axy[src] * u[:, 0]) / det[src]
    diag_x = -np.bincount(src, weights=cx, minlength=n)
    diag_y = -np.bincount(src, weights=cy, minlength=n)
    ar = np.arange(n)
    rows = np.concatenate([src, ar, src + n, ar + n])
    cols = np.concatenate([dst, ar, dst, ar])
    vals = np.concatenate([cx, diag_x, cy, diag_y])
    return sp.csr_matrix((vals, (rows, cols)), shape=(2 * n, n))


def _to_torch_csr(m, dtype) -> torch.Tensor:
    import warnings

    m = m.tocsr()
    m.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data).to(dtype),
            size=m.shape,
            check_invariants=False,
        )


def spectral_operators(
    shape, k: int = 128, method: str | None = None, dtype: torch.dtype = torch.float32, n_neighbors: int = 30
) -> SpectralOperators:
    """Build the :class:`SpectralOperators` of a mesh or point cloud.

    Args:
        shape: anything :func:`geo.spectral.surface.as_spectral_shape` accepts (mesh, point
            cloud, ``[N, 3]`` array, Open3D geometry, scene node, ``SpectralShape``).
        k: number of eigenpairs ``K`` (``1 <= k < N`` distinct points).
        method: Laplacian, ``"cotan"`` or ``"robust"``; default ``"cotan"`` for meshes and
            ``"robust"`` for point clouds.
        dtype: dtype of the returned tensors (the operators are computed in float64).
        n_neighbors: point clouds only — neighbours for the PCA normals and the gradient fit.

    Returns:
        :class:`SpectralOperators` on the input indexing (``N`` input vertices).

    Raises:
        ValueError: bad geometry (see :mod:`geo.spectral.surface`), ``k`` out of range,
            ``"cotan"`` without faces, unknown method.
    """
    import scipy.sparse as sp

    from geo.spectral.surface import as_spectral_shape

    s = as_spectral_shape(shape)
    if method is None:
        method = "cotan" if s.is_mesh else "robust"
    if method not in ("cotan", "robust"):
        raise ValueError(f"method must be 'cotan' or 'robust', got {method!r}")
    evals, evecs, mass = s.eigen(k, method)

    v, f = s._work_vertices, s._work_faces
    nw = len(v)
    if f is not None:
        normals = _mesh_normals(v, f)
        und = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1), axis=0)
        src, dst = np.concatenate([und[:, 0], und[:, 1]]), np.concatenate([und[:, 1], und[:, 0]])
        flat = np.linalg.norm(normals, axis=1) <= 1e-12 * np.abs(normals).max()
        if flat.any():  # normals cancelled (non-manifold fans): fall back to PCA
            normals[flat] = _pca_normals(v, _knn(v, n_neighbors))[flat]
    else:
        nbrs = _knn(v, n_neighbors)
        normals = _pca_normals(v, nbrs)
        src, dst = np.repeat(np.arange(nw), nbrs.shape[1]), nbrs.ravel()
    frames_w = _frames(normals)
    g_work = _gradient_matrix(v, frames_w, src, dst)

    # carry to the input indexing: restrict (average copies) → grad → copy out
    to_work, share = s._to_work, s._mass_share
    n_in = len(to_work)
    restrict = sp.csr_matrix((share, (to_work, np.arange(n_in))), shape=(nw, n_in))
    rows = np.concatenate([to_work, to_work + nw])
    g_in = (g_work[rows] @ restrict).tocsr()
    gx, gy = g_in[:n_in], g_in[n_in:]
    # dense [Φ; GΦ] costs ~4NKC more flops than Φ s alone, the sparse product 2·nnz·C at a
    # much lower rate (~8x per flop measured on CPU): pick the cheaper one per shape
    dense = g_in.nnz / (2 * n_in) * 8 > evecs.shape[1]
    synthesis = np.concatenate([evecs, g_in @ evecs], axis=0) if dense else None

    t = lambda a: torch.as_tensor(np.array(a, order="C"), dtype=dtype)  # noqa: E731
    return SpectralOperators(
        vertices=t(s.vertices),
        mass=t(mass),
        evals=t(evals),
        evecs=t(evecs),
        grad_x=_to_torch_csr(gx, dtype),
        grad_y=_to_torch_csr(gy, dtype),
        frames=t(frames_w[to_work]),
        analysis=t((evecs * mass[:, None]).T),
        grad=_to_torch_csr(g_in, dtype),
        grad_t=_to_torch_csr(g_in.T, dtype),
        synthesis=None if synthesis is None else t(synthesis),
    )


# -- reference operations (plain forms of the maths; the network fuses them) --------------


def diffuse(x: torch.Tensor, ops: SpectralOperators, t: torch.Tensor | float) -> torch.Tensor:
    """Heat diffusion in the truncated eigenbasis, ``Φ (e^{-λ t} ⊙ Φᵀ M x)`` (paper Eq. 3).

    Args:
        x: ``[N, C]`` per-vertex values.
        t: diffusion time, scalar or per channel ``[C]`` (``>= 0``).

    Returns:
        ``[N, C]``.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    spec = ops.evecs.T @ (ops.mass[:, None] * x)
    return ops.evecs @ (torch.exp(-ops.evals[:, None] * t) * spec)


def gradient(x: torch.Tensor, ops: SpectralOperators) -> torch.Tensor:
    """Tangent gradients ``[N, C, 2]`` of ``x [N, C]`` in the frames ``ops.frames[:, :2]``."""
    return torch.stack([ops.grad_x @ x, ops.grad_y @ x], dim=-1)


def gradient_features(g: torch.Tensor, a_re: torch.Tensor, a_im: torch.Tensor | None = None) -> torch.Tensor:
    """``tanh(Re(conj(g) ⊙ (A g)))`` with ``A = a_re + i a_im`` acting on channels (paper Eq. 5).

    Args:
        g: ``[N, C, 2]`` tangent vectors (real, imaginary = X, Y components).
        a_re, a_im: ``[C, C]``; ``a_im=None`` is the real map (no learned rotation).

    Returns:
        ``[N, C]``, invariant to a rotation of each vertex's tangent frame.
    """
    gx, gy = g[..., 0], g[..., 1]
    bx, by = gx @ a_re.T, gy @ a_re.T
    if a_im is not None:
        bx, by = bx - gy @ a_im.T, by + gx @ a_im.T
    return torch.tanh(gx * bx + gy * by)


# -- network -------------------------------------------------------------------------------


class _Dropout(nn.Module):
    """Inverted dropout with the mask drawn by a uniform ``rand`` comparison.

    Same distribution as ``nn.Dropout``; torch's CPU kernel draws with ``bernoulli_``,
    which made dropout ~4x slower than this and a third of a bfloat16 training step.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        mask = (torch.rand(x.shape, device=x.device) < keep).to(x.dtype).mul_(1.0 / keep)
        return x * mask


class _SparseMatmul(torch.autograd.Function):
    """``G @ x`` for a constant sparse ``G`` whose transpose is precomputed for the backward.

    Runs in ``G``'s dtype even under autocast (sparse kernels have no bfloat16 path).
    """

    @staticmethod
    def forward(ctx, g, g_t, x):
        ctx.save_for_backward(g_t)
        ctx.x_dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            return (g @ x.to(g.dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (g_t,) = ctx.saved_tensors
        with torch.autocast(grad_out.device.type, enabled=False):
            return None, None, (g_t @ grad_out.to(g_t.dtype)).to(ctx.x_dtype)



class DiffusionNetBlock(nn.Module):
    """Diffusion, spatial gradient features and a residual per-vertex MLP (paper Fig. 2)."""

    def __init__(self, width: int, dropout: bool = True, with_gradient_features: bool = True,
                 with_gradient_rotations: bool = True):
        super().__init__()
        self.width = width
        self.with_gradient_features = with_gradient_features
        self.with_gradient_rotations = with_gradient_rotations
        self.diffusion_time = nn.Parameter(torch.zeros(width))
        c_mlp = 2 * width
        if with_gradient_features:
            self.a_re = nn.Parameter(torch.empty(width, width))
            self.a_im = nn.Parameter(torch.empty(width, width)) if with_gradient_rotations else None
            for a in (self.a_re, self.a_im):
                if a is not None:  # nn.Linear's default initialisation
                    nn.init.kaiming_uniform_(a, a=5**0.5)
            c_mlp += width
        layers: list[nn.Module] = []
        sizes = [c_mlp, width, width, width]
        for i in range(3):
            if dropout and i > 0:
                layers.append(_Dropout(0.5))
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < 2:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)

    def _rotation_matrix(self) -> torch.Tensor:
        """Real ``[2C, 2C]`` form of ``A`` acting on rows ``[g_x, g_y]`` → ``[b_x, b_y]``."""
        a_re_t = self.a_re.T
        if self.a_im is None:
            z = torch.zeros_like(a_re_t)
            return torch.cat([torch.cat([a_re_t, z], 1), torch.cat([z, a_re_t], 1)], 0)
        a_im_t = self.a_im.T
        return torch.cat([torch.cat([a_re_t, a_im_t], 1), torch.cat([-a_im_t, a_re_t], 1)], 0)

    def forward(self, x: torch.Tensor, ops: SpectralOperators) -> torch.Tensor:
        with torch.no_grad():  # projected gradient: keep the times non-negative
            self.diffusion_time.clamp_(min=1e-8)
        n, c = x.shape
        spec = torch.exp(-ops.evals[:, None] * self.diffusion_time) * (ops.analysis @ x)  # [K, C]
        if self.with_gradient_features:
            # unbind, not indexing: select's backward would zero-fill [3N, C] three times
            if ops.synthesis is not None:
                x_diff, gx, gy = (ops.synthesis @ spec).view(3, n, c).unbind(0)
            else:
                x_diff = ops.evecs @ spec
                gx, gy = _SparseMatmul.apply(ops.grad, ops.grad_t, x_diff).view(2, n, c).unbind(0)
            b = torch.cat([gx, gy], dim=1) @ self._rotation_matrix()  # [N, 2C] = [b_x | b_y]
            bx, by = b.split(c, dim=1)
            feats = torch.tanh(gx * bx + gy * by)
            h = torch.cat([x, x_diff, feats], dim=1)
        else:
            h = torch.cat([x, ops.evecs @ spec], dim=1)
        return x + self.mlp(h)


class DiffusionNet(nn.Module):
    """DiffusionNet (Sharp et al. 2022): per-vertex features ``[N, c_in] → [N, c_out]``.

    Args:
        c_in, c_out: input and output channels.
        width: channels inside the blocks (``C``).
        n_blocks: number of :class:`DiffusionNetBlock`.
        dropout: dropout (p = 0.5) inside the block MLPs, active in ``train()`` mode.
        with_gradient_features: use the spatial gradient features.
        with_gradient_rotations: learn a complex (rotation + scaling) map of the
            gradients; needs consistently oriented normals (meshes, or the
            centroid-oriented point-cloud normals of :func:`spectral_operators`).
        last_activation: optional callable applied to the output.

    Shape:
        ``forward(x [N, c_in], ops) -> [N, c_out]`` with ``ops`` from
        :func:`spectral_operators` of the same shape (same dtype and device as the net).

    Example:
        >>> net = DiffusionNet(16, 64, width=64)
        >>> y = net(torch.ones(ops.n_vertices, 16), ops)
    """

    def __init__(self, c_in: int, c_out: int, width: int = 128, n_blocks: int = 4, dropout: bool = True,
                 with_gradient_features: bool = True, with_gradient_rotations: bool = True,
                 last_activation: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.first = nn.Linear(c_in, width)
        self.blocks = nn.ModuleList(
            DiffusionNetBlock(width, dropout, with_gradient_features, with_gradient_rotations)
            for _ in range(n_blocks)
        )
        self.last = nn.Linear(width, c_out)
        self.last_activation = last_activation

    def forward(self, x: torch.Tensor, ops: SpectralOperators) -> torch.Tensor:
        if not isinstance(ops, SpectralOperators):
            raise ValueError(f"ops must be SpectralOperators (see spectral_operators()), got {type(ops).__name__}")
        if not torch.is_tensor(x) or x.ndim != 2 or x.shape[1] != self.c_in:
            raise ValueError(f"x must be a tensor [N, {self.c_in}], got {getattr(x, 'shape', type(x).__name__)}")
        if x.shape[0] != ops.n_vertices:
            raise ValueError(f"x has {x.shape[0]} rows but the operators have N = {ops.n_vertices} vertices")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or inf")
        w = self.first.weight
        if ops.evecs.dtype != w.dtype or ops.evecs.device != w.device:
            raise ValueError(
                f"ops are {ops.evecs.dtype} on {ops.evecs.device} but the network is {w.dtype} on "
                f"{w.device}: use ops.to(device, dtype)"
            )
        h = self.first(x.to(w.dtype))
        for block in self.blocks:
            h = block(h, ops)
        out = self.last(h)
        return out if self.last_activation is None else self.last_activation(out)
