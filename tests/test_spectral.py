"""geo.spectral, classical part: operators, eigensolver, descriptors, geodesics,
caching and bad input."""

import types
import warnings

import numpy as np
import pytest

import trimesh  # noqa: E402

import geo.spectral as gs  # noqa: E402
from geo.spectral import laplacian  # noqa: E402
from geo.spectral.surface import SpectralShape  # noqa: E402


def grid_mesh(n=9, h=0.1):
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    v = np.stack([i.ravel() * h, j.ravel() * h, np.zeros(n * n)], axis=1)
    idx = lambda a, b: a * n + b  # noqa: E731
    f = []
    for a in range(n - 1):
        for b in range(n - 1):
            f += [[idx(a, b), idx(a + 1, b), idx(a + 1, b + 1)], [idx(a, b), idx(a + 1, b + 1), idx(a, b + 1)]]
    return v, np.array(f)


def sphere(r=2.0, subdiv=4):
    return trimesh.creation.icosphere(subdivisions=subdiv, radius=r)


def test_cotan_flat_grid_matches_finite_differences():
    n, h = 9, 0.1
    v, f = grid_mesh(n, h)
    L = laplacian.cotan_laplacian(v, f)
    m = laplacian.lumped_mass(v, f).diagonal()
    rng = np.random.default_rng(0)
    u = rng.normal(size=n * n)
    U = u.reshape(n, n)
    fd = (4 * U[1:-1, 1:-1] - U[2:, 1:-1] - U[:-2, 1:-1] - U[1:-1, 2:] - U[1:-1, :-2]) / h**2  # -Δu, 5-point
    cot = (L @ u / m).reshape(n, n)[1:-1, 1:-1]  # -Δu = M^{-1} L u
    np.testing.assert_allclose(cot, fd, rtol=1e-10, atol=1e-8)
    # and on a smooth function the FD/cotan Laplacian approaches the analytic one
    x, y = v[:, 0], v[:, 1]
    s = np.sin(x) * np.cos(2 * y)
    inner = ((L @ s) / m).reshape(n, n)[1:-1, 1:-1]
    np.testing.assert_allclose(inner, (5 * s).reshape(n, n)[1:-1, 1:-1], rtol=0.02)


def test_cotan_matches_reference_loop():
    m = trimesh.creation.icosphere(subdivisions=1)
    rng = np.random.default_rng(1)
    v = m.vertices + 0.05 * rng.normal(size=m.vertices.shape)
    L = laplacian.cotan_laplacian(v, m.faces).toarray()
    np.testing.assert_allclose(L, laplacian.cotan_laplacian_dense_reference(v, m.faces), atol=1e-12)
    np.testing.assert_allclose(L, L.T, atol=1e-12)
    np.testing.assert_allclose(L.sum(axis=1), 0, atol=1e-12)


def test_sphere_eigenvalues_and_multiplicities():
    r = 2.0
    basis, evals, mass = gs.eigenbasis(sphere(r), 16, method="cotan")
    expected = np.concatenate([[l * (l + 1) / r**2] * (2 * l + 1) for l in range(4)])
    np.testing.assert_allclose(evals[1:], expected[1:], rtol=0.02)
    assert evals[0] == 0
    for l in range(1, 4):  # each group is (numerically) degenerate with multiplicity 2l+1
        g = evals[l * l : (l + 1) ** 2]
        assert np.ptp(g) / g.mean() < 1e-3
    np.testing.assert_allclose(basis.T @ (mass[:, None] * basis), np.eye(16), atol=1e-8)
    np.testing.assert_allclose(basis[:, 0], 1 / np.sqrt(mass.sum()), rtol=1e-10)
    assert mass.sum() == pytest.approx(4 * np.pi * r**2, rel=0.01)


def test_robust_point_cloud_sphere():
    pts = trimesh.sample.sample_surface(sphere(1.0), 1500, seed=0)[0]
    basis, evals, mass = gs.eigenbasis(pts, 9, method="robust")
    np.testing.assert_allclose(evals[1:4], 2.0, rtol=0.08)  # 1500 random samples
    np.testing.assert_allclose(evals[4:9], 6.0, rtol=0.08)
    np.testing.assert_allclose(basis.T @ (mass[:, None] * basis), np.eye(9), atol=1e-8)
    assert np.ptp(basis[:, 0]) < 1e-12


def test_inputs_are_duck_typed():
    m = sphere(1.0, 2)
    ref = gs.eigenbasis(m, 4, "robust").eigenvalues
    node = types.SimpleNamespace(payload=types.SimpleNamespace(vertices=m.vertices, faces=m.faces))
    np.testing.assert_allclose(gs.eigenbasis(node, 4, "robust").eigenvalues, ref)
    with pytest.raises(ValueError, match="payload"):
        gs.eigenbasis(types.SimpleNamespace(payload=None), 4, "robust")
    cloud_node = types.SimpleNamespace(payload=types.SimpleNamespace(points=m.vertices))
    b = gs.eigenbasis(cloud_node, 4, "robust")
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(m.vertices))
    np.testing.assert_allclose(gs.eigenbasis(pc, 4, "robust").eigenvalues, b.eigenvalues)
    import torch

    np.testing.assert_allclose(gs.eigenbasis(torch.as_tensor(m.vertices), 4, "robust").eigenvalues, b.eigenvalues)


def test_cache_and_invalidation():
    m = sphere(1.0, 3)
    s = SpectralShape(m.vertices, m.faces)
    a = s.eigen(8, "cotan")
    assert s.eigen(8, "cotan")[1] is a[1]  # cached
    assert s.eigen(4, "cotan")[0] is not None and np.allclose(s.eigen(4, "cotan")[0], a[0][:4])
    with pytest.raises(ValueError):
        s.vertices[0, 0] = 5.0  # read-only: edits must go through the setter
    s.vertices = 2.0 * m.vertices  # clears the cache
    np.testing.assert_allclose(s.eigen(8, "cotan")[0], a[0] / 4, rtol=1e-8)
    # foreign objects: content-hash keyed, so an in-place edit is seen
    first = gs.eigenbasis(m, 8, "cotan")
    assert gs.eigenbasis(m, 8, "cotan").basis is first.basis
    m.vertices = m.vertices * 3.0
    np.testing.assert_allclose(gs.eigenbasis(m, 8, "cotan").eigenvalues, first.eigenvalues / 9, rtol=1e-8)


def test_bad_inputs():
    m = sphere(1.0, 2)
    pts = np.array(m.vertices)
    bad = pts.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gs.eigenbasis(bad, 4, "robust")
    with pytest.raises(ValueError, match="at least 2"):
        gs.eigenbasis(pts[:1], 1, "robust")
    with pytest.raises(ValueError, match="more than k"):
        gs.eigenbasis(pts[:10], 10, "robust")
    with pytest.raises(ValueError, match="cotan"):
        gs.eigenbasis(pts, 4, "cotan")
    with pytest.raises(ValueError, match="method"):
        gs.eigenbasis(pts, 4, "nope")
    with pytest.warns(UserWarning, match="duplicate"), pytest.raises(ValueError, match="coincide"):
        gs.eigenbasis(np.zeros((5, 3)), 1, "robust")
    # duplicates: merged with a warning, result on the input indexing, still M-orthonormal
    dup = np.concatenate([pts, pts[:7]])
    with pytest.warns(UserWarning, match="duplicate"):
        b, w, mass = gs.eigenbasis(dup, 6, "robust")
    assert b.shape == (len(dup), 6)
    np.testing.assert_allclose(b[len(pts) :], b[:7])
    np.testing.assert_allclose(b.T @ (mass[:, None] * b), np.eye(6), atol=1e-8)


def test_degenerate_and_disconnected_meshes():
    m = sphere(1.0, 2)
    f = np.concatenate([m.faces, [[0, 0, 1]], m.faces[:3]])  # a degenerate and 3 duplicate faces
    with pytest.warns(UserWarning) as rec:
        b, w, mass = gs.eigenbasis(SpectralShape(m.vertices, f), 5, "cotan")
    msgs = " ".join(str(r.message) for r in rec)
    assert "degenerate" in msgs and "duplicate triangles" in msgs
    ref = gs.eigenbasis(m, 5, "cotan").eigenvalues
    np.testing.assert_allclose(w, ref, rtol=1e-10)
    # two spheres: documented fallback, two zero eigenvalues and a constant first vector
    m2 = sphere(1.0, 2)
    v = np.concatenate([m.vertices, m2.vertices + [5, 0, 0]])
    faces = np.concatenate([m.faces, m2.faces + len(m.vertices)])
    with pytest.warns(UserWarning, match="2 connected components"):
        b, w, mass = gs.eigenbasis(SpectralShape(v, faces), 6, "cotan")
    np.testing.assert_allclose(w[:2], 0, atol=1e-8)
    assert np.ptp(b[:, 0]) < 1e-12
    np.testing.assert_allclose(b.T @ (mass[:, None] * b), np.eye(6), atol=1e-8)


def test_hks_wks():
    b, w, mass = gs.eigenbasis(sphere(1.0, 3), 25, "cotan")
    h = gs.hks(w, b, n_times=8)
    assert h.shape == (len(b), 8) and np.all(h > 0)
    # the sphere is homogeneous: HKS is (nearly) the same everywhere, = Σ e^{-λt}/area
    np.testing.assert_allclose(h.std(0) / h.mean(0), 0, atol=0.02)
    t = np.geomspace(4 * np.log(10) / w[-1], 4 * np.log(10) / w[1], 8)
    np.testing.assert_allclose(h.mean(0) * mass.sum(), np.exp(-np.outer(w, t)).sum(0), rtol=1e-3)
    k = gs.wks(w, b, n_energies=10)
    assert k.shape == (len(b), 10) and np.all(np.isfinite(k)) and np.all(k >= 0)


def test_geodesics_on_sphere():
    m = sphere(1.0, 4)
    v = m.vertices / np.linalg.norm(m.vertices, axis=1, keepdims=True)
    truth = np.arccos(np.clip(v @ v[0], -1, 1))
    d = gs.geodesic_distances(m, 0, method="heat")
    assert np.abs(d - truth).mean() < 0.03
    dj = gs.geodesic_distances(m, 0, method="dijkstra")
    assert np.all(dj >= truth - 1e-3) and np.abs(dj - truth).mean() < 0.15  # edge paths overshoot
    with pytest.raises(ValueError, match="heat"):
        gs.geodesic_distances(m, 0, method="dijkstra", max_dijkstra_vertices=10)


def test_set_eigen_is_reused_by_eigen_and_checks_shapes():
    m = trimesh.creation.icosphere(subdivisions=2)
    solved = SpectralShape(m.vertices, m.faces).eigen(12, "cotan")
    s = SpectralShape(m.vertices, m.faces)
    s.set_eigen("cotan", *solved)
    w, phi, mass = s.eigen(8, "cotan")  # a prefix of the provided pairs, not a new solve
    assert np.shares_memory(phi, solved[1]) and np.array_equal(w, solved[0][:8]) and mass is solved[2]
    with pytest.raises(ValueError, match=r"expected basis \[162, 12\]"):
        s.set_eigen("cotan", solved[0], solved[1][:-1], solved[2])
    with pytest.raises(ValueError, match="method must be one of"):
        s.set_eigen("magic", *solved)
