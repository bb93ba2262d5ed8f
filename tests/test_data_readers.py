"""Dataset readers and writers: format agreement, exact pose recovery, resizing, splits, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from geo.cameras import CameraModel, opencv_to_opengl
from geo.transforms import look_at
from scenes import SceneGraph
from scenes.data import detect_format, load_capture, write_colmap, write_transforms_json
from scenes.payloads import Camera, PointCloud

W, H = 40, 30


def _ring_graph(seed: int = 0, n: int = 6, kind: str = "pinhole", shared: bool = False) -> SceneGraph:
    """``n`` cameras on a tilted ring looking at the origin, random images and depth, and a point cloud."""
    rng = np.random.default_rng(seed)
    g = SceneGraph()
    for i in range(n):
        a = 2 * math.pi * i / n + 0.1
        eye = np.array([3.0 * math.cos(a), 3.0 * math.sin(a), 0.5 + 0.1 * i]) + rng.normal(scale=0.01, size=3)
        c2w = look_at(eye, rng.normal(scale=0.05, size=3))
        j = 0 if shared else i
        dist = {}
        if kind == "opencv":
            dist = dict(k1=-0.1 + 0.01 * j, k2=0.02, k3=0.001 * j, p1=1e-3, p2=-2e-3)
        elif kind == "fisheye":
            dist = dict(k1=0.05, k2=-0.01, k3=0.002, k4=-1e-4 * (j + 1))
        cam = CameraModel(W, H, 35.5 + j / 3, 36.25 + j / 7, 20.3 + j / 11, 14.7, kind, **dist)
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = rng.uniform(1.0, 5.0, (H, W)).astype(np.float32)
        g.add(f"/cameras/cam_{i:03d}", payload=Camera(cam, image=img, depth=depth), transform=c2w)
    pts = rng.normal(size=(50, 3))
    g.add("/points", payload=PointCloud(pts, colors=rng.integers(0, 256, (50, 3), dtype=np.uint8)))
    return g


def _cameras(g: SceneGraph) -> dict:
    return {n.name: n for n in g.find(Camera)}


def _write_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# --------------------------------------------------------------------------- transforms.json vs COLMAP


@pytest.mark.parametrize("kind,shared", [("pinhole", True), ("opencv", False), ("fisheye", False)])
def test_transforms_and_colmap_readers_agree(tmp_path, kind, shared):
    g = _ring_graph(kind=kind, shared=shared)
    write_transforms_json(g, tmp_path / "ns")
    write_colmap(g, tmp_path / "cb", binary=True)
    write_colmap(g, tmp_path / "ct", binary=False)
    assert (tmp_path / "cb/sparse/0/images.bin").is_file() and (tmp_path / "ct/sparse/0/images.txt").is_file()

    models = [ln.split()[1] for ln in (tmp_path / "ct/sparse/0/cameras.txt").read_text().splitlines() if ln[0] != "#"]
    # opencv with k3 != 0 needs FULL_OPENCV (rational terms 0); with k3 == 0 plain OPENCV suffices
    expected = {"pinhole": ["PINHOLE"], "opencv": ["OPENCV"] + ["FULL_OPENCV"] * 5, "fisheye": ["OPENCV_FISHEYE"] * 6}
    assert models == expected[kind]

    loaded = {d: load_capture(tmp_path / d) for d in ("ns", "cb", "ct")}
    assert [loaded[d].meta["format"] for d in ("ns", "cb", "ct")] == ["nerfstudio", "colmap", "colmap"]
    ref = _cameras(g)
    for d, lg in loaded.items():
        cams = _cameras(lg)
        assert list(cams) == list(ref), d  # sorted by image file name
        for name, node in cams.items():
            src = ref[name]
            # transforms.json stores the matrix itself; COLMAP a quaternion + w2c translation (~2e-15 off)
            tol = 1e-15 if d == "ns" else 1e-12
            np.testing.assert_allclose(node.world_transform, src.world_transform, atol=tol, rtol=0)
            assert node.payload.model == src.payload.model, d  # float repr round-trips exactly
            np.testing.assert_array_equal(node.payload.image, src.payload.image)
            assert node.meta["split"] == ("test" if name == "cam_000" else "train")
            assert node.meta["image_path"].endswith(f"{name}.png")
    # COLMAP txt is written with repr (up to 17 significant digits), so bin and txt agree bit for bit
    for name, node in _cameras(loaded["ct"]).items():
        np.testing.assert_array_equal(node.world_transform, _cameras(loaded["cb"])[name].world_transform)
    # depth is only in transforms.json
    for name, node in _cameras(loaded["ns"]).items():
        np.testing.assert_array_equal(node.payload.depth, ref[name].payload.depth)
    # SfM points: COLMAP bin / txt and nerfstudio's ply all carry positions and colours exactly
    for d in ("cb", "ct", "ns"):
        pc = loaded[d]["/points"].payload
        np.testing.assert_array_equal(pc.points, g["/points"].payload.points)
        np.testing.assert_array_equal(pc.colors, g["/points"].payload.colors)


def test_colmap_shares_identical_intrinsics_and_finds_model_dirs(tmp_path):
    g = _ring_graph(shared=True)
    write_colmap(g, tmp_path / "s", binary=False)
    lines = [ln for ln in (tmp_path / "s/sparse/0/cameras.txt").read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 1 and lines[0].split()[1] == "PINHOLE"
    # the model directory itself, or a flat model next to images/
    g2 = load_capture(tmp_path / "s/sparse/0", holdout_every=None)
    assert len(g2.find(Camera)) == 6 and g2[("/cameras/cam_003")].payload.image is not None
    assert {n.meta["split"] for n in g2.find(Camera)} == {"train"}


def test_colmap_simple_models(tmp_path):
    root = tmp_path / "scene"
    (root / "sparse").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(3):
        _write_png(root / "images" / f"im{i}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    (root / "sparse/cameras.txt").write_text(
        "# comment\n1 SIMPLE_PINHOLE 40 30 33.0 20.0 15.0\n2 SIMPLE_RADIAL 40 30 34.0 19.5 15.5 -0.05\n"
        "3 RADIAL 40 30 35.0 20.0 15.0 0.1 -0.02\n"
    )
    # image 3 has no trailing 2D-point line: tolerated
    (root / "sparse/images.txt").write_text(
        "1 1 0 0 0 0 0 1 1 im0.png\n\n2 0.7071067811865476 0 0.7071067811865476 0 1 2 3 2 im1.png\n"
        "10.0 12.0 -1\n3 1 0 0 0 0 0 0 3 im2.png\n"
    )
    g = load_capture(root, holdout_every=None)
    c = _cameras(g)
    assert c["im0"].payload.model == CameraModel(40, 30, 33.0, 33.0, 20.0, 15.0, "pinhole")
    assert c["im1"].payload.model == CameraModel(40, 30, 34.0, 34.0, 19.5, 15.5, "opencv", k1=-0.05)
    assert c["im2"].payload.model == CameraModel(40, 30, 35.0, 35.0, 20.0, 15.0, "opencv", k1=0.1, k2=-0.02)
    # qvec = 90 deg about y (w2c); the camera centre is -R^T t
    R = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    np.testing.assert_allclose(c["im1"].world_transform[:3, :3], R.T, atol=1e-15)
    np.testing.assert_allclose(c["im1"].world_transform[:3, 3], -R.T @ [1.0, 2.0, 3.0], atol=1e-15)
    np.testing.assert_allclose(c["im0"].world_transform[:3, 3], [0, 0, -1.0])
    assert "/points" not in g


# --------------------------------------------------------------------------- LLFF


def test_llff_recovers_known_poses(tmp_path):
    rng = np.random.default_rng(2)
    n = 5
    c2ws = [look_at(rng.normal(size=3) + [0, 0, 4], rng.normal(scale=0.1, size=3), up=(0, -1, 0)) for _ in range(n)]
    rows = []
    for i, T in enumerate(c2ws):
        right, down, forward = T[:3, 0], T[:3, 1], T[:3, 2]
        hwf = [2 * H, 2 * W, 70.0]  # COLMAP saw 2x larger images than the ones in images/
        P = np.column_stack([down, right, -forward, T[:3, 3], hwf])  # LLFF: [down, right, back | t | hwf]
        rows.append(np.concatenate([P.ravel(), [0.5 + i, 10.0 + i]]))
        _write_png(tmp_path / "images" / f"IMG_{i:04d}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    np.save(tmp_path / "poses_bounds.npy", np.array(rows))

    assert detect_format(tmp_path) == "llff"
    g = load_capture(tmp_path, holdout_every=2)
    nodes = g.find(Camera)
    assert [nd.name for nd in nodes] == [f"IMG_{i:04d}" for i in range(n)]
    for i, nd in enumerate(nodes):
        np.testing.assert_array_equal(nd.world_transform, c2ws[i])
        assert nd.payload.model == CameraModel(W, H, 35.0, 35.0, W / 2, H / 2, "pinhole")
        assert nd.meta["near"] == 0.5 + i and nd.meta["far"] == 10.0 + i
        assert nd.meta["split"] == ("test" if i % 2 == 0 else "train")
    assert g.meta["format"] == "llff" and g.meta["near"] == 0.5 and g.meta["far"] == 14.0

    # the origin is in front of every camera (z-forward), near the image centre
    for nd in nodes:
        p = np.linalg.inv(nd.world_transform) @ [0, 0, 0, 1.0]
        assert p[2] > 0

    # LLFF's images_<factor>/ folder is used when downscale matches it
    for i in range(n):
        _write_png(tmp_path / "images_2" / f"IMG_{i:04d}.png", np.zeros((H // 2, W // 2, 3), np.uint8))
    g2 = load_capture(tmp_path, downscale=2)
    nd = g2["/cameras/IMG_0001"]
    assert "images_2" in nd.meta["image_path"] and nd.payload.image.shape == (H // 2, W // 2, 3)
    assert nd.payload.model == CameraModel(W // 2, H // 2, 17.5, 17.5, W / 4, H / 4, "pinhole")


def test_llff_count_mismatch(tmp_path):
    np.save(tmp_path / "poses_bounds.npy", np.zeros((3, 17)))
    _write_png(tmp_path / "images/a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"poses_bounds\.npy.*3 poses.*1 images"):
        load_capture(tmp_path)


# --------------------------------------------------------------------------- transforms.json specifics


def _gl_pose(rng) -> np.ndarray:
    return opencv_to_opengl(look_at(rng.normal(size=3) * 2 + [0, 0, 3], [0, 0, 0]))


def test_transforms_blender_overrides_distortion_depth(tmp_path):
    rng = np.random.default_rng(3)
    poses = [_gl_pose(rng) for _ in range(4)]
    for split in ("train", "test"):
        rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
        _write_png(tmp_path / split / "r_0.png", rgba)
    _write_png(tmp_path / "train/r_1.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    _write_png(tmp_path / "train/r_2.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    depth_m = rng.uniform(0.5, 4.0, (H, W)).astype(np.float32)
    np.save(tmp_path / "d1.npy", depth_m)
    depth_mm = rng.integers(0, 65535, (H, W)).astype(np.uint16)
    Image.fromarray(depth_mm).save(tmp_path / "d2.png")
    _write_png(tmp_path / "m2.png", (rng.uniform(size=(H, W)) > 0.5).astype(np.uint8) * 255)
    angle = 0.6911112070083618
    data = {
        "camera_angle_x": angle,
        "aabb_scale": 16,
        "frames": [
            {"file_path": "./train/r_0", "transform_matrix": poses[0].tolist()},
            {"file_path": "./test/r_0", "transform_matrix": poses[1].tolist()},
            {  # per-frame intrinsics and OpenCV distortion override the global field of view
                "file_path": "./train/r_1", "transform_matrix": poses[2].tolist(), "fl_x": 50.0, "fl_y": 51.0,
                "cx": 19.0, "cy": 14.0, "camera_model": "OPENCV", "k1": 0.1, "k2": -0.01, "k3": 0.002,
                "p1": 1e-3, "p2": 2e-3, "depth_file_path": "d1.npy",
            },
            {  # instant-ngp style: distortion without camera_model means OPENCV; 16-bit depth in mm
                "file_path": "./train/r_2.png", "transform_matrix": poses[3][:3].tolist(), "k1": -0.2,
                "depth_file_path": "d2.png", "mask_path": "m2.png",
            },
        ],
    }
    (tmp_path / "transforms_train.json").write_text(json.dumps(data))
    g = load_capture(tmp_path / "transforms_train.json", holdout=["r_2"])
    assert g.meta["aabb_scale"] == 16 and g.meta["format"] == "nerfstudio"
    c = _cameras(g)
    assert list(c) == ["r_0", "r_0_1", "r_1", "r_2"]  # sorted by file path: test/r_0 < train/r_*
    assert c["r_0"].meta["image_path"].endswith("test/r_0.png")
    f = 0.5 * W / math.tan(0.5 * angle)
    assert c["r_0"].payload.model == CameraModel(W, H, f, f, W / 2, H / 2, "pinhole")
    assert c["r_1"].payload.model == CameraModel(W, H, 50.0, 51.0, 19.0, 14.0, "opencv", 0.1, -0.01, 0.002, 0.0, 1e-3, 2e-3)
    assert c["r_2"].payload.model == CameraModel(W, H, f, f, W / 2, H / 2, "opencv", k1=-0.2)
    flip = np.diag([1.0, -1, -1, 1])
    np.testing.assert_array_equal(c["r_0_1"].world_transform, poses[0] @ flip)
    np.testing.assert_array_equal(c["r_0"].world_transform, poses[1] @ flip)
    # RGBA keeps alpha as channel 3
    assert c["r_0"].payload.image.shape == (H, W, 4)
    np.testing.assert_array_equal(c["r_1"].payload.depth, depth_m)
    np.testing.assert_allclose(c["r_2"].payload.depth, depth_mm.astype(np.float64) * 1e-3, rtol=1e-6)
    assert c["r_2"].payload.mask.dtype == bool and c["r_2"].payload.mask.mean() > 0.3
    assert [c[k].meta["split"] for k in c] == ["train", "train", "train", "test"]


def test_transforms_fisheye_and_fov_y(tmp_path):
    rng = np.random.default_rng(4)
    _write_png(tmp_path / "images/a.jpg", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    data = {
        "camera_model": "OPENCV_FISHEYE", "w": W, "h": H, "camera_angle_x": 1.0, "camera_angle_y": 0.8,
        "k1": 0.1, "k2": 0.01, "k3": 0.001, "k4": 1e-4,
        "frames": [{"file_path": "images/a.jpg", "transform_matrix": _gl_pose(rng).tolist()}],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    m = load_capture(tmp_path)["/cameras/a"].payload.model
    assert m.model == "fisheye" and (m.k1, m.k2, m.k3, m.k4) == (0.1, 0.01, 0.001, 1e-4)
    assert m.fx == pytest.approx(0.5 * W / math.tan(0.5)) and m.fy == pytest.approx(0.5 * H / math.tan(0.4))


# --------------------------------------------------------------------------- downscale, max_size, splits


def test_downscale_halves_intrinsics_and_resizes(tmp_path):
    g = _ring_graph(kind="opencv")
    node0 = g["/cameras/cam_001"]
    node0.payload.mask = np.random.default_rng(5).uniform(size=(H, W)) > 0.5
    write_transforms_json(g, tmp_path)
    full = _cameras(load_capture(tmp_path))
    half = _cameras(load_capture(tmp_path, downscale=2))
    assert load_capture(tmp_path, downscale=2, load_images=False).meta["downscale"] == 2
    for name, nd in half.items():
        m, m0 = nd.payload.model, full[name].payload.model
        assert (m.width, m.height) == (W // 2, H // 2)
        assert (m.fx, m.fy, m.cx, m.cy) == (m0.fx / 2, m0.fy / 2, m0.cx / 2, m0.cy / 2)
        assert (m.k1, m.k2, m.p1) == (m0.k1, m0.k2, m0.p1)  # distortion acts on normalised coordinates
        img0 = full[name].payload.image.astype(np.float64)
        box = img0.reshape(H // 2, 2, W // 2, 2, 3).mean((1, 3))  # area average
        assert np.abs(nd.payload.image - box).max() <= 1.0
        # depth: nearest sample at the pixel centre, never a blend
        np.testing.assert_array_equal(nd.payload.depth, full[name].payload.depth[1::2, 1::2])
        np.testing.assert_array_equal(nd.world_transform, full[name].world_transform)
    np.testing.assert_array_equal(half["cam_001"].payload.mask, full["cam_001"].payload.mask[1::2, 1::2])

    small = load_capture(tmp_path, max_size=16, load_images=True)["/cameras/cam_002"].payload
    assert (small.model.width, small.model.height) == (16, 12) and small.image.shape == (12, 16, 3)
    assert small.model.fx == pytest.approx(full["cam_002"].payload.model.fx * 0.4)


def test_splits(tmp_path):
    g = _ring_graph(n=10)
    write_colmap(g, tmp_path)

    def test_names(**kw):
        return [n.name for n in load_capture(tmp_path, load_images=False, **kw).find(Camera) if n.meta["split"] == "test"]

    assert test_names() == ["cam_000", "cam_008"]  # holdout_every=8: index % 8 == 0
    assert test_names(holdout_every=3) == ["cam_000", "cam_003", "cam_006", "cam_009"]
    assert test_names(holdout=["cam_002", 4, "cam_007.png", -1]) == ["cam_002", "cam_004", "cam_007", "cam_009"]
    assert test_names(holdout_every=None) == []
    with pytest.raises(ValueError, match="cam_999"):
        test_names(holdout=["cam_999"])
    g2 = load_capture(tmp_path, load_images=False)
    assert g2["/cameras/cam_000"].payload.image is None and g2.meta["source"] == str(tmp_path)


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def colmap_dir(tmp_path):
    write_colmap(_ring_graph(n=3), tmp_path, binary=True)
    return tmp_path


def test_truncated_cameras_bin(colmap_dir):
    p = colmap_dir / "sparse/0/cameras.bin"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"cameras\.bin: truncated.*camera"):
        load_capture(colmap_dir)


def test_truncated_images_bin(colmap_dir):
    p = colmap_dir / "sparse/0/images.bin"
    p.write_bytes(p.read_bytes()[:30])
    with pytest.raises(ValueError, match=r"images\.bin: truncated.*image record 0"):
        load_capture(colmap_dir)


def test_unknown_colmap_camera_model(colmap_dir):
    model = colmap_dir / "sparse/0"
    for f in model.iterdir():
        f.unlink()
    (model / "cameras.txt").write_text("1 FOV 40 30 30 30 20 15 0.1\n")
    (model / "images.txt").write_text("1 1 0 0 0 0 0 0 1 cam_000.png\n\n")
    with pytest.raises(ValueError, match=r"cameras\.txt: camera 1 uses the COLMAP camera model FOV"):
        load_capture(colmap_dir)


def test_full_opencv_with_rational_terms_is_rejected(colmap_dir):
    model = colmap_dir / "sparse/0"
    for f in model.iterdir():
        f.unlink()
    (model / "cameras.txt").write_text("1 FULL_OPENCV 40 30 30 30 20 15 0.1 0 0 0 0 0.5 0 0\n")
    (model / "images.txt").write_text("1 1 0 0 0 0 0 0 1 cam_000.png\n\n")
    with pytest.raises(ValueError, match="FULL_OPENCV with non-zero rational"):
        load_capture(colmap_dir)


def test_missing_image(colmap_dir):
    (colmap_dir / "images/cam_001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"cam_001\.png"):
        load_capture(colmap_dir)


def test_malformed_and_incomplete_json(tmp_path):
    p = tmp_path / "transforms.json"
    p.write_text('{"frames": [ {"file_path": "a.png", ')
    with pytest.raises(ValueError, match=r"transforms\.json: malformed JSON"):
        load_capture(tmp_path)
    _write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    p.write_text(json.dumps({"fl_x": 3.0, "frames": [{"file_path": "a.png"}]}))
    with pytest.raises(ValueError, match=r"transforms\.json: frames\[0\]: missing field 'transform_matrix'"):
        load_capture(tmp_path)
    p.write_text(json.dumps({"frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]}))
    with pytest.raises(ValueError, match=r"transforms\.json: frames\[0\]: missing field 'fl_x'"):
        load_capture(tmp_path)
    p.write_text(json.dumps({"fl_x": 3.0, "frames": [{"file_path": "b", "transform_matrix": np.eye(4).tolist()}]}))
    with pytest.raises(FileNotFoundError, match=r"image of .*transforms\.json: frames\[0\] not found: .*b "):
        load_capture(tmp_path)


def test_unrecognised_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no supported capture at .*transforms\.json.*COLMAP.*poses_bounds"):
        load_capture(tmp_path)


def test_writers_are_atomic_and_overwrite(tmp_path):
    g = _ring_graph(n=2)
    write_colmap(g, tmp_path, binary=True)
    write_colmap(g, tmp_path, binary=True)  # rewriting in place is fine
    write_transforms_json(g, tmp_path)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]
    assert not leftovers and not [p for p in tmp_path.rglob("*.tmp*")]
    # both formats side by side in one dir: transforms.json is detected first
    assert detect_format(tmp_path) == "nerfstudio"
    assert load_capture(tmp_path, format="colmap").meta["format"] == "colmap"
