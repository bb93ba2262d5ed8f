"""Benchmark: learned eigenbasis vs cotangent eigenvectors on held-out shapes, and
learned inference vs robust Laplacian + eigsh at 50k points.

Held-out shapes: the cactus family of the shared data (never used in training, see
``geo.spectral.shapes``): ``cactus.off`` and ``cactus_deformed_remeshed.off``. The
learned basis is computed from the mesh *vertices only* (a point cloud); the reference
is the cotangent eigenbasis of the mesh.

Metrics (indices 2..k, the constant eigenvector is exact by construction and excluded):

* ``cos_k10`` / ``cos_k30`` — mean |cosine| of matched eigenvectors in the cotangent
  mass inner product. Sign and eigenspace ambiguity: the cotangent spectrum is split
  into near-degenerate groups (consecutive relative gap < ``--group-tol``) and within a
  group the cosines are the principal cosines between the two subspaces (singular
  values of ``Φ_Gᵀ M V_G``), i.e. the best rotation inside the group.
* ``eig_rel_err`` — mean ``|λ_learned - λ_cotan| / λ_cotan`` over indices 2..30.
* The headline figures use the default inference (network span + Rayleigh–Ritz inside
  it, see ``geo.spectral``); ``raw_*`` are the network's own column order
  (``rayleigh_ritz=False``), ``robust_*`` the robust Laplacian on the same vertices.
* ``speedup_vs_eigsh`` — wall time of robust Laplacian + shift-invert eigsh (k=30) over
  the learned inference (kNN, network, QR, mass, eigenvalues) on a 50k-point cloud
  sampled from the held-out cactus (medians over the repetitions, the two timed
  alternately). Both sides get ``--threads`` threads: torch (and the learned path's
  kd-tree queries) via ``torch.set_num_threads``, numpy/scipy's BLAS and OpenMP via
  ``OMP/OPENBLAS/MKL_NUM_THREADS`` set before numpy is imported.

    python tools/bench/spectral.py --quick      # < 2 min
    python tools/bench/spectral.py --plot docs/spectral_eigenfunctions.png

Last line: JSON with ``cos_k10``, ``cos_k30``, ``eig_rel_err``, ``speedup_vs_eigsh``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _pin_blas_threads(argv) -> str:
    """Give numpy/scipy's BLAS (and OpenMP) the same thread count as torch (``--threads``,
    default 2), so both sides of ``speedup_vs_eigsh`` run on the same number of threads.
    BLAS reads these variables once, when it is loaded: this must run before numpy is
    imported (it is, when the script is run directly)."""
    n = "2"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    for v in _THREAD_VARS:
        os.environ[v] = n
    return n


if __name__ == "__main__":
    _pin_blas_threads(sys.argv[1:])

import numpy as np  # noqa: E402


def groups_from_eigenvalues(evals: np.ndarray, tol: float) -> list[np.ndarray]:
    """Consecutive index groups whose eigenvalues differ by a relative gap < ``tol``."""
    groups, cur = [], [0]
    for i in range(1, len(evals)):
        gap = (evals[i] - evals[i - 1]) / max(abs(evals[i]), 1e-12)
        if gap < tol:
            cur.append(i)
        else:
            groups.append(np.array(cur))
            cur = [i]
    groups.append(np.array(cur))
    return groups


def m_orthonormalize(V: np.ndarray, m: np.ndarray) -> np.ndarray:
    G = V.T @ (m[:, None] * V)
    return np.linalg.solve(np.linalg.cholesky(G + 1e-12 * np.eye(len(G))), V.T).T


def matched_cosines(phi: np.ndarray, evals: np.ndarray, V: np.ndarray, m: np.ndarray, tol: float) -> np.ndarray:
    """Per-index |cos| between reference ``phi`` and ``V`` (both ``[N, K]``), group-aware."""
    Vo = m_orthonormalize(V, m)
    cos = np.zeros(phi.shape[1])
    for g in groups_from_eigenvalues(evals, tol):
        A = phi[:, g].T @ (m[:, None] * Vo[:, g])
        cos[g] = np.sort(np.linalg.svd(A, compute_uv=False))[::-1]
    return np.clip(cos, 0, 1)


def align_to_reference(phi, evals, V, m, tol):
    """Rotate/sign-flip V inside each group to best match phi (for plotting)."""
    Vo = m_orthonormalize(V, m)
    out = Vo.copy()
    for g in groups_from_eigenvalues(evals, tol):
        U, _, Wt = np.linalg.svd(Vo[:, g].T @ (m[:, None] * phi[:, g]))
        out[:, g] = Vo[:, g] @ (U @ Wt)
    return out


def evaluate_heldout(data: Path, K: int, tol: float, model=None):
    import trimesh

    import geo.spectral as gs
    from geo.spectral.shapes import HELDOUT_MESHES

    rows = []
    for rel in HELDOUT_MESHES:
        mesh = trimesh.load(str(data / rel), force="mesh", process=True)
        phi, w, m = gs.eigenbasis(mesh, K, method="cotan")
        res = {"shape": rel, "n": len(mesh.vertices)}
        for method in ("learned", "learned_raw", "robust"):
            t = time.time()
            kw = {"model": model} if (method != "robust" and model is not None) else {}
            if method == "learned_raw":
                kw["rayleigh_ritz"] = False
            V, wl, _ = gs.eigenbasis(np.asarray(mesh.vertices), K, method=method.split("_")[0], **kw)
            dt = time.time() - t
            cos = matched_cosines(phi, w, V, m, tol)
            rel_err = np.abs(wl[1:] - w[1:]) / w[1:]
            res[method] = {
                "cos_k10": float(cos[1:10].mean()),
                "cos_k30": float(cos[1:K].mean()),
                "eig_rel_err": float(rel_err.mean()),
                "eig_rel_err_k10": float(rel_err[:9].mean()),
                "time_s": round(dt, 3),
            }
        rows.append(res)
        print(json.dumps(res), flush=True)
    return rows


def time_50k(data: Path, n: int, K: int, reps: int, model=None):
    import trimesh

    from geo.spectral.eigen import generalized_eigsh
    from geo.spectral.laplacian import robust_laplacian
    from geo.spectral.learned import learned_eigenbasis_points

    mesh = trimesh.load(str(data / "cactus/cactus.off"), force="mesh")
    pts = np.asarray(trimesh.sample.sample_surface(mesh, n, seed=0)[0])
    learned_eigenbasis_points(pts[:2000], K, model=model)  # warm-up (model load, allocations)
    tl, tr = [], []
    for _ in range(reps):
        t = time.time()
        learned_eigenbasis_points(pts, K, model=model)
        tl.append(time.time() - t)
        t = time.time()
        L, M = robust_laplacian(pts)
        generalized_eigsh(L, M, K)
        tr.append(time.time() - t)
    return float(np.median(tl)), float(np.median(tr))


def colormap(v: np.ndarray) -> np.ndarray:
    """Diverging blue–white–red for values in [-1, 1] → uint8 [N, 3]."""
    v = np.clip(v, -1, 1)[:, None]
    blue, white, red = np.array([40, 80, 200]), np.array([245, 245, 245]), np.array([200, 40, 40])
    c = np.where(v < 0, white + (blue - white) * (-v), white + (red - white) * v)
    return c.astype(np.uint8)


def render_points(points, values, size=220, radius=2, view=(15.0, -30.0)):
    """Orthographic point splatting with a painter's algorithm (PIL only)."""
    from PIL import Image, ImageDraw

    el, az = np.deg2rad(view[0]), np.deg2rad(view[1])
    Rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, np.cos(el), -np.sin(el)], [0, np.sin(el), np.cos(el)]])
    p = (points - points.mean(0)) @ (Rx @ Rz).T
    s = 0.45 * size / np.abs(p[:, [0, 2]]).max()
    u = size / 2 + s * p[:, 0]
    v = size / 2 - s * p[:, 2]
    order = np.argsort(-p[:, 1])  # far (large depth) first
    col = colormap(values / max(np.abs(values).max(), 1e-12))
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for i in order:
        d.ellipse([u[i] - radius, v[i] - radius, u[i] + radius, v[i] + radius], fill=tuple(int(c) for c in col[i]))
    return img


def plot(data: Path, out: Path, tol: float, model=None, n_funcs: int = 6):
    import trimesh
    from PIL import Image, ImageDraw

    import geo.spectral as gs

    mesh = trimesh.load(str(data / "cactus/cactus.off"), force="mesh", process=True)
    K = n_funcs + 1
    phi, w, m = gs.eigenbasis(mesh, 30, method="cotan")
    kw = {"model": model} if model is not None else {}
    V, _, _ = gs.eigenbasis(np.asarray(mesh.vertices), 30, method="learned", **kw)
    Va = align_to_reference(phi, w, V, m, tol)
    from geo.spectral.learned import canonicalize

    x = canonicalize(np.asarray(mesh.vertices))[0]
    pts = x[:, [1, 2, 0]]  # longest principal axis vertical
    size, pad, top = 220, 4, 22
    img = Image.new("RGB", (n_funcs * (size + pad) + 90, 2 * (size + pad) + top + 16), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for r, (name, B) in enumerate((("cotan", phi), ("learned", Va))):
        d.text((5, top + r * (size + pad) + size // 2), name, fill=(0, 0, 0))
        for c in range(n_funcs):
            tile = render_points(pts, B[:, c + 1], size=size)
            img.paste(tile, (90 + c * (size + pad), top + r * (size + pad)))
            if r == 0:
                d.text((90 + c * (size + pad) + size // 2 - 10, 5), f"phi_{c + 2}", fill=(0, 0, 0))
    d.text(
        (5, 2 * (size + pad) + top),
        "held-out cactus.off (never trained on): cotangent eigenfunctions of the mesh (top) vs the learned basis "
        "from its 1,856 vertices as a point cloud (bottom; aligned by sign / rotation inside near-degenerate groups)",
        fill=(0, 0, 0),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    print(f"wrote {out}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one timing repetition (< 2 min)")
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data)")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--points", type=int, default=50000)
    p.add_argument("--group-tol", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--plot", type=Path, default=None, help="write the eigenfunction figure (PNG)")
    a = p.parse_args(argv)

    import torch

    from geo.spectral.learned import load_checkpoint
    from geo.spectral.shapes import DEFAULT_DATA

    torch.set_num_threads(a.threads)  # torch ops and the learned path's kd-tree queries
    if any(os.environ.get(v) != str(a.threads) for v in _THREAD_VARS):
        print(
            f"warning: BLAS thread variables are not pinned to --threads={a.threads} "
            "(numpy was imported first); speedup_vs_eigsh may compare different thread counts",
            file=sys.stderr,
        )
    data = a.data or DEFAULT_DATA
    t0 = time.time()
    model = load_checkpoint(a.checkpoint)
    rows = evaluate_heldout(data, a.k, a.group_tol, model)
    tl, tr = time_50k(data, a.points, a.k, 1 if a.quick else 3, model)
    print(json.dumps({"t_learned_s": round(tl, 3), "t_robust_eigsh_s": round(tr, 3), "points": a.points}), flush=True)
    if a.plot:
        plot(data, a.plot, a.group_tol, model)
    mean = lambda key, meth="learned": float(np.mean([r[meth][key] for r in rows]))  # noqa: E731
    out = {
        "cos_k10": round(mean("cos_k10"), 4),
        "cos_k30": round(mean("cos_k30"), 4),
        "eig_rel_err": round(mean("eig_rel_err"), 4),
        "speedup_vs_eigsh": round(tr / tl, 2),
        "eig_rel_err_k10": round(mean("eig_rel_err_k10"), 4),
        "raw_cos_k10": round(mean("cos_k10", "learned_raw"), 4),
        "raw_cos_k30": round(mean("cos_k30", "learned_raw"), 4),
        "raw_eig_rel_err": round(mean("eig_rel_err", "learned_raw"), 4),
        "robust_cos_k10": round(mean("cos_k10", "robust"), 4),
        "robust_cos_k30": round(mean("cos_k30", "robust"), 4),
        "t_learned_s": round(tl, 3),
        "t_robust_eigsh_s": round(tr, 3),
        "threads": a.threads,
        "heldout": "cactus",
        "wall_s": round(time.time() - t0, 1),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
