r"""Sinkhorn-Newton-Sparse (SNS) entropic OT solver, with a log-domain Sinkhorn reference.

Tang, Shavlovsky, Rahmanian, Tardini, Thekumparampil, Xiao & Ying, "Accelerating Sinkhorn
Algorithm with Sparse Newton Iterations", ICLR 2024 (arXiv:2401.12253), Alg. 2.

Problem: ``min_{P in U(a, b)} <P, C> + eps KL(P | a b^T)``. With scaled potentials
``z = (u, v)`` (``u = f / eps``), the plan is ``P_ij = a_i b_j exp(u_i + v_j - C_ij / eps)``
and the (scaled) dual, the Lyapunov potential of the paper, is the concave function::

    L(u, v) = <u, a> + <v, b> - sum_ij P_ij(u, v),
    grad L  = (a - P 1, b - P^T 1),
    hess L  = -[[diag(P 1), P], [P^T, diag(P^T 1)]].

Sinkhorn is alternating exact maximisation over ``u`` and ``v``. SNS runs ``warmup``
Sinkhorn iterations, then Newton steps ``z <- z + alpha dz`` with
``H dz = grad L``, where ``H`` keeps the exact diagonal blocks but only the largest
entries of ``P`` off the diagonal (global top-k as in the paper's truncation, with
``k`` doubled from ``nnz_per_row * N`` until the dropped mass is below
``max_dropped_mass``: our adaptive choice of the paper's sparsity level), solved by Jacobi-preconditioned
conjugate gradient. ``H`` is symmetric diagonally dominant, hence positive
semi-definite, and CG only ever sees right-hand sides orthogonal to its near-null
direction ``(1, -1)``. Step sizes: backtracking from ``alpha = 1`` until the marginal
error decreases (the paper uses an Armijo line search on ``L``; near the optimum, where
``L`` changes by ``O(err^2)``, the marginal error is the numerically safer test).
Everything is in the log domain (``logsumexp``), so tiny ``eps`` does not underflow.

Iterations: one Sinkhorn iteration updates ``u`` and ``v`` once (two ``O(NM)`` passes);
one Newton iteration builds ``P`` once, then runs CG on ``O(nnz)`` work and the line search
(``O(NM)`` per trial). ``iterations`` counts warm-up Sinkhorn plus Newton iterations.
Stopping: ``||P 1 - a||_1 + ||P^T 1 - b||_1 <= tol``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._checks import check_float, check_positive, check_tensor, check_weights

__all__ = ["OTSolution", "sinkhorn_log", "sinkhorn_newton_sparse", "marginal_error"]


@dataclass
class OTSolution:
    """Result of :func:`sinkhorn_log` / :func:`sinkhorn_newton_sparse`.

    ``plan`` ``[N, M]``; ``u``, ``v`` scaled potentials (``f = eps u``); ``iterations`` total;
    ``sinkhorn_iterations`` / ``newton_iterations`` its parts; ``cg_iterations`` total CG
    steps; ``marginal_error`` at exit; ``converged``; ``history`` marginal error per iteration.
    """

    plan: Tensor
    u: Tensor
    v: Tensor
    iterations: int
    sinkhorn_iterations: int
    newton_iterations: int
    cg_iterations: int
    marginal_error: float
    converged: bool
    history: list = field(default_factory=list)


def _check_problem(cost, a, b, eps):
    check_float(check_tensor(cost, "cost", "[N, M]", ndims=(2,)), "cost")
    n, m = cost.shape
    a = check_weights(a, n, "a", cost)
    b = check_weights(b, m, "b", cost)
    if (a == 0).any() or (b == 0).any():
        raise ValueError("a and b must be strictly positive (drop zero-mass points first)")
    check_positive(eps, "eps")
    return a, b


def _log_plan(k: Tensor, la: Tensor, lb: Tensor, u: Tensor, v: Tensor) -> Tensor:
    return (la + u)[:, None] + k + (lb + v)[None, :]


def marginal_error(plan: Tensor, a: Tensor, b: Tensor) -> float:
    """``||P 1 - a||_1 + ||P^T 1 - b||_1``."""
    return float((plan.sum(1) - a).abs().sum() + (plan.sum(0) - b).abs().sum())


def _sinkhorn_steps(k, la, lb, a, u, v, n_iter, tol, history):
    """Up to ``n_iter`` log-domain Sinkhorn iterations; returns ``(u, v, iterations, err)``."""
    err = math.inf
    for it in range(n_iter):
        lse_r = torch.logsumexp(k + (lb + v)[None, :], 1)
        if it > 0 or history:
            # columns are exact after the last v-update: only the rows can be off.
            err = float((torch.exp(la + u + lse_r) - a).abs().sum())
            history.append(err)
            if err <= tol:
                return u, v, it, err
        u = -lse_r
        v = -torch.logsumexp(k + (la + u)[:, None], 0)
    return u, v, n_iter, err


def sinkhorn_log(
    cost: Tensor, a: Tensor | None = None, b: Tensor | None = None, eps: float = 0.01, tol: float = 1e-6, max_iter: int = 100000
) -> OTSolution:
    r"""Log-domain Sinkhorn (the reference solver for :func:`sinkhorn_newton_sparse`).

    Args:
        cost: cost matrix ``[N, M]``.
        a, b: positive marginals ``[N]`` / ``[M]`` summing to 1 (uniform by default).
        eps: entropic regularisation (same units as ``cost``).
        tol: stop when the L1 marginal error is below this.
        max_iter: iteration budget.

    Returns:
        :class:`OTSolution`.
    """
    a, b = _check_problem(cost, a, b, eps)
    k, la, lb = -cost / eps, a.log(), b.log()
    u, v = torch.zeros_like(a), torch.zeros_like(b)
    history: list = []
    u, v, it, err = _sinkhorn_steps(k, la, lb, a, u, v, max_iter + 1, tol, history)
    plan = torch.exp(_log_plan(k, la, lb, u, v))
    return OTSolution(plan, u, v, it, it, 0, 0, err, err <= tol, history)


def _pcg(matvec, rhs: Tensor, diag: Tensor, tol: float, max_iter: int) -> tuple[Tensor, int]:
    """Jacobi-preconditioned conjugate gradient for ``A x = rhs`` (A symmetric PSD)."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r / diag
    p = z.clone()
    rz = r @ z
    stop = tol * float(rhs.norm())
    for i in range(max_iter):
        ap = matvec(p)
        alpha = rz / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        if float(r.norm()) <= stop:
            return x, i + 1
        z = r / diag
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, max_iter


def sinkhorn_newton_sparse(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    eps: float = 0.01,
    tol: float = 1e-6,
    warmup: int = 20,
    max_newton: int = 200,
    nnz_per_row: int = 4,
    max_dropped_mass: float = 1e-3,
    cg_tol: float = 1e-10,
    cg_max_iter: int = 500,
) -> OTSolution:
    r"""Sinkhorn-Newton-Sparse: Sinkhorn warm-up, then sparse-Hessian Newton steps (see module docstring).

    Args:
        cost: cost matrix ``[N, M]`` (float64 recommended for ``tol`` below ~1e-5).
        a, b: positive marginals (uniform by default).
        eps: entropic regularisation.
        tol: L1 marginal error to reach.
        warmup: Sinkhorn iterations before switching to Newton.
        max_newton: Newton iteration budget.
        nnz_per_row: initial number of kept off-diagonal Hessian entries per row of ``P``.
        max_dropped_mass: the kept entries are doubled until the mass of ``P`` they leave
            out is at most this (the sparsification error of the Hessian).
        cg_tol, cg_max_iter: relative residual and budget of the inner CG.

    Returns:
        :class:`OTSolution` (the same fixed point as :func:`sinkhorn_log`).

    Example:
        >>> x = torch.rand(300, 2, dtype=torch.float64)
        >>> c = torch.cdist(x, x.flip(0) * 0.5) ** 2
        >>> sol = sinkhorn_newton_sparse(c, eps=1e-3, tol=1e-6)
        >>> sol.converged
        True
    """
    a, b = _check_problem(cost, a, b, eps)
    n, m = cost.shape
    k, la, lb = -cost / eps, a.log(), b.log()
    u, v = torch.zeros_like(a), torch.zeros_like(b)
    history: list = []
    u, v, n_sk, err = _sinkhorn_steps(k, la, lb, a, u, v, warmup, tol, history)
    n_newton = n_cg = 0
    kk = min(n * m, max(nnz_per_row * n, 1))
    if err > tol:
        logp = _log_plan(k, la, lb, u, v)
        p = torch.exp(logp)
        err = marginal_error(p, a, b)
        history.append(err)
    while err > tol and n_newton < max_newton:
        n_newton += 1
        r, c = p.sum(1), p.sum(0)
        grad = torch.cat((a - r, b - c))
        # Keep the largest entries of P, doubling their number until the dropped mass is
        # below ``max_dropped_mass`` (a fixed count is too crude at larger eps).
        while True:
            vals, flat = torch.topk(logp.flatten(), kk)
            vals = vals.exp()
            if kk >= n * m or float(p.sum() - vals.sum()) <= max_dropped_mass:
                break
            kk = min(n * m, 2 * kk)
        rows, cols = flat // m, flat % m
        diag = torch.cat((r, c))
        ridge = 1e-14 * float(diag.max())

        def matvec(z: Tensor) -> Tensor:
            zu, zv = z[:n], z[n:]
            out_u = r * zu + torch.zeros_like(zu).index_add_(0, rows, vals * zv[cols])
            out_v = c * zv + torch.zeros_like(zv).index_add_(0, cols, vals * zu[rows])
            return torch.cat((out_u, out_v)) + ridge * z

        dz, cg_it = _pcg(matvec, grad, diag + ridge, cg_tol, cg_max_iter)
        n_cg += cg_it
        alpha, accepted = 1.0, False
        while alpha >= 1e-6:
            u_t, v_t = u + alpha * dz[:n], v + alpha * dz[n:]
            logp_t = _log_plan(k, la, lb, u_t, v_t)
            p_t = torch.exp(logp_t)
            err_t = marginal_error(p_t, a, b)
            if err_t < err:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:  # Newton direction useless here: fall back to one Sinkhorn step
            u, v, it, _ = _sinkhorn_steps(k, la, lb, a, u, v, 1, 0.0, [])
            n_sk += it
            logp_t = _log_plan(k, la, lb, u, v)
            p_t = torch.exp(logp_t)
            err_t = marginal_error(p_t, a, b)
        else:
            u, v = u_t, v_t
        logp, p, err = logp_t, p_t, err_t
        history.append(err)
    if n_newton == 0:
        p = torch.exp(_log_plan(k, la, lb, u, v))
    return OTSolution(p, u, v, n_sk + n_newton, n_sk, n_newton, n_cg, err, err <= tol, history)
