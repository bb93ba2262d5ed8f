"""``geo.match``: dense correspondence between two shapes, in one call.

    >>> import geo
    >>> corr = geo.match("cactus.off", "cactus_deformed.off")            # DiffuMatch by default
    >>> corr.p2p_21[:5]                  # a source vertex for each target vertex
    >>> colors_on_target = corr.transfer(colors_on_source)
    >>> corr.save("map.npz"); geo.fmaps.Correspondence.load("map.npz")

Inputs may be trimesh meshes or point clouds, Open3D meshes or point clouds, ``[N, 3]``
arrays or tensors, file paths (any mesh trimesh reads; ``.pcd``/``.xyz``/``.pts`` through
Open3D) or scene-graph nodes whose payload is a mesh or point cloud. Source and target
may differ in vertex count, connectivity and kind (mesh against point cloud).

**Pose and scale.** Every quantity the methods use is intrinsic: Laplace–Beltrami
eigenbases (cotangent Laplacian for meshes, the robust Laplacian of Sharp & Crane 2020
for point clouds), WKS descriptors, and — for DiffuMatch — DiffusionNet features
computed from WKS input with rotation-invariant gradient features. None of them depends
on the global rotation or translation of either input, so no rigid pre-alignment is
needed (``tests/test_match.py`` rotates and translates a shape and checks the map is
unchanged). Scale is normalised by rescaling each spectrum to unit total area
(``Φ ← √A Φ``, ``λ ← A λ``, ``M ← M / A``), which is what the area-normalised
descriptors and the prior expect.

**Methods.**

* ``"fmap"`` — WKS descriptors, the row-wise least-squares solve with the resolvent
  Laplacian-commutativity mask (:func:`geo.fmaps.fit`) at size ``k``, then the point map.
* ``"zoomout"`` — the same initial map refined by ZoomOut to ``k_final``.
* ``"diffumatch"`` — DiffuMatch (Pierson et al., ICCV 2025; :mod:`geo.fmaps.diffumatch`):
  features of a DiffusionNet trained offline under the spectral diffusion prior (SDS
  term plus the "proper map" term; ``assets/fmaps/diffumatch_features.pt``), the
  distilled-mask solve, then ZoomOut to ``k_final``; the refined map and the refined
  WKS map are compared by an intrinsic energy and the lower one is kept.
  ``DiffuMatchConfig(mode="zero_shot")`` optimises a fresh network on the pair instead
  (the paper's zero-shot setting: no training shapes needed, about 8× slower).

**Cleaning.** :class:`geo.spectral.SpectralShape` merges duplicate vertices and drops
degenerate or duplicate faces, with a warning; non-manifold edges are warned about. A
mesh made of several connected components is matched on its largest component (by
area), with a warning; vertices of the other components take the map of their nearest
vertex on it (in 3D). Empty or NaN input and point clouds with fewer points than basis
functions raise ``ValueError``.

**Confidence.** Per target point, ``exp(−(d/σ)²)`` where ``d`` is the 3D distance (on the
unit-area target) between the point and its round trip ``p2p_12[p2p_21[y]]``; a point
whose map is bijective there scores 1. This is a cycle-consistency score, not a
calibrated probability.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .config import DiffuMatchConfig, MatchConfig

__all__ = ["MatchConfig", "Correspondence", "PreparedShape", "prepare_shape", "load_shape", "match"]

_POINT_SUFFIXES = {".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts"}


@dataclass
class PreparedShape:
    """One input after loading, cleaning and spectral preprocessing (numpy float64).

    ``vertices`` are the *working* vertices (largest component, unit area, centred);
    ``to_work [N_input]`` maps every input vertex to its working vertex and
    ``work_ids [n]`` gives the input index of each working vertex. ``basis [n, K]``
    is M-orthonormal on the unit-area shape, ``evals [K]`` ascending, ``mass [n]``;
    ``laplacian`` is the operator they come from (``"cotan"`` or ``"robust"``).
    """

    vertices: np.ndarray
    faces: np.ndarray | None
    basis: np.ndarray
    evals: np.ndarray
    mass: np.ndarray
    to_work: np.ndarray
    work_ids: np.ndarray
    n_input: int
    scale: float
    name: str = ""
    laplacian: str = ""

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None


@dataclass
class Correspondence:
    """A dense map between a source and a target shape (input vertex indexing).

    Attributes:
        p2p_21: ``[N_target]`` source vertex of each target vertex.
        p2p_12: ``[N_source]`` target vertex of each source vertex.
        fmap: ``C12 [k2, k1]`` functional map, source → target coefficients, in the
            unit-area eigenbases of the working shapes.
        confidence: ``[N_target]`` in ``[0, 1]`` (cycle consistency; module docstring).
        method: the method that produced it.
        info: timings and settings (JSON-serialisable).
    """

    p2p_21: np.ndarray
    p2p_12: np.ndarray
    fmap: np.ndarray
    confidence: np.ndarray
    method: str = ""
    info: dict = field(default_factory=dict)

    @property
    def n_source(self) -> int:
        return len(self.p2p_12)

    @property
    def n_target(self) -> int:
        return len(self.p2p_21)

    def transfer(self, values, to: Literal["target", "source"] = "target") -> np.ndarray:
        """Move per-vertex data (colours, labels, any ``[N, ...]`` array) across the map.

        ``to="target"`` takes values on the source (``[N_source, ...]``) to the target by
        pull-back through ``p2p_21``; ``to="source"`` goes the other way through ``p2p_12``.
        """
        v = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
        if to == "target":
            n, idx = self.n_source, self.p2p_21
        elif to == "source":
            n, idx = self.n_target, self.p2p_12
        else:
            raise ValueError(f"to must be 'target' or 'source', got {to!r}")
        if v.ndim == 0 or v.shape[0] != n:
            side = "source" if to == "target" else "target"
            raise ValueError(f"values must have one row per {side} vertex ({n}), got shape {v.shape}")
        return v[idx]

    def save(self, path: str | os.PathLike) -> Path:
        """Write a ``.npz`` (atomically). ``.txt`` writes only ``p2p_21``, one index per line."""
        from geo.fileio import atomic_write, atomic_write_bytes

        path = Path(path)
        if path.suffix == ".txt":
            lines = [f"# geo correspondence: source vertex (0-based) of each of the {self.n_target} target vertices"]
            lines += [str(int(i)) for i in self.p2p_21]
            return atomic_write_bytes(path, "\n".join(lines) + "\n")
        if path.suffix != ".npz":
            raise ValueError(f"{path}: a correspondence is saved as .npz (or .txt for the target→source indices)")
        meta = json.dumps({"format": "geo-correspondence", "version": 1, "method": self.method, "info": self.info})
        arrays = dict(p2p_21=self.p2p_21, p2p_12=self.p2p_12, fmap=self.fmap, confidence=self.confidence)
        return atomic_write(path, lambda t: np.savez(t, meta=np.array(meta), **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Correspondence":
        """Read a file written by :meth:`save` (``.npz``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such correspondence file")
        try:
            z = np.load(path, allow_pickle=False)
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in ("p2p_21", "p2p_12", "fmap", "confidence")}
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{path}: not a geo correspondence file (.npz with p2p_21, p2p_12, fmap, confidence, meta): {e}") from e
        if meta.get("format") != "geo-correspondence":
            raise ValueError(f"{path}: field 'meta.format' is {meta.get('format')!r}, expected 'geo-correspondence'")
        if arrays["confidence"].shape != arrays["p2p_21"].shape:
            raise ValueError(f"{path}: 'confidence' {arrays['confidence'].shape} must match 'p2p_21' {arrays['p2p_21'].shape}")
        return cls(**arrays, method=meta.get("method", ""), info=meta.get("info", {}))


# ------------------------------------------------------------------------------------
# Loading and preprocessing
# ------------------------------------------------------------------------------------
def load_shape(shape, name: str = "shape"):
    """``(vertices [N, 3] float64, faces [F, 3] | None, label)`` from any supported input."""
    from geo.spectral.surface import _as_arrays

    label = name
    if isinstance(shape, (str, os.PathLike)):
        path = Path(shape)
        label = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file ({name})")
        if path.suffix.lower() in _POINT_SUFFIXES:
            import open3d as o3d

            pcd = o3d.io.read_point_cloud(str(path))
            v, f = np.asarray(pcd.points, dtype=np.float64), None
        else:
            import trimesh

            try:
                obj = trimesh.load(path, process=False, force=None)
            except Exception as e:  # trimesh raises many types for unreadable files
                raise ValueError(f"{path}: cannot read a mesh or point cloud ({e})") from e
            if isinstance(obj, trimesh.Scene):
                geoms = list(obj.dump(concatenate=False)) if hasattr(obj, "dump") else list(obj.geometry.values())
                if not geoms:
                    raise ValueError(f"{path}: the file holds no geometry")
                obj = trimesh.util.concatenate(geoms) if len(geoms) > 1 else geoms[0]
            v, f = _as_arrays(obj)
    else:
        v, f = _as_arrays(shape)
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or v.shape[-1] != 3:
        raise ValueError(f"{label}: expected [N, 3] points, a mesh, a point cloud, a file path or a scene node; got shape {v.shape}")
    if len(v) == 0:
        raise ValueError(f"{label}: the shape is empty (0 points)")
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        raise ValueError(f"{label}: {int(bad.sum())} of {len(v)} points have NaN or inf coordinates")
    if f is not None and len(f) == 0:
        f = None
    return v, f, label


def _largest_component(v: np.ndarray, f: np.ndarray, label: str):
    """Keep the largest (by area) face-connected component; returns ``(keep_ids, faces)``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(v)
    used = np.zeros(n, dtype=bool)
    used[f.ravel()] = True
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    A = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    n_comp, lab = connected_components(A, directed=False)
    comp_of_face = lab[f[:, 0]]
    face_ids = np.unique(comp_of_face)
    if len(face_ids) == 1 and used.all():
        return None
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    per = np.bincount(comp_of_face, weights=area, minlength=n_comp)
    best = int(np.argmax(per))
    keep = np.flatnonzero(lab == best)
    if len(face_ids) > 1:
        warnings.warn(
            f"{label}: {len(face_ids)} connected components; matching the largest ({len(keep)} of {n} vertices, "
            f"{per[best] / per.sum():.0%} of the area), the others follow their nearest vertex on it",
            UserWarning,
            stacklevel=4,
        )
    remap = -np.ones(n, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    faces = remap[f[comp_of_face == best]]
    return keep, faces


def prepare_shape(shape, k: int, laplacian: str = "auto", name: str = "shape", as_cloud: bool = False) -> PreparedShape:
    """Load, clean, normalise and compute the first ``k`` unit-area eigenpairs of ``shape``
    (``as_cloud``: ignore faces and treat the vertices as a point cloud)."""
    v, f, label = load_shape(shape, name)
    return _prepare(v, None if as_cloud else f, label, k, laplacian)


def _prepare(v, f, label: str, k: int, laplacian: str) -> PreparedShape:
    from scipy.spatial import cKDTree

    import geo.spectral as gs
    from geo.spectral.surface import SpectralShape

    n_input = len(v)
    to_work = np.arange(n_input)
    work_ids = np.arange(n_input)
    if f is not None:
        if f.ndim != 2 or f.shape[1] != 3 or (len(f) and (f.min() < 0 or f.max() >= n_input)):
            raise ValueError(f"{label}: faces must be an [F, 3] array of vertex indices in [0, {n_input})")
        comp = _largest_component(v, f, label)
        if comp is not None:
            keep, f = comp
            _, nn = cKDTree(v[keep]).query(v)
            to_work = nn.astype(np.int64)
            to_work[keep] = np.arange(len(keep))
            v, work_ids = v[keep], keep
    method = laplacian if laplacian != "auto" else ("cotan" if f is not None else "robust")
    if method == "cotan" and f is None:
        raise ValueError(f"{label}: laplacian='cotan' needs a triangle mesh; this input is a point cloud")
    with warnings.catch_warnings(record=True) as caught:  # re-raised below with the input's name
        warnings.simplefilter("always")
        spec = SpectralShape(v, f)  # merges duplicates, drops degenerate faces
        if spec.n_work <= k:
            kind = "mesh" if f is not None else "point cloud"
            raise ValueError(f"{label}: the {kind} has {spec.n_work} distinct points, but k={k} basis functions need more than {k}")
        basis, evals, mass = gs.eigenbasis(spec, k, method=method)
    for w in caught:
        if f is not None and "component" in str(w.message):
            continue  # a mesh's components were handled (and warned about) above
        warnings.warn(f"{label}: {w.message}", w.category, stacklevel=3)
    area = float(mass.sum())
    center = (mass[:, None] * v).sum(0) / area
    s = 1.0 / np.sqrt(area)
    return PreparedShape(
        vertices=(v - center) * s,
        faces=f,
        basis=basis * np.sqrt(area),
        evals=evals * area,
        mass=mass / area,
        to_work=to_work,
        work_ids=work_ids,
        n_input=n_input,
        scale=s,
        name=label,
        laplacian=method,
    )


# ------------------------------------------------------------------------------------
# Matching
# ------------------------------------------------------------------------------------
def _wks(shape: PreparedShape, n: int, k: int) -> np.ndarray:
    from .solver import spectral_descriptors

    return spectral_descriptors(shape.basis, shape.evals, shape.mass, "wks", n, k)


def _spectrum(shape: PreparedShape, n_desc: int, k: int):
    from .solver import ShapeSpectrum, as_tensor

    return ShapeSpectrum(as_tensor(shape.basis), as_tensor(shape.evals), as_tensor(shape.mass), as_tensor(_wks(shape, n_desc, k)))


def match(source, target, method: str | None = None, config: MatchConfig | None = None, **overrides) -> Correspondence:
    """Dense correspondence from ``source`` to ``target``.

    Args:
        source, target: meshes, point clouds, ``[N, 3]`` arrays, file paths or scene nodes
            (module docstring).
        method: ``"diffumatch"`` (default), ``"zoomout"`` or ``"fmap"``; overrides
            ``config.method``.
        config: :class:`MatchConfig`; keyword ``overrides`` replace its fields
            (``geo.match(a, b, k_final=60)``).

    Returns:
        :class:`Correspondence` on the input indexing of both shapes.

    Raises:
        ValueError: empty or NaN input, a point cloud with too few points, an unknown method.
    """
    from .convert import fmap_to_p2p
    from .refine import zoomout
    from .solver import as_tensor, fit

    cfg = config if config is not None else MatchConfig()
    if overrides:
        unknown = set(overrides) - set(asdict(cfg))
        if unknown:
            raise TypeError(f"unknown MatchConfig fields {sorted(unknown)}")
        cfg = MatchConfig(**{**{k: getattr(cfg, k) for k in asdict(cfg)}, **overrides})
    method = method or cfg.method
    if method not in ("diffumatch", "zoomout", "fmap"):
        raise ValueError(f"method must be 'diffumatch', 'zoomout' or 'fmap', got {method!r}")
    if not 2 <= cfg.k <= cfg.k_final:
        raise ValueError(f"need 2 <= k <= k_final, got k={cfg.k}, k_final={cfg.k_final}")

    t0 = time.perf_counter()
    k_basis = max(cfg.k_final, cfg.diffumatch.k_operators if method == "diffumatch" else 0, cfg.k)
    loaded = [load_shape(source, "source"), load_shape(target, "target")]
    lap = cfg.laplacian
    as_cloud = False
    if lap == "auto":
        # cotangent when both are meshes; when one side is a point cloud, both sides use
        # the point-cloud robust Laplacian, so that the two spectra come from the same
        # discretisation (the mesh's faces are then ignored; measured on the cactus pair:
        # 0.003 geodesic error against 0.086 with the robust *mesh* Laplacian on one side)
        lap, as_cloud = ("cotan", False) if all(x[1] is not None for x in loaded) else ("robust", True)
    src, tgt = (_prepare(v, None if as_cloud else f, label, k_basis, lap) for v, f, label in loaded)
    t_pre = time.perf_counter() - t0

    torch.manual_seed(cfg.seed)
    b1, b2, m2 = as_tensor(src.basis), as_tensor(tgt.basis), as_tensor(tgt.mass)
    info: dict = {"n_source": src.n_input, "n_target": tgt.n_input, "k": cfg.k, "k_final": cfg.k_final}
    wks_map = lambda: fit(  # noqa: E731
        _spectrum(src, cfg.n_descriptors, k_basis), _spectrum(tgt, cfg.n_descriptors, k_basis), k=cfg.k, mask_weight=cfg.mask_weight
    )
    if method == "diffumatch":
        from .diffumatch.matching import diffumatch_fmap, map_energy

        res = diffumatch_fmap(src, tgt, cfg.k, cfg.diffumatch, seed=cfg.seed)
        info["diffumatch"] = res.info
        candidates = {f"diffumatch{i}": as_tensor(C) for i, C in enumerate(res.fmaps)}
        if cfg.diffumatch.second_start:
            candidates["wks"] = wks_map()
        m1 = as_tensor(src.mass)
        energies, refined = {}, {}
        # each candidate is refined part of the way (to k_select) and judged there; only
        # the winner continues to k_final
        k_sel = min(cfg.k_final, max(cfg.k, cfg.diffumatch.k_select))
        for name, C0 in candidates.items():
            refined[name] = zoomout(C0, b1, b2, k_final=k_sel, step=cfg.zoomout_step, mass2=m2, return_p2p=True)
            energies[name] = map_energy(*refined[name], b1, b2, m1, m2, res.orient_ops, cfg.k)
        chosen = min(energies, key=energies.get)
        C, p2p = refined[chosen]
        if cfg.k_final > k_sel:
            C, p2p = zoomout(C, b1, b2, k_final=cfg.k_final, step=cfg.zoomout_step, mass2=m2, return_p2p=True)
        info["diffumatch"].update(energies={k: round(v, 4) for k, v in energies.items()}, chosen=chosen)
    elif method == "zoomout" and cfg.k_final > cfg.k:
        C, p2p = zoomout(wks_map(), b1, b2, k_final=cfg.k_final, step=cfg.zoomout_step, mass2=m2, return_p2p=True)
    else:
        C = wks_map()
        p2p = fmap_to_p2p(C, b1, b2)
    p2p_21 = p2p.numpy()
    # near-isometric maps have orthogonal C, so the adjoint C12ᵀ maps target → source coefficients
    p2p_12 = fmap_to_p2p(C.transpose(0, 1), b2, b1).numpy()

    # round trip on the target, in unit-area 3D coordinates
    d = np.linalg.norm(tgt.vertices[p2p_12[p2p_21]] - tgt.vertices, axis=1)
    conf_work = np.exp(-((d / cfg.confidence_sigma) ** 2))
    info.update(seconds_preprocess=round(t_pre, 3), seconds=round(time.perf_counter() - t0, 3))
    return Correspondence(
        p2p_21=_to_input_map(p2p_21, tgt, src),
        p2p_12=_to_input_map(p2p_12, src, tgt),
        fmap=C.numpy(),
        confidence=conf_work[tgt.to_work],
        method=method,
        info=info,
    )


def _to_input_map(p2p_work: np.ndarray, query: PreparedShape, image: PreparedShape) -> np.ndarray:
    """A working-index map ``query → image`` on the input indexing of both shapes.

    Each input vertex of ``query`` takes the map of its working vertex; a working image
    index is sent to the input vertex it came from.
    """
    return image.work_ids[p2p_work[query.to_work]]
