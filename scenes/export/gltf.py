"""A whole scene graph as one binary glTF (``.glb``): write and read.

Every scene-graph node becomes a glTF node named by its full path (``/cameras/cam_000``),
with its local transform as ``matrix`` and the same parent, so the hierarchy
and world poses survive. Payloads map to glTF as follows:

==============  ==============================================================
payload         glTF
==============  ==============================================================
``Mesh``        a triangle mesh (vertex colours, or uv + embedded texture), via trimesh
``PointCloud``  a ``POINTS`` primitive with ``COLOR_0`` (normals are not kept)
``GaussianCloud``  its centres as ``POINTS`` coloured by the SH DC term (a preview;
                use the PLY / .splat exports for the Gaussians themselves)
``VoxelGrid``   centres of voxels with positive raw density, as ``POINTS``
``Camera``      a perspective glTF camera on a child node ``<path>#camera``
                rotated by 180 degrees about x (glTF cameras look down -z with
                +y up; ours are OpenCV: +z forward, +y down). The exact
                intrinsics and size go into that node's ``extras``.
==============  ==============================================================

Node ``meta`` and payload type are kept in each node's ``extras``.
:func:`read_scene_glb` rebuilds a :class:`SceneGraph` (Gaussian clouds and
voxel grids come back as point clouds).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from scenes.graph import SceneGraph
from scenes.payloads import SH_C0, Camera, GaussianCloud, Mesh, PointCloud

__all__ = ["write_scene_glb", "read_scene_glb"]

_FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes <-> glTF/OpenGL camera axes
_CAM_SUFFIX = "#camera"


def _geometry(payload):
    """A trimesh geometry for a payload, or None."""
    import trimesh

    from scenes.voxels import VoxelGrid

    if isinstance(payload, Mesh):
        return payload.to_trimesh()
    if isinstance(payload, PointCloud):
        return trimesh.PointCloud(payload.points, colors=payload.colors)
    if isinstance(payload, GaussianCloud):
        rgb = np.clip(0.5 + SH_C0 * payload.sh[:, 0, :3], 0, 1) if payload.sh.shape[2] >= 3 else None
        colors = None if rgb is None else np.rint(rgb * 255).astype(np.uint8)
        return trimesh.PointCloud(np.asarray(payload.means, np.float64), colors=colors)
    if isinstance(payload, VoxelGrid):
        idx = np.argwhere(payload.density > 0)
        if len(idx) == 0:
            return None
        centres = np.asarray(payload.bounds_min, np.float64) + (idx + 0.5) * payload.voxel_size
        return trimesh.PointCloud(centres)
    return None


def _pack_glb(doc: dict, binary: bytes) -> bytes:
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + (8 + len(binary) if binary else 0)
    out = struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
    if binary:
        out += struct.pack("<I4s", len(binary), b"BIN\0") + binary
    return out


def _split_glb(raw: bytes, path) -> tuple[dict, bytes]:
    from scenes.export.mesh import check_glb

    doc = check_glb(raw, path)
    (jlen,) = struct.unpack_from("<I", raw, 12)
    off = 20 + jlen
    binary = b""
    if off + 8 <= len(raw):
        blen, _ = struct.unpack_from("<I4s", raw, off)
        binary = raw[off + 8 : off + 8 + blen]
    return doc, binary


def write_scene_glb(path: str | os.PathLike, graph: SceneGraph) -> Path:
    """Write ``graph`` as one ``.glb`` (atomic); see the module docstring for the mapping."""
    import trimesh

    from geo.fileio import atomic_write_bytes

    path = Path(path)
    scene = trimesh.Scene()
    base = scene.graph.base_frame
    for node in graph:
        parent = node.parent.path if node.parent is not graph.root else base
        geom = _geometry(node.payload) if node.payload is not None else None
        if geom is not None:
            scene.add_geometry(geom, geom_name=f"{node.path}:geometry", node_name=node.path,
                               parent_node_name=parent, transform=node.transform)
        else:
            scene.graph.update(frame_to=node.path, frame_from=parent, matrix=node.transform)
    if len(scene.graph.nodes) <= 1:  # trimesh refuses to export an empty scene
        scene.graph.update(frame_to="/", frame_from=base, matrix=np.eye(4))
    doc, binary = _split_glb(scene.export(file_type="glb"), path)

    nodes = doc.setdefault("nodes", [])
    index = {n.get("name"): i for i, n in enumerate(nodes)}
    cameras = doc.setdefault("cameras", [])
    for node in graph:
        gl = nodes[index[node.path]]
        gl["matrix"] = np.asarray(node.transform, np.float64).T.reshape(-1).tolist()  # column-major
        extras = {"path": node.path, "meta": node.meta}
        if node.payload is not None:
            extras["payload"] = type(node.payload).__name__
        gl["extras"] = extras
        cam = node.payload
        if isinstance(cam, Camera):
            m = cam.model
            cameras.append({"type": "perspective", "perspective": {
                "yfov": 2 * math.atan(m.height / (2 * m.fy)), "aspectRatio": m.width / m.height, "znear": 0.01}})
            nodes.append({"name": node.path + _CAM_SUFFIX, "camera": len(cameras) - 1, "rotation": [1.0, 0.0, 0.0, 0.0],
                          "extras": {"model": {k: getattr(m, k) for k in m.__dataclass_fields__}}})
            gl.setdefault("children", []).append(len(nodes) - 1)
    if not cameras:
        del doc["cameras"]
    return atomic_write_bytes(path, _pack_glb(doc, binary))


def _local_matrix(n: dict, where: str) -> np.ndarray:
    if "matrix" in n:
        M = np.asarray(n["matrix"], np.float64)
        if M.shape != (16,):
            raise ValueError(f"{where}: 'matrix' must have 16 numbers")
        return M.reshape(4, 4).T
    from geo.transforms import quat_to_rotmat

    T = np.eye(4)
    q = np.asarray(n.get("rotation", [0, 0, 0, 1]), np.float64)  # xyzw
    s = np.asarray(n.get("scale", [1, 1, 1]), np.float64)
    t = np.asarray(n.get("translation", [0, 0, 0]), np.float64)
    if q.shape != (4,) or s.shape != (3,) or t.shape != (3,):
        raise ValueError(f"{where}: malformed TRS")
    import torch

    T[:3, :3] = quat_to_rotmat(torch.as_tensor(q[[3, 0, 1, 2]])).numpy() * s
    T[:3, 3] = t
    return T


def read_scene_glb(path: str | os.PathLike) -> SceneGraph:
    """Read a ``.glb`` into a :class:`SceneGraph`: nodes with their transforms, meshes,
    point clouds and cameras. Node names become paths (our own exports keep theirs).

    Raises:
        ValueError: truncated or malformed file (naming it), or a node transform
            that is not rigid (scaled glTF nodes have no scene-graph equivalent).
    """
    import trimesh

    from geo.cameras import CameraModel

    path = Path(path)
    raw = path.read_bytes()
    doc, _ = _split_glb(raw, path)
    try:
        tscene = trimesh.load(trimesh.util.wrap_as_stream(raw), file_type="glb", process=False, force="scene")
    except Exception as e:
        raise ValueError(f"{path}: malformed GLB ({type(e).__name__}: {e})") from None
    try:
        return _build_graph(doc, tscene, path, CameraModel)
    except (KeyError, TypeError, IndexError, AttributeError, OverflowError) as e:
        raise ValueError(f"{path}: malformed glTF ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise ValueError(str(e) if str(path) in str(e) else f"{path}: {e}") from None


def _build_graph(doc, tscene, path, CameraModel) -> SceneGraph:
    import trimesh

    from scenes.graph import check_name

    nodes = doc.get("nodes", [])
    scenes_ = doc.get("scenes", [{"nodes": list(range(len(nodes)))}])
    roots = scenes_[int(doc.get("scene", 0))].get("nodes", [])
    g = SceneGraph()
    geom_of = {}
    for name in tscene.graph.nodes_geometry:
        geom_of[name] = tscene.graph[name][1]
    seen: set[int] = set()
    stack = [(int(i), "/") for i in reversed(roots)]
    while stack:
        i, parent = stack.pop()
        if i in seen or not 0 <= i < len(nodes):
            raise ValueError(f"node {i} is out of range or listed twice (a cycle?)")
        seen.add(i)
        n = nodes[i]
        extras = n.get("extras") or {}
        name = str(n.get("name") or f"node_{i}")
        if name.endswith(_CAM_SUFFIX) and "model" in extras:
            cam = CameraModel(**extras["model"])
            g[parent].payload = Camera(model=cam)
            continue
        leaf = name.rsplit("/", 1)[-1] if name.startswith("/") else name.replace("/", "_")
        try:
            check_name(leaf, str(path))
        except ValueError:
            leaf = f"node_{i}"
        p = (parent.rstrip("/") + "/" + leaf)
        if p in g:
            p = f"{p}_{i}"
        where = f"{path}: node {p}"
        T = _local_matrix(n, where)
        payload = None
        if name in geom_of:
            geom = tscene.geometry[geom_of[name]]
            if isinstance(geom, trimesh.PointCloud):
                colors = None if geom.colors is None or len(geom.colors) != len(geom.vertices) else \
                    np.asarray(geom.colors, np.uint8)[:, :3]
                payload = PointCloud(np.asarray(geom.vertices, np.float64), colors)
            else:
                payload = Mesh.from_trimesh(geom)
        elif "camera" in n:  # a camera from another tool: glTF camera axes -> OpenCV
            c = doc["cameras"][int(n["camera"])].get("perspective", {})
            h = 512
            aspect = float(c.get("aspectRatio") or 1.0)
            w = max(1, round(h * aspect))
            f = h / (2 * math.tan(float(c["yfov"]) / 2))
            payload = Camera(model=CameraModel(width=w, height=h, fx=f, fy=f, cx=w / 2, cy=h / 2))
            T = T @ _FLIP_YZ
        meta = extras.get("meta") if isinstance(extras.get("meta"), dict) else None
        g.add(p, payload=payload, transform=T, meta=meta)
        for c in reversed(n.get("children", [])):
            stack.append((int(c), p))
    return g

