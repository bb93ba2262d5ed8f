"""`geo export` and `geo view`: config dataclasses for the CLI (tyro) and the Python API.

Only the standard library, numpy and tyro are imported at module level, so ``geo --help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

__all__ = ["Export", "View", "export_scene", "FORMATS"]

FORMATS = ("ply", "splat", "ply-compressed", "glb", "html")


def _gaussian_nodes(graph, fmt: str, node: str | None):
    from scenes.payloads import GaussianCloud

    nodes = [graph[node]] if node is not None else graph.find(GaussianCloud)
    if not nodes or not all(isinstance(n.payload, GaussianCloud) for n in nodes):
        raise ValueError(f"geo export --format {fmt}: {'node ' + node + ' has' if node else 'the scene has'} no GaussianCloud")
    return nodes


def _world_gaussians(graph, fmt: str, node: str | None):
    """All Gaussian clouds of the scene (or one node) in world coordinates, as one cloud."""
    from scenes.payloads import GaussianCloud

    clouds = [n.payload.transformed(n.world_transform) for n in _gaussian_nodes(graph, fmt, node)]
    return clouds[0] if len(clouds) == 1 else GaussianCloud.concat(clouds)


def export_scene(scene: Path, fmt: str, out: Path, node: str | None = None) -> Path:
    """Export the scene directory ``scene`` to ``out`` in format ``fmt`` (one of :data:`FORMATS`).

    Gaussian formats (``ply``, ``splat``, ``ply-compressed``) write all of the
    scene's Gaussian clouds, in world coordinates, as one cloud (or just ``node``).
    """
    from scenes.io import load_scene

    if fmt not in FORMATS:
        raise ValueError(f"geo export: unknown format {fmt!r}; expected one of {FORMATS}")
    graph = load_scene(scene)
    if fmt == "glb":
        from scenes.export.gltf import write_scene_glb

        return write_scene_glb(out, graph)
    if fmt == "html":
        from scenes.export.html import write_html

        return write_html(out, graph, title=Path(scene).name)
    cloud = _world_gaussians(graph, fmt, node)
    if fmt == "ply":
        from scenes.export.ply_gaussians import write_gaussian_ply

        return write_gaussian_ply(out, cloud)
    if fmt == "splat":
        from scenes.export.splat import write_splat

        return write_splat(out, cloud)
    from scenes.export.ply_compressed import write_compressed_ply

    return write_compressed_ply(out, cloud)


@dataclass
class Export:
    """Export a scene for other viewers: 3DGS PLY, .splat, SuperSplat compressed PLY,
    a whole-scene .glb, or a standalone HTML page that opens from disk."""

    scene: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="SCENE")]
    """Scene directory (scene.json + payloads/)."""
    out: Path
    """Output file (a directory for --format html: the page is OUT/index.html)."""
    format: Literal["ply", "splat", "ply-compressed", "glb", "html"] = "ply"
    """ply: INRIA 3DGS PLY; splat: antimatter15 .splat; ply-compressed: SuperSplat compressed PLY;
    glb: every node, mesh, point cloud and camera; html: standalone viewer page."""
    node: str | None = None
    """Gaussian formats: export only this node's GaussianCloud (default: all of them, merged in world coordinates)."""

    def run(self) -> None:
        t = time.perf_counter()
        path = export_scene(self.scene, self.format, self.out, self.node)
        size = path.stat().st_size
        print(f"wrote {path} ({size / 1e6:.2f} MB, {time.perf_counter() - t:.1f} s)")


@dataclass
class View:
    """Show a scene in the browser with viser (http://HOST:PORT); Ctrl-C stops it."""

    scene: Annotated[tyro.conf.Positional[Path], tyro.conf.arg(metavar="SCENE")]
    """Scene directory (scene.json + payloads/)."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but a loopback address also needs --allow-remote."""
    port: int = 8080
    """TCP port."""
    allow_remote: bool = False
    """Allow binding to a non-local address (the viewer has no authentication; prints a warning)."""
    voxels: Literal["points", "mesh"] = "points"
    """Draw voxel grids as points or as a mesh of boxes."""
    camera: str | None = None
    """Start browser clients at this camera node's pose, e.g. /cameras/r_000."""
    hide: tuple[str, ...] = ()
    """Nodes (with their subtrees) that start hidden, e.g. /cameras."""

    def run(self) -> None:
        from scenes.export.viewer import is_local_host, serve_scene
        from scenes.io import load_scene

        if not is_local_host(self.host) and not self.allow_remote:  # refuse before loading anything
            raise ValueError(f"geo view: refusing to bind to non-local address {self.host!r}; "
                             "pass --allow-remote to expose the viewer (it has no authentication)")
        graph = load_scene(self.scene)
        server = serve_scene(graph, host=self.host, port=self.port, allow_remote=self.allow_remote,
                             voxels=self.voxels, start_camera=self.camera, hide=self.hide, label=Path(self.scene).name)
        print(f"geo view: serving {self.scene} at http://{self.host}:{self.port} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m scenes.export.cli {export,view} ...`` (the same commands ``geo`` registers)."""
    cmd = tyro.extras.subcommand_cli_from_dict({"export": Export, "view": View}, args=argv, prog="python -m scenes.export.cli")
    try:
        cmd.run()
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"geo: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
