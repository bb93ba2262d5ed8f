"""Benchmark of :func:`geo.raster.rasterize` (torch backend; gsplat on CUDA)
against the dense reference :func:`geo.raster.reference.rasterize_dense`.

Scene: ``N`` Gaussians uniform in a frustum slab (z in [3, 8], filling the
view), log-uniform scales in [0.008, 0.04] (radii of a few pixels at 256^2),
opacities ``sigmoid(randn)``, RGB colours; one pinhole camera with focal
``0.9 * width``. Cases: N in {10k, 100k, 1M} x {256^2, 512^2} x {fwd, fwd+bwd}.

Every case runs in a fresh subprocess so peak memory is honest: ``peak_mb`` is
``ru_maxrss`` after the timed runs minus ``ru_maxrss`` once the scene is built
(torch's allocator included; the scene itself excluded). Times are medians over
``--repeats`` after one warm-up.

The dense reference needs ``pixels x N`` memory, which does not fit beyond
toy sizes, so it is timed on a band of pixel rows (as many as keep ``rows x
width x N`` near 4M elements) and scaled to the full image:
``t_dense = t_proj + (t_band - t_proj) * height / rows``, where ``t_proj`` is the
projection (+ its backward) measured in the same subprocess, so it is not
scaled. The output says so.

Usage: ``python -m tools.bench.raster [--quick] [--threads T]``. The last stdout
line is one JSON object with ``speedup_vs_dense`` (100k, 256^2, fwd+bwd) and
``peak_mem_mb`` (1M, 512^2, fwd+bwd; in ``--quick`` the largest case run).
Without ``--quick`` a markdown table is printed as well.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

DENSE_BAND_ELEMS = 4_000_000


def make_scene(n: int, width: int, device: str = "cpu", seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, generator=g) * 5 + 3
    xy = (torch.rand(n, 2, generator=g) * 2 - 1) * z[:, None] * 0.6
    means = torch.cat([xy, z[:, None]], 1)
    quats = torch.randn(n, 4, generator=g)
    lo, hi = torch.log(torch.tensor(0.008)), torch.log(torch.tensor(0.04))
    scales = torch.exp(lo + (hi - lo) * torch.rand(n, 3, generator=g))
    opacities = torch.sigmoid(torch.randn(n, generator=g))
    colors = torch.rand(n, 3, generator=g)
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[0.9 * width, 0, width / 2], [0, 0.9 * width, width / 2], [0, 0, 1.0]])[None]
    return [t.to(device) for t in (means, quats, scales, opacities, colors, viewmats, Ks)]


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_case(n: int, width: int, backward: bool, impl: str, repeats: int, threads: int) -> dict:
    """One case in this process (called in a fresh subprocess)."""
    import torch

    torch.set_num_threads(threads)
    from geo.raster import rasterize
    from geo.raster._project import project_gaussians
    from geo.raster.reference import rasterize_dense

    device = "cuda" if impl == "gsplat" else "cpu"
    scene = make_scene(n, width, device)
    params = [t.requires_grad_(backward and i < 5) for i, t in enumerate(scene)]
    H = W = width
    rows = None
    if impl == "dense":
        rows = max(1, min(H, DENSE_BAND_ELEMS // (W * n)))

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def once():
        for p in params[:5]:
            p.grad = None
        with torch.set_grad_enabled(backward):
            if impl == "dense":
                img, alpha, _ = rasterize_dense(*params, W, H, rows=(0, rows))
            else:
                img, alpha, _ = rasterize(*params, W, H, backend="gsplat" if impl == "gsplat" else "torch")
            if backward:
                (img.sum() + alpha.sum()).backward()
        sync()

    def proj_once():
        for p in params[:5]:
            p.grad = None
        with torch.set_grad_enabled(backward):
            pr = project_gaussians(*params[:4], params[5], params[6], W, H)
            if backward:
                (pr.means2d.sum() + pr.conics.sum() + pr.opacities.sum()).backward()

    base = _maxrss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    once()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    out = {"n": n, "res": width, "pass": "fwd+bwd" if backward else "fwd", "impl": impl,
           "time_s": statistics.median(times), "times": times, "threads": threads,
           "peak_mb": _maxrss_mb() - base, "maxrss_mb": _maxrss_mb()}
    if device == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if impl == "dense":
        tp = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            proj_once()
            tp.append(time.perf_counter() - t0)
        t_proj = statistics.median(tp)
        out.update(rows=rows, t_band_s=out["time_s"], t_proj_s=t_proj,
                   time_s=t_proj + max(out["time_s"] - t_proj, 0.0) * H / rows,
                   note=f"dense timed on {rows} of {H} rows and scaled (projection not scaled); "
                        f"peak_mb is for the band")
    return out


def spawn(n, width, backward, impl, repeats, threads, timeout) -> dict:
    cmd = [sys.executable, "-m", "tools.bench.raster", "--case", str(n), str(width),
           "1" if backward else "0", impl, "--repeats", str(repeats), "--threads", str(threads)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # On a shared, oversubscribed CPU, OpenMP's default spin-waiting makes
    # every small torch op stall (measured 10x slower with 2 threads); passive
    # waiting keeps the timings meaningful. An explicit setting wins.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root, env=env)
    except subprocess.TimeoutExpired:
        return {"n": n, "res": width, "pass": "fwd+bwd" if backward else "fwd", "impl": impl,
                "error": f"timeout after {timeout}s"}
    if p.returncode != 0:
        return {"n": n, "res": width, "pass": "fwd+bwd" if backward else "fwd", "impl": impl,
                "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _fmt(r: dict | None, key: str, spec: str) -> str:
    if r is None:
        return "-"
    if "error" in r:
        return "n/a"
    return format(r[key], spec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a subset that runs in under 2 minutes")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads per case")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--case", nargs=4, metavar=("N", "RES", "BWD", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.case:
        n, res, bwd, impl = args.case
        print(json.dumps(run_case(int(n), int(res), bwd == "1", impl, args.repeats or 3, args.threads)))
        return

    import torch

    cuda = torch.cuda.is_available()
    if args.quick:
        cases = [(10_000, 256, False), (10_000, 256, True), (100_000, 256, False), (100_000, 256, True)]
        dense_cases = {(100_000, 256, True)}
        repeats, timeout = args.repeats or 2, 100
    else:
        cases = [(n, r, b) for n in (10_000, 100_000, 1_000_000) for r in (256, 512) for b in (False, True)]
        dense_cases = {(n, r, b) for n, r, b in cases if n <= 100_000}
        repeats, timeout = args.repeats or 3, 900

    results = []
    for n, res, bwd in cases:
        row = {"torch": spawn(n, res, bwd, "torch", repeats, args.threads, timeout)}
        if (n, res, bwd) in dense_cases:
            row["dense"] = spawn(n, res, bwd, "dense", 1 if args.quick else 2, args.threads, timeout)
        if cuda:
            row["gsplat"] = spawn(n, res, bwd, "gsplat", repeats, args.threads, timeout)
        t, d = row["torch"], row.get("dense")
        if d and "error" not in d and "error" not in t:
            row["speedup_vs_dense"] = d["time_s"] / t["time_s"]
        results.append(row)
        print(json.dumps(row), flush=True)

    def find(n, res, bwd):
        for (cn, cr, cb), row in zip(cases, results):
            if (cn, cr, cb) == (n, res, bwd):
                return row
        return None

    key = find(100_000, 256, True)
    big = find(1_000_000, 512, True) if not args.quick else results[-1]
    if not args.quick:
        print()
        print("| N | image | pass | torch time (s) | torch peak (MB) | dense time (s) | speed-up vs dense |"
              + (" gsplat time (s) | gsplat peak (MB) |" if cuda else ""))
        print("|---:|---:|---|---:|---:|---:|---:|" + ("---:|---:|" if cuda else ""))
        for (n, res, bwd), row in zip(cases, results):
            line = (f"| {n:,} | {res}² | {'fwd+bwd' if bwd else 'fwd'} | {_fmt(row['torch'], 'time_s', '.3f')} | "
                    f"{_fmt(row['torch'], 'peak_mb', '.0f')} | {_fmt(row.get('dense'), 'time_s', '.1f')} | "
                    f"{format(row['speedup_vs_dense'], '.0f') + '×' if 'speedup_vs_dense' in row else '-'} |")
            if cuda:
                line += f" {_fmt(row.get('gsplat'), 'time_s', '.4f')} | {_fmt(row.get('gsplat'), 'peak_mb', '.0f')} |"
            print(line)
        print()
        print(f"Dense times are estimated from a band of pixel rows (about {DENSE_BAND_ELEMS:,} pixel x Gaussian "
              "elements, at least one row), scaled to the full image; dense is not run at 1M. "
              "Peak memory = ru_maxrss delta in a fresh process (scene excluded).")
    summary = {
        "speedup_vs_dense": key.get("speedup_vs_dense") if key else None,
        "peak_mem_mb": big["torch"].get("peak_mb") if big else None,
        "peak_mem_case": (f"{big['torch']['n']}/{big['torch']['res']}^2 {big['torch']['pass']}" if big else None),
        "time_100k_256_fwd_bwd_s": key["torch"].get("time_s") if key else None,
        "dense_note": (key.get("dense") or {}).get("note") if key else None,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "quick": args.quick,
        "cuda": cuda,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
