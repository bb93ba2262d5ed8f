"""Gaussian exports: INRIA PLY and .splat round trips, third-party readers, NaN handling, TSDF mesh."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from scenes.payloads import GaussianCloud


def _cloud(n=200, degree=3, seed=0) -> GaussianCloud:
    rng = np.random.default_rng(seed)
    return GaussianCloud(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=rng.normal(-3, 0.5, size=(n, 3)).astype(np.float32),
        opacity_logits=rng.normal(size=n).astype(np.float32),
        sh=rng.normal(0, 0.5, size=(n, (degree + 1) ** 2, 3)).astype(np.float32),
    )


@pytest.mark.parametrize("degree", [0, 3])
def test_ply_round_trip_exact(tmp_path, degree):
    from scenes.export.ply_gaussians import read_gaussian_ply, write_gaussian_ply

    c = _cloud(degree=degree)
    p = write_gaussian_ply(tmp_path / "g.ply", c)
    r = read_gaussian_ply(p)
    for k in GaussianCloud._ARRAYS:
        np.testing.assert_array_equal(getattr(r, k), getattr(c, k), err_msg=k)


def test_ply_inria_layout_and_third_party_readers(tmp_path):
    import open3d as o3d
    import trimesh

    from scenes.export.ply_gaussians import write_gaussian_ply

    c = _cloud(n=50, degree=3)
    p = write_gaussian_ply(tmp_path / "g.ply", c)
    header = p.read_bytes().split(b"end_header")[0].decode()
    props = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert props == expected
    assert "binary_little_endian" in header
    tm = trimesh.load(p)
    assert len(tm.vertices) == 50
    np.testing.assert_allclose(np.asarray(tm.vertices), c.means, atol=1e-6)
    pc = o3d.io.read_point_cloud(str(p))
    assert len(pc.points) == 50
    np.testing.assert_allclose(np.asarray(pc.points), c.means, atol=1e-6)
    # f_rest is channel-major: f_rest_{c*15 + k-1} is coefficient k of channel c
    raw = np.frombuffer(p.read_bytes()[len(header) + len("end_header\n"):], "<f4").reshape(50, -1)
    assert raw[7, 9 + 15 * 2 + 4] == c.sh[7, 5, 2]


def test_splat_round_trip(tmp_path):
    from scenes.export.splat import read_splat, write_splat
    from scenes.payloads import SH_C0

    c = _cloud(n=100, degree=0)
    p = write_splat(tmp_path / "g.splat", c)
    assert p.stat().st_size == 32 * 100
    r = read_splat(p)
    assert r.num == 100
    order = np.lexsort(r.means.T)
    ref = np.lexsort(c.means.T)
    np.testing.assert_array_equal(r.means[order], c.means[ref])
    np.testing.assert_allclose(r.scales[order], c.scales[ref], rtol=1e-6)
    col = lambda g: np.clip(0.5 + SH_C0 * g.sh[:, 0], 0, 1)  # noqa: E731
    np.testing.assert_allclose(col(r)[order], col(c)[ref], atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(r.opacities[order], c.opacities[ref], atol=1 / 255)
    q = lambda g: g.quats / np.linalg.norm(g.quats, axis=1, keepdims=True)  # noqa: E731
    dots = np.abs((q(r)[order] * q(c)[ref]).sum(1))
    assert dots.min() > 0.99


def test_nonfinite_dropped_with_warning_never_empty(tmp_path):
    from scenes.export.ply_gaussians import read_gaussian_ply, write_gaussian_ply
    from scenes.export.splat import read_splat, write_splat

    c = _cloud(n=10)
    arrays = {k: getattr(c, k).copy() for k in GaussianCloud._ARRAYS}
    arrays["means"][2, 0] = np.nan
    arrays["sh"][5, 3, 1] = np.inf
    with pytest.warns(UserWarning, match="dropping 2 of 10"):
        write_gaussian_ply(tmp_path / "g.ply", arrays)
    assert read_gaussian_ply(tmp_path / "g.ply").num == 8
    with pytest.warns(UserWarning, match="dropping 2 of 10"):
        write_splat(tmp_path / "g.splat", arrays)
    assert read_splat(tmp_path / "g.splat").num == 8
    arrays["means"][:] = np.nan
    with pytest.raises(ValueError, match="refusing to write an empty file"):
        write_gaussian_ply(tmp_path / "bad.ply", arrays)
    assert not (tmp_path / "bad.ply").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_gaussian_ply(tmp_path / "clean.ply", c)  # finite: no warning


def test_tsdf_mesh_exports_load(tmp_path):
    """Per-pixel Gaussians of a Spot view fused into a mesh; .ply and .glb load in trimesh and Open3D."""
    import open3d as o3d
    import trimesh

    from scenes.data import load_capture
    from scenes.export.mesh import write_mesh_file
    from scenes.export.tsdf import tsdf_mesh
    from scenes.payloads import Camera
    from scenes.render import pixel_gaussians

    g = load_capture("assets/spot_sample", holdout_every=None)
    cams = g.find(Camera)[:4]
    cloud = GaussianCloud.concat([pixel_gaussians(n, stride=2) for n in cams])
    mesh = tsdf_mesh(cloud, [(n.payload.model, n.world_transform) for n in cams], resolution=64)
    assert mesh.num_faces > 100
    write_mesh_file(tmp_path / "m.ply", mesh)
    write_mesh_file(tmp_path / "m.glb", mesh)
    tm = trimesh.load(tmp_path / "m.ply")
    assert len(tm.faces) == mesh.num_faces
    sc = trimesh.load(tmp_path / "m.glb")
    assert sum(len(x.faces) for x in sc.geometry.values()) == mesh.num_faces
    om = o3d.io.read_triangle_mesh(str(tmp_path / "m.ply"))
    assert len(om.triangles) == mesh.num_faces
    # the surface lies where the Gaussians are (unit-sphere-normalised Spot)
    assert np.abs(mesh.vertices).max() < 1.5
