"""`geo info` summaries of Gaussian files, meshes and scenes."""

from __future__ import annotations

import numpy as np
import pytest

from scenes.export.ply_compressed import write_compressed_ply
from scenes.export.ply_gaussians import write_gaussian_ply
from scenes.export.splat import write_splat
from scenes.info import summarize
from scenes.payloads import GaussianCloud, Mesh


def _cloud(n=300):
    rng = np.random.default_rng(0)
    return GaussianCloud.from_points(rng.uniform(-1, 2, (n, 3)), rng.uniform(0, 1, (n, 3)), scale=0.05, opacity=0.4, sh_degree=1)


@pytest.mark.parametrize(
    "name,write,kind",
    [("g.ply", write_gaussian_ply, "3DGS PLY"), ("g.splat", write_splat, "antimatter15 .splat"),
     ("g.compressed.ply", write_compressed_ply, "SuperSplat compressed PLY")],
)
def test_gaussian_files_are_summarised_as_gaussians(tmp_path, name, write, kind):
    path = write(tmp_path / name, _cloud())
    text = summarize(path)
    assert kind in text and "Gaussians: 300" in text
    assert "opacity: median 0.4" in text


def test_a_mesh_ply_is_still_a_mesh(tmp_path):
    from scenes.export.mesh import write_mesh_file

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    path = write_mesh_file(tmp_path / "m.ply", Mesh(v, np.array([[0, 1, 2]])))
    text = summarize(path)
    assert "vertices: 3, faces: 1" in text and "Gaussians" not in text


def test_unknown_file_type_is_named(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt.*unsupported file type"):
        summarize(bad)
