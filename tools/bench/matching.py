"""Benchmark: non-rigid shape matching — DiffuMatch and plain ZoomOut (``geo.match``)
against pyFM's standard pipeline, on the same pairs in one run.

Pair sets (none of these shapes is used to train the DiffuMatch prior, see
``assets/fmaps/README.md``):

* ``cactus`` — ``assets/cactus``: ``cactus.off`` → ``cactus_deformed.off`` (shared
  connectivity, ground truth = identity).
* ``generated`` — near-isometric deformations (articulated bends + smooth fields) of
  Spot and of the cactus made by :func:`geo.fmaps.diffumatch.data.make_pair`; same
  connectivity on both sides.
* ``remeshed`` — the same kind of pairs with the target remeshed (different vertex
  count and connectivity; ground truth = nearest vertex on the deformed source).
* ``pointcloud`` — the ``generated`` pairs given as bare vertex arrays (no faces):
  both sides use the robust Laplacian (Sharp & Crane 2020), ours and pyFM alike.

Methods, each timed end to end per pair (load, Laplacian, eigenpairs, descriptors,
map, refinement, point map):

* ``ours`` — ``geo.match(method="diffumatch")`` with default settings: the feature
  network trained offline (``assets/fmaps/diffumatch_features.pt``), no per-pair
  optimisation.
* ``zeroshot`` — DiffuMatch's zero-shot setting, ``DiffuMatchConfig(mode="zero_shot")``:
  a fresh network optimised on each pair (full run only, unless named in ``--methods``).
* ``zoomout`` — ``geo.match(method="zoomout")`` (WKS solve + ZoomOut, no prior).
* ``pyfm`` — pyFM 1.3 (``pyfmaps``) as its README runs it: 200 eigenpairs, WKS (100
  energies, every 5th kept), ``fit`` at 35 with ``w_descr=1, w_lap=1e-2, w_dcomm=1e-1``,
  10 ICP iterations, ZoomOut 15 steps (35 → 50), point map.

Error: mean geodesic error of the target → source map, on the source mesh (exact
Dijkstra distances on the edge graph), divided by ``sqrt(area)``; reported ×100.

    python tools/bench/matching.py --quick       # < 2 min: one pair per set, Spot decimated to ~1.8k vertices
    python tools/bench/matching.py               # 3 pairs per generated set, full-resolution Spot (2,930 vertices)

Last line: JSON with ``geo_err_ours``, ``geo_err_pyfm``, ``sec_ours``, ``sec_pyfm``
(means over all pairs), the same for ``zoomout``, and per-set figures under ``sets``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# BLAS/LAPACK single-threaded for every method (torch keeps 2 threads): on a busy 2-core
# machine OpenBLAS's threads spin against each other and small dense and sparse
# eigensolves (pyFM's and ours) become 5-50x slower, which made timings meaningless
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _load(path, weld: bool = False):
    import trimesh

    m = trimesh.load(path, process=False)
    if weld:  # Spot's OBJ splits vertices along UV seams; weld them so both sides see one surface
        m.merge_vertices(merge_tex=True, merge_norm=True)
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


def _decimate(v, f, n_faces: int):
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f))
    m = m.simplify_quadric_decimation(n_faces)
    m.remove_unreferenced_vertices()
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.triangles, dtype=np.int64)


def make_sets(quick: bool, seed: int = 0):
    """``{set: [(name, src_v, src_f, tgt_v, tgt_f, gt_21), ...]}``; faces ``None`` on point-cloud pairs."""
    from geo.fmaps.diffumatch.data import make_pair

    cactus = _load(REPO / "assets/cactus/cactus.off")
    cactus_def = _load(REPO / "assets/cactus/cactus_deformed.off")
    spot = _load(REPO / "assets/spot/spot_triangulated.obj", weld=True)
    if quick:  # ~1,800 vertices like the cactus, so that --quick stays under 2 minutes
        spot = _decimate(*spot, n_faces=3600)
    bases = [("spot", spot), ("cactus", cactus)]
    n_per = 1 if quick else 3
    sets = {"cactus": [("cactus", *cactus, *cactus_def, np.arange(len(cactus_def[0])))]}
    sets["generated"], sets["remeshed"], sets["pointcloud"] = [], [], []
    rng = np.random.default_rng(seed)
    for i in range(n_per):
        name, (v, f) = bases[i % len(bases)]
        p = make_pair(v, f, rng)
        sets["generated"].append((f"{name}-{i}", p["src_v"], p["src_f"], p["tgt_v"], p["tgt_f"], p["p2p_21"]))
        sets["pointcloud"].append((f"{name}-{i}-pc", p["src_v"], None, p["tgt_v"], None, p["p2p_21"], p["src_f"]))
        r = make_pair(v, f, rng, remesh=True)
        sets["remeshed"].append((f"{name}-{i}-remesh", r["src_v"], r["src_f"], r["tgt_v"], r["tgt_f"], r["p2p_21"]))
    return sets


def run_pyfm(sv, sf, tv, tf):
    from pyFM.functional import FunctionalMapping
    from pyFM.mesh import TriMesh

    model = FunctionalMapping(TriMesh(sv, sf), TriMesh(tv, tf))
    model.preprocess(n_descr=100, descr_type="WKS", subsample_step=5, k_process=200)
    model.fit(K=(35, 35), w_descr=1e0, w_lap=1e-2, w_dcomm=1e-1, w_orient=0)
    fm_icp = model.icp_refine(nit=10)
    fm_zo = model.zoomout_refine(FM=fm_icp, nit=15, step=1)
    return np.asarray(model.get_p2p(FM=fm_zo))


def run_ours(method: str, sv, sf, tv, tf):
    import geo
    from geo.fmaps import DiffuMatchConfig

    src = sv if sf is None else _MeshArg(sv, sf)
    tgt = tv if tf is None else _MeshArg(tv, tf)
    if method == "zeroshot":
        return geo.match(src, tgt, method="diffumatch", diffumatch=DiffuMatchConfig(mode="zero_shot")).p2p_21
    return geo.match(src, tgt, method=method).p2p_21


class _MeshArg:
    """A bare (vertices, faces) holder: what a trimesh mesh looks like to ``geo.match``."""

    def __init__(self, vertices, faces):
        self.vertices, self.faces = vertices, faces


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one pair per set (< 2 min)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=None, help="default: ours,zoomout,pyfm (--quick); ours,zeroshot,zoomout,pyfm (full)")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    import geo.spectral as gs
    from geo.fmaps import surface_area

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    methods = (a.methods or ("ours,zoomout,pyfm" if a.quick else "ours,zeroshot,zoomout,pyfm")).split(",")
    sets = make_sets(a.quick, a.seed)
    rows = []
    # warm-up, untimed: one call per method on the cactus pair, so that one-time costs
    # (imports, loading the prior and the feature network) do not land on the first pair
    _, wsv, wsf, wtv, wtf = sets["cactus"][0][:5]
    for m in methods:
        run_pyfm(wsv, wsf, wtv, wtf) if m == "pyfm" else run_ours("diffumatch" if m == "ours" else m, wsv, wsf, wtv, wtf)
    for set_name, pairs in sets.items():
        for pair in pairs:
            name, sv, sf, tv, tf, gt = pair[:6]
            eval_faces = sf if sf is not None else pair[6]
            mesh = _MeshArg(sv, eval_faces)
            D = gs.geodesic_distances(mesh, np.arange(len(sv)), method="dijkstra")
            sqrt_area = np.sqrt(surface_area(mesh))
            for m in methods:
                t = time.perf_counter()
                p = run_pyfm(sv, sf, tv, tf) if m == "pyfm" else run_ours("diffumatch" if m == "ours" else m, sv, sf, tv, tf)
                sec = time.perf_counter() - t
                err = float(D[gt, p].mean() / sqrt_area * 100)
                row = {"set": set_name, "pair": name, "method": m, "geo_err": round(err, 4), "sec": round(sec, 2),
                       "n_source": len(sv), "n_target": len(tv)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    out: dict = {"sets": {}}
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        out[f"geo_err_{m}"] = round(float(np.mean([r["geo_err"] for r in sel])), 4)
        out[f"sec_{m}"] = round(float(np.median([r["sec"] for r in sel])), 2)
        for s in sets:
            ss = [r for r in sel if r["set"] == s]
            out["sets"].setdefault(s, {})[m] = {
                "geo_err": round(float(np.mean([r["geo_err"] for r in ss])), 4),
                "sec": round(float(np.median([r["sec"] for r in ss])), 2),
            }
    if not a.quick and "ours" in methods:  # the speed goal: one ~5k-vertex pair in under a minute
        from geo.fmaps.diffumatch.data import make_pair, refine

        v5, f5 = refine(*_load(REPO / "assets/spot/spot_triangulated.obj", weld=True), target_vertices=8400)  # refine stops once it has ≥ 0.6 × this
        p = make_pair(v5, f5, np.random.default_rng(a.seed + 99))
        for m in ("ours", "zeroshot"):
            if m in methods:
                t = time.perf_counter()
                run_ours("diffumatch" if m == "ours" else m, p["src_v"], p["src_f"], p["tgt_v"], p["tgt_f"])
                out[f"sec_{m}_5k"] = round(time.perf_counter() - t, 2)
        out["n_vertices_5k"] = len(v5)
    out["quick"] = a.quick
    out["pairs"] = sum(len(p) for p in sets.values())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
