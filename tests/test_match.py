"""geo.match: the public shape-matching API — accuracy on the cactus pair, every input
type, pose independence, cleaning, bad input, Correspondence I/O, the CLI, and a
gradient check of the row-wise solver."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import geo
import geo.fmaps as fm

DATA = Path(__file__).parents[1] / "assets" / "cactus"
FAST = dict(method="zoomout", k=10, k_final=20)


def _load(name):
    import trimesh

    return trimesh.load(DATA / name, process=False)


@pytest.fixture(scope="module")
def cactus():
    import geo.spectral as gs

    a, b = _load("cactus.off"), _load("cactus_deformed.off")
    D = gs.geodesic_distances(a, np.arange(len(a.vertices)), method="dijkstra")
    return a, b, D / np.sqrt(fm.surface_area(a))


def _err(corr, D):
    return float(D[np.arange(len(corr.p2p_21)), corr.p2p_21].mean())


def _random_rigid(seed=0):
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    return Rotation.random(random_state=seed).as_matrix(), rng.normal(size=3) * 5


# -- accuracy -------------------------------------------------------------------------------


def test_diffumatch_on_cactus_below_5_percent(cactus):
    a, b, D = cactus
    corr = geo.match(a, b)  # default: DiffuMatch with the trained feature network
    assert corr.method == "diffumatch"
    err = _err(corr, D)
    assert err < 5e-2, err
    info = corr.info["diffumatch"]
    assert info["mode"] == "trained"
    assert info["chosen"] in info["energies"] and len(info["energies"]) == 2  # the network's map + the WKS map


def test_diffumatch_zero_shot_optimises_the_pair(cactus):
    a, b, D = cactus
    cfg = fm.DiffuMatchConfig(mode="zero_shot", n_iter=20, n_starts=1)
    corr = geo.match(a, b, diffumatch=cfg)
    assert _err(corr, D) < 5e-2
    info = corr.info["diffumatch"]
    assert info["mode"] == "zero_shot"
    # the per-pair optimisation ran and lowered its proper-map loss
    assert all(last < first for first, last in info["loss_proper_first_last"])
    assert len(info["energies"]) == 2


def test_zoomout_method_and_fmap_method(cactus):
    a, b, D = cactus
    z = geo.match(a, b, method="zoomout")
    f = geo.match(a, b, method="fmap")
    assert _err(z, D) < 0.01
    assert _err(z, D) <= _err(f, D)
    assert z.fmap.shape == (80, 80) and f.fmap.shape == (30, 30)


def test_result_does_not_depend_on_pose_or_scale(cactus):
    a, b, _ = cactus
    R, t = _random_rigid(3)
    moved = np.asarray(b.vertices) @ R.T * 7.5 + t
    ref = geo.match(a, b, **FAST)
    c = geo.match(a, _Mesh(moved, b.faces), **FAST)
    assert (c.p2p_21 == ref.p2p_21).mean() > 0.99
    assert (c.p2p_12 == ref.p2p_12).mean() > 0.99


def test_trained_diffumatch_does_not_depend_on_pose_or_scale(cactus):
    """The network reads WKS and rotation-invariant gradient features, so a rigidly moved
    and rescaled target (here as a point cloud: the point-cloud operators' path) gets the same map."""
    a, b, D = cactus
    R, t = _random_rigid(4)
    moved = np.asarray(b.vertices) @ R.T * 0.2 + t
    exact = fm.DiffuMatchConfig(bf16=False)  # float32: the same map up to round-off
    ref = geo.match(a, np.asarray(b.vertices), k_final=40, diffumatch=exact)
    c = geo.match(a, moved, k_final=40, diffumatch=exact)
    assert ref.info["diffumatch"]["mode"] == "trained"
    assert (c.p2p_21 == ref.p2p_21).mean() > 0.99
    assert _err(ref, D) < 0.05
    # default bfloat16 network: its rounding differs between poses, the maps stay geodesically close
    ref, c = geo.match(a, np.asarray(b.vertices), k_final=40), geo.match(a, moved, k_final=40)
    assert D[ref.p2p_21, c.p2p_21].mean() < 0.01


class _Mesh:
    def __init__(self, vertices, faces):
        self.vertices, self.faces = np.asarray(vertices), np.asarray(faces)


# -- input types ------------------------------------------------------------------------------


def test_every_mesh_input_type_gives_the_same_map(cactus, tmp_path):
    import open3d as o3d
    from scenes.graph import SceneGraph
    from scenes.payloads import Mesh

    a, b, _ = cactus
    ref = geo.match(a, b, **FAST).p2p_21
    o3d_b = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(b.vertices)), o3d.utility.Vector3iVector(np.asarray(b.faces)))
    g = SceneGraph()
    node = g.add("/shapes/b", Mesh(vertices=np.asarray(b.vertices, np.float64), faces=np.asarray(b.faces, np.int64)))
    for target in (DATA / "cactus_deformed.off", str(DATA / "cactus_deformed.off"), o3d_b, node):
        p = geo.match(a, target, **FAST).p2p_21
        assert (p == ref).mean() > 0.99, type(target)


def test_every_point_cloud_input_type_gives_the_same_map(cactus, tmp_path):
    import open3d as o3d
    import trimesh
    from scenes.graph import SceneGraph
    from scenes.payloads import PointCloud

    a, b, D = cactus
    pts = np.asarray(b.vertices, dtype=np.float64)
    path = tmp_path / "b.xyz"
    np.savetxt(path, pts)
    ref = geo.match(a, pts, **FAST)
    assert ref.n_target == len(pts)
    assert _err(geo.match(a, pts, method="zoomout"), D) < 0.05  # mesh → point cloud still matches well
    g = SceneGraph()
    node = g.add("/b", PointCloud(points=pts))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    for target in (torch.as_tensor(pts), trimesh.PointCloud(pts), pcd, node, path):
        p = geo.match(a, target, **FAST).p2p_21
        assert (p == ref.p2p_21).mean() > 0.99, type(target)


# -- cleaning and bad input ---------------------------------------------------------------------


def test_dirty_mesh_is_cleaned_with_warnings(cactus):
    a, b, D = cactus
    v, f = np.asarray(b.vertices), np.asarray(b.faces)
    n = len(v)
    # a duplicate of vertex 0, a degenerate face, and a small separate triangle far away
    extra = np.array([v[0], [10, 10, 10], [10.01, 10, 10], [10, 10.01, 10]])
    v2 = np.concatenate([v, extra])
    f2 = np.concatenate([f, [[0, 1, 1], [n + 1, n + 2, n + 3], [n, f[0, 1], f[0, 2]]]])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        corr = geo.match(a, _Mesh(v2, f2), method="zoomout")
    text = " ".join(str(x.message) for x in w)
    assert "connected components" in text
    assert corr.n_target == len(v2)
    assert _err(type(corr)(corr.p2p_21[:n], corr.p2p_12, corr.fmap, corr.confidence[:n]), D) < 0.02
    assert 0 <= corr.p2p_21.min() and corr.p2p_21.max() < len(a.vertices)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 3)), "empty"),
        (np.full((50, 3), np.nan), "NaN"),
        (np.random.default_rng(0).normal(size=(12, 3)), "basis functions"),
        (np.zeros((10, 2)), r"\[N, 3\]"),
    ],
)
def test_bad_input_is_rejected_clearly(cactus, bad, match):
    a, _, _ = cactus
    with pytest.raises(ValueError, match=match):
        geo.match(a, bad, method="zoomout", k=20, k_final=30)


def test_bad_arguments(cactus, tmp_path):
    a, b, _ = cactus
    with pytest.raises(ValueError, match="method"):
        geo.match(a, b, method="magic")
    with pytest.raises(FileNotFoundError, match="missing.off"):
        geo.match(a, tmp_path / "missing.off")
    with pytest.raises(ValueError, match="k_final"):
        geo.match(a, b, method="zoomout", k=40, k_final=20)
    with pytest.raises(TypeError, match="unknown"):
        geo.match(a, b, bogus=1)
    bad = tmp_path / "bad.ply"
    bad.write_text("not a ply file")
    with pytest.raises(ValueError, match="bad.ply"):
        geo.match(a, bad)


# -- Correspondence ----------------------------------------------------------------------------


def test_correspondence_transfer_save_load(cactus, tmp_path):
    a, b, _ = cactus
    c = geo.match(a, b, **FAST)
    labels = np.arange(c.n_source) % 7
    out = c.transfer(labels)
    assert out.shape == (c.n_target,) and np.array_equal(out, labels[c.p2p_21])
    back = c.transfer(np.ones((c.n_target, 3)), to="source")
    assert back.shape == (c.n_source, 3)
    with pytest.raises(ValueError, match="one row per source vertex"):
        c.transfer(np.zeros(5))
    c.save(tmp_path / "m.npz")
    d = fm.Correspondence.load(tmp_path / "m.npz")
    for k in ("p2p_21", "p2p_12", "fmap", "confidence"):
        assert np.array_equal(getattr(c, k), getattr(d, k))
    assert d.method == c.method and d.info == c.info
    c.save(tmp_path / "m.txt")
    assert np.array_equal(np.loadtxt(tmp_path / "m.txt", dtype=np.int64), c.p2p_21)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npz"):
        fm.Correspondence.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match=".npz"):
        c.save(tmp_path / "m.csv")
    assert ((c.confidence >= 0) & (c.confidence <= 1)).all()


def test_cli_writes_map_and_picture(tmp_path):
    from tools.cli import main

    out, png = tmp_path / "map.txt", tmp_path / "map.png"
    rc = main(["match", str(DATA / "cactus.off"), str(DATA / "cactus_deformed_remeshed.off"), "--out", str(out),
               "--png", str(png), "--method", "zoomout", "--k", "20", "--k-final", "40"])
    assert rc == 0
    p2p = np.loadtxt(out, dtype=np.int64)
    assert p2p.shape == (2970,) and p2p.min() >= 0 and p2p.max() < 1856
    from PIL import Image

    img = np.asarray(Image.open(png))
    assert img.shape[1] > img.shape[0]  # two views side by side
    assert img.std() > 10  # not blank
    assert main(["match", str(DATA / "cactus.off"), str(tmp_path / "nope.off")]) == 2


# -- solver gradient ------------------------------------------------------------------------------


def test_row_wise_solver_gradient_check():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 9, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(4, 9, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda A, B, m: fm.solve_fmap(A, B, m, 0.3), (A, B, mask))


def test_package_exposes_matching_names_and_subpackages():
    assert geo.DiffuMatchConfig is fm.DiffuMatchConfig and geo.MatchConfig is fm.MatchConfig
    assert geo.fmaps is fm  # subpackages resolve as attributes of ``geo``
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        geo.not_a_module
