"""The scene graph: named nodes with local rigid transforms, payloads and metadata.

Nodes are addressed by absolute, ``/``-separated paths (``"/cameras/cam_000"``).
The root ``"/"`` always exists, has the identity transform and no payload; its
``meta`` is the graph's own ``meta``. A node's ``transform`` is ``T_parent_node``
(maps the node's frame to its parent's, float64 ``[4, 4]`` acting on column
vectors), so its world transform is the product of the transforms from the
root down: ``T_world_node = T_world_a @ T_a_b @ ... @ T_parent_node``. A camera's
world transform is its camera-to-world pose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from geo.transforms import check_rigid, se3_inverse, transform_points
from scenes.payloads import PAYLOAD_TYPES

__all__ = ["SceneGraph", "Node"]

_IDENTITY = np.eye(4)
_IDENTITY.flags.writeable = False


def check_name(name: Any, where: str) -> str:
    """A node name: a non-empty string without ``/``, not ``.`` or ``..``."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{where}: invalid node name {name!r}; names are non-empty, without '/', and not '.' or '..'")
    return name


def split_path(path: Any) -> list[str]:
    """The names along an absolute path (``[]`` for the root); ``ValueError`` if malformed."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"invalid path {path!r}: paths are absolute and '/'-separated, e.g. '/cameras/cam_000'")
    if path == "/":
        return []
    return [check_name(p, f"path {path!r}") for p in path[1:].split("/")]


def _as_transform(T: Any, where: str) -> np.ndarray:
    if T is None:
        return _IDENTITY
    A = np.array(T.detach().cpu() if hasattr(T, "detach") else T, dtype=np.float64)
    if A.shape != (4, 4):
        raise ValueError(f"{where}: field 'transform' must be a 4x4 rigid transform, got shape {list(A.shape)}")
    check_rigid(A, what=f"{where}: field 'transform'")
    A.flags.writeable = False
    return A


def _as_meta(meta: Any, where: str) -> dict:
    """A JSON-normalised copy (tuples become lists), so a save/load round trip is exact."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: field 'meta' must be a dict, got {type(meta).__name__}")
    try:
        return json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: field 'meta' is not JSON-serialisable: {e}") from None


def _check_payload(payload: Any, where: str) -> Any:
    if payload is None:
        return None
    if type(payload).__name__ not in PAYLOAD_TYPES or PAYLOAD_TYPES[type(payload).__name__] is not type(payload):
        raise ValueError(
            f"{where}: field 'payload' must be one of {sorted(PAYLOAD_TYPES)} or None, got {type(payload).__name__}"
        )
    payload.validate(where)
    return payload


class Node:
    """One node of a :class:`SceneGraph`. Create nodes with :meth:`SceneGraph.add`.

    Attributes:
        meta: JSON-serialisable dict (e.g. ``{"split": "train"}``).
    """

    __slots__ = ("_name", "_parent", "_children", "_transform", "_payload", "meta")

    def __init__(self, name: str, parent: Node | None, transform: np.ndarray, payload: Any, meta: dict):
        self._name = name
        self._parent = parent
        self._children: dict[str, Node] = {}
        self._transform = transform
        self._payload = payload
        self.meta = meta

    @property
    def name(self) -> str:
        """The last path component (``""`` for the root); change it with :meth:`SceneGraph.rename`."""
        return self._name

    @property
    def path(self) -> str:
        parts = []
        n = self
        while n._parent is not None:
            parts.append(n._name)
            n = n._parent
        return "/" + "/".join(reversed(parts))

    @property
    def parent(self) -> Node | None:
        return self._parent

    @property
    def children(self) -> list[Node]:
        """Child nodes in insertion order (a copy; edit the structure through the graph)."""
        return list(self._children.values())

    @property
    def transform(self) -> np.ndarray:
        """Local transform ``T_parent_node``, float64 ``[4, 4]`` (read-only array)."""
        return self._transform

    @transform.setter
    def transform(self, T: Any) -> None:
        if self._parent is None:
            raise ValueError(f"{self.path}: field 'transform' of the root is fixed to the identity")
        self._transform = _as_transform(T, self.path)

    @property
    def payload(self) -> Any:
        return self._payload

    @payload.setter
    def payload(self, payload: Any) -> None:
        if self._parent is None and payload is not None:
            raise ValueError("/: field 'payload': the root carries no payload; add a child node")
        self._payload = _check_payload(payload, self.path)

    @property
    def world_transform(self) -> np.ndarray:
        """``T_world_node`` float64 ``[4, 4]``: the local transforms composed from the root down."""
        T = self._transform
        n = self._parent
        while n is not None:
            T = n._transform @ T
            n = n._parent
        return np.array(T)

    def __repr__(self) -> str:
        p = type(self._payload).__name__ if self._payload is not None else None
        return f"Node({self.path!r}, payload={p}, children={len(self._children)})"


class SceneGraph:
    """A tree of :class:`Node` addressed by absolute paths.

    ``len(g)`` and ``iter(g)`` count / visit every node except the root (in
    :meth:`traverse` order); ``"/a/b" in g`` and ``g["/a/b"]`` look nodes up.

    Example::

        g = SceneGraph()
        g.add("/cameras/cam_000", payload=Camera(model=cm, image=img), transform=c2w, meta={"split": "train"})
        g.world_transform("/cameras/cam_000")   # camera-to-world
        g.find(Camera)                          # [Node('/cameras/cam_000', ...)]
    """

    def __init__(self, meta: dict | None = None):
        self._root = Node("", None, _IDENTITY, None, _as_meta(meta, "/"))
        self._index: dict[str, Node] = {"/": self._root}

    # -- lookup ---------------------------------------------------------------

    @property
    def root(self) -> Node:
        return self._root

    @property
    def meta(self) -> dict:
        """The graph's own JSON-serialisable metadata (dataset info, units, ...); the root's ``meta``."""
        return self._root.meta

    @meta.setter
    def meta(self, meta: dict) -> None:
        self._root.meta = _as_meta(meta, "/")

    def __getitem__(self, path: str) -> Node:
        try:
            return self._index[path]
        except (KeyError, TypeError):
            hint = "" if isinstance(path, str) and path.startswith("/") else " (paths are absolute, e.g. '/cameras/cam_000')"
            raise KeyError(f"no node at path {path!r}{hint}") from None

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path in self._index

    def __len__(self) -> int:
        return len(self._index) - 1

    def __iter__(self) -> Iterator[Node]:
        it = self.traverse()
        next(it)
        return it

    def __repr__(self) -> str:
        return f"SceneGraph({len(self)} nodes)"

    # -- construction and editing ---------------------------------------------

    def add(self, path: str, payload: Any = None, transform: Any = None, meta: dict | None = None) -> Node:
        """Add a node; missing ancestors are created with identity transforms.

        Args:
            path: absolute path of the new node; must not exist yet.
            payload: a payload (``Mesh``, ``PointCloud``, ``GaussianCloud``,
                ``VoxelGrid``, ``Camera``) or None.
            transform: local rigid ``[4, 4]`` transform ``T_parent_node``; identity when None.
            meta: JSON-serialisable dict, stored as a normalised copy.

        Returns:
            The new node.
        """
        names = split_path(path)
        if not names:
            raise ValueError("/: duplicate name: the root always exists")
        if path in self._index:
            raise ValueError(f"{path}: duplicate name {names[-1]!r}: a node with this path already exists")
        # validate everything before touching the tree
        T = _as_transform(transform, path)
        payload = _check_payload(payload, path)
        meta = _as_meta(meta, path)
        parent = self._root
        for name in names[:-1]:
            child = parent._children.get(name)
            if child is None:
                child = self._attach(parent, Node(name, parent, _IDENTITY, None, {}))
            parent = child
        return self._attach(parent, Node(names[-1], parent, T, payload, meta))

    def _attach(self, parent: Node, node: Node) -> Node:
        node._parent = parent
        parent._children[node._name] = node
        for n in self.traverse(node):
            self._index[n.path] = n
        return node

    def _detach(self, node: Node) -> None:
        for n in self.traverse(node):
            del self._index[n.path]
        del node._parent._children[node._name]
        node._parent = None

    def _editable(self, path: str, what: str) -> Node:
        node = self[path]
        if node is self._root:
            raise ValueError(f"/: cannot {what} the root")
        return node

    def set_transform(self, path: str, T: Any) -> None:
        """Set a node's local transform (validated: 4x4, finite, rigid)."""
        self[path].transform = T

    def world_transform(self, path: str) -> np.ndarray:
        """``T_world_node`` of the node at ``path``."""
        return self[path].world_transform

    def reparent(self, path: str, new_parent_path: str, keep_world: bool = True) -> Node:
        """Move a node (and its subtree) under another node, as its last child.

        Args:
            keep_world: keep the node's world pose by setting its local
                transform to ``inv(T_world_newparent) @ T_world_node``; if
                False, the local transform is kept and the world pose changes.
        """
        node = self._editable(path, "reparent")
        new_parent = self[new_parent_path]
        a: Node | None = new_parent
        while a is not None:
            if a is node:
                raise ValueError(
                    f"{path}: cannot move under {new_parent_path}, which is the node itself or one of its "
                    "descendants (this would create a cycle)"
                )
            a = a._parent
        if new_parent is node._parent:
            return node
        if node._name in new_parent._children:
            raise ValueError(f"{path}: duplicate name {node._name!r} under {new_parent_path}")
        T = node._transform
        if keep_world:
            T = _as_transform(se3_inverse(new_parent.world_transform) @ node.world_transform, path)
        self._detach(node)
        node._transform = T
        return self._attach(new_parent, node)

    def rename(self, path: str, new_name: str) -> Node:
        """Rename a node in place (its position among its siblings is kept)."""
        node = self._editable(path, "rename")
        check_name(new_name, path)
        if new_name == node._name:
            return node
        parent = node._parent
        if new_name in parent._children:
            raise ValueError(f"{path}: duplicate name {new_name!r}: {parent.path.rstrip('/')}/{new_name} exists")
        for n in self.traverse(node):
            del self._index[n.path]
        node._name = new_name
        parent._children = {(new_name if c is node else k): c for k, c in parent._children.items()}
        for n in self.traverse(node):
            self._index[n.path] = n
        return node

    def remove(self, path: str) -> None:
        """Remove a node and its whole subtree."""
        self._detach(self._editable(path, "remove"))

    # -- queries --------------------------------------------------------------

    def traverse(self, root: str | Node = "/") -> Iterator[Node]:
        """Nodes of the subtree at ``root`` (itself included), depth-first pre-order,
        children in insertion order."""
        stack = [root if isinstance(root, Node) else self[root]]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n._children.values()))

    def _walk_world(self, root: str) -> Iterator[tuple[Node, np.ndarray]]:
        """``(node, T_world_node)`` in :meth:`traverse` order, composing transforms once."""
        start = self[root]
        stack = [(start, start.world_transform)]
        while stack:
            n, T = stack.pop()
            yield n, T
            stack.extend((c, T @ c._transform) for c in reversed(n._children.values()))

    def find(self, payload_type: type | tuple[type, ...] | None = None, under: str = "/") -> list[Node]:
        """Nodes under ``under`` (itself included) whose payload is an instance of
        ``payload_type``, or that have any payload when it is None; traversal order."""
        if payload_type is None:
            return [n for n in self.traverse(under) if n._payload is not None]
        return [n for n in self.traverse(under) if isinstance(n._payload, payload_type)]

    def world_bounds(self, path: str = "/") -> tuple[np.ndarray, np.ndarray] | None:
        """World-space axis-aligned bounds ``(min [3], max [3])`` float64 of the payloads
        in the subtree at ``path``, or None when none of them has extent.

        Each payload's :meth:`bound_points` (vertices, points, Gaussian means,
        camera centre, or the 8 corners of a voxel grid's box) is mapped to
        world coordinates, so the bounds are tight for point-like payloads.
        """
        lo, hi = [], []
        for node, T in self._walk_world(path):
            if node._payload is None:
                continue
            p = node._payload.bound_points()
            if p is None or len(p) == 0:
                continue
            w = transform_points(T, np.asarray(p, dtype=np.float64))
            lo.append(w.min(0))
            hi.append(w.max(0))
        if not lo:
            return None
        return np.min(lo, axis=0), np.max(hi, axis=0)

    # -- persistence ----------------------------------------------------------

    def save(self, directory) -> None:
        """Write the scene directory atomically; see :func:`scenes.io.save_scene`."""
        from scenes.io import save_scene

        save_scene(self, directory)

    @classmethod
    def load(cls, directory) -> SceneGraph:
        """Read and validate a scene directory; see :func:`scenes.io.load_scene`."""
        from scenes.io import load_scene

        return load_scene(directory)
