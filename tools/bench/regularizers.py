"""Benchmark of the OT solvers and estimators in :mod:`geo.regularizers`.

1. SNS vs Sinkhorn: both log-domain, float64, same cost, same ``eps``, same stopping
   rule (L1 marginal error <= ``tol``), on n = 2000 points. Regime: two point clouds in
   the unit square (uniform vs a mixture of three Gaussian blobs), squared Euclidean
   cost (mean ~0.28), small ``eps`` (2e-3, ~0.7% of the mean cost; 3e-3 with ``--quick``): the regime
   where entropic plans are close to the OT plan and Sinkhorn needs many iterations,
   which is what SNS targets (Tang et al. 2024, Sec. 6).
   ``sns_iteration_ratio`` = Sinkhorn iterations / SNS iterations (warm-up + Newton).
2. CV-SW vs SW: variance of the estimators over repeated draws of L directions, on the
   same draws. Regime: two 3D point clouds of n = 2000 points (a noisy torus and a
   translated, anisotropically scaled copy), as in the point-cloud gradient flows of
   Nguyen & Ho 2024 (early iterations, clouds apart). ``cvsw_variance_ratio`` = plain
   variance / upper-bound CV variance (the lower-bound ratio is reported too).

Usage: ``python -m tools.bench.regularizers [--quick]``. The last stdout line is JSON.
Runs single-threaded (``torch.set_num_threads(1)``) so timings are comparable on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch


def _clouds_2d(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 2, generator=g, dtype=torch.float64)
    centres = torch.tensor([[0.25, 0.3], [0.7, 0.7], [0.3, 0.8]], dtype=torch.float64)
    k = torch.randint(0, 3, (n,), generator=g)
    y = (centres[k] + 0.08 * torch.randn(n, 2, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


def _torus(n: int, g: torch.Generator) -> torch.Tensor:
    u, v = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64), 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    r, s = 1.0, 0.3
    p = torch.stack(((r + s * torch.cos(v)) * torch.cos(u), (r + s * torch.cos(v)) * torch.sin(u), s * torch.sin(v)), 1)
    return p + 0.02 * torch.randn(n, 3, generator=g, dtype=torch.float64)


def bench_sns(n: int, eps: float, tol: float) -> dict:
    from geo.regularizers.sns import marginal_error, sinkhorn_log, sinkhorn_newton_sparse

    g = torch.Generator().manual_seed(0)
    x, y = _clouds_2d(n, g)
    cost = torch.cdist(x, y) ** 2
    t0 = time.perf_counter()
    ref = sinkhorn_log(cost, eps=eps, tol=tol, max_iter=20000)
    t_sk = time.perf_counter() - t0
    t0 = time.perf_counter()
    sns = sinkhorn_newton_sparse(cost, eps=eps, tol=tol)
    t_sns = time.perf_counter() - t0
    a = torch.full((n,), 1.0 / n, dtype=torch.float64)
    return {
        "n": n,
        "eps": eps,
        "mean_cost": float(cost.mean()),
        "tol": tol,
        "sinkhorn_iterations": ref.iterations,
        "sinkhorn_seconds": round(t_sk, 3),
        "sinkhorn_converged": ref.converged,
        "sns_iterations": sns.iterations,
        "sns_warmup_iterations": sns.sinkhorn_iterations,
        "sns_newton_iterations": sns.newton_iterations,
        "sns_cg_iterations": sns.cg_iterations,
        "sns_seconds": round(t_sns, 3),
        "sns_converged": sns.converged,
        "sns_marginal_error": marginal_error(sns.plan, a, a),
        "plan_l1_difference": float((sns.plan - ref.plan).abs().sum()),
        "sns_iteration_ratio": ref.iterations / max(sns.iterations, 1),
        "sns_time_ratio": t_sk / t_sns,
    }


def bench_cvsw(n: int, n_projections: int, repeats: int) -> dict:
    from geo.regularizers.sliced import random_projections, sliced_wasserstein

    g = torch.Generator().manual_seed(1)
    x = _torus(n, g)
    y = _torus(n, g) * torch.tensor([1.5, 0.7, 1.0], dtype=torch.float64) + torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    est: dict[str, list[float]] = {"plain": [], "lower": [], "upper": []}
    t = {k: 0.0 for k in est}
    for _ in range(repeats):
        theta = random_projections(3, n_projections, g)
        for k in est:
            t0 = time.perf_counter()
            v = sliced_wasserstein(x, y, projections=theta, control_variate=None if k == "plain" else k)
            t[k] += time.perf_counter() - t0
            est[k].append(float(v))
    var = {k: torch.tensor(v, dtype=torch.float64).var().item() for k, v in est.items()}
    mean = {k: sum(v) / len(v) for k, v in est.items()}
    return {
        "n": n,
        "n_projections": n_projections,
        "repeats": repeats,
        "mean": mean,
        "variance": var,
        "seconds_per_estimate": {k: t[k] / repeats for k in t},
        "cvsw_variance_ratio": var["plain"] / var["upper"],
        "cvsw_lower_variance_ratio": var["plain"] / var["lower"],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller budget (< 2 minutes)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--eps", type=float, default=None)
    p.add_argument("--tol", type=float, default=1e-6)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    # --quick uses a slightly larger eps (fewer Sinkhorn iterations, so the reference
    # run stays well under 2 minutes on a loaded machine); the full run uses 2e-3.
    eps = args.eps if args.eps is not None else (3e-3 if args.quick else 2e-3)
    sns = bench_sns(args.n, eps, args.tol)
    print("SNS vs Sinkhorn:", json.dumps(sns, indent=1))
    cv = bench_cvsw(args.n, n_projections=10, repeats=100 if args.quick else 500)
    print("CV-SW vs SW:", json.dumps(cv, indent=1))
    summary = {
        "sns_iteration_ratio": round(sns["sns_iteration_ratio"], 2),
        "sns_time_ratio": round(sns["sns_time_ratio"], 2),
        "cvsw_variance_ratio": round(cv["cvsw_variance_ratio"], 2),
        "cvsw_lower_variance_ratio": round(cv["cvsw_lower_variance_ratio"], 2),
        "n": args.n,
        "eps": eps,
        "tol": args.tol,
        "quick": args.quick,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
