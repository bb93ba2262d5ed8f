"""Viewer / interchange formats: round trips, atomic writes, NaN handling, and fuzzed readers."""

from __future__ import annotations

import json
import math
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenes.export.gltf import read_scene_glb, write_scene_glb
from scenes.export.html import write_html
from scenes.export.mesh import read_mesh_file, read_points_ply, write_mesh_file, write_points_ply
from scenes.export.ply_compressed import CHUNK_SIZE, morton_order, read_compressed_ply, write_compressed_ply
from scenes.export.ply_gaussians import read_gaussian_ply, write_gaussian_ply
from scenes.export.splat import read_splat, write_splat
from scenes.graph import SceneGraph
from scenes.payloads import Camera, GaussianCloud, Mesh, PointCloud

REPO = Path(__file__).resolve().parents[1]
SPOT = REPO / "assets" / "spot"


def random_cloud(n: int, degree: int = 3, seed: int = 0) -> GaussianCloud:
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return GaussianCloud(f(n, 3), f(n, 4), f(n, 3) - 3, f(n), np.clip(f(n, (degree + 1) ** 2, 3), -3.9, 3.9))


def nan_dict(cloud: GaussianCloud, rows) -> dict:
    d = {k: np.array(getattr(cloud, k)) for k in GaussianCloud._ARRAYS}
    for i, r in enumerate(rows):
        d[GaussianCloud._ARRAYS[i % 5]][r] = np.nan if i % 2 else np.inf
    return d


@pytest.fixture(scope="module")
def spot() -> Mesh:
    return Mesh.load(SPOT / "spot_triangulated.obj", texture=SPOT / "spot_texture.png")


# -- SuperSplat compressed PLY ----------------------------------------------------------------


@pytest.mark.parametrize("n,degree", [(1, 0), (255, 1), (256, 2), (1000, 3)])
def test_compressed_ply_round_trip_within_quantisation(tmp_path, n, degree):
    g = random_cloud(n, degree, seed=n)
    write_compressed_ply(tmp_path / "c.ply", g)
    r = read_compressed_ply(tmp_path / "c.ply")
    o = morton_order(g.means)
    assert r.num == n and r.sh.shape == g.sh.shape
    rows = np.arange(n) // CHUNK_SIZE
    for field, bits in (("means", (11, 10, 11)), ("log_scales", (11, 10, 11))):
        a = np.asarray(getattr(g, field), np.float64)[o]
        ext = np.array([np.ptp(a[rows == c], axis=0) for c in range(rows.max() + 1)])[rows]
        tol = ext / (2 * (2.0 ** np.array(bits) - 1)) + 1e-6
        assert np.all(np.abs(getattr(r, field) - a) <= tol), field
    q = g.quats[o] / np.linalg.norm(g.quats[o], axis=1, keepdims=True)
    assert np.all(np.abs(np.abs((q * r.quats).sum(1)) - 1) < 2e-3)  # same rotation up to sign
    assert np.all(np.abs(r.opacities - g.opacities[o]) <= 0.5 / 255 + 1e-6)
    col = lambda c: 0.5 + 0.28209479177387814 * np.asarray(c.sh[:, 0], np.float64)  # noqa: E731
    assert np.all(np.abs(col(r) - col(g)[o]) <= 1 / 255)
    if degree:
        assert np.all(np.abs(r.sh[:, 1:] - g.sh[o, 1:]) <= 8 / 256 / 2 + 1e-6)


def test_compressed_ply_header_is_the_supersplat_layout(tmp_path):
    write_compressed_ply(tmp_path / "c.ply", random_cloud(300, 1))
    head = (tmp_path / "c.ply").read_bytes().split(b"end_header\n")[0].decode().splitlines()
    assert "element chunk 2" in head and "element vertex 300" in head and "element sh 300" in head
    assert [h.split()[-1] for h in head if h.startswith("property uint")] == [
        "packed_position", "packed_rotation", "packed_scale", "packed_color"]
    assert sum(h.startswith("property uchar f_rest_") for h in head) == 9


# -- Gaussian writers: NaN dropping and atomicity ----------------------------------------------

GAUSSIAN_WRITERS = {"ply": write_gaussian_ply, "splat": write_splat, "ply-compressed": write_compressed_ply}
GAUSSIAN_READERS = {"ply": read_gaussian_ply, "splat": read_splat, "ply-compressed": read_compressed_ply}


@pytest.mark.parametrize("fmt", sorted(GAUSSIAN_WRITERS))
def test_gaussian_writers_drop_non_finite_with_a_count(tmp_path, fmt):
    g = random_cloud(50, 1 if fmt != "splat" else 0)
    from scenes.export.ply_gaussians import finite_gaussians  # accepts a dict with NaNs

    bad = nan_dict(g, [3, 7, 7, 20])
    with pytest.warns(UserWarning, match=r"dropping 3 of 50"):
        cloud = finite_gaussians(bad, fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GAUSSIAN_WRITERS[fmt](tmp_path / "g.bin", cloud)
    assert GAUSSIAN_READERS[fmt](tmp_path / "g.bin").num == 47


def test_html_drops_non_finite_gaussians_with_a_count(tmp_path, monkeypatch):
    import scenes.export.html as html

    g = SceneGraph()
    g.add("/g", payload=random_cloud(20, 0))
    # a GaussianCloud refuses NaN at construction; reach the writer's guard as a corrupt payload would
    g["/g"].payload.means[4] = np.nan
    with pytest.warns(UserWarning, match=r"dropping 1 of 20"):
        write_html(tmp_path / "page", g)
    doc = json.loads((tmp_path / "page" / "index.html").read_text().split('id="geo-scene">')[1].split("</script>")[0])
    assert doc["objects"][0]["count"] == 19


@pytest.mark.parametrize("fmt", sorted(GAUSSIAN_WRITERS))
def test_gaussian_writers_are_atomic(tmp_path, fmt):
    path = tmp_path / "g.out"
    GAUSSIAN_WRITERS[fmt](path, random_cloud(10, 0))
    before = path.read_bytes()
    all_bad = {k: np.full_like(np.asarray(getattr(random_cloud(3, 0), k)), np.nan) for k in GaussianCloud._ARRAYS}
    from scenes.export.ply_gaussians import finite_gaussians

    with pytest.raises(ValueError, match="NaN"):
        GAUSSIAN_WRITERS[fmt](path, finite_gaussians(all_bad, fmt))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.out"]  # no temporary files left behind


# -- meshes, point clouds, whole scenes -------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_textured_mesh_round_trip(tmp_path, spot, suffix):
    path = write_mesh_file(tmp_path / f"spot{suffix}", spot)
    r = read_mesh_file(path)
    assert np.array_equal(r.faces, spot.faces)
    assert np.allclose(r.vertices, spot.vertices, atol=1e-6)
    assert np.allclose(r.uv, spot.uv, atol=1e-6)
    assert np.array_equal(r.texture, spot.texture)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_vertex_coloured_mesh_round_trip(tmp_path, spot, suffix):
    rng = np.random.default_rng(1)
    m = Mesh(spot.vertices, spot.faces, vertex_colors=rng.integers(0, 256, (spot.num_vertices, 3), dtype=np.uint8))
    r = read_mesh_file(write_mesh_file(tmp_path / f"vc{suffix}", m))
    assert np.array_equal(r.faces, m.faces) and np.allclose(r.vertices, m.vertices, atol=1e-6)
    assert np.array_equal(r.vertex_colors[:, :3], m.vertex_colors)


def test_point_cloud_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    pc = PointCloud(rng.normal(size=(500, 3)), rng.integers(0, 256, (500, 3), dtype=np.uint8),
                    rng.normal(size=(500, 3)).astype(np.float32))
    r = read_points_ply(write_points_ply(tmp_path / "p.ply", pc))
    assert np.array_equal(r.points, pc.points) and np.array_equal(r.colors, pc.colors)
    assert np.array_equal(r.normals, pc.normals)


def small_scene(spot: Mesh) -> SceneGraph:
    from geo.cameras import CameraModel

    g = SceneGraph(meta={"units": "m"})
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    T[:3, 3] = [1, 2, 3]
    g.add("/objects", transform=T, meta={"kind": "group"})
    g.add("/objects/spot", payload=spot, transform=np.diag([1.0, -1, -1, 1]))
    g.add("/objects/points", payload=PointCloud(np.random.default_rng(3).normal(size=(40, 3))))
    c2w = np.eye(4)
    c2w[:3, 3] = [0, 0, -4]
    g.add("/cameras/front", payload=Camera(CameraModel(width=640, height=480, fx=500, fy=510, cx=320, cy=240)), transform=c2w)
    g.add("/gaussians", payload=random_cloud(30, 0))
    return g


def test_scene_glb_round_trip(tmp_path, spot):
    g = small_scene(spot)
    r = read_scene_glb(write_scene_glb(tmp_path / "scene.glb", g))
    assert [n.path for n in r] == [n.path for n in g]
    for n in g:
        assert np.allclose(r[n.path].world_transform, n.world_transform, atol=1e-12), n.path
        assert r[n.path].meta == n.meta
    assert r["/cameras/front"].payload.model == g["/cameras/front"].payload.model
    assert np.allclose(r["/objects/spot"].payload.vertices, spot.vertices, atol=1e-6)
    assert np.array_equal(r["/objects/spot"].payload.texture, spot.texture)
    assert np.allclose(r["/gaussians"].payload.points, g["/gaussians"].payload.means, atol=1e-6)


def test_scene_glb_cameras_are_gltf_cameras(tmp_path, spot):
    from scenes.export.mesh import check_glb

    raw = write_scene_glb(tmp_path / "scene.glb", small_scene(spot)).read_bytes()
    doc = check_glb(raw, "scene.glb")
    (cam,) = doc["cameras"]
    assert cam["type"] == "perspective"
    assert math.isclose(cam["perspective"]["yfov"], 2 * math.atan(240 / 510))
    assert math.isclose(cam["perspective"]["aspectRatio"], 640 / 480)


# -- readers reject bad files, naming them; fuzzing ---------------------------------------------


def _samples(tmp: Path, spot: Mesh) -> dict:
    """reader name -> (reader, path of a valid file)."""
    small = Mesh(spot.vertices[:300], spot.faces[np.all(spot.faces < 300, axis=1)][:200],
                 uv=spot.uv[:300], texture=spot.texture[:64, :64])
    g = random_cloud(300, 1)
    out = {
        "ply": (read_gaussian_ply, write_gaussian_ply(tmp / "g.ply", g)),
        "splat": (read_splat, write_splat(tmp / "g.splat", random_cloud(300, 0))),
        "ply-compressed": (read_compressed_ply, write_compressed_ply(tmp / "g.compressed.ply", g)),
        "mesh-ply": (read_mesh_file, write_mesh_file(tmp / "m.ply", small)),
        "mesh-obj": (read_mesh_file, write_mesh_file(tmp / "m.obj", Mesh(small.vertices, small.faces))),
        "mesh-glb": (read_mesh_file, write_mesh_file(tmp / "m.glb", small)),
        "points-ply": (read_points_ply, write_points_ply(tmp / "p.ply", PointCloud(np.random.default_rng(0).normal(size=(300, 3))))),
        "scene-glb": (read_scene_glb, write_scene_glb(tmp / "s.glb", small_scene(small))),
    }
    return out


READERS = ["ply", "splat", "ply-compressed", "mesh-ply", "mesh-obj", "mesh-glb", "points-ply", "scene-glb"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory, spot):
    return _samples(tmp_path_factory.mktemp("samples"), spot)


@pytest.mark.parametrize("name", READERS)
def test_readers_reject_truncated_files_naming_them(samples, tmp_path, name):
    reader, path = samples[name]
    raw = path.read_bytes()
    # len // 2 + 5: never a whole number of 32-byte .splat records (a headerless
    # .splat cut at a record boundary is a valid, smaller file)
    for cut in (0, 3, len(raw) // 2 + 5, len(raw) - 1):
        bad = tmp_path / f"cut{cut}{path.suffix}"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=str(bad).replace("\\", "\\\\")):
            reader(bad)


# .splat and .obj have no header counts: they are sized by their content.
COUNTED_READERS = [r for r in READERS if r not in ("splat", "mesh-obj")]


@pytest.mark.parametrize("name", COUNTED_READERS)
def test_readers_reject_a_huge_declared_count(samples, tmp_path, name):
    reader, path = samples[name]
    raw = path.read_bytes()
    if path.suffix == ".ply":
        head, body = raw.split(b"end_header\n", 1)
        lines = [(b"element vertex 2000000000" if ln.startswith(b"element vertex") else ln) for ln in head.split(b"\n")]
        raw = b"\n".join(lines) + b"end_header\n" + body
    else:
        assert path.suffix == ".glb"
        raw = raw.replace(b'"count":', b'"count":9', 1)
    bad = tmp_path / f"huge{path.suffix}"
    bad.write_bytes(raw)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=str(bad)):
            reader(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(raw) + (32 << 20), f"{name}: peak allocation {peak / 1e6:.1f} MB for a {len(raw)} byte file"


@pytest.mark.parametrize("name", READERS)
def test_readers_survive_fuzzing(samples, tmp_path_factory, name):
    """Random truncations and byte flips: each read returns a valid payload or raises a
    ValueError naming the file; never hangs (hypothesis deadline), crashes, or allocates
    more than a small multiple of the file size."""
    reader, path = samples[name]
    raw = path.read_bytes()
    work = tmp_path_factory.mktemp(f"fuzz-{name}") / f"fuzzed{path.suffix}"

    @settings(max_examples=25, deadline=5000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(cut=st.integers(0, len(raw)), flips=st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), max_size=8))
    def fuzz(cut, flips):
        data = bytearray(raw)
        for pos, x in flips:
            data[pos] ^= x
        work.write_bytes(bytes(data[: max(cut, len(raw) // 2) if flips else cut]))
        tracemalloc.start()
        try:
            try:
                out = reader(work)
            except ValueError as e:
                assert str(work) in str(e), f"error does not name the file: {e}"
            else:
                assert out is not None
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 * len(raw) + (32 << 20), f"peak allocation {peak / 1e6:.1f} MB for a {len(raw)} byte file"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fuzz()
