"""Correlation (grids), orthogonality and equivariance (weights)."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from geo.regularizers import (
    CorrelationLoss,
    EquivarianceRegularizer,
    LambdaOrthogonality,
    Orthogonality,
    correlation_loss,
    cyclic_permutations,
    equivariance_error,
    equivariance_regularizer,
    lambda_orthogonality,
    orthogonality,
    reynolds_projection,
)

D64 = torch.float64


# --- correlation ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 4, 5, 6, 7)])
def test_correlation_exact_values_2d_and_3d(shape):
    g = torch.randn(*shape, dtype=D64)
    assert correlation_loss(g, g) == 0.0  # exactly
    assert correlation_loss(g, -g) == pytest.approx(2.0, abs=1e-12)
    assert correlation_loss(g, 3.0 * g + 1.0) == pytest.approx(0.0, abs=1e-12)  # affine invariant
    assert 0.5 < correlation_loss(g, torch.randn_like(g)) < 1.5  # ~1 for independent grids
    assert CorrelationLoss(weight=200.0)(g, -g) == pytest.approx(400.0, abs=1e-9)


def test_correlation_gradcheck_and_errors():
    a = torch.randn(2, 1, 3, 3, 3, dtype=D64, requires_grad=True)
    b = torch.randn(2, 1, 3, 3, 3, dtype=D64, requires_grad=True)
    assert gradcheck(correlation_loss, (a, b))
    with pytest.raises(ValueError, match="same shape"):
        correlation_loss(torch.rand(1, 4, 4), torch.rand(1, 4, 5))
    with pytest.raises(ValueError, match="NaN"):
        correlation_loss(torch.rand(1, 4), torch.tensor([[0.0, float("nan"), 1.0, 2.0]]))
    with pytest.raises(ValueError, match="empty"):
        correlation_loss(torch.rand(1, 0), torch.rand(1, 0))


# --- orthogonality ----------------------------------------------------------------------

def test_orthogonality_zero_for_orthogonal_and_hand_values():
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=D64))
    assert orthogonality(q) < 1e-24
    s, _ = torch.linalg.qr(torch.randn(7, 3, dtype=D64))  # Stiefel: orthonormal columns
    assert orthogonality(s) < 1e-24 and orthogonality(s.T) < 1e-24  # wide side uses W W^T
    assert orthogonality(2.0 * torch.eye(3, dtype=D64)) == pytest.approx(27.0)  # ||3 I||^2 = 9 * 3
    assert Orthogonality(weight=0.5)([q, 2.0 * torch.eye(3, dtype=D64)]) == pytest.approx(13.5)


def test_lambda_orthogonality_free_within_tolerance():
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=D64))
    near = 1.01 * q  # ||W^T W - I||_F = 0.0201 * sqrt(5) ~ 0.045
    assert lambda_orthogonality(near, lam=0.1) == 0.0
    assert lambda_orthogonality(near, lam=0.0) == pytest.approx(float(orthogonality(near)))
    w = 2.0 * torch.eye(3, dtype=D64)  # ||3 I||_F = 3 sqrt(3)
    assert lambda_orthogonality(w, lam=1.0) == pytest.approx((3 * math.sqrt(3) - 1.0) ** 2)
    assert LambdaOrthogonality(lam=1.0)(w) == pytest.approx((3 * math.sqrt(3) - 1.0) ** 2)
    # gradient is zero (not NaN) inside the tolerance
    x = near.clone().requires_grad_()
    lambda_orthogonality(x, 0.1).backward()
    assert (x.grad == 0).all()


def test_orthogonality_gradcheck():
    w = torch.randn(2, 4, 3, dtype=D64, requires_grad=True)  # batched, summed
    assert gradcheck(orthogonality, (w,))
    assert gradcheck(lambda t: lambda_orthogonality(t, 0.5), (w,))
    with pytest.raises(ValueError, match=r"\[\.\.\., m, n\]"):
        orthogonality(torch.rand(3))


# --- equivariance -----------------------------------------------------------------------

def _circulant(c):
    n = c.shape[0]
    return torch.stack([torch.roll(c, s) for s in range(n)])


def _rotations(angles):
    c, s = torch.cos(angles), torch.sin(angles)
    return torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)


def test_equivariance_zero_for_equivariant_layer_positive_otherwise():
    n = 5
    rho = cyclic_permutations(n)
    w_eq = _circulant(torch.randn(n, dtype=D64))  # commutes with cyclic shifts
    assert equivariance_error(w_eq, rho, rho) < 1e-24
    w = torch.randn(n, n, dtype=D64)
    assert equivariance_error(w, rho, rho) > 1e-2
    p = reynolds_projection(w, rho, rho)
    assert equivariance_error(p, rho, rho) < 1e-24  # the projection is equivariant
    torch.testing.assert_close(reynolds_projection(p, rho, rho), p)  # and idempotent
    # orthogonal projector: W - P(W) is orthogonal to the equivariant subspace
    assert float(((w - p) * w_eq).sum()) == pytest.approx(0.0, abs=1e-10)


def test_equivariance_continuous_group_samples():
    # SO(2) on R^2 (both sides): rotation-scalings a I + b J commute with every rotation.
    rho = _rotations(torch.rand(16, dtype=D64) * 2 * math.pi)
    w_eq = torch.tensor([[0.7, -0.3], [0.3, 0.7]], dtype=D64)
    assert equivariance_error(w_eq, rho, rho) < 1e-24
    w = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=D64)  # a reflection does not commute
    assert equivariance_error(w, rho, rho) > 0.1
    # layer R^2 -> R^3 with the trivial action on the output: only W = 0 is invariant
    eye3 = torch.eye(3, dtype=D64).expand(16, 3, 3)
    assert equivariance_error(torch.randn(3, 2, dtype=D64), rho, eye3) > 0


def test_equivariance_module_mixed_symmetries_and_rescaling():
    torch.manual_seed(0)
    n = 4
    shift = cyclic_permutations(n)
    flip = torch.stack((torch.eye(n, dtype=D64), torch.eye(n, dtype=D64).flip(0)))  # Z_2 reversal
    net = torch.nn.Sequential(torch.nn.Linear(n, n), torch.nn.ReLU(), torch.nn.Linear(n, n)).double()
    reg = EquivarianceRegularizer(
        weight=1.0,
        symmetries={"shift": [(shift, shift)] * 2, "flip": [(flip, flip)] * 2},
        strengths={"shift": 0.3, "flip": 2.0},
    )
    first = float(reg(net).detach())
    assert first == pytest.approx(2.3)  # one-shot rescaling: every term starts at its strength
    raw = {k: v.detach() for k, v in reg.terms(net).items()}
    assert raw["shift"] > 0 and raw["flip"] > 0
    assert reg.scales["shift"] == pytest.approx(1.0 / float(raw["shift"]))
    with torch.no_grad():  # make the first layer shift-equivariant: its shift term drops
        net[0].weight.copy_(_circulant(torch.randn(n, dtype=D64)))
    new = {k: v.detach() for k, v in reg.terms(net).items()}
    assert new["shift"] < raw["shift"]
    expected = 0.3 * reg.scales["shift"] * new["shift"] + 2.0 * reg.scales["flip"] * new["flip"]
    assert float(reg(net).detach()) == pytest.approx(float(expected))  # scales stay frozen
    with pytest.raises(ValueError, match="unknown symmetry"):
        EquivarianceRegularizer(symmetries={"shift": []}, strengths={"rot": 1.0})


def test_equivariance_gradcheck_and_errors():
    rho = cyclic_permutations(3)
    ws = [torch.randn(3, 3, dtype=D64, requires_grad=True), torch.randn(3, 3, dtype=D64, requires_grad=True)]
    assert gradcheck(lambda a, b: equivariance_regularizer([a, b], [(rho, rho), (rho, rho)]), tuple(ws))
    with pytest.raises(ValueError, match=r"rho_in must have shape \[G, 3, 3\]"):
        equivariance_error(torch.randn(3, 3, dtype=D64), cyclic_permutations(4), rho)
    with pytest.raises(ValueError, match="one \\(rho_in, rho_out\\) pair per layer"):
        equivariance_regularizer(ws, [(rho, rho)])
