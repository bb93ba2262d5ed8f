"""Scene directories: atomic save, validating load.

Layout::

    scene/
      scene.json      {"schema_version": 1, "meta": {...}, "nodes": [...]}
      payloads/NNNN.npz

Each entry of ``nodes`` is ``{"path", "transform", "meta", "payload"}``, in
:meth:`SceneGraph.traverse` order (parents before children, siblings in
insertion order). ``transform`` is the local 4x4 as nested lists; Python's
float repr is the shortest string that parses back to the same float64, so it
round-trips bit-exactly. ``payload`` is None or ``{"type": <class name>,
"file": "payloads/NNNN.npz", ...JSON fields}`` (``NNNN`` is the node's index;
``file`` is absent when the payload has no arrays, e.g. a camera without
images). Arrays are stored with ``np.savez`` (uncompressed, dtypes and bits
preserved, no pickles).

Saving writes a temporary sibling directory, fsyncs it, and renames it into
place (moving any previous scene aside first and deleting it last), so the
target holds the old scene, the new scene, or — only if the process dies
between the two renames — nothing; never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import secrets
from pathlib import Path
from typing import Any

import numpy as np

import scenes.voxels  # noqa: F401  (registers VoxelGrid)
from scenes.graph import SceneGraph, _as_meta, _as_transform, split_path
from scenes.payloads import PAYLOAD_TYPES

__all__ = ["save_scene", "load_scene", "SceneFormatError", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
SCENE_JSON = "scene.json"
PAYLOAD_DIR = "payloads"


class SceneFormatError(ValueError):
    """A scene directory's contents are invalid; the message names the file and field."""


# -- saving ---------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for k, a in arrays.items():
        if a.dtype.hasobject:
            raise ValueError(f"{path}: array '{k}' has dtype object, which cannot be stored without pickling")
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def _sibling_dir(target: Path, tag: str) -> Path:
    """Create a hidden sibling ``.<name>.<tag>-<random>`` of ``target`` (mode from the umask, unlike mkdtemp)."""
    for _ in range(100):
        d = target.parent / f".{target.name}.{tag}-{secrets.token_hex(6)}"
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise FileExistsError(f"{target.parent}: could not create a temporary directory for {target.name}")


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is moved aside first and deleted last."""
    old = None
    if target.exists():
        old = _sibling_dir(target, "old")
        os.rename(target, old / "scene")
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old / "scene", target)
            shutil.rmtree(old, ignore_errors=True)
        raise
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _node_entry(node, index: int, tmp: Path) -> dict[str, Any]:
    path = node.path
    entry: dict[str, Any] = {
        "path": path,
        "transform": node.transform.tolist(),
        "meta": _as_meta(node.meta, path),
        "payload": None,
    }
    p = node.payload
    if p is not None:
        p.validate(path)
        ref: dict[str, Any] = {"type": type(p).__name__}
        arrays = p.to_arrays()
        if arrays:
            ref["file"] = f"{PAYLOAD_DIR}/{index:04d}.npz"
            _write_npz(tmp / ref["file"], arrays)
        fields = p.json_fields()
        clash = {"type", "file"} & set(fields)
        if clash:
            raise ValueError(f"{path}: payload json_fields may not use the reserved keys {sorted(clash)}")
        ref.update(fields)
        entry["payload"] = ref
    return entry


def save_scene(graph: SceneGraph, directory) -> Path:
    """Write ``graph`` as a scene directory, atomically replacing an existing scene.

    Args:
        graph: the scene graph; every payload and meta is validated first.
        directory: the scene directory. If it exists it must be a scene
            directory (has ``scene.json``) or empty; anything else is refused
            rather than deleted.

    Returns:
        The directory path.
    """
    target = Path(directory).absolute()
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"{target}: exists and is not a directory; refusing to replace it with a scene")
        if not (target / SCENE_JSON).is_file() and any(target.iterdir()):
            raise ValueError(f"{target}: exists, is not empty and has no {SCENE_JSON}; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling_dir(target, "tmp")
    try:
        (tmp / PAYLOAD_DIR).mkdir()
        nodes = [_node_entry(node, i, tmp) for i, node in enumerate(graph)]
        doc = {"schema_version": SCHEMA_VERSION, "meta": _as_meta(graph.meta, "/"), "nodes": nodes}
        _write_bytes(tmp / SCENE_JSON, json.dumps(doc, indent=1, allow_nan=False).encode("utf-8"))
        _fsync_dir(tmp / PAYLOAD_DIR)
        _fsync_dir(tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# -- loading --------------------------------------------------------------------


def _read_npz(file: Path, where: str) -> dict[str, np.ndarray]:
    if not file.is_file():
        raise SceneFormatError(f"{file}: missing payload file (referenced by {where})")
    try:
        with np.load(file, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:
        raise SceneFormatError(
            f"{file}: corrupt payload file ({type(e).__name__}: {e}) (referenced by {where})"
        ) from None


def _load_payload(ref: Any, root: Path, where: str):
    if not isinstance(ref, dict):
        raise SceneFormatError(f"{where}: field 'payload' must be an object or null, got {type(ref).__name__}")
    fields = dict(ref)
    kind = fields.pop("type", None)
    cls = PAYLOAD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SceneFormatError(f"{where}: field 'payload.type' is {kind!r}; expected one of {sorted(PAYLOAD_TYPES)}")
    arrays: dict[str, np.ndarray] = {}
    rel = fields.pop("file", None)
    if rel is not None:
        if not isinstance(rel, str) or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise SceneFormatError(f"{where}: field 'payload.file' must be a relative path inside the scene, got {rel!r}")
        file = root / rel
        arrays = _read_npz(file, where)
        where = f"{file} ({where})"
    try:
        return cls.from_arrays(arrays, where, fields)
    except ValueError as e:
        raise SceneFormatError(str(e)) from None


def load_scene(directory) -> SceneGraph:
    """Read a scene directory, validating everything; raises rather than return a partial graph.

    Raises:
        FileNotFoundError: ``directory`` or its ``scene.json`` does not exist.
        SceneFormatError: (a ``ValueError``) malformed JSON, unsupported
            ``schema_version``, invalid path, duplicate node, missing parent,
            NaN or non-rigid transform, missing or corrupt payload file, or a
            payload array of the wrong shape/dtype. The message names the file
            and the field.
    """
    root = Path(directory)
    js = root / SCENE_JSON
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such scene directory")
    if not js.is_file():
        raise FileNotFoundError(f"{js}: missing; {root} is not a scene directory")
    try:
        doc = json.loads(js.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SceneFormatError(f"{js}: malformed JSON: {e}") from None
    if not isinstance(doc, dict):
        raise SceneFormatError(f"{js}: expected a JSON object at the top level, got {type(doc).__name__}")

    version = doc.get("schema_version")
    if type(version) is not int:
        raise SceneFormatError(f"{js}: field 'schema_version' must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise SceneFormatError(
            f"{js}: field 'schema_version' is {version}, newer than this reader supports "
            f"(schema_version {SCHEMA_VERSION}); update geo to read it"
        )
    if version < 1:
        raise SceneFormatError(f"{js}: field 'schema_version' is {version}; expected {SCHEMA_VERSION}")
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        raise SceneFormatError(f"{js}: field 'nodes' must be a list, got {type(nodes).__name__}")

    try:
        g = SceneGraph(meta=doc.get("meta"))
    except ValueError as e:
        raise SceneFormatError(f"{js}: {e}") from None
    for i, entry in enumerate(nodes):
        where = f"{js}: nodes[{i}]"
        if not isinstance(entry, dict):
            raise SceneFormatError(f"{where}: expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"path", "transform", "meta", "payload"})
        if unknown:
            raise SceneFormatError(f"{where}: unknown field(s) {unknown}")
        path = entry.get("path")
        try:
            names = split_path(path)
        except ValueError as e:
            raise SceneFormatError(f"{where}: field 'path': {e}") from None
        if not names:
            raise SceneFormatError(f"{where}: field 'path' is '/'; the root is implicit and not listed")
        where = f"{js}: node {path}"
        if path in g:
            raise SceneFormatError(f"{where}: duplicate name: path {path!r} is listed twice (again at nodes[{i}])")
        parent = "/" + "/".join(names[:-1])
        if parent not in g:
            raise SceneFormatError(f"{where}: field 'path': parent {parent!r} is not listed before it (missing parent)")
        if "transform" not in entry:
            raise SceneFormatError(f"{where}: missing field 'transform'")
        try:
            T = np.array(entry["transform"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise SceneFormatError(f"{where}: field 'transform' is not a 4x4 numeric matrix: {e}") from None
        try:
            T = _as_transform(T, where)
            payload = None if entry.get("payload") is None else _load_payload(entry["payload"], root, where)
            g.add(path, payload=payload, transform=T, meta=_as_meta(entry.get("meta"), where))
        except SceneFormatError:
            raise
        except ValueError as e:
            raise SceneFormatError(str(e)) from None
    return g
