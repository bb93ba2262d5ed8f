"""`geo demo`: the Quick-start demo, sparse-view reconstruction on the bundled Spot sample.

Runs CoherentGS (``geo reconstruct``) on three views of ``assets/spot_sample``
with the CPU-sized defaults, evaluates the held-out views, checks that the
saved scene loads back bit for bit, and prints a summary of it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _same_scene(a, b) -> bool:
    """Every node, transform, meta and payload array identical (bit for bit)."""
    na, nb = list(a.traverse()), list(b.traverse())
    if [n.path for n in na] != [n.path for n in nb]:
        return False
    for x, y in zip(na, nb):
        if not np.array_equal(x.transform, y.transform) or x.meta != y.meta or type(x.payload) is not type(y.payload):
            return False
        if x.payload is not None:
            ax, ay = x.payload.to_arrays(), y.payload.to_arrays()
            if ax.keys() != ay.keys() or any(ax[k].dtype != ay[k].dtype or not np.array_equal(ax[k], ay[k]) for k in ax):
                return False
    return True


def run_demo(data: Path, out: Path) -> None:
    import tempfile

    from scenes import load_scene, save_scene
    from scenes.coherent.cli import Reconstruct
    from scenes.info import summarize_graph

    t0 = time.perf_counter()
    result = Reconstruct(data=data, out=out).run()
    scene = load_scene(out)
    with tempfile.TemporaryDirectory() as tmp:
        save_scene(scene, Path(tmp) / "copy")
        exact = _same_scene(scene, load_scene(Path(tmp) / "copy"))
    print()
    print(summarize_graph(scene, str(out)))
    ev = result.get("eval") or {}
    if ev:
        print(f"demo: held-out PSNR {ev.get('psnr', float('nan')):.2f} dB, SSIM {ev.get('ssim', float('nan')):.4f} "
              f"(ground truth | render | error grid: {out / 'eval_grid.png'})")
    print(f"demo: exports in {out}: gaussians.ply (3DGS viewers), gaussians.splat, mesh.ply / mesh.glb")
    print(f"demo: scene save/load round trip {'bit-exact' if exact else 'NOT EXACT'}")
    print(f"demo: done in {time.perf_counter() - t0:.0f} s")
    if not exact:
        raise RuntimeError("scene round trip was not exact")
