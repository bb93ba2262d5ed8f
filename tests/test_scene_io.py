"""Scene directories: exact round trips, atomic writes, and validation on load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import scenes.io as sio
from geo.cameras import CameraModel
from geo.transforms import quat_to_rotmat, se3_from_rt
from scenes import SceneGraph, load_scene, save_scene
from scenes.info import summarize
from scenes.io import SceneFormatError
from scenes.payloads import Camera, GaussianCloud, Mesh, PointCloud
from scenes.voxels import VoxelGrid

SPOT = Path("/work/shared/data/spot/spot_triangulated.obj")


@pytest.fixture(scope="module")
def spot() -> Mesh:
    return Mesh.load(SPOT, texture=SPOT.with_name("spot_texture.png"))


def random_pose(rng) -> np.ndarray:
    return se3_from_rt(quat_to_rotmat(rng.normal(size=4)), rng.normal(size=3) * 10)


def make_graph(spot: Mesh) -> SceneGraph:
    rng = np.random.default_rng(0)
    cm = CameraModel(width=12, height=10, fx=11.5, fy=11.25, cx=6.1, cy=4.9, model="opencv", k1=0.1, p2=-1e-3)
    g = SceneGraph(meta={"dataset": "unit", "scale": 0.1, "tags": ["a", "b"]})
    g.add("/objects/spot", payload=spot, transform=random_pose(rng), meta={"source": str(SPOT)})
    g.add("/cameras/cam_001", transform=random_pose(rng), meta={"split": "test"}, payload=Camera(
        cm,
        image=rng.integers(0, 256, (10, 12, 3), dtype=np.uint8),
        depth=rng.random((10, 12), dtype=np.float32),
        mask=rng.random((10, 12)) > 0.5,
        name="cam_001.png",
        image_path="images/cam_001.png",
    ))
    g.add("/cameras/cam_000", transform=random_pose(rng), meta={"split": "train"},
          payload=Camera(cm, image=rng.random((10, 12, 4), dtype=np.float32)))
    g.add("/cameras/bare", payload=Camera(cm))  # no arrays at all
    g.add("/points", payload=PointCloud(
        rng.normal(size=(50, 3)).astype(np.float32),
        colors=rng.integers(0, 256, (50, 3), dtype=np.uint8),
        normals=rng.normal(size=(50, 3)),
    ))
    n = 40
    g.add("/splats", transform=random_pose(rng), payload=GaussianCloud(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=rng.normal(size=(n, 3)).astype(np.float32),
        opacity_logits=rng.normal(size=n).astype(np.float32),
        sh=rng.normal(size=(n, 16, 3)).astype(np.float32),
    ))
    g.add("/volume/grid", payload=VoxelGrid(
        density=rng.normal(size=(4, 5, 6)),
        features=rng.normal(size=(4, 5, 6, 7)).astype(np.float32),
        bounds_min=np.array([-1.0, -2.0, -3.0]),
        bounds_max=np.array([1.0, 2.5, 3.0]),
    ), transform=random_pose(rng))
    g.add("/volume/empty_mesh", payload=Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)))
    g.reparent("/cameras/cam_000", "/objects")  # node order != creation order
    return g


def assert_graphs_equal(a: SceneGraph, b: SceneGraph) -> None:
    assert a.meta == b.meta
    assert [n.path for n in a.traverse()] == [n.path for n in b.traverse()]
    for na, nb in zip(a, b):
        assert na.transform.tobytes() == nb.transform.tobytes(), na.path  # bit-exact
        assert na.meta == nb.meta
        assert type(na.payload) is type(nb.payload)
        if na.payload is None:
            continue
        aa, ab = na.payload.to_arrays(), nb.payload.to_arrays()
        assert aa.keys() == ab.keys(), na.path
        for k in aa:
            assert aa[k].dtype == ab[k].dtype and aa[k].shape == ab[k].shape, (na.path, k)
            assert aa[k].tobytes() == ab[k].tobytes(), (na.path, k)
        assert na.payload.json_fields() == nb.payload.json_fields()
        if isinstance(na.payload, Camera):
            assert na.payload.model == nb.payload.model


@pytest.fixture()
def saved(tmp_path, spot) -> tuple[SceneGraph, Path]:
    g = make_graph(spot)
    d = tmp_path / "scene"
    save_scene(g, d)
    return g, d


def edit_json(d: Path, fn) -> None:
    js = d / "scene.json"
    doc = json.loads(js.read_text())
    fn(doc)
    js.write_text(json.dumps(doc))


def node_entry(doc: dict, path: str) -> dict:
    return next(e for e in doc["nodes"] if e["path"] == path)


# -- round trip -----------------------------------------------------------------


def test_round_trip_is_exact(saved):
    g, d = saved
    h = load_scene(d)
    assert_graphs_equal(g, h)
    assert [n.path for n in h] == [
        "/objects", "/objects/spot", "/objects/cam_000", "/cameras", "/cameras/cam_001", "/cameras/bare",
        "/points", "/splats", "/volume", "/volume/grid", "/volume/empty_mesh",
    ]
    assert h["/splats"].payload.sh_degree == 3
    assert h["/cameras/cam_001"].payload.model.model == "opencv"
    assert np.array_equal(h.world_bounds()[0], g.world_bounds()[0])
    # loading again via the class method and saving the loaded graph again gives the same files
    assert_graphs_equal(h, SceneGraph.load(d))
    h.save(d.parent / "again")
    assert (d / "scene.json").read_bytes() == (d.parent / "again" / "scene.json").read_bytes()


def test_scene_json_layout(saved):
    _, d = saved
    doc = json.loads((d / "scene.json").read_text())
    assert doc["schema_version"] == 1 and doc["meta"]["dataset"] == "unit"
    spot = node_entry(doc, "/objects/spot")
    assert spot["payload"] == {"type": "Mesh", "file": "payloads/0001.npz"}
    assert len(spot["transform"]) == 4 and all(len(r) == 4 for r in spot["transform"])
    cam = node_entry(doc, "/cameras/cam_001")["payload"]
    assert cam["type"] == "Camera" and cam["model"]["fx"] == 11.5 and cam["name"] == "cam_001.png"
    assert "file" not in node_entry(doc, "/cameras/bare")["payload"]
    assert node_entry(doc, "/objects")["payload"] is None
    files = sorted(p.name for p in (d / "payloads").iterdir())
    assert files == sorted(Path(e["payload"]["file"]).name for e in doc["nodes"] if e["payload"] and "file" in e["payload"])
    with np.load(d / spot["payload"]["file"]) as z:
        assert set(z.files) == {"vertices", "faces", "uv", "texture"}


def test_save_replaces_existing_scene_and_refuses_foreign_dirs(saved, tmp_path):
    g, d = saved
    small = SceneGraph(meta={"v": 2})
    small.add("/only", payload=PointCloud(np.ones((1, 3))))
    save_scene(small, d)
    assert_graphs_equal(small, load_scene(d))
    assert sorted(p.name for p in (d / "payloads").iterdir()) == ["0000.npz"]  # no stale files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]  # no temp dirs left
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes: exists, is not empty and has no scene.json"):
        save_scene(small, foreign)
    assert (foreign / "keep.txt").read_text() == "x"


# -- atomic writes --------------------------------------------------------------


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _failing_writer(monkeypatch, fail_on: int):
    real = sio._write_npz
    calls = []

    def writer(path, arrays):
        calls.append(path)
        if len(calls) == fail_on:
            Path(path).write_bytes(b"half")  # a partial file, then the crash
            raise OSError("disk full (simulated)")
        real(path, arrays)

    monkeypatch.setattr(sio, "_write_npz", writer)
    return calls


def test_failed_save_leaves_old_scene_untouched(saved, monkeypatch):
    g, d = saved
    before = _snapshot(d)
    g.add("/new", payload=PointCloud(np.zeros((2, 3))))
    calls = _failing_writer(monkeypatch, fail_on=3)
    with pytest.raises(OSError, match="disk full"):
        save_scene(g, d)
    assert len(calls) == 3
    assert _snapshot(d) == before
    assert sorted(p.name for p in d.parent.iterdir()) == ["scene"]  # temp dir cleaned up


def test_failed_save_leaves_nothing_when_no_old_scene(tmp_path, spot, monkeypatch):
    _failing_writer(monkeypatch, fail_on=2)
    with pytest.raises(OSError, match="disk full"):
        save_scene(make_graph(spot), tmp_path / "fresh")
    assert list(tmp_path.iterdir()) == []


def test_failed_final_rename_restores_old_scene(saved, monkeypatch):
    g, d = saved
    before = _snapshot(d)
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if Path(src).name.startswith(".scene.tmp-"):
            raise OSError("rename failed (simulated)")
        real_rename(src, dst)

    monkeypatch.setattr(sio.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        save_scene(g, d)
    monkeypatch.undo()
    assert calls[0][0] == "scene" and calls[-1][1] == "scene"  # moved aside, then moved back
    assert _snapshot(d) == before
    assert sorted(p.name for p in d.parent.iterdir()) == ["scene"]


def test_save_refuses_invalid_content_before_writing(tmp_path):
    g = SceneGraph()
    n = g.add("/pts", payload=PointCloud(np.zeros((2, 3))))
    n.payload.points = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"/pts: field 'points'"):
        save_scene(g, tmp_path / "s")
    n.payload.points = np.zeros((2, 3))
    n.meta["bad"] = {1, 2}
    with pytest.raises(ValueError, match=r"/pts: field 'meta'"):
        save_scene(g, tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


# -- bad input on load ----------------------------------------------------------


def test_missing_directory_or_scene_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such scene directory"):
        load_scene(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"scene.json: missing"):
        load_scene(tmp_path)


def test_malformed_json(saved):
    _, d = saved
    (d / "scene.json").write_text('{"schema_version": 1, "nodes": [')
    with pytest.raises(SceneFormatError, match=r"scene.json: malformed JSON"):
        load_scene(d)


def test_schema_version_newer_than_reader(saved):
    _, d = saved
    edit_json(d, lambda doc: doc.update(schema_version=2))
    with pytest.raises(SceneFormatError, match=r"scene.json: field 'schema_version' is 2, newer than this reader supports \(schema_version 1\)"):
        load_scene(d)
    edit_json(d, lambda doc: doc.pop("schema_version"))
    with pytest.raises(SceneFormatError, match=r"scene.json: field 'schema_version' must be an integer"):
        load_scene(d)


def test_missing_payload_file(saved):
    _, d = saved
    (d / "payloads" / "0001.npz").unlink()
    with pytest.raises(SceneFormatError, match=r"0001.npz: missing payload file \(referenced by .*scene.json: node /objects/spot\)"):
        load_scene(d)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "npy"])
def test_corrupt_payload_file(saved, damage):
    _, d = saved
    f = d / "payloads" / "0007.npz"  # the Gaussians
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        f.write_bytes(np.random.default_rng(1).bytes(len(data)))
    else:
        np.save(f.with_suffix(".npy"), np.zeros(3))
        f.with_suffix(".npy").rename(f)
    with pytest.raises(SceneFormatError, match=r"0007.npz: corrupt payload file .*node /splats"):
        load_scene(d)


def test_wrong_shaped_payload_in_edited_npz(saved):
    _, d = saved
    f = d / "payloads" / "0007.npz"
    with np.load(f) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["sh"] = arrays["sh"][:, :5]  # K = 5 is not (d + 1)^2
    np.savez(f, **arrays)
    with pytest.raises(SceneFormatError, match=r"0007.npz \(.*node /splats\): GaussianCloud: field 'sh' must be .*\[N, 1\|4\|9\|16, C\]"):
        load_scene(d)
    arrays["sh"] = arrays["sh"][:, :4]
    arrays["extra"] = np.zeros(1)
    np.savez(f, **arrays)
    with pytest.raises(SceneFormatError, match=r"0007.npz .*unexpected array\(s\) \['extra'\]"):
        load_scene(d)
    del arrays["extra"], arrays["means"]
    np.savez(f, **arrays)
    with pytest.raises(SceneFormatError, match=r"0007.npz .*cannot build GaussianCloud.*means"):
        load_scene(d)


def test_wrong_dtype_payload_in_edited_npz(saved):
    _, d = saved
    f = d / "payloads" / "0001.npz"
    with np.load(f) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["faces"] = arrays["faces"].astype(np.float64)
    np.savez(f, **arrays)
    with pytest.raises(SceneFormatError, match=r"0001.npz .*node /objects/spot.*Mesh: field 'faces' must be an integer array"):
        load_scene(d)


def test_nan_transform(saved):
    _, d = saved
    edit_json(d, lambda doc: node_entry(doc, "/points")["transform"][1].__setitem__(3, float("nan")))
    with pytest.raises(SceneFormatError, match=r"scene.json: node /points: field 'transform'.*NaN"):
        load_scene(d)


@pytest.mark.parametrize("bad", [
    [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]],    # scale
    [[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],  # shear
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]],    # bad last row
])
def test_non_rigid_transform(saved, bad):
    _, d = saved
    edit_json(d, lambda doc: node_entry(doc, "/volume/grid").update(transform=bad))
    with pytest.raises(SceneFormatError, match=r"scene.json: node /volume/grid: field 'transform': not a rigid"):
        load_scene(d)


def test_transform_of_wrong_shape(saved):
    _, d = saved
    edit_json(d, lambda doc: node_entry(doc, "/points").update(transform=[[1, 0, 0], [0, 1, 0]]))
    with pytest.raises(SceneFormatError, match=r"node /points: field 'transform' must be a 4x4"):
        load_scene(d)


def test_duplicate_path(saved):
    # paths name the parent, so scene.json cannot express a cycle; duplicates and
    # missing/late parents are what a hand edit can get wrong
    _, d = saved
    edit_json(d, lambda doc: doc["nodes"].append(dict(node_entry(doc, "/points"), meta={"copy": True})))
    with pytest.raises(SceneFormatError, match=r"scene.json: node /points: duplicate name.*listed twice \(again at nodes\[11\]\)"):
        load_scene(d)


def test_missing_or_late_parent(saved):
    _, d = saved
    edit_json(d, lambda doc: doc["nodes"].remove(node_entry(doc, "/volume")))
    with pytest.raises(SceneFormatError, match=r"node /volume/grid: field 'path': parent '/volume' is not listed before it"):
        load_scene(d)
    edit_json(d, lambda doc: doc["nodes"].reverse())  # children before parents
    with pytest.raises(SceneFormatError, match=r"missing parent"):
        load_scene(d)


def test_invalid_paths_and_payload_refs(saved):
    _, d = saved
    original = (d / "scene.json").read_text()
    cases = [
        (lambda doc: node_entry(doc, "/points").update(path="points"), r"nodes\[6\]: field 'path': invalid path 'points'"),
        (lambda doc: node_entry(doc, "/points").update(path="/"), r"nodes\[6\]: field 'path' is '/'"),
        (lambda doc: node_entry(doc, "/points")["payload"].update(type="Teapot"), r"node /points: field 'payload.type' is 'Teapot'"),
        (lambda doc: node_entry(doc, "/points")["payload"].update(file="../../etc/passwd"), r"node /points: field 'payload.file' must be a relative path inside"),
        (lambda doc: node_entry(doc, "/cameras/bare")["payload"]["model"].pop("fx"), r"node /cameras/bare: field 'model': .*'fx'"),
        (lambda doc: node_entry(doc, "/points").update(meta=[1]), r"node /points: field 'meta' must be a dict"),
        (lambda doc: node_entry(doc, "/points").update(colour="red"), r"nodes\[6\]: unknown field\(s\) \['colour'\]"),
    ]
    for edit, msg in cases:
        (d / "scene.json").write_text(original)
        edit_json(d, edit)
        with pytest.raises(SceneFormatError, match=msg):
            load_scene(d)


def test_camera_payload_must_match_model_size(saved):
    _, d = saved
    edit_json(d, lambda doc: node_entry(doc, "/cameras/cam_001")["payload"]["model"].update(width=13))
    with pytest.raises(SceneFormatError, match=r"node /cameras/cam_001\): Camera: field 'image' .*\(H=10, W=13\)"):
        load_scene(d)


# -- geo info -------------------------------------------------------------------


def test_summarize_scene_and_mesh_file(saved, tmp_path):
    g, d = saved
    text = summarize(d)
    assert "nodes: 11" in text
    assert "Camera 3" in text and "Mesh 2" in text and "GaussianCloud 1" in text and "VoxelGrid 1" in text
    assert "cameras: 3 (resolutions: 12x10 3" in text and "splits: test 1, train 1" in text
    lo, hi = g.world_bounds()
    assert f"min [{lo[0]:.4g}" in text and f"max [{hi[0]:.4g}" in text
    mesh = summarize(SPOT)
    assert "vertices: 3225, faces: 5856" in mesh and "uv: yes" in mesh and "colours: no" in mesh
    with pytest.raises(FileNotFoundError, match="missing.obj"):
        summarize(tmp_path / "missing.obj")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a scene directory \(no scene.json\)"):
        summarize(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes.txt: unsupported file type '.txt'"):
        summarize(tmp_path / "notes.txt")
