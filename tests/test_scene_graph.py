"""Scene graph structure, transforms, bounds, and payload validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from geo.cameras import CameraModel
from geo.transforms import axis_angle_to_rotmat, se3_from_rt
from scenes import Node, SceneGraph
from scenes.payloads import SH_C0, Camera, GaussianCloud, Mesh, PointCloud
from scenes.voxels import VoxelGrid

SPOT = Path("/work/shared/data/spot/spot_triangulated.obj")
SPOT_TEXTURE = SPOT.with_name("spot_texture.png")


def rz(deg: float, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    return se3_from_rt(axis_angle_to_rotmat(np.array([0.0, 0.0, math.radians(deg)])), np.array(t, dtype=np.float64))


def trans(t) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = t
    return T


CAM = CameraModel(width=8, height=6, fx=10.0, fy=10.0, cx=4.0, cy=3.0)


# -- structure ------------------------------------------------------------------


def test_add_creates_intermediate_nodes_and_lookups():
    g = SceneGraph()
    n = g.add("/cameras/cam_000", payload=Camera(CAM), transform=trans([1, 2, 3]), meta={"split": "train"})
    assert isinstance(n, Node)
    assert n.path == "/cameras/cam_000" and n.name == "cam_000"
    assert g["/cameras/cam_000"] is n
    assert "/cameras" in g and "/cameras/cam_000" in g and "/nope" not in g and 3 not in g
    assert len(g) == 2  # the root is not counted
    parent = g["/cameras"]
    assert n.parent is parent and parent.parent is g.root and g.root.parent is None and g.root.path == "/"
    assert np.array_equal(parent.transform, np.eye(4)) and parent.payload is None and parent.meta == {}
    assert parent.children == [n]
    assert n.meta == {"split": "train"}
    assert n.transform.dtype == np.float64


def test_duplicate_and_invalid_names_raise():
    g = SceneGraph()
    g.add("/a/b")
    with pytest.raises(ValueError, match=r"/a/b: duplicate name 'b'"):
        g.add("/a/b")
    with pytest.raises(ValueError, match="duplicate name"):
        g.add("/a")
    for bad in ["a/b", "/a//b", "/a/", "/a/..", ""]:
        with pytest.raises(ValueError, match="path"):
            g.add(bad)
    assert len(g) == 2


def test_unknown_path_raises_keyerror_naming_it():
    g = SceneGraph()
    with pytest.raises(KeyError, match="/missing/node"):
        g["/missing/node"]
    with pytest.raises(KeyError, match="/missing"):
        g.set_transform("/missing", np.eye(4))


def test_failed_add_leaves_graph_untouched():
    g = SceneGraph()
    with pytest.raises(ValueError, match=r"/x/y: field 'transform'"):
        g.add("/x/y", transform=np.diag([2.0, 1, 1, 1]))
    assert len(g) == 0 and "/x" not in g


def test_traverse_is_preorder_in_insertion_order():
    g = SceneGraph()
    for p in ["/b", "/a/z", "/a/y", "/b/c", "/a/y/q"]:
        g.add(p)
    assert [n.path for n in g.traverse()] == ["/", "/b", "/b/c", "/a", "/a/z", "/a/y", "/a/y/q"]
    assert [n.path for n in g.traverse("/a")] == ["/a", "/a/z", "/a/y", "/a/y/q"]
    assert [n.path for n in g] == ["/b", "/b/c", "/a", "/a/z", "/a/y", "/a/y/q"]


def test_rename_keeps_sibling_order_and_updates_subtree_paths():
    g = SceneGraph()
    for p in ["/a", "/b/c/d", "/e"]:
        g.add(p)
    d = g["/b/c/d"]
    g.rename("/b", "B")
    assert [n.name for n in g.root.children] == ["a", "B", "e"]
    assert g["/B/c/d"] is d and d.path == "/B/c/d"
    assert "/b" not in g and "/b/c/d" not in g
    with pytest.raises(ValueError, match="/B: duplicate name 'a'"):
        g.rename("/B", "a")
    with pytest.raises(ValueError, match="invalid node name"):
        g.rename("/B", "x/y")


def test_remove_drops_subtree():
    g = SceneGraph()
    for p in ["/a/b/c", "/a/d", "/e"]:
        g.add(p)
    g.remove("/a/b")
    assert [n.path for n in g] == ["/a", "/a/d", "/e"]
    assert len(g) == 3 and "/a/b/c" not in g
    with pytest.raises(ValueError, match="root"):
        g.remove("/")


def test_meta_is_json_normalised_and_validated():
    g = SceneGraph(meta={"dataset": "x"})
    n = g.add("/n", meta={"t": (1, 2), "nested": {"k": [1.5]}})
    assert n.meta == {"t": [1, 2], "nested": {"k": [1.5]}}
    assert g.meta == {"dataset": "x"} and g.root.meta is g.meta
    with pytest.raises(ValueError, match=r"/bad: field 'meta' is not JSON-serialisable"):
        g.add("/bad", meta={"a": object()})
    with pytest.raises(ValueError, match=r"/nan: field 'meta'"):
        g.add("/nan", meta={"a": float("nan")})


# -- transforms -----------------------------------------------------------------


def test_world_transform_composition_hand_computed():
    # parent: rotate 90 deg about z, then translate (1, 0, 0); child: translate (0, 1, 0).
    # Rz(90) maps (0, 1, 0) -> (-1, 0, 0), so the child origin is at (-1, 0, 0) + (1, 0, 0) = (0, 0, 0),
    # and the child's point (1, 0, 0) is at Rz(90) (1, 1, 0) + (1, 0, 0) = (-1, 1, 0) + (1, 0, 0) = (0, 1, 0).
    g = SceneGraph()
    g.add("/p", transform=rz(90, (1, 0, 0)))
    c = g.add("/p/c", transform=trans([0, 1, 0]))
    W = g.world_transform("/p/c")
    assert np.allclose(W[:3, 3], [0, 0, 0], atol=1e-12)
    assert np.allclose(W[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    assert np.allclose(W @ [1, 0, 0, 1], [0, 1, 0, 1], atol=1e-12)
    assert np.array_equal(c.world_transform, W)
    assert np.array_equal(g.world_transform("/"), np.eye(4))


def test_set_transform_validates():
    g = SceneGraph()
    n = g.add("/n")
    g.set_transform("/n", rz(30, (1, 2, 3)))
    assert np.array_equal(n.transform, rz(30, (1, 2, 3)))
    nan = np.eye(4)
    nan[0, 3] = np.nan
    with pytest.raises(ValueError, match=r"/n: field 'transform'.*NaN"):
        g.set_transform("/n", nan)
    with pytest.raises(ValueError, match=r"/n: field 'transform': not a rigid"):
        g.set_transform("/n", np.diag([2.0, 2.0, 2.0, 1.0]))  # scale
    shear = np.eye(4)
    shear[0, 1] = 0.3
    with pytest.raises(ValueError, match=r"/n: field 'transform': not a rigid"):
        g.set_transform("/n", shear)
    with pytest.raises(ValueError, match=r"/n: field 'transform'.*not a rigid"):
        g.set_transform("/n", np.diag([1.0, 1.0, -1.0, 1.0]))  # reflection
    with pytest.raises(ValueError, match=r"/n: field 'transform' must be a 4x4"):
        g.set_transform("/n", np.eye(3))
    with pytest.raises(ValueError, match="root"):
        g.set_transform("/", np.eye(4))
    assert np.array_equal(n.transform, rz(30, (1, 2, 3)))  # unchanged by the failures
    with pytest.raises(ValueError, match="read-only"):
        n.transform[0, 3] = 5.0  # edits must go through the validated setter


def test_reparent_keeps_world_pose():
    g = SceneGraph()
    g.add("/p", transform=rz(90, (1, 0, 0)))
    g.add("/p/c", transform=trans([0, 1, 0]))
    g.add("/q", transform=rz(-45, (0, 0, 5)))
    g.add("/p/c/leaf", transform=trans([2, 0, 0]))
    before = {p: g.world_transform(p) for p in ["/p/c", "/p/c/leaf"]}
    c = g.reparent("/p/c", "/q")
    assert c.path == "/q/c" and "/p/c" not in g and g["/q/c/leaf"].path == "/q/c/leaf"
    assert g["/p"].children == [] and g["/q"].children == [c]
    assert np.allclose(g.world_transform("/q/c"), before["/p/c"], atol=1e-12)
    assert np.allclose(g.world_transform("/q/c/leaf"), before["/p/c/leaf"], atol=1e-12)
    # to the root: local = world = Rz(90) at the origin (hand-computed above)
    g.reparent("/q/c", "/")
    assert np.allclose(g["/c"].transform, rz(90), atol=1e-12)


def test_reparent_without_keep_world_keeps_local():
    g = SceneGraph()
    g.add("/p", transform=rz(90, (1, 0, 0)))
    g.add("/p/c", transform=trans([0, 1, 0]))
    g.reparent("/p/c", "/", keep_world=False)
    assert np.array_equal(g.world_transform("/c"), trans([0, 1, 0]))


def test_reparent_refuses_cycles_and_duplicates():
    g = SceneGraph()
    g.add("/a/b/c")
    g.add("/x/b")
    with pytest.raises(ValueError, match=r"/a: cannot move under /a/b/c.*cycle"):
        g.reparent("/a", "/a/b/c")
    with pytest.raises(ValueError, match="cycle"):
        g.reparent("/a", "/a")
    with pytest.raises(ValueError, match=r"/a/b: duplicate name 'b' under /x"):
        g.reparent("/a/b", "/x")
    with pytest.raises(ValueError, match="root"):
        g.reparent("/", "/a")
    assert [n.path for n in g] == ["/a", "/a/b", "/a/b/c", "/x", "/x/b"]


# -- queries --------------------------------------------------------------------


def test_find_by_payload_type():
    g = SceneGraph()
    pc = PointCloud(np.zeros((2, 3)))
    g.add("/cameras/c0", payload=Camera(CAM))
    g.add("/points", payload=pc)
    g.add("/cameras/c1", payload=Camera(CAM))
    assert [n.path for n in g.find(Camera)] == ["/cameras/c0", "/cameras/c1"]
    assert [n.path for n in g.find(PointCloud)] == ["/points"]
    assert [n.path for n in g.find()] == ["/cameras/c0", "/cameras/c1", "/points"]
    assert [n.path for n in g.find(Camera, under="/cameras/c1")] == ["/cameras/c1"]
    assert g.find(Mesh) == []


def test_world_bounds_hand_computed():
    g = SceneGraph()
    assert g.world_bounds() is None
    g.add("/empty")
    assert g.world_bounds() is None
    # a triangle (0,0,0), (1,0,0), (0,1,0) rotated 45 deg about z then moved by (10, 0, 0):
    # vertices go to (10, 0, 0), (10 + s, s, 0), (10 - s, s, 0) with s = 1/sqrt(2). The exact
    # bounds use the vertices; transforming the corners of the local box would give y up to sqrt(2).
    s = 1 / math.sqrt(2)
    tri = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), np.array([[0, 1, 2]]))
    g.add("/obj/tri", payload=tri, transform=rz(45, (10, 0, 0)))
    lo, hi = g.world_bounds()
    assert lo.dtype == np.float64
    assert np.allclose(lo, [10 - s, 0, 0], atol=1e-6) and np.allclose(hi, [10 + s, s, 0], atol=1e-6)
    # a voxel grid [0,1]x[0,2]x[0,3] under a parent translated by (0, 0, -10), itself rotated 90 deg:
    # (x, y, z) -> (-y, x, z - 10): x in [-2, 0], y in [0, 1], z in [-10, -7]
    vg = VoxelGrid(np.zeros((2, 2, 2)), np.zeros((2, 2, 2, 0)), np.zeros(3), np.array([1.0, 2.0, 3.0]))
    g.add("/vol", transform=trans([0, 0, -10]))
    g.add("/vol/grid", payload=vg, transform=rz(90))
    lo_v, hi_v = g.world_bounds("/vol")
    assert np.allclose(lo_v, [-2, 0, -10], atol=1e-12) and np.allclose(hi_v, [0, 1, -7], atol=1e-12)
    # a camera counts as its centre
    g.add("/cam", payload=Camera(CAM), transform=trans([0, 50, 0]))
    lo, hi = g.world_bounds()
    assert np.allclose(lo, [-2, 0, -10], atol=1e-12) and np.allclose(hi, [10 + s, 50, 0], atol=1e-6)
    assert g.world_bounds("/empty") is None


# -- payloads -------------------------------------------------------------------


def test_mesh_validation_messages():
    v = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"Mesh: field 'vertices' must be a float array of shape \[V, 3\]"):
        Mesh(np.zeros((4, 2)), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match=r"field 'faces' must be an integer array of shape \[F, 3\]"):
        Mesh(v, np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"field 'faces' has indices in \[0, 4\], expected \[0, 4\)"):
        Mesh(v, np.array([[0, 1, 4]]))
    with pytest.raises(ValueError, match=r"field 'vertex_colors' must be a uint8 array of shape \[V, 3\|4\] \(V=4\)"):
        Mesh(v, np.array([[0, 1, 2]]), vertex_colors=np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="field 'vertices' contains NaN"):
        Mesh(np.full((4, 3), np.nan), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="field 'texture' is set but 'uv' is None"):
        Mesh(v, np.array([[0, 1, 2]]), texture=np.zeros((2, 2, 3), np.uint8))
    m = Mesh(v.astype(np.float32), np.array([[0, 1, 2]], np.int32))
    assert m.vertices.dtype == np.float32 and m.faces.dtype == np.int32  # dtypes are kept


def test_other_payload_validation_messages():
    with pytest.raises(ValueError, match=r"PointCloud: field 'colors' must be a uint8 array of shape \[N, 3\]"):
        PointCloud(np.zeros((5, 3)), colors=np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"GaussianCloud: field 'sh' must be a float array of shape \[N, 1\|4\|9\|16, C\]"):
        GaussianCloud(np.zeros((2, 3)), np.ones((2, 4)), np.zeros((2, 3)), np.zeros(2), np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"field 'opacity_logits' must be a float array of shape \[N\] \(N=2\)"):
        GaussianCloud(np.zeros((2, 3)), np.ones((2, 4)), np.zeros((2, 3)), np.zeros(3), np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="field 'quats' has a zero quaternion"):
        GaussianCloud(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 3)), np.zeros(2), np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match=r"Camera: field 'image' must be a uint8 or float32 array of shape \[H, W, 3\|4\] \(H=6, W=8\)"):
        Camera(CAM, image=np.zeros((8, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r"Camera: field 'depth' must be a float32"):
        Camera(CAM, depth=np.zeros((6, 8)))
    with pytest.raises(ValueError, match=r"Camera: field 'mask' must be a bool"):
        Camera(CAM, mask=np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match="Camera: field 'model' must be a geo.cameras.CameraModel"):
        Camera({"width": 8})
    with pytest.raises(ValueError, match="VoxelGrid: field 'bounds_max' must be > 'bounds_min'"):
        VoxelGrid(np.zeros((2, 2, 2)), np.zeros((2, 2, 2, 1)), np.zeros(3), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"VoxelGrid: field 'features' must be a float array of shape \[X, Y, Z, C\]"):
        VoxelGrid(np.zeros((2, 2, 2)), np.zeros((2, 2, 3, 4)), np.zeros(3), np.ones(3))


def test_graph_revalidates_payloads_and_rejects_foreign_objects():
    g = SceneGraph()
    pc = PointCloud(np.zeros((3, 3)))
    pc.points = np.zeros((3, 2))  # broken after construction
    with pytest.raises(ValueError, match=r"/pts: field 'points'"):
        g.add("/pts", payload=pc)
    with pytest.raises(ValueError, match=r"/x: field 'payload' must be one of"):
        g.add("/x", payload=np.zeros(3))
    n = g.add("/ok")
    with pytest.raises(ValueError, match=r"/ok: field 'payload' must be one of"):
        n.payload = "mesh"


def test_gaussian_cloud_from_points():
    # a 3x3x3 grid with spacing 0.5: every point has >= 3 neighbours at distance 0.5
    ax = np.arange(3) * 0.5
    pts = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    cols = np.tile(np.array([[255, 0, 128]], np.uint8), (len(pts), 1))
    gc = GaussianCloud.from_points(pts, colors=cols, opacity=0.25, sh_degree=3)
    assert gc.num == 27 and gc.sh_degree == 3 and gc.sh.shape == (27, 16, 3)
    assert gc.means.dtype == np.float32
    assert np.allclose(gc.scales, 0.5, rtol=1e-6)
    assert np.allclose(gc.opacities, 0.25, rtol=1e-6)
    assert np.allclose(SH_C0 * gc.sh[:, 0] + 0.5, cols / 255.0, atol=1e-6)
    assert np.all(gc.sh[:, 1:] == 0)
    assert np.array_equal(gc.quats, np.tile([[1, 0, 0, 0]], (27, 1)).astype(np.float32))
    gc0 = GaussianCloud.from_points(pts, scale=0.1, sh_degree=0)
    assert gc0.sh_degree == 0 and np.allclose(gc0.scales, 0.1) and np.all(gc0.sh == 0)


def test_mesh_load_spot_with_texture_and_trimesh_round_trip():
    from PIL import Image

    m = Mesh.load(SPOT, texture=SPOT_TEXTURE)
    # 2930 positions in the file; vertices on uv seams are split so that uv is per vertex
    assert m.vertices.shape == (3225, 3) and m.faces.shape == (5856, 3) and m.uv.shape == (3225, 2)
    vts = {tuple(float(x) for x in ln.split()[1:3]) for ln in SPOT.read_text().splitlines() if ln.startswith("vt ")}
    assert {tuple(r) for r in m.uv.tolist()} == vts  # every uv of the file, exactly
    assert np.array_equal(m.texture, np.asarray(Image.open(SPOT_TEXTURE).convert("RGB")))
    untextured = Mesh.load(SPOT)  # the OBJ has no mtllib: uv but no texture (not trimesh's placeholder)
    assert untextured.texture is None and np.array_equal(untextured.uv, m.uv)
    back = Mesh.from_trimesh(m.to_trimesh())
    for k in ("vertices", "faces", "uv", "texture"):
        assert np.array_equal(getattr(back, k), getattr(m, k)), k


def test_pointcloud_load_ply_with_colours_and_normals(tmp_path):
    pts = np.array([[0.5, 1.0, 2.0], [-1.0, 0.25, 3.0]])
    nrm = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    col = np.array([[255, 0, 10], [1, 2, 3]], np.uint8)
    lines = ["ply", "format ascii 1.0", "element vertex 2"]
    lines += [f"property float {c}" for c in ("x", "y", "z", "nx", "ny", "nz")]
    lines += [f"property uchar {c}" for c in ("red", "green", "blue")] + ["end_header"]
    lines += [" ".join(map(str, [*p, *n, *c])) for p, n, c in zip(pts, nrm, col)]
    f = tmp_path / "pc.ply"
    f.write_text("\n".join(lines) + "\n")
    pc = PointCloud.load(f)
    assert np.allclose(pc.points, pts) and np.array_equal(pc.colors, col) and np.allclose(pc.normals, nrm)
    assert pc.num == 2
