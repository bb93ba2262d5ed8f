"""geo.spectral, learned eigenbasis: orthonormality, loss, estimators, checkpoint."""

import numpy as np
import pytest

import torch  # noqa: E402
import trimesh  # noqa: E402

from geo.spectral import learned as L  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sphere_points(n, seed=0):
    return trimesh.sample.sample_surface(trimesh.creation.icosphere(4), n, seed=seed)[0]


def small_net(k=8, n_diffusion=1):
    torch.manual_seed(0)
    cfg = L.NetConfig(k=k, width=32, n_inducing=8, heads=2, n_diffusion=n_diffusion, diffusion_channels=8)
    return L.PointSpectralNet(cfg)


def test_learned_basis_orthonormal():
    pts = sphere_points(600)
    w, basis, mass = L.learned_eigenbasis_points(pts, 8, model=small_net().eval())
    assert basis.shape == (600, 8) and mass.shape == (600,) and w.shape == (8,)
    np.testing.assert_allclose(basis.T @ (mass[:, None] * basis), np.eye(8), atol=1e-8)
    assert np.ptp(basis[:, 0]) < 1e-12 and basis[0, 0] > 0
    assert np.all(mass > 0) and w[0] == 0 and np.all(np.isfinite(w))
    # the raw QR output is Euclidean-orthonormal, batched
    x = torch.randn(2, 300, 3)
    idx = torch.randint(0, 300, (2, 300, 16))
    Q = L.orthonormal_basis(small_net(n_diffusion=0)(x, idx).double())
    gram = (Q.transpose(1, 2) @ Q).detach().numpy()
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(8), (2, 8, 8)), atol=1e-10)


def _item(n=400, seed=0):
    x, _, _, _ = L.canonicalize(sphere_points(n, seed))
    idx, dist = L.knn_graph(x)
    return x, idx, L.ProbeSmoother(x, idx, dist)


def test_loss_decreases_on_fixed_batch():
    x, idx, sm = _item(192)
    G = torch.as_tensor(sm.probes(64, 0.03, np.random.default_rng(0)), dtype=torch.float32)[None]
    xt = torch.as_tensor(x, dtype=torch.float32)[None]
    it = torch.as_tensor(idx)[None]
    net = small_net()
    diffuse = L.make_diffuser([sm.P], [sm.t_step], net.cfg.diffusion_times)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss, err = L.nested_reconstruction_loss(L.orthonormal_basis(net(xt, it, diffuse)), G)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.85 * losses[0]
    assert np.all(np.diff(err.detach().numpy()[0]) <= 1e-6)  # nested errors never increase with k


def test_expected_loss_matches_monte_carlo():
    x, idx, sm = _item(300, seed=1)
    rng = np.random.default_rng(0)
    Q = torch.linalg.qr(torch.randn(1, 300, 6, dtype=torch.float64))[0]
    Y = Q[0].numpy()
    n = sm.n_steps(0.03)
    for _ in range(n):
        Y = sm.S @ Y
    G = sm.probes(4000, 0.03, rng)
    trace = torch.tensor([3.0 * (G**2).sum(0).mean()], dtype=torch.float64)
    loss_cf, err_cf, _ = L.expected_nested_loss(Q, torch.as_tensor(Y)[None], trace)
    loss_mc, err_mc = L.nested_reconstruction_loss(Q, torch.as_tensor(G)[None])
    np.testing.assert_allclose(err_cf.numpy(), err_mc.numpy(), atol=0.01)


def test_rayleigh_ritz_never_increases_the_nested_loss():
    x, idx, sm = _item(300, seed=2)
    rng = np.random.default_rng(0)
    raw = np.concatenate([sm.sqrt_density_vector[:, None], rng.normal(size=(300, 7))], axis=1)
    Q = np.linalg.qr(raw)[0]
    Q[:, 0] *= np.sign(Q[:, 0].sum())
    n = sm.n_steps(0.03)

    def smooth(A):
        for _ in range(n):
            A = sm.S @ A
        return A

    Y = smooth(Q)
    Q2, mu = L.rayleigh_ritz_in_span(Q, Y)
    err = lambda m: np.cumsum(m)  # noqa: E731  captured energy per level (higher = lower loss)
    assert np.all(err(mu) >= err((Y**2).sum(0)) - 1e-12)
    np.testing.assert_allclose(Q2.T @ Q2, np.eye(8), atol=1e-10)
    np.testing.assert_allclose(Q2[:, 0], Q[:, 0])
    np.testing.assert_allclose((smooth(Q2) ** 2).sum(0), mu, rtol=1e-8)


def test_eigenvalue_estimator_on_exact_smoother_basis():
    """With the optimal basis (the smoother's own eigenvectors) the per-level error
    decrements give the sphere's eigenvalues l(l+1) (unit radius)."""
    import scipy.sparse.linalg as sla

    pts = sphere_points(1536, seed=3)
    x, _, scale, _ = L.canonicalize(pts)
    idx, dist = L.knn_graph(x)
    sm = L.ProbeSmoother(x, idx, dist)
    ev, Q = sla.eigsh(sm.S, 9, which="LA")
    Q = Q[:, np.argsort(-ev)]
    Y = Q
    n = sm.n_steps(L.PROBE_TIME)
    for _ in range(n):
        Y = sm.S @ Y
    lam = L.EIGENVALUE_CALIBRATION * L.eigenvalues_from_levels((Y**2).sum(0), n * sm.t_step) / scale**2
    np.testing.assert_allclose(lam[1:4], 2.0, rtol=0.15)
    np.testing.assert_allclose(lam[4:9], 6.0, rtol=0.15)
    # q1^2 is the area element: uniform on a uniformly sampled sphere
    q1 = np.abs(Q[:, 0])
    assert q1.std() / q1.mean() < 0.2  # random samples: local density noise
    assert L.AREA_CALIBRATION * sm.area_weights.sum() * scale**2 == pytest.approx(4 * np.pi, rel=0.05)


def test_checkpoint_roundtrip(tmp_path):
    net = small_net(n_diffusion=0).eval()
    path = tmp_path / "ck.pt"
    L.save_checkpoint(path, net, {"command": "test"})
    net2 = L.load_checkpoint(path)
    x = torch.randn(1, 200, 3)
    idx = torch.randint(0, 200, (1, 200, 16))
    with torch.no_grad():
        np.testing.assert_allclose(net(x, idx).numpy(), net2(x, idx).numpy(), atol=2e-2)
    assert net2.extra["command"] == "test"


def test_checkpoint_loads_and_gives_basis_at_new_resolution():
    import geo.spectral as gs

    model = L.load_checkpoint()
    assert L.DEFAULT_CHECKPOINT.stat().st_size < 20 * 2**20
    pts = sphere_points(777, seed=7)  # training used 1536-point clouds
    basis, evals, mass = gs.eigenbasis(pts, 9, method="learned")
    assert basis.shape == (777, 9)
    np.testing.assert_allclose(basis.T @ (mass[:, None] * basis), np.eye(9), atol=1e-8)
    assert mass.sum() == pytest.approx(4 * np.pi, rel=0.1)
    # on the unit sphere the l = 1 eigenspace is spanned by x, y, z
    u = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    C = np.linalg.qr(np.sqrt(mass)[:, None] * u)[0]
    s = np.linalg.svd(C.T @ (np.sqrt(mass)[:, None] * basis[:, 1:4]), compute_uv=False)
    assert s.mean() > 0.8
    assert model.cfg.k >= 9


def test_fast_paths_match_reference_formulas():
    """The inference fast paths (ordered kd-tree queries, direct csr scaling, area weights
    without the smoother, csr diffusion, torch gemm) equal the plain formulas."""
    import scipy.sparse as sp

    x, idx, sm = _item(500, seed=4)
    D2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    ref = np.argsort(D2, axis=1, kind="stable")[:, :16]
    rows = np.arange(500)[:, None]
    np.testing.assert_allclose(np.sort(D2[rows, idx], 1), np.sort(D2[rows, ref], 1))
    assert np.all(idx[:, 0] == np.arange(500))
    # smoother operators vs the sparse-diagonal construction
    dist = np.sqrt(np.maximum(D2[rows, idx], 0))
    sigma = float(0.7 * np.median(dist[:, 8])) + 1e-12
    w = np.exp(-(dist**2) / sigma**2).ravel()
    W = sp.coo_matrix((w, (np.repeat(np.arange(500), 16), idx.ravel())), shape=(500, 500)).tocsr()
    W = W.maximum(W.T)
    d = np.asarray(W.sum(axis=1)).ravel()
    Wt = sp.diags(1.0 / d) @ W @ sp.diags(1.0 / d)
    dt = np.asarray(Wt.sum(axis=1)).ravel()
    S_ref = sp.diags(dt**-0.5) @ Wt @ sp.diags(dt**-0.5)
    np.testing.assert_allclose(sm.S.toarray(), S_ref.toarray(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(sm.P.toarray(), (sp.diags(1.0 / dt) @ Wt).toarray(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(sm.area_weights, np.pi * sigma**2 * dt, rtol=1e-6)
    np.testing.assert_allclose(L.kernel_area_weights(idx, dist), sm.area_weights, rtol=1e-10)
    # csr inference diffusion == coo autograd diffusion, batched with unequal step counts
    x2, _, sm2 = _item(500, seed=5)
    times = (0.002, 0.008, 0.03)
    diffuse = L.make_diffuser([sm.P, sm2.P], [sm.t_step, 1.5 * sm2.t_step], times)
    h = torch.randn(2, 500, 4)
    with torch.inference_mode():
        fast = diffuse(h)
    slow = diffuse(h.clone().requires_grad_(True))
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), atol=1e-5)
    A = np.random.default_rng(0).normal(size=(700, 5))
    np.testing.assert_allclose(L._mm(A.T, A[:, ::-1]), A.T @ A[:, ::-1], rtol=1e-12, atol=1e-12)


def test_subsampled_inference_is_m_orthonormal():
    pts = sphere_points(900, seed=6)
    w, basis, mass = L.learned_eigenbasis_points(pts, 6, model=small_net().eval(), max_network_points=300)
    assert basis.shape == (900, 6) and mass.shape == (900,) and np.all(mass > 0)
    np.testing.assert_allclose(basis.T @ (mass[:, None] * basis), np.eye(6), atol=1e-8)
    assert np.ptp(basis[:, 0]) < 1e-12 and w[0] == 0
    sm = L.ProbeSmoother(*((lambda x: (x, *L.knn_graph(x)))(L.canonicalize(pts)[0])))
    np.testing.assert_allclose(mass, L.AREA_CALIBRATION * sm.area_weights * L.canonicalize(pts)[2] ** 2, rtol=1e-10)
