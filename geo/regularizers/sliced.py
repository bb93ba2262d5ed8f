r"""Sliced Wasserstein distance, plain and with Gaussian control variates.

``SW_p^p(mu, nu) = E_{theta ~ U(S^{d-1})} W_p^p(theta#mu, theta#nu)`` (Rabin et al., 2011;
Bonneel et al., 2015), estimated by Monte Carlo over ``L`` directions; each 1D distance
is exact (quantile matching of the weighted empirical measures).

Control variates (Nguyen & Ho, "Control Variate Sliced Wasserstein Estimators",
ICLR 2024, arXiv:2305.00402), ``p = 2`` only. For each direction fit 1D Gaussians to the
projections: means ``m_x(theta) = theta^T mean(x)``, variances ``s_x^2(theta) = theta^T Cov(x) theta``
(weighted, population). ``W_2^2`` between the two Gaussians is
``(m_x - m_y)^2 + (s_x - s_y)^2``; two of its bounds have closed-form expectations over
the sphere (``E[theta theta^T] = I / d``):

* lower: ``C_low(theta) = (m_x - m_y)^2``,                    ``E C_low = ||mean x - mean y||^2 / d``;
* upper: ``C_up(theta)  = (m_x - m_y)^2 + s_x^2 + s_y^2``,    ``E C_up  = (||mean x - mean y||^2 + tr Cov x + tr Cov y) / d``.

The estimator is ``mean_l W_l - gamma (mean_l C_l - E C)`` with the variance-optimal
``gamma = Cov_l(W, C) / Var_l(C)`` estimated from the same ``L`` directions (as in the
paper). By default ``gamma`` is part of the graph, so the gradient is the gradient of
the returned estimate (gradcheck-exact); ``detach_gamma=True`` treats it as a constant.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_choice, check_points, check_tensor, check_weights
from .schedule import Regularizer, Schedule

__all__ = ["random_projections", "wasserstein_1d", "sliced_wasserstein", "SlicedWasserstein", "gaussian_sw2_isotropic"]


def random_projections(d: int, n: int, generator: torch.Generator | None = None, dtype=torch.float64, device=None) -> Tensor:
    """``[n, d]`` directions uniform on the unit sphere ``S^{d-1}``."""
    t = torch.randn(n, d, generator=generator, dtype=dtype, device=device)
    return t / t.norm(dim=1, keepdim=True)


def wasserstein_1d(u: Tensor, v: Tensor, u_w: Tensor | None = None, v_w: Tensor | None = None, p: float = 2.0) -> Tensor:
    r"""Exact ``W_p^p`` between 1D weighted empirical measures, batched over rows.

    Args:
        u: ``[L, N]`` support points; v: ``[L, M]``.
        u_w, v_w: weights ``[N]`` / ``[M]`` summing to 1 (uniform by default).
        p: exponent >= 1.

    Returns:
        ``[L]``: ``int_0^1 |F_u^{-1}(t) - F_v^{-1}(t)|^p dt`` per row.
    """
    n, m = u.shape[1], v.shape[1]
    if u_w is None and v_w is None and n == m:
        return (torch.sort(u, 1).values - torch.sort(v, 1).values).abs().pow(p).mean(1)
    u_w = u.new_full((n,), 1.0 / n) if u_w is None else u_w
    v_w = v.new_full((m,), 1.0 / m) if v_w is None else v_w
    us, ui = torch.sort(u, 1)
    vs, vi = torch.sort(v, 1)
    ucdf = torch.cumsum(u_w[ui], 1)
    vcdf = torch.cumsum(v_w[vi], 1)
    # Merge the two sets of quantile levels; between consecutive levels both quantile
    # functions are constant, so the integral is a finite sum.
    qs = torch.sort(torch.cat((ucdf, vcdf), 1), 1).values
    dq = torch.diff(qs, dim=1, prepend=torch.zeros_like(qs[:, :1]))
    iu = torch.searchsorted(ucdf.detach().contiguous(), qs.detach().contiguous(), right=False).clamp(max=n - 1)
    iv = torch.searchsorted(vcdf.detach().contiguous(), qs.detach().contiguous(), right=False).clamp(max=m - 1)
    return (dq * (us.gather(1, iu) - vs.gather(1, iv)).abs().pow(p)).sum(1)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_projections: int = 64,
    p: float = 2.0,
    a: Tensor | None = None,
    b: Tensor | None = None,
    projections: Tensor | None = None,
    generator: torch.Generator | None = None,
    control_variate: str | None = None,
    detach_gamma: bool = False,
) -> Tensor:
    r"""Monte Carlo estimate of ``SW_p^p(x, y)``, optionally with a Gaussian control variate.

    Args:
        x: source points ``[N, D]``; y: target points ``[M, D]``.
        n_projections: number of random directions ``L`` (ignored if ``projections`` given).
        p: exponent >= 1 (control variates need ``p = 2``).
        a, b: point weights ``[N]`` / ``[M]`` summing to 1 (uniform by default).
        projections: directions ``[L, D]`` (unit rows), e.g. to share draws between estimators.
        generator: RNG for the directions.
        control_variate: ``None``, ``"lower"`` or ``"upper"`` (see module docstring).
        detach_gamma: treat the control-variate coefficient as a constant in backward.

    Returns:
        scalar estimate of ``SW_p^p``.

    Example:
        >>> x, y = torch.randn(500, 3, dtype=torch.float64), torch.randn(500, 3, dtype=torch.float64) + 1.0
        >>> theta = random_projections(3, 32)
        >>> plain = sliced_wasserstein(x, y, projections=theta)
        >>> cv = sliced_wasserstein(x, y, projections=theta, control_variate="upper")
    """
    check_points(x, "x")
    check_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x [N, D] and y [M, D] must have the same D, got {tuple(x.shape)} and {tuple(y.shape)}")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    if control_variate is not None:
        check_choice(control_variate, "control_variate", ("lower", "upper"))
        if p != 2:
            raise ValueError(f"control variates are defined for p = 2, got p = {p}")
    aw = None if a is None else check_weights(a, x.shape[0], "a", x)
    bw = None if b is None else check_weights(b, y.shape[0], "b", y)
    d = x.shape[1]
    if projections is None:
        if n_projections < 1:
            raise ValueError(f"n_projections must be >= 1, got {n_projections}")
        projections = random_projections(d, n_projections, generator, x.dtype, x.device)
    else:
        check_tensor(projections, "projections", f"[L, {d}]", ndims=(2,))
        if projections.shape[1] != d:
            raise ValueError(f"projections must have shape [L, {d}], got {tuple(projections.shape)}")
        projections = projections.to(x.dtype)
    px, py = projections @ x.T, projections @ y.T  # [L, N], [L, M]
    w = wasserstein_1d(px, py, aw, bw, p)
    if control_variate is None:
        return w.mean()

    aw = x.new_full((x.shape[0],), 1.0 / x.shape[0]) if aw is None else aw
    bw = y.new_full((y.shape[0],), 1.0 / y.shape[0]) if bw is None else bw
    mx, my = px @ aw, py @ bw
    c = (mx - my) ** 2
    mean_x, mean_y = aw @ x, bw @ y
    expected = ((mean_x - mean_y) ** 2).sum() / d
    if control_variate == "upper":
        c = c + ((px - mx[:, None]) ** 2) @ aw + ((py - my[:, None]) ** 2) @ bw
        tr_x = (aw[:, None] * (x - mean_x) ** 2).sum()
        tr_y = (bw[:, None] * (y - mean_y) ** 2).sum()
        expected = expected + (tr_x + tr_y) / d
    cc, wc = c - c.mean(), w - w.mean()
    var_c = (cc * cc).sum()
    gamma = (wc * cc).sum() / var_c.clamp_min(torch.finfo(var_c.dtype).tiny)  # 0 when C is constant
    if detach_gamma:
        gamma = gamma.detach()
    return w.mean() - gamma * (c.mean() - expected)


class SlicedWasserstein(Regularizer):
    """Module form of :func:`sliced_wasserstein`; ``forward(x, y, a=None, b=None)``.

    ``control_variate="upper"`` or ``"lower"`` gives the CV-SW estimators (``p = 2``).
    """

    name = "sliced_wasserstein"

    def __init__(
        self, weight: float = 1.0, schedule: Schedule | None = None, n_projections: int = 64, p: float = 2.0,
        control_variate: str | None = None,
    ) -> None:
        super().__init__(weight, schedule)
        self.n_projections, self.p, self.control_variate = n_projections, p, control_variate

    def loss(self, x: Tensor, y: Tensor, a: Tensor | None = None, b: Tensor | None = None) -> Tensor:
        return sliced_wasserstein(x, y, self.n_projections, self.p, a, b, control_variate=self.control_variate)


def gaussian_sw2_isotropic(mean_diff_sq: float, d: int, s_x: float, s_y: float) -> float:
    """Closed form ``SW_2^2(N(m_x, s_x^2 I), N(m_y, s_y^2 I)) = ||m_x - m_y||^2 / d + (s_x - s_y)^2``."""
    return mean_diff_sq / d + (s_x - s_y) ** 2
