"""Synthetic ground truth (scenes.data.synthetic) against analytic geometry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from geo.cameras import CameraModel, opengl_to_opencv
from geo.transforms import look_at, se3_inverse
from scenes.data.synthetic import (
    SyntheticConfig,
    camera_layout,
    flow_between,
    load_flow,
    pinhole_camera,
    render_synthetic,
    render_views,
)

import trimesh  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SPOT = ASSETS / "spot" / "spot_triangulated.obj"


# ----------------------------------------------------------------- helpers


def quad(corners, uv=None, image=None, subdivide=False):
    """Two-triangle quad from 4 corners (counter-clockwise), optionally textured."""
    v = np.asarray(corners, dtype=np.float64)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    if uv is None:
        return trimesh.Trimesh(v, f, process=False)
    visual = trimesh.visual.TextureVisuals(uv=np.asarray(uv, dtype=np.float64), image=image)
    return trimesh.Trimesh(v, f, visual=visual, process=False)


def pixel_rays(cam, c2w):
    """Reference rays through pixel centres (unit z in the camera frame)."""
    j, i = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    d = np.stack([(j - cam.cx) / cam.fx, (i - cam.cy) / cam.fy, np.ones_like(j)], -1) @ c2w[:3, :3].T
    return c2w[:3, 3], d


def project(cam, c2w, p):
    w2c = se3_inverse(c2w)
    x = p @ w2c[:3, :3].T + w2c[:3, 3]
    return np.stack([cam.fx * x[..., 0] / x[..., 2] + cam.cx, cam.fy * x[..., 1] / x[..., 2] + cam.cy], -1), x[..., 2]


def pixel_centres(h, w):
    j, i = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    return np.stack([j, i], -1)


@pytest.fixture(scope="module")
def spot():
    mesh = trimesh.load(SPOT, process=False, force="mesh")
    from PIL import Image

    c = 0.5 * (mesh.vertices.min(0) + mesh.vertices.max(0))
    mesh.vertices = (mesh.vertices - c) / np.linalg.norm(mesh.vertices - c, axis=1).max()
    return mesh, Image.open(SPOT.parent / "spot_texture.png")


# ----------------------------------------------------------------- depth, normals, alpha


def test_depth_matches_ray_plane_intersection():
    # a tilted plane n.x = c, far larger than the view
    n = np.array([0.2, 0.3, 1.0])
    n /= np.linalg.norm(n)
    c = -0.1
    e1 = np.cross(n, [1.0, 0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    p0 = c * n
    mesh = quad([p0 + 50 * (a * e1 + b * e2) for a, b in [(-1, -1), (1, -1), (1, 1), (-1, 1)]])
    cam = CameraModel(width=40, height=30, fx=35.0, fy=38.0, cx=19.0, cy=16.0)
    c2w = look_at(np.array([0.5, -0.4, 3.0]), np.array([0.1, 0.0, 0.0]), (0, 1, 0))
    out = render_views(mesh, [(cam, c2w)])
    o, d = pixel_rays(cam, c2w)
    t = (c - n @ o) / (d @ n)  # z-depth, since d has unit z in the camera frame
    assert out["alpha"][0].all()
    np.testing.assert_allclose(out["depth"][0], t, rtol=2e-6)
    x = o + out["depth"][0][..., None].astype(np.float64) * d  # unproject depth
    assert np.abs(x @ n - c).max() < 1e-5
    np.testing.assert_allclose(out["points"][0], x, atol=1e-5)


def test_sphere_depth_normals_and_background():
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    cam = pinhole_camera(48, 40.0)
    c2w = look_at(np.array([0.3, 0.8, 3.2]), np.zeros(3), (0, 1, 0))
    out = render_views(mesh, [(cam, c2w)], background=(0.2, 0.4, 0.6))
    o, d = pixel_rays(cam, c2w)
    # analytic ray/unit-sphere intersection: |o + t d|^2 = 1
    a, b, cc = (d * d).sum(-1), 2 * d @ o, o @ o - 1
    disc = b * b - 4 * a * cc
    hit = out["alpha"][0] > 0
    assert hit.sum() > 300
    # the inscribed polyhedron is hit strictly inside the sphere's silhouette
    assert (disc[hit] > 0).all()
    t = (-b - np.sqrt(np.where(disc > 0, disc, 0))) / (2 * a)
    # tessellation sag ~1e-3 radially; grazing rays amplify it, so compare depth away from the rim
    x_true = o + t[..., None] * d
    cos_inc = np.abs((x_true * d).sum(-1)) / np.linalg.norm(d, axis=-1)  # |normal . view| on the unit sphere
    facing = hit & (cos_inc > 0.3)
    assert facing.sum() > 0.7 * hit.sum()
    np.testing.assert_allclose(out["depth"][0][facing], t[facing], rtol=1.5e-3)
    x = o + out["depth"][0][..., None] * d
    assert np.abs(np.linalg.norm(x[hit], axis=-1) - 1).max() < 1.5e-3
    # normals: unit, facing the camera, close to the analytic sphere normal
    nrm = out["normals"][0][hit].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=-1), 1, atol=1e-5)
    view = -d[hit] / np.linalg.norm(d[hit], axis=-1, keepdims=True)
    assert ((nrm * view).sum(-1) > 0).all()
    assert ((out["face_normals"][0][hit] * view).sum(-1) > 0).all()
    cosang = (nrm * x[hit] / np.linalg.norm(x[hit], axis=-1, keepdims=True)).sum(-1)
    assert cosang.min() > math.cos(math.radians(1.0))
    # background: alpha 0, depth 0, normals 0, colour = background
    bg = ~hit
    assert bg.sum() > 300 and (disc[bg] < 0.05).all()
    assert (out["depth"][0][bg] == 0).all() and (out["normals"][0][bg] == 0).all()
    np.testing.assert_allclose(out["rgb"][0][bg], np.broadcast_to([0.2, 0.4, 0.6], (bg.sum(), 3)), atol=1e-7)
    assert (out["face_ids"][0][bg] == -1).all()


def test_flat_normals_on_cube_and_two_sided_plane():
    cube = trimesh.creation.box(extents=(1, 1, 1))
    cam = pinhole_camera(32, 50.0)
    c2w = look_at(np.array([1.5, 1.2, 2.0]), np.zeros(3), (0, 1, 0))
    out = render_views(cube, [(cam, c2w)])
    hit = out["alpha"][0] > 0
    nrm = out["normals"][0][hit]
    # crease angle 60 deg < 90 deg: every normal is one of the visible face normals
    assert np.allclose(np.abs(nrm).max(-1), 1, atol=1e-6)
    assert set(map(tuple, np.rint(nrm).astype(int))) == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}
    # a plane seen from its back side: normals flipped towards the camera
    back = quad([(-5, -5, 0), (-5, 5, 0), (5, 5, 0), (5, -5, 0)])  # winding gives normal -z
    c2w = look_at(np.array([0.0, 0.0, 2.0]), np.zeros(3), (0, 1, 0))
    out = render_views(back, [(cam, c2w)])
    np.testing.assert_allclose(out["normals"][0].reshape(-1, 3), np.broadcast_to([0, 0, 1], (32 * 32, 3)), atol=1e-6)


# ----------------------------------------------------------------- colour


def test_texture_gradient_is_upright():
    """Texture row 0 is the top of the image, v = 0 its bottom (OBJ convention)."""
    from PIL import Image

    tw = 64
    r, c = np.meshgrid(np.arange(tw), np.arange(tw), indexing="ij")
    tex = np.zeros((tw, tw, 3), np.float32)
    tex[..., 0] = (c + 0.5) / tw
    tex[..., 1] = (r + 0.5) / tw
    img = Image.fromarray(np.rint(tex * 255).astype(np.uint8))  # as a file would arrive
    mesh = quad([(-1, -1, 0), (1, -1, 0), (1, 1, 0), (-1, 1, 0)], uv=[(0, 0), (1, 0), (1, 1), (0, 1)], image=img)
    w, dist = 32, 2.0
    cam = CameraModel(width=w, height=w, fx=w / 2 * dist, fy=w / 2 * dist, cx=w / 2, cy=w / 2)  # quad fills the image
    c2w = look_at(np.array([0.0, 0.0, dist]), np.zeros(3), (0, 1, 0))
    out = render_views(mesh, [(cam, c2w)], texture=tex)  # exact float texture
    assert out["alpha"][0].all()
    # pixel (i, j) centre hits u = (j + .5) / w, v = 1 - (i + .5) / w: bilinear reproduces the ramp
    j, i = np.meshgrid(np.arange(w) + 0.5, np.arange(w) + 0.5)
    np.testing.assert_allclose(out["rgb"][0][..., 0], j / w, atol=1e-5)
    np.testing.assert_allclose(out["rgb"][0][..., 1], i / w, atol=1e-5)
    # the PIL material image gives the same picture up to 8-bit quantisation
    out8 = render_views(mesh, [(cam, c2w)])
    np.testing.assert_allclose(out8["rgb"][0], out["rgb"][0], atol=1 / 255)


def test_vertex_colours_interpolate_barycentrically_and_headlight_darkens():
    v = np.array([(-1.0, -1, 0), (1, -1, 0), (0, 1, 0)])
    cols = np.array([(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255)], np.uint8)
    mesh = trimesh.Trimesh(v, [[0, 1, 2]], vertex_colors=cols, process=False)
    cam = pinhole_camera(32, 60.0)
    c2w = look_at(np.array([0.1, 0.1, 2.0]), np.zeros(3), (0, 1, 0))
    out = render_views(mesh, [(cam, c2w)])
    hit = out["alpha"][0] > 0
    p = out["points"][0][hit]
    # barycentrics of the hit points, solved from positions: [v0 v1 v2] w = p, sum w = 1
    A = np.vstack([v[:, :2].T, np.ones(3)])
    wts = np.linalg.solve(A, np.vstack([p[:, :2].T, np.ones(len(p))])).T
    np.testing.assert_allclose(out["rgb"][0][hit], wts, atol=1e-5)
    lit = render_views(mesh, [(cam, c2w)], shading="headlight")
    assert (lit["rgb"][0][hit] <= out["rgb"][0][hit] + 1e-6).all()
    # nearly head-on at the image centre: nearly the albedo
    k = np.argmin(np.linalg.norm(pixel_centres(32, 32)[hit] - 16, axis=-1))
    np.testing.assert_allclose(lit["rgb"][0][hit][k], out["rgb"][0][hit][k], atol=0.01)


# ----------------------------------------------------------------- flow


def test_flow_equals_plane_homography():
    n_w = np.array([0.1, -0.2, 1.0])
    n_w /= np.linalg.norm(n_w)
    c_w = 0.05
    e1 = np.cross(n_w, [1.0, 0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n_w, e1)
    mesh = quad([c_w * n_w + 20 * (a * e1 + b * e2) for a, b in [(-1, -1), (1, -1), (1, 1), (-1, 1)]])
    cam_a = CameraModel(width=40, height=32, fx=40.0, fy=40.0, cx=20.0, cy=16.0)
    cam_b = CameraModel(width=40, height=32, fx=44.0, fy=42.0, cx=21.0, cy=15.0)
    c2w_a = look_at(np.array([0.2, 0.1, 3.0]), np.zeros(3), (0, 1, 0))
    c2w_b = look_at(np.array([-0.8, 0.5, 2.6]), np.array([0.1, 0.0, 0.0]), (0, 1, 0))
    out = render_views(mesh, [(cam_a, c2w_a), (cam_b, c2w_b)], flow=True)
    # H = K_b (R + t n^T / d) K_a^-1 for the plane n^T X_a = d in camera a's frame
    T_ba = se3_inverse(c2w_b) @ c2w_a
    R, t = T_ba[:3, :3], T_ba[:3, 3]
    n_a = c2w_a[:3, :3].T @ n_w
    d_a = c_w - n_w @ c2w_a[:3, 3]
    K = lambda c: np.array([[c.fx, 0, c.cx], [0, c.fy, c.cy], [0, 0, 1]])  # noqa: E731
    H = K(cam_b) @ (R + np.outer(t, n_a) / d_a) @ np.linalg.inv(K(cam_a))
    x = pixel_centres(32, 40)
    xh = np.concatenate([x, np.ones((32, 40, 1))], -1) @ H.T
    expected = xh[..., :2] / xh[..., 2:] - x
    np.testing.assert_allclose(out["flow"][0, 1], expected, atol=2e-3)
    # no occluder: valid exactly where the point lands inside b
    land = x + expected
    inside = (land[..., 0] >= 0) & (land[..., 0] < 40) & (land[..., 1] >= 0) & (land[..., 1] < 32)
    assert 0.2 < inside.mean() < 1.0  # the test covers both cases
    assert (out["flow_valid"][0, 1] == inside).all()
    # same for b -> a via the inverse homography, and diagonal = identity
    xh = np.concatenate([x, np.ones((32, 40, 1))], -1) @ np.linalg.inv(H).T
    np.testing.assert_allclose(out["flow"][1, 0], xh[..., :2] / xh[..., 2:] - x, atol=2e-3)
    assert (out["flow"][0, 0] == 0).all() and out["flow_valid"][0, 0].all()


def test_occluded_pixels_are_invalid():
    wall = quad([(-6, -6, 0), (6, -6, 0), (6, 6, 0), (-6, 6, 0)])
    s = 0.3  # occluder: square of half-size s at z = 1
    occ = quad([(-s, -s, 1), (s, -s, 1), (s, s, 1), (-s, s, 1)])
    mesh = trimesh.util.concatenate([wall, occ])
    cam = pinhole_camera(48, 50.0)
    c2w_a = look_at(np.array([-0.9, 0.0, 3.0]), np.zeros(3), (0, 1, 0))
    c2w_b = look_at(np.array([0.9, 0.2, 3.0]), np.zeros(3), (0, 1, 0))
    views = render_views(mesh, [(cam, c2w_a), (cam, c2w_b)])
    flow, valid = flow_between(views, [(cam, c2w_a), (cam, c2w_b)], 0, 1)
    p = views["points"][0]
    on_wall = (views["alpha"][0] > 0) & (np.abs(p[..., 2]) < 1e-6)
    # analytic: the segment from camera b to p crosses z = 1 at q; occluded iff q is in the square
    o_b = c2w_b[:3, 3]
    lam = (1 - o_b[2]) / (p[..., 2] - o_b[2])
    q = o_b + lam[..., None] * (p - o_b)
    margin = np.abs(q[..., :2]).max(-1) - s  # < 0 inside the occluder's shadow
    px = 2 * 1.0 / cam.fx * (o_b[2] - 1)  # ~2 pixels at the occluder's depth
    land = pixel_centres(48, 48) + flow
    inside = (land >= 0).all(-1) & (land < 48).all(-1)
    shadow = on_wall & (margin < -px)
    assert shadow.sum() > 20
    assert not valid[shadow].any()
    clear = on_wall & (margin > px) & inside
    assert valid[clear].all()
    # pixels of a that see the occluder itself stay visible in b
    on_occ = (views["alpha"][0] > 0) & (np.abs(p[..., 2] - 1) < 1e-6) & inside
    assert on_occ.sum() > 20 and valid[on_occ].mean() > 0.9


def test_spot_flow_lands_on_the_same_surface_point(spot):
    mesh, tex = spot
    cam = pinhole_camera(48, 40.0)
    cfg = SyntheticConfig(views=12, layout="ring", elevation_deg=25.0)
    poses = camera_layout(cfg)[:3]  # 30 degrees apart
    cams = [(cam, c2w) for c2w in poses]
    out = render_views(mesh, cams, texture=tex, flow=True)
    for a, b in [(0, 1), (1, 0), (0, 2)]:
        fl, ok = out["flow"][a, b], out["flow_valid"][a, b]
        hit_a = out["alpha"][a] > 0
        assert ok.sum() > 0.5 * hit_a.sum()
        assert (~ok[hit_a]).sum() > 0  # self-occlusion / silhouettes exist
        assert not ok[~hit_a].any()
        land = pixel_centres(48, 48) + fl
        row, col = np.floor(land[ok][:, 1]).astype(int), np.floor(land[ok][:, 0]).astype(int)
        pa, pb = out["points"][a][ok], out["points"][b][row, col]
        err = np.linalg.norm(pa - pb, axis=-1) / (out["depth"][a][ok] / cam.fx)  # in pixel footprints
        assert np.median(err) < 0.6 and np.quantile(err, 0.95) < 2.0  # grazing pixels span more
        # forward-backward consistency: following b -> a from the landing pixel returns home
        back = out["flow"][b, a][row, col]
        assert out["flow_valid"][b, a][row, col].mean() > 0.95
        home = np.floor(land[ok]) + 0.5 + back
        err = np.linalg.norm(home - pixel_centres(48, 48)[ok], axis=-1)
        # the nearest-pixel snap in b (<= 0.71 px) is stretched by foreshortening on the way back
        assert np.median(err) < 0.7 and np.quantile(err, 0.95) < 2.5
        # photometric consistency holds for unlit albedo (up to texture resampling)
        rgb_err = np.abs(out["rgb"][a][ok] - out["rgb"][b][row, col]).mean()
        assert rgb_err < 0.05


# ----------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", ["ring", "sphere", "forward"])
def test_camera_layouts_look_at_the_object(layout):
    cfg = SyntheticConfig(views=10, layout=layout, fov_deg=40.0, elevation_deg=20.0)
    center, radius = np.array([0.5, -1.0, 2.0]), 2.0
    poses = np.stack(camera_layout(cfg, center, radius))
    assert poses.shape == (10, 4, 4)
    eyes, z = poses[:, :3, 3], poses[:, :3, 2]
    to_c = (center - eyes) / np.linalg.norm(center - eyes, axis=-1, keepdims=True)
    np.testing.assert_allclose((z * to_c).sum(-1), 1, atol=1e-9)
    # the image's up (-y) points along +y of the world
    assert ((-poses[:, :3, 1]) @ np.array([0, 1.0, 0]) > 0).all()
    dist = np.linalg.norm(eyes - center, axis=-1)
    if layout == "ring":
        # auto distance: the bounding sphere just fits the field of view
        np.testing.assert_allclose(radius / dist, math.sin(math.radians(20.0)), rtol=1e-9)
        np.testing.assert_allclose((eyes - center)[:, 1] / dist, math.sin(math.radians(20.0)), atol=1e-9)
    elif layout == "sphere":
        dirs = (eyes - center) / dist[:, None]
        assert np.abs(dirs.mean(0)).max() < 0.1  # spread over the whole sphere
        np.testing.assert_allclose(dist, radius / math.sin(math.radians(20.0)))
    else:
        assert (z @ z.mean(0) / np.linalg.norm(z.mean(0)) > math.cos(math.radians(15))).all()


# ----------------------------------------------------------------- dataset round trip


def test_render_synthetic_roundtrip(tmp_path, spot):
    from PIL import Image

    cfg = SyntheticConfig(views=4, resolution=32, flow_dtype="float16", background=(0.0, 0.0, 0.0))
    out = render_synthetic(SPOT, tmp_path / "ds", cfg)
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["camera_model"] == "PINHOLE" and (meta["w"], meta["h"]) == (32, 32)
    cam = pinhole_camera(32, 40.0)
    assert (meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"]) == (cam.fx, cam.fy, cam.cx, cam.cy)
    poses = camera_layout(cfg)  # normalize=True: unit sphere at the origin
    assert len(meta["frames"]) == 4
    for fr, c2w in zip(meta["frames"], poses):
        np.testing.assert_allclose(opengl_to_opencv(np.array(fr["transform_matrix"])), c2w, atol=1e-12)
    # the stored similarity maps the original mesh into the unit sphere
    sim = np.array(meta["synthetic"]["normalization"]["matrix"])
    v = trimesh.load(SPOT, process=False, force="mesh").vertices
    vn = v @ sim[:3, :3].T + sim[:3, 3]
    np.testing.assert_allclose(np.linalg.norm(vn, axis=1).max(), 1.0, rtol=1e-12)

    # files agree with an in-memory render of the normalised mesh
    mesh, tex = spot
    ref = render_views(mesh, [(cam, c2w) for c2w in poses], texture=tex, background=(0, 0, 0))
    fr = meta["frames"][1]
    depth = np.load(out / fr["depth_file_path"])
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, ref["depth"][1], rtol=1e-6, atol=1e-6)
    mask = np.asarray(Image.open(out / fr["mask_path"]))
    assert set(np.unique(mask)) <= {0, 255} and ((mask > 0) == (depth > 0)).all()
    rgb = np.asarray(Image.open(out / fr["file_path"]))
    assert rgb.shape == (32, 32, 3) and (rgb[mask == 0] == 0).all()
    nrm = np.load(out / fr["normal_file_path"]).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(nrm[mask > 0], axis=-1), 1, atol=2e-3)

    assert meta["flow"]["dir"] == "flow" and meta["flow"]["pairs"] == "all"
    assert len(list((out / "flow").glob("*.npz"))) == 12
    fl, ok = load_flow(out, 1, 2)
    assert fl.dtype == np.float32 and fl.shape == (32, 32, 2) and ok.dtype == bool and ok.shape == (32, 32)
    ref_fl, ref_ok = flow_between(ref, [(cam, c2w) for c2w in poses], 1, 2)
    assert (ok == ref_ok).all()
    np.testing.assert_allclose(fl, ref_fl, atol=np.abs(ref_fl).max() * 2**-10)
    fl, ok = load_flow(out, 2, 2)
    assert (fl == 0).all() and (ok == (np.load(out / meta["frames"][2]["depth_file_path"]) > 0)).all()

    # rewriting replaces the dataset atomically; a foreign directory is refused
    render_synthetic(SPOT, out, SyntheticConfig(views=2, resolution=16, flow=False))
    meta = json.loads((out / "transforms.json").read_text())
    assert len(meta["frames"]) == 2 and "flow" not in meta and not (out / "flow").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        render_synthetic(SPOT, tmp_path / "other", cfg)


def test_dataset_loads_with_load_capture(tmp_path):
    from scenes import data
    from scenes.payloads import Camera

    cfg = SyntheticConfig(views=3, resolution=24, flow=False)
    out = render_synthetic(SPOT, tmp_path / "ds", cfg)
    graph = data.load_capture(out, holdout_every=None)
    nodes = sorted(graph.find(Camera), key=lambda n: n.path)
    assert [n.path for n in nodes] == ["/cameras/r_000", "/cameras/r_001", "/cameras/r_002"]
    cam = pinhole_camera(24, 40.0)
    for k, (node, c2w) in enumerate(zip(nodes, camera_layout(cfg))):
        np.testing.assert_allclose(graph.world_transform(node.path), c2w, atol=1e-9)
        c = node.payload
        assert (c.model.fx, c.model.fy, c.model.cx, c.model.cy, c.model.width) == (cam.fx, cam.fy, cam.cx, cam.cy, 24)
        np.testing.assert_array_equal(c.depth, np.load(out / "depth" / f"r_{k:03d}.npy"))
        assert (np.asarray(c.mask, bool) == (c.depth > 0)).all()
        assert c.image.shape[:2] == (24, 24)


def test_bundled_sample_is_consistent():
    root = ASSETS / "spot_sample"
    meta = json.loads((root / "transforms.json").read_text())
    n = len(meta["frames"])
    assert n >= 8 and len(list((root / "flow").glob("*.npz"))) == n * (n - 1)
    fl, ok = load_flow(root, 0, 1)
    assert fl.shape == (meta["h"], meta["w"], 2) and ok.any()
