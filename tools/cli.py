"""The ``geo`` command line.

Each subcommand is a dataclass whose fields tyro turns into flags; its ``run``
method does the work. Heavy modules (torch, open3d, ...) are imported inside
``run`` so that ``geo --help`` starts quickly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from geo.fmaps.config import MatchConfig
from scenes.coherent.cli import Eval, Reconstruct
from scenes.data.synthetic import SyntheticConfig
from scenes.export.cli import Export, View
from scenes.voxe.cli import Edit

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"


@dataclass
class Info:
    """Summarise a scene directory, a dataset (transforms.json, COLMAP, LLFF), or a mesh / point cloud file."""

    path: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="PATH")]

    def run(self) -> None:
        from scenes.info import summarize

        print(summarize(self.path))


@dataclass
class RenderSynthetic:
    """Render a mesh from N cameras into a ground-truth transforms.json dataset
    (RGB, depth, alpha, normals, and optical flow between every ordered pair of views)."""

    mesh: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="MESH")]
    """Mesh file (.obj, .ply, .glb, ...), textured or vertex-coloured."""
    out: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="OUT")]
    """Output dataset directory."""
    config: Annotated[SyntheticConfig, tyro.conf.arg(name="")] = field(default_factory=SyntheticConfig)

    def run(self) -> None:
        from scenes.data.synthetic import render_synthetic

        path = render_synthetic(self.mesh, self.out, self.config)
        print(f"wrote {path}")


@dataclass
class Match:
    """Dense correspondence between two shapes (meshes or point clouds, any pose, any
    meshing): DiffuMatch by default, or plain functional maps / ZoomOut."""

    source: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="A")]
    """Source shape file (mesh: .off .obj .ply .stl .glb ...; point cloud: .ply .pcd .xyz .pts)."""
    target: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="B")]
    """Target shape file."""
    out: Path = Path("map.txt")
    """Output: ``.txt`` = the source vertex (0-based) of each target vertex, one per line;
    ``.npz`` = the full correspondence (both directions, functional map, confidence)."""
    png: Path | None = None
    """Also write a picture: a colour field on A and its transfer to B, side by side."""
    config: Annotated[MatchConfig, tyro.conf.arg(name="")] = field(default_factory=MatchConfig)

    def run(self) -> None:
        import time

        from geo.fmaps.api import match
        from geo.fmaps.plot import save_transfer_png

        cfg = self.config
        if cfg.method == "diffumatch":
            cfg.diffumatch.progress = True
        t = time.perf_counter()
        corr = match(self.source, self.target, config=cfg)
        path = corr.save(self.out)
        print(
            f"{corr.method}: {corr.n_source} → {corr.n_target} vertices in {time.perf_counter() - t:.1f} s, "
            f"mean confidence {corr.confidence.mean():.3f}; wrote {path}"
        )
        if self.png is not None:
            print(f"wrote {save_transfer_png(self.png, self.source, self.target, corr)}")


@dataclass
class Demo:
    """Run the Quick-start demo: sparse-view reconstruction (CoherentGS, 3 views) of the
    bundled Spot sample, evaluation on the held-out views, and a summary of the scene."""

    data: Path = ASSETS / "spot_sample"
    """Dataset to reconstruct (any format the readers understand)."""
    out: Path = Path("out/demo")
    """Output scene directory (also holds the PLY / .splat / mesh exports and the eval grid)."""

    def run(self) -> None:
        from tools.demo import run_demo

        run_demo(self.data, self.out)


COMMANDS = {
    "info": Info,
    "render-synthetic": RenderSynthetic,
    "reconstruct": Reconstruct,
    "eval": Eval,
    "edit": Edit,
    "export": Export,
    "view": View,
    "match": Match,
    "demo": Demo,
}


def main(argv: list[str] | None = None) -> int:
    # torch (imported later, inside run()) does many small parallel ops; with
    # OpenMP's default spin-waiting, 2 threads on a busy 2-core machine run
    # 10x slower than 1. Passive waiting fixes that at no cost when idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, prog="geo", description="geo: 3D geometry and scene processing")
    try:
        cmd.run()
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Bad input: one clear line, no traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"geo: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
