"""Test-session set-up shared by every test module."""

import os

# Set before torch is imported by any test module: OpenMP's default
# spin-waiting makes many small torch ops crawl on a loaded 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def spot_unit():
    """Spot (``assets/spot``, held out of all DiffuMatch training) as ``(vertices, faces)``:
    UV-seam duplicates welded, unit RMS radius. Treat the arrays as read-only."""
    from pathlib import Path

    import trimesh

    from geo.fmaps.diffumatch.data import normalize_shape

    path = Path(__file__).resolve().parents[1] / "assets" / "spot" / "spot_triangulated.obj"
    m = trimesh.load(str(path), force="mesh", process=True)
    m.merge_vertices(merge_tex=True, merge_norm=True)  # the OBJ splits vertices at UV seams
    return normalize_shape(m.vertices), np.asarray(m.faces)
