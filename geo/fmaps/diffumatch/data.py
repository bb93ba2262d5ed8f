"""Training maps for the DiffuMatch prior: shape pairs with known correspondence,
projected into their eigenbases.

The paper trains its prior on functional maps between DFAUST / SURREAL humans and a
template (same connectivity, ground truth = identity). We have no such collection, so
we build one from what the project may use:

* **base shapes**: the Stanford bunny of the shared data (simplified by quadric
  decimation to about 4k vertices, largest component) and the primitives of
  :func:`geo.spectral.shapes.primitives`, refined to a few thousand vertices;
* **near-isometric deformations**: articulated bends (a part of the shape rotates about
  an axis, with a smooth sigmoid blend along the bending direction,
  :func:`articulated_bend`) followed by the smooth RBF field of
  :func:`geo.spectral.shapes.smooth_deformation`;
* **remeshed variants** (:func:`remesh`): midpoint subdivision then quadric decimation to
  a random vertex count, so connectivity and sampling differ; the ground truth is then
  the nearest point on the (deformed) other surface, rounded to the corner with the
  largest barycentric weight (:func:`closest_vertex_on_surface`).

Held out entirely: **Spot** (``assets/spot``) and the **cactus** (``assets/cactus``) —
the matching benchmark's test shapes. They are never read here unless passed to
:func:`make_pair` explicitly.

The prior's samples are ``|C12| [k, k]`` with ``C12 = Φ2ᵀ M2 Φ1[p2p_21]``
(:func:`ground_truth_fmap`, the convention of :mod:`geo.fmaps`); the absolute value
removes the sign ambiguity of each eigenfunction, as in the paper.

Cheap group construction (:func:`build_dataset`): for each base shape we make ``M``
variants (deformed, some remeshed), each with a point map to and from the base, and use
every ordered pair of variants — ``M (M - 1)`` maps for ``M`` eigendecompositions.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
HELDOUT = ("spot", "cactus")


# ----------------------------------------------------------------------------------
# base shapes
# ----------------------------------------------------------------------------------
def _o3d_mesh(v, f):
    import open3d as o3d

    return o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(v, np.float64)), o3d.utility.Vector3iVector(np.asarray(f, np.int32)))


def _clean_largest_component(m) -> tuple[np.ndarray, np.ndarray]:
    """Open3D mesh -> ``(v, f)`` with duplicates / degenerate faces removed, largest component only."""
    m.remove_duplicated_vertices()
    m.remove_degenerate_triangles()
    m.remove_duplicated_triangles()
    m.remove_unreferenced_vertices()
    tri_cluster, counts, _ = m.cluster_connected_triangles()
    tri_cluster, counts = np.asarray(tri_cluster), np.asarray(counts)
    if len(counts) > 1:
        m.remove_triangles_by_mask(tri_cluster != int(np.argmax(counts)))
        m.remove_unreferenced_vertices()
    return np.asarray(m.vertices, np.float64).copy(), np.asarray(m.triangles, np.int64).copy()


def normalize_shape(v: np.ndarray) -> np.ndarray:
    """Centre at the mean and scale to unit RMS radius (the fmap is scale-invariant up to
    the eigenvalue scale; this only keeps deformation magnitudes comparable)."""
    v = np.asarray(v, np.float64)
    v = v - v.mean(0)
    return v / np.sqrt((v**2).sum(1).mean())


def bunny(data_dir=None, n_faces: int = 8000) -> tuple[np.ndarray, np.ndarray]:
    """The shared-data Stanford bunny decimated to ``n_faces`` triangles (about
    ``n_faces / 2`` vertices), largest component, unit RMS radius."""
    import trimesh

    path = Path(data_dir or DEFAULT_DATA) / "bunny" / "stanford-bunny.obj"
    if not path.exists():
        raise FileNotFoundError(f"bunny mesh not found at {path}")
    m = trimesh.load(str(path), force="mesh", process=True)
    o = _o3d_mesh(m.vertices, m.faces).simplify_quadric_decimation(int(n_faces))
    v, f = _clean_largest_component(o)
    return normalize_shape(v), f


def refine(v, f, target_vertices: int = 2500) -> tuple[np.ndarray, np.ndarray]:
    """Split edges (trimesh ``subdivide_to_size``) until the mesh has roughly
    ``target_vertices`` vertices; coarse primitives (box: 8 vertices) need this."""
    import trimesh

    v, f = np.asarray(v, np.float64), np.asarray(f, np.int64)
    if len(v) >= 0.6 * target_vertices:
        return v, f
    area = trimesh.Trimesh(v, f, process=False).area
    edge = 2.0 * np.sqrt(4 * area / (np.sqrt(3) * 2 * target_vertices))  # equilateral: F ≈ 2V
    for _ in range(12):  # shrink the edge bound until dense enough (long thin faces split more)
        v2, f2 = trimesh.remesh.subdivide_to_size(v, f, max_edge=edge, max_iter=30)
        m = trimesh.Trimesh(v2, f2, process=True)  # merge the split edges' duplicate midpoints
        if len(m.vertices) >= 0.6 * target_vertices:
            break
        edge *= 0.85
    return np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64)


def base_shapes(rng: np.random.Generator, data_dir=None, primitive_vertices: int = 2500, bunny_faces: int = 6000):
    """Yield ``(name, v, f)`` base shapes forever: the bunny and refined primitives
    (fresh random proportions on each cycle), all at unit RMS radius."""
    from geo.spectral.shapes import primitives

    names = ("sphere", "box", "capsule", "cylinder", "cone", "torus", "ellipsoid", "blob")
    b = None
    try:
        b = bunny(data_dir, bunny_faces)
    except FileNotFoundError:
        pass
    while True:
        prims = primitives(rng)
        order = rng.permutation(len(prims))
        for i in order:
            v, f = refine(prims[i].vertices, prims[i].faces, primitive_vertices)
            yield names[i], normalize_shape(v), f
        if b is not None:  # the one real mesh: as often as two primitives
            yield "bunny", b[0], b[1]
            yield "bunny", b[0], b[1]


# ----------------------------------------------------------------------------------
# deformations
# ----------------------------------------------------------------------------------
def _rotation(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: ``[..., 3, 3]`` rotations about the unit ``axis`` by ``angle [...]``."""
    a = axis / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def articulated_bend(v: np.ndarray, rng: np.random.Generator, max_angle: float = np.pi / 3) -> np.ndarray:
    """Bend the part of the shape beyond a random cut plane about an axis in that plane.

    The bending direction ``d`` is a random principal axis (or a random direction), the
    cut ``c`` a random quantile of ``s = (v - mean)·d``; each vertex rotates about the
    axis ``a ⟂ d`` through the cut point by ``θ · w(s)`` with the smooth blend
    ``w = sigmoid((s - c) / width)``, ``width`` a few percent of the extent — a joint.
    """
    v = np.asarray(v, np.float64)
    mu = v.mean(0)
    if rng.random() < 0.7:
        _, _, Vt = np.linalg.svd(v - mu, full_matrices=False)
        d = Vt[int(rng.integers(3))] * rng.choice([-1.0, 1.0])
    else:
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
    s = (v - mu) @ d
    c = float(np.quantile(s, rng.uniform(0.3, 0.8)))
    width = float(np.ptp(s)) * rng.uniform(0.03, 0.12)
    w = 1.0 / (1.0 + np.exp(-(s - c) / width))
    a = np.cross(d, rng.normal(size=3))
    a /= np.linalg.norm(a)
    pivot = mu + c * d
    # the pivot sits on the bending axis; points near it barely move
    R = _rotation(a, rng.uniform(-1, 1) * max_angle * w)  # [N, 3, 3]
    return pivot + np.einsum("nij,nj->ni", R, v - pivot)


def deform(v: np.ndarray, rng: np.random.Generator, strength: float = 0.5) -> np.ndarray:
    """A random near-isometric deformation: 1–2 articulated bends (up to
    ``strength · 90°`` each) then a smooth RBF field of strength ``0.2 · strength``.
    ``strength = 0`` is the identity."""
    from geo.spectral.shapes import smooth_deformation

    if strength <= 0:
        return np.asarray(v, np.float64).copy()
    out = np.asarray(v, np.float64)
    for _ in range(int(rng.integers(1, 3))):
        out = articulated_bend(out, rng, max_angle=strength * np.pi / 2)
    return smooth_deformation(out, rng, strength=0.2 * strength)


def remesh(v, f, rng: np.random.Generator, scale: tuple[float, float] = (0.6, 1.3)) -> tuple[np.ndarray, np.ndarray]:
    """Different connectivity on (nearly) the same surface: one midpoint subdivision
    (quadrupling the faces) then quadric decimation to ``U(scale) × F`` faces, cleaned,
    largest component."""
    n_faces = max(int(len(f) * rng.uniform(*scale)), 200)
    m = _o3d_mesh(v, f).subdivide_midpoint(1).simplify_quadric_decimation(n_faces)
    return _clean_largest_component(m)


def closest_vertex_on_surface(query: np.ndarray, v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``[Q]`` index into ``v``: for each query point the closest point on the mesh
    ``(v, f)``, rounded to the corner of its triangle with the largest barycentric weight."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(v, np.float32)), o3d.core.Tensor(np.asarray(f, np.uint32)))
    ans = scene.compute_closest_points(o3d.core.Tensor(np.asarray(query, np.float32)))
    tri = ans["primitive_ids"].numpy().astype(np.int64)
    uv = ans["primitive_uvs"].numpy()
    bary = np.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)
    return np.asarray(f)[tri, np.argmax(bary, 1)].astype(np.int64)


def make_pair(
    vertices,
    faces,
    rng: np.random.Generator,
    *,
    remesh: bool = False,
    strength: float = 0.5,
    remesh_scale: tuple[float, float] = (0.6, 1.3),
) -> dict:
    """A source/target pair with known correspondence: the target is a random
    near-isometric deformation of the source (:func:`deform`), optionally remeshed.

    Args:
        vertices: ``[N, 3]`` source positions. faces: ``[F, 3]`` source triangles.
        rng: numpy generator (all randomness comes from it).
        remesh: give the target a different connectivity (:func:`remesh`).
        strength: deformation strength (0 = identity; 0.5 ≈ bends up to 45°).
        remesh_scale: range of the target's face count relative to the source's.

    Returns:
        dict ``src_v [N1, 3], src_f [F1, 3], tgt_v [N2, 3], tgt_f [F2, 3]`` and
        ``p2p_21 [N2]`` (int64, target vertex → source vertex). Without ``remesh``
        the connectivity is shared and ``p2p_21 = arange(N)``; with it, each target
        vertex maps to the nearest point on the *deformed* source surface (rounded to a
        vertex). The source is returned unchanged (float64 / int64 copies).
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"expected vertices [N, 3] and faces [F, 3], got {v.shape} and {f.shape}")
    vd = deform(v, rng, strength)
    if not remesh:
        return dict(src_v=v.copy(), src_f=f.copy(), tgt_v=vd, tgt_f=f.copy(), p2p_21=np.arange(len(v), dtype=np.int64))
    tv, tf = _remesh(vd, f, rng, remesh_scale)
    p2p = closest_vertex_on_surface(tv, vd, f)
    return dict(src_v=v.copy(), src_f=f.copy(), tgt_v=tv, tgt_f=tf, p2p_21=p2p)


_remesh = remesh  # make_pair's keyword shadows the function name


# ----------------------------------------------------------------------------------
# ground-truth functional maps
# ----------------------------------------------------------------------------------
def _eigen(v, f, k: int):
    from geo.spectral import eigenbasis
    from geo.spectral.surface import SpectralShape

    return eigenbasis(SpectralShape(v, f), k, "cotan")  # bypasses the module-level shape cache


def fmap_from_bases(p2p_21, basis1, basis2, mass2):
    """``C12 = Φ2ᵀ M2 Φ1[p2p_21]`` ``[k2, k1]`` (numpy float64)."""
    return np.asarray(basis2).T @ (np.asarray(mass2)[:, None] * np.asarray(basis1)[np.asarray(p2p_21)])


def ground_truth_fmap(pair: dict, k: int = 30):
    """The functional map of a :func:`make_pair` pair in the cotan eigenbases.

    Returns:
        ``C12 [k, k]`` float64 torch tensor, ``C12 = Φ2ᵀ M2 Φ1[p2p_21]`` (source
        coefficients → target coefficients; :func:`geo.fmaps.p2p_to_fmap` with the mass).
        Eigenfunction signs are arbitrary; the prior works on ``C12.abs()``.
    """
    import torch

    from geo.fmaps import p2p_to_fmap

    b1 = _eigen(pair["src_v"], pair["src_f"], k)
    b2 = _eigen(pair["tgt_v"], pair["tgt_f"], k)
    return p2p_to_fmap(torch.as_tensor(pair["p2p_21"]), b1.basis, b2.basis, mass2=b2.mass)


# ----------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------
def deformed_variants(v, f, rng, n_variants: int, p_remesh: float, strength: tuple[float, float]) -> list:
    """The base shape and ``n_variants`` random deformations of it (:func:`deform` at
    ``strength ~ U(strength)``), a fraction ``p_remesh`` of them remeshed (:func:`remesh`).

    Returns:
        ``[(v, f, to_base [Ni], from_base [Nb]), ...]``, the base first; ``to_base`` maps a
        variant's vertices to the base's and ``from_base`` the base's to the variant's
        (nearest surface vertex for remeshed ones), so variant ``j → i`` is
        ``from_base_i[to_base_j]``.
    """
    ident = np.arange(len(v))
    variants = [(v, f, ident, ident)]
    for _ in range(n_variants):
        vd = deform(v, rng, float(rng.uniform(*strength)))
        if rng.random() < p_remesh:
            tv, tf = remesh(vd, f, rng)
            variants.append((tv, tf, closest_vertex_on_surface(tv, vd, f), closest_vertex_on_surface(vd, tv, tf)))
        else:
            variants.append((vd, f, ident, ident))
    return variants


def _group(v, f, rng, n_variants: int, k: int, p_remesh: float, strength: tuple[float, float]):
    """``n_variants`` deformed (some remeshed) copies of one base shape and the
    ``|C|`` of every ordered pair between them (and the undeformed base)."""
    variants = deformed_variants(v, f, rng, n_variants, p_remesh, strength)
    eig = [_eigen(a, b, k) for a, b, _, _ in variants]
    maps = []
    for i, (_, _, _, from_i) in enumerate(variants):  # i: source
        for j, (_, _, to_j, _) in enumerate(variants):  # j: target
            if i == j:
                continue
            p2p_ji = from_i[to_j]  # target j vertex -> base vertex -> source i vertex
            maps.append(np.abs(fmap_from_bases(p2p_ji, eig[i].basis, eig[j].basis, eig[j].mass)))
    return maps, sum(len(a) for a, _, _, _ in variants) / len(variants)


def build_dataset(
    n_maps: int = 4000,
    k: int = 30,
    seed: int = 0,
    n_variants: int = 9,
    p_remesh: float = 0.4,
    strength: tuple[float, float] = (0.1, 0.9),
    n_vertices: int = 2000,
    cache: str | Path | None = None,
    data_dir=None,
    progress: bool = True,
) -> dict:
    """``|C12|`` training maps, cached in ``cache`` (npz) when given.

    Base shapes have about ``n_vertices`` vertices (primitives refined to it, the bunny
    decimated to ``2 n_vertices`` faces); each group of ``n_variants`` deformed copies
    (a fraction ``p_remesh`` remeshed) plus the base gives ``(M + 1) M`` maps.

    Returns:
        dict ``maps [n, k, k]`` float32 (``n ≥ n_maps``), ``shape [n]`` (base-shape
        name per map), and ``meta`` (JSON-able dict: counts, seconds, settings). A cache
        file whose settings match is loaded instead of rebuilding.
    """
    from geo.fileio import atomic_write, jsonable
    import json

    settings = dict(n_maps=n_maps, k=k, seed=seed, n_variants=n_variants, p_remesh=p_remesh, strength=list(strength), n_vertices=n_vertices)
    if cache is not None and Path(cache).exists():
        z = np.load(cache, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        if meta.get("settings") == settings:
            return dict(maps=z["maps"], shape=z["shape"], meta=meta)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    maps, names, sizes = [], [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_maps, desc="fmaps", unit="map")
    for name, v, f in base_shapes(rng, data_dir, primitive_vertices=n_vertices, bunny_faces=2 * n_vertices):
        if len(maps) >= n_maps:
            break
        g, nv = _group(v, f, rng, n_variants, k, p_remesh, strength)
        maps += g
        names += [name] * len(g)
        sizes.append(nv)
        if bar is not None:
            bar.update(len(g))
    if bar is not None:
        bar.close()
    arr = np.stack(maps).astype(np.float32)
    shape_names = np.array(names)
    counts = {n: int((shape_names == n).sum()) for n in sorted(set(names))}
    meta = dict(
        settings=settings,
        n_maps=len(arr),
        n_groups=len(sizes),
        eigendecompositions=len(sizes) * (n_variants + 1),
        mean_vertices=round(float(np.mean(sizes)), 1),
        maps_per_shape=counts,
        heldout=list(HELDOUT),
        seconds=round(time.time() - t0, 1),
    )
    if cache is not None:
        atomic_write(cache, lambda p: np.savez_compressed(p, maps=arr, shape=shape_names, meta=json.dumps(jsonable(meta))))
    return dict(maps=arr, shape=shape_names, meta=meta)
