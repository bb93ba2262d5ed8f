"""Optimal-transport regularisers: Sinkhorn divergence, Monge gap, sliced Wasserstein, SNS."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from geo.regularizers import (
    MongeGap,
    SinkhornDivergence,
    SlicedWasserstein,
    monge_gap,
    random_projections,
    sinkhorn_divergence,
    sinkhorn_log,
    sinkhorn_newton_sparse,
    sliced_wasserstein,
)
from geo.regularizers.sliced import gaussian_sw2_isotropic, wasserstein_1d

import ot  # noqa: E402
D64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- Sinkhorn divergence ----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")  # POT, self-terms at eps = 0.01
def test_sinkhorn_divergence_tends_to_empirical_w2():
    g = _gen(0)
    n = 30
    x = torch.randn(n, 2, generator=g, dtype=D64)
    y = 0.5 * torch.randn(n, 2, generator=g, dtype=D64) + torch.tensor([2.0, 1.0], dtype=D64)
    u = torch.full((n,), 1.0 / n, dtype=D64)
    w2 = float(ot.emd2(u, u, ot.dist(x, y)))  # exact OT on the same samples
    errs = [abs(float(sinkhorn_divergence(x, y, eps=eps)) - w2) for eps in (1.0, 0.1, 0.01)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 2e-3 * w2
    assert SinkhornDivergence(weight=2.0, eps=0.1)(x, x) == pytest.approx(0.0, abs=1e-6)


def test_sinkhorn_divergence_gradcheck_and_errors():
    g = _gen(1)
    x = torch.randn(5, 2, generator=g, dtype=D64, requires_grad=True)
    y = torch.randn(6, 2, generator=g, dtype=D64, requires_grad=True)
    assert gradcheck(lambda a, b: sinkhorn_divergence(a, b, eps=0.5, tol=1e-13, max_iter=100000), (x, y))
    with pytest.raises(ValueError, match="same D"):
        sinkhorn_divergence(torch.rand(4, 2), torch.rand(4, 3))
    with pytest.raises(ValueError, match="empty"):
        sinkhorn_divergence(torch.rand(0, 2), torch.rand(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        sinkhorn_divergence(torch.full((3, 2), float("nan")), torch.rand(4, 2))
    with pytest.raises(ValueError, match="sum to 1"):
        sinkhorn_divergence(torch.rand(3, 2), torch.rand(4, 2), a=torch.ones(3))


# --- Monge gap --------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_monge_gap_near_zero_for_gaussian_ot_map_positive_otherwise():
    g = _gen(2)
    n, eps = 64, 0.01
    x = torch.randn(n, 2, generator=g, dtype=D64)
    # OT map between N(0, I) and N(m, A^2): T(x) = A x + m with A symmetric positive definite
    a_mat = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=D64)
    gap_opt = float(monge_gap(x, x @ a_mat + torch.tensor([1.0, -1.0], dtype=D64), eps=eps))
    assert -eps * math.log(n) - 1e-6 <= gap_opt <= 1e-6  # the documented bracket
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=D64)  # pushes N(0, I) to itself, far from optimal
    gap_rot = float(MongeGap(eps=eps)(x, x @ rot.T))
    assert gap_rot > 1.0


def test_monge_gap_gradcheck():
    g = _gen(3)
    x = torch.randn(5, 2, generator=g, dtype=D64)
    tx = torch.randn(5, 2, generator=g, dtype=D64, requires_grad=True)
    assert gradcheck(lambda t: monge_gap(x, t, eps=0.5, tol=1e-13, max_iter=100000), (tx,))
    with pytest.raises(ValueError, match="one image per sample"):
        monge_gap(torch.rand(4, 2), torch.rand(5, 2))


# --- sliced Wasserstein -----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:The use of `x.T`")  # inside POT
def test_wasserstein_1d_weighted_matches_unweighted_and_pot():
    g = _gen(4)
    u, v = torch.randn(3, 7, generator=g, dtype=D64), torch.randn(3, 7, generator=g, dtype=D64)
    fast = wasserstein_1d(u, v)
    general = wasserstein_1d(u, v, torch.full((7,), 1 / 7, dtype=D64), torch.full((7,), 1 / 7, dtype=D64))
    torch.testing.assert_close(fast, general)
    w = torch.rand(9, generator=g, dtype=D64)
    w = w / w.sum()
    v9 = torch.randn(1, 9, generator=g, dtype=D64)
    ref = ot.wasserstein_1d(u[0], v9[0], torch.full((7,), 1 / 7, dtype=D64), w, p=2)
    torch.testing.assert_close(wasserstein_1d(u[:1], v9, None, w)[0], ref)


def test_sw_between_gaussians_matches_closed_form():
    g = _gen(5)
    n, d, L = 4000, 3, 500
    m = torch.tensor([1.0, 1.0, 1.0], dtype=D64)
    x = torch.randn(n, d, generator=g, dtype=D64)
    y = 2.0 * torch.randn(n, d, generator=g, dtype=D64) + m
    theta = random_projections(d, L, g)
    per_dir = wasserstein_1d(theta @ x.T, theta @ y.T)
    est = float(per_dir.mean())
    exact = gaussian_sw2_isotropic(float((m**2).sum()), d, 1.0, 2.0)  # 1 + 1 = 2
    mc_err = float(per_dir.std()) / math.sqrt(L)
    # projection Monte Carlo error plus a small allowance for the finite samples
    assert abs(est - exact) < 4 * mc_err + 0.05
    assert float(sliced_wasserstein(x, y, projections=theta)) == pytest.approx(est)
    for cv in ("lower", "upper"):
        assert abs(float(sliced_wasserstein(x, y, projections=theta, control_variate=cv)) - exact) < 4 * mc_err + 0.05


def test_control_variates_reduce_variance_on_same_draws():
    g = _gen(6)
    n, d, L, reps = 300, 3, 10, 200
    x = torch.randn(n, d, generator=g, dtype=D64)
    y = torch.randn(n, d, generator=g, dtype=D64) @ torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=D64)) + 1.0
    est = {"plain": [], "lower": [], "upper": []}
    for _ in range(reps):
        theta = random_projections(d, L, g)
        est["plain"].append(float(sliced_wasserstein(x, y, projections=theta)))
        for cv in ("lower", "upper"):
            est[cv].append(float(sliced_wasserstein(x, y, projections=theta, control_variate=cv)))
    var = {k: torch.tensor(v).var().item() for k, v in est.items()}
    assert var["lower"] < var["plain"] and var["upper"] < var["plain"]


def test_sw_gradcheck_and_errors():
    g = _gen(7)
    x = torch.randn(6, 3, generator=g, dtype=D64, requires_grad=True)
    y = torch.randn(6, 3, generator=g, dtype=D64, requires_grad=True)
    theta = random_projections(3, 5, g)
    for cv in (None, "lower", "upper"):
        assert gradcheck(lambda a, b: sliced_wasserstein(a, b, projections=theta, control_variate=cv), (x, y))
    yw = torch.randn(4, 3, generator=g, dtype=D64, requires_grad=True)
    assert gradcheck(lambda a, b: sliced_wasserstein(a, b, projections=theta, p=1.5), (x, yw))
    with pytest.raises(ValueError, match="p = 2"):
        sliced_wasserstein(x, y, p=1.0, control_variate="upper")
    with pytest.raises(ValueError, match="control_variate"):
        sliced_wasserstein(x, y, control_variate="middle")
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        SlicedWasserstein()(torch.rand(5), torch.rand(5))


# --- Sinkhorn-Newton-Sparse ---------------------------------------------------------------

def test_sns_matches_sinkhorn_in_fewer_iterations():
    g = _gen(8)
    n, eps, tol = 150, 3e-3, 1e-6
    x, y = torch.rand(n, 2, generator=g, dtype=D64), torch.rand(n, 2, generator=g, dtype=D64)
    cost = torch.cdist(x, y) ** 2
    ref = sinkhorn_log(cost, eps=eps, tol=tol)
    sns = sinkhorn_newton_sparse(cost, eps=eps, tol=tol)
    a = torch.full((n,), 1.0 / n, dtype=D64)
    for sol in (ref, sns):
        assert sol.converged
        err = float((sol.plan.sum(1) - a).abs().sum() + (sol.plan.sum(0) - a).abs().sum())
        assert err <= tol
    assert sns.newton_iterations > 0
    assert sns.iterations < ref.iterations
    # same plan: both are within tol of the unique entropic optimum
    assert float((sns.plan - ref.plan).abs().sum()) < 1e-4


def test_sns_nonuniform_marginals_and_errors():
    g = _gen(9)
    a = torch.rand(40, generator=g, dtype=D64) + 0.1
    b = torch.rand(50, generator=g, dtype=D64) + 0.1
    a, b = a / a.sum(), b / b.sum()
    cost = torch.cdist(torch.rand(40, 3, generator=g, dtype=D64), torch.rand(50, 3, generator=g, dtype=D64))
    sol = sinkhorn_newton_sparse(cost, a, b, eps=0.01, tol=1e-8)
    assert sol.converged
    torch.testing.assert_close(sol.plan.sum(1), a, atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match=r"\[40\]"):
        sinkhorn_newton_sparse(cost, b, a)
    with pytest.raises(ValueError, match="eps"):
        sinkhorn_log(cost, a, b, eps=0.0)
