"""``geo info PATH``: a short text summary of a scene, a mesh/point-cloud file or a capture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

__all__ = ["summarize", "summarize_graph", "MESH_SUFFIXES"]

MESH_SUFFIXES = (".obj", ".ply", ".off", ".glb", ".gltf", ".stl")


def _fmt_vec(v) -> str:
    return "[" + ", ".join(f"{x:.4g}" for x in np.asarray(v, dtype=np.float64)) + "]"


def _fmt_counts(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def summarize_graph(g, title: str) -> str:
    """Node count, payloads per type, world bounds and cameras of a :class:`SceneGraph`."""
    from scenes.payloads import Camera

    lines = [title, f"  nodes: {len(g)}"]
    kinds = Counter(type(n.payload).__name__ for n in g.find())
    lines.append(f"  payloads: {_fmt_counts(kinds) if kinds else 'none'}")
    b = g.world_bounds()
    lines.append(f"  world bounds: {'none' if b is None else f'min {_fmt_vec(b[0])} max {_fmt_vec(b[1])}'}")
    cams = g.find(Camera)
    if cams:
        res = Counter(f"{n.payload.model.width}x{n.payload.model.height}" for n in cams)
        models = Counter(n.payload.model.model for n in cams)
        with_images = sum(n.payload.image is not None for n in cams)
        lines.append(f"  cameras: {len(cams)} (resolutions: {_fmt_counts(res)}; models: {_fmt_counts(models)}; "
                     f"with images: {with_images})")
        splits = Counter(n.meta.get("split") for n in cams if "split" in n.meta)
        if splits:
            lines.append(f"  splits: {_fmt_counts(splits)}")
    if g.meta:
        lines.append(f"  meta keys: {', '.join(sorted(map(str, g.meta)))}")
    return "\n".join(lines)


def _summarize_geometry_file(path: Path) -> str:
    import trimesh

    geom = trimesh.load(str(path), process=False)
    if isinstance(geom, trimesh.Scene):
        geom = geom.to_geometry() if hasattr(geom, "to_geometry") else geom.dump(concatenate=True)
    lines = [f"{path} ({type(geom).__name__})"]
    if isinstance(geom, trimesh.PointCloud):
        lines.append(f"  points: {len(geom.vertices)}")
        has_col = geom.colors is not None and len(geom.colors) == len(geom.vertices) and len(geom.vertices) > 0
        lines.append(f"  colours: {'yes' if has_col else 'no'}")
    else:
        from scenes.payloads import Mesh

        m = Mesh.from_trimesh(geom)
        lines.append(f"  vertices: {m.num_vertices}, faces: {m.num_faces}")
        lines.append(f"  colours: {'yes' if m.vertex_colors is not None else 'no'}, uv: "
                     f"{'yes' if m.uv is not None else 'no'}, texture: {'yes' if m.texture is not None else 'no'}")
    if len(geom.vertices):
        v = np.asarray(geom.vertices, dtype=np.float64)
        lines.append(f"  bounds: min {_fmt_vec(v.min(0))} max {_fmt_vec(v.max(0))}")
    else:
        lines.append("  bounds: none (empty)")
    return "\n".join(lines)


def _gaussian_format(p: Path) -> str | None:
    """``"splat"``, ``"ply"`` (3DGS), ``"ply-compressed"`` (SuperSplat), or None for other files."""
    if p.suffix.lower() == ".splat":
        return "splat"
    if p.suffix.lower() != ".ply":
        return None
    with open(p, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    header = head[:end] if end >= 0 else b""
    if b"packed_position" in header:
        return "ply-compressed"
    return "ply" if b"property float opacity" in header else None


def _summarize_gaussians_file(p: Path, fmt: str) -> str:
    from scenes.export.ply_compressed import read_compressed_ply
    from scenes.export.ply_gaussians import read_gaussian_ply
    from scenes.export.splat import read_splat

    read, kind = {
        "splat": (read_splat, "antimatter15 .splat"),
        "ply-compressed": (read_compressed_ply, "SuperSplat compressed PLY"),
        "ply": (read_gaussian_ply, "3DGS PLY"),
    }[fmt]
    cloud = read(p)
    lo, hi = cloud.means.min(0), cloud.means.max(0)
    return "\n".join([
        f"{p} ({kind})",
        f"  Gaussians: {cloud.num}, SH degree {cloud.sh_degree}",
        f"  opacity: median {float(np.median(cloud.opacities)):.3g}; scale: median {float(np.median(cloud.scales)):.3g}",
        f"  bounds: min {np.array2string(lo, precision=4)} max {np.array2string(hi, precision=4)}",
    ])


def summarize(path) -> str:
    """Text summary of ``path``: a scene directory (has ``scene.json``), a mesh or
    point-cloud file (``MESH_SUFFIXES``), or a capture directory readable by
    :func:`scenes.data.load_capture`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is none of the above (the message names it).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.is_dir() and (p / "scene.json").is_file():
        from scenes.io import load_scene

        return summarize_graph(load_scene(p), f"{p} (scene)")
    if p.is_file():
        fmt = _gaussian_format(p)
        if fmt is not None:
            return _summarize_gaussians_file(p, fmt)
        if p.suffix.lower() in MESH_SUFFIXES:
            return _summarize_geometry_file(p)
        raise ValueError(f"{p}: unsupported file type {p.suffix!r}; expected a scene directory, a Gaussian file "
                         f"(.ply, .splat) or one of {MESH_SUFFIXES}")
    try:
        from scenes.data import load_capture
    except ImportError as e:
        raise ValueError(f"{p}: not a scene directory (no scene.json) and the dataset reader is unavailable ({e})") from None
    try:
        g = load_capture(p, load_images=False)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"{p}: not a scene directory (no scene.json) nor a recognised capture: {e}") from None
    return summarize_graph(g, f"{p} (capture)")
