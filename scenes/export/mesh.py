"""Meshes (``.ply``, ``.obj``, ``.glb``) and point clouds (``.ply``): write and read.

Meshes go through trimesh, keeping vertex order, vertex colours, or uv plus
texture image:

* ``.glb`` embeds the texture;
* ``.obj`` writes ``name.mtl`` and ``name.png`` next to the OBJ when textured;
* ``.ply`` stores uv as ``texture_u``/``texture_v`` and names a sibling PNG in a
  ``comment TextureFile`` line (the MeshLab convention that trimesh reads back).

Point clouds are written as binary PLY (``x y z`` [``nx ny nz``] [``red green blue``])
by this module, since trimesh drops point normals; :meth:`PointCloud.load` reads them.

Every writer is atomic per file. Every reader checks the container first
(PLY element counts against the file size, GLB chunk lengths against the file
length) so a corrupt file cannot make it allocate without bound, and raises
``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from geo.fileio import atomic_write_bytes
from scenes.export.plyfile import parse_ply_header
from scenes.payloads import Mesh, PointCloud

__all__ = ["write_mesh_file", "read_mesh_file", "write_points_ply", "read_points_ply", "check_glb"]

MESH_SUFFIXES = (".ply", ".obj", ".glb")


def _png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_mesh_file(path: str | os.PathLike, mesh: Mesh) -> Path:
    """Write ``mesh`` as ``.ply``, ``.obj`` or ``.glb`` (by suffix), keeping its
    vertex order, vertex colours or uv + texture. Atomic per file.

    Returns:
        The mesh file's path (textures and materials are siblings).
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"write_mesh_file({path}): unsupported suffix {suffix!r}; expected one of {MESH_SUFFIXES}")
    mesh.validate(f"write_mesh_file({path})")
    tm = mesh.to_trimesh()
    if suffix == ".glb":
        return atomic_write_bytes(path, tm.export(file_type="glb"))
    if suffix == ".obj":
        if mesh.uv is None:
            return atomic_write_bytes(path, trimesh.exchange.obj.export_obj(tm, include_normals=mesh.vertex_normals is not None,
                                                                 include_color=mesh.vertex_colors is not None))
        text, files = trimesh.exchange.obj.export_obj(
            tm, include_normals=mesh.vertex_normals is not None, include_texture=True,
            return_texture=True, mtl_name=f"{path.stem}.mtl",
        )
        for name, data in files.items():  # the material and its image first, the OBJ that names them last
            atomic_write_bytes(path.parent / name, data)
        return atomic_write_bytes(path, text)
    # .ply
    if mesh.uv is None:
        return atomic_write_bytes(path, tm.export(file_type="ply"))
    return _write_textured_ply(path, mesh)


def _write_textured_ply(path: Path, mesh: Mesh) -> Path:
    """Binary PLY with per-vertex ``texture_u texture_v`` and a ``comment TextureFile`` sibling PNG."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if mesh.vertex_normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    fields += [("texture_u", "<f4"), ("texture_v", "<f4")]
    v = np.empty(mesh.num_vertices, fields)
    for i, a in enumerate("xyz"):
        v[a] = mesh.vertices[:, i]
        if mesh.vertex_normals is not None:
            v["n" + a] = mesh.vertex_normals[:, i]
    v["texture_u"], v["texture_v"] = mesh.uv[:, 0], mesh.uv[:, 1]
    f = np.empty(mesh.num_faces, [("n", "u1"), ("i", "<i4", 3)])
    f["n"], f["i"] = 3, mesh.faces
    header = ["ply", "format binary_little_endian 1.0"]
    if mesh.texture is not None:
        texture_name = f"{path.stem}.png"
        atomic_write_bytes(path.parent / texture_name, _png_bytes(mesh.texture))
        header.append(f"comment TextureFile {texture_name}")
    header += [f"element vertex {mesh.num_vertices}", *(f"property float {n}" for n, _ in fields)]
    header += [f"element face {mesh.num_faces}", "property list uchar int vertex_indices", "end_header\n"]
    return atomic_write_bytes(path, "\n".join(header).encode("ascii") + v.tobytes() + f.tobytes())


def check_glb(raw: bytes, path) -> dict:
    """Validate a GLB container (header, chunk lengths, JSON) and return its JSON document."""
    if len(raw) < 20:
        raise ValueError(f"{path}: truncated GLB: {len(raw)} bytes, a GLB has at least 20")
    magic, version, length = struct.unpack_from("<4sII", raw, 0)
    if magic != b"glTF":
        raise ValueError(f"{path}: not a GLB file (magic {magic!r}, expected b'glTF')")
    if version != 2:
        raise ValueError(f"{path}: unsupported glTF version {version}; expected 2")
    if length != len(raw):
        raise ValueError(f"{path}: truncated or malformed GLB: header says {length} bytes, the file has {len(raw)}")
    off, doc = 12, None
    while off < length:
        if off + 8 > length:
            raise ValueError(f"{path}: malformed GLB: chunk header at byte {off} runs past the end")
        clen, ctype = struct.unpack_from("<I4s", raw, off)
        if off + 8 + clen > length:
            raise ValueError(f"{path}: truncated GLB: chunk at byte {off} declares {clen} bytes, past the end of the file")
        if doc is None:
            if ctype != b"JSON":
                raise ValueError(f"{path}: malformed GLB: the first chunk is {ctype!r}, expected b'JSON'")
            try:
                doc = json.loads(raw[off + 8 : off + 8 + clen].decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ValueError(f"{path}: malformed GLB: JSON chunk does not parse: {e}") from None
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: malformed GLB: JSON chunk is not an object")
        off += 8 + clen
    if doc is None:
        raise ValueError(f"{path}: malformed GLB: no JSON chunk")
    _check_gltf_sizes(doc, length, path)
    return doc


def _check_gltf_sizes(doc: dict, file_len: int, path) -> None:
    """Accessor and buffer-view extents must fit in the file, so decoding is bounded by its size."""
    comp = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
    try:
        for b in doc.get("buffers", []):
            if int(b.get("byteLength", 0)) > file_len:
                raise ValueError(f"buffer of {b.get('byteLength')} bytes exceeds the file")
        views = doc.get("bufferViews", [])
        for v in views:
            if int(v.get("byteOffset", 0)) + int(v["byteLength"]) > file_len or int(v["byteLength"]) < 0:
                raise ValueError("bufferView runs past the end of the file")
        for a in doc.get("accessors", []):
            n = int(a["count"])
            item = comp[int(a["componentType"])] * width[a["type"]]
            if n < 0 or n * item > file_len:
                raise ValueError(f"accessor of {n} x {item} bytes exceeds the file")
            if "bufferView" in a and n * item > int(views[int(a["bufferView"])]["byteLength"]) + item:
                raise ValueError("accessor is larger than its bufferView")
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"{path}: malformed glTF JSON: {type(e).__name__}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: malformed glTF JSON: {e}") from None


def _precheck(path: Path) -> None:
    raw = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".ply":
        parse_ply_header(raw, path)
    elif suffix == ".glb":
        check_glb(raw, path)
    elif suffix == ".obj":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: malformed OBJ: not UTF-8 text ({e})") from None


def read_mesh_file(path: str | os.PathLike) -> Mesh:
    """Read a ``.ply``, ``.obj`` or ``.glb`` written by :func:`write_mesh_file` (or any
    tool) into a :class:`Mesh`, vertex order kept.

    Raises:
        ValueError: truncated or malformed file, naming it.
    """
    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh suffix {path.suffix!r}; expected one of {MESH_SUFFIXES}")
    _precheck(path)
    try:
        mesh = Mesh.load(path)
    except ValueError as e:
        raise ValueError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    except Exception as e:  # trimesh signals malformed input with many exception types
        raise ValueError(f"{path}: malformed mesh file ({type(e).__name__}: {e})") from None
    if len(mesh.faces) == 0:
        raise ValueError(f"{path}: malformed mesh file: no faces")
    return mesh


def write_points_ply(path: str | os.PathLike, cloud: PointCloud) -> Path:
    """Write ``cloud`` as a binary little-endian PLY (``x y z`` float32 or double as stored,
    ``nx ny nz``, ``red green blue`` uchar when present). Atomic."""
    cloud.validate(f"write_points_ply({path})")
    pts = np.asarray(cloud.points)
    pdt = "<f8" if pts.dtype == np.float64 else "<f4"
    fields = [("x", pdt), ("y", pdt), ("z", pdt)]
    if cloud.normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if cloud.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.empty(cloud.num, fields)
    for i, a in enumerate("xyz"):
        rec[a] = pts[:, i]
        if cloud.normals is not None:
            rec["n" + a] = cloud.normals[:, i]
    if cloud.colors is not None:
        for i, c in enumerate(("red", "green", "blue")):
            rec[c] = cloud.colors[:, i]
    types = {"<f8": "double", "<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {cloud.num}"]
    header += [f"property {types[t]} {n}" for n, t in fields]
    return atomic_write_bytes(Path(path), ("\n".join(header) + "\nend_header\n").encode("ascii") + rec.tobytes())


def read_points_ply(path: str | os.PathLike) -> PointCloud:
    """Read a point cloud ``.ply`` (positions, and colours / normals when present).

    Raises:
        ValueError: truncated or malformed file, naming it.
    """
    path = Path(path)
    raw = path.read_bytes()
    fmt, elements, body = parse_ply_header(raw, path)
    vert = [e for e in elements if e.name == "vertex"]
    if not vert or not {"x", "y", "z"} <= {n for _, n in vert[0].properties}:
        raise ValueError(f"{path}: not a point cloud PLY: no 'vertex' element with x, y, z")
    if fmt != "ascii":
        size = sum(e.count * e.min_row_bytes() for e in elements)
        if not any(t.startswith("list ") for e in elements for t, _ in e.properties) and size != len(raw) - body:
            raise ValueError(f"{path}: truncated or malformed PLY: body has {len(raw) - body} bytes, the header declares {size}")
    try:
        pc = PointCloud.load(path)
    except ValueError as e:
        raise ValueError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    except Exception as e:
        raise ValueError(f"{path}: malformed PLY ({type(e).__name__}: {e})") from None
    if pc.normals is not None:
        pc.normals = np.asarray(pc.normals, np.float32)
    if not np.all(np.isfinite(pc.points)) or (pc.normals is not None and not np.all(np.isfinite(pc.normals))):
        raise ValueError(f"{path}: corrupt PLY: NaN or Inf coordinates")
    return pc
