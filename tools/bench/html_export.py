"""Benchmark: the standalone HTML export with 100k splats: file size, export time, browser load time.

Builds a 100k-Gaussian scene (a coloured, noisy sphere shell), writes it with
``geo export --format html``, and opens the page from disk in headless Chromium
(software GL, as on a machine without a GPU). Load time is measured from
navigation until the viewer reports its first sorted frame (``window.__geo.ready``).

Last line: JSON with ``splats``, ``html_mb``, ``export_s`` and ``load_s_median``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def sphere_cloud(n: int, seed: int = 0):
    from scenes.payloads import GaussianCloud

    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pts = d * (1 + 0.02 * rng.normal(size=(n, 1)))
    colors = 0.5 + 0.5 * d  # colour by direction: the page shows a smooth gradient
    return GaussianCloud.from_points(pts, colors, scale=0.01, opacity=0.8, sh_degree=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one browser load instead of three")
    ap.add_argument("--splats", type=int, default=100_000)
    args = ap.parse_args()

    from scenes.export.html import write_html
    from scenes.graph import SceneGraph
    from tools.browser import shoot

    g = SceneGraph()
    g.add("/gaussians", payload=sphere_cloud(args.splats))
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        page = write_html(Path(tmp) / "page", g)
        export_s = time.perf_counter() - t0
        size_mb = page.stat().st_size / 1e6
        for i in range(1 if args.quick else 3):
            r = shoot(Path(tmp) / f"run{i}", page.as_uri(), "window.__geo !== undefined && window.__geo.ready === true",
                      "window.__geo", [{"path": str(Path(tmp) / f"shot{i}.png")}], size=(800, 600), timeout_ms=120000)
            if r["errors"]:
                raise SystemExit(f"the page logged JavaScript errors: {r['errors']}")
            if r["info"]["splats"] != args.splats:
                raise SystemExit(f"the page shows {r['info']['splats']} splats, expected {args.splats}")
            loads.append(r["ready_ms"] / 1000)
            print(f"load {i}: {loads[-1]:.2f} s to the first sorted frame (viewer set-up {r['info']['loadMs']:.0f} ms)")
    med = statistics.median(loads)
    print(f"{args.splats} splats: page {size_mb:.2f} MB, export {export_s:.2f} s, load median {med:.2f} s over {len(loads)}")
    print(json.dumps({"splats": args.splats, "html_mb": round(size_mb, 3), "export_s": round(export_s, 3),
                      "load_s_median": round(med, 3), "loads": len(loads)}))


if __name__ == "__main__":
    main()
