"""scenes: the scene graph core, scene payloads, datasets and the methods built on them.

``SceneGraph``, ``Node``, ``save_scene`` and ``load_scene`` are importable from
here; they are resolved on first use so that ``import scenes`` stays cheap.
"""

from __future__ import annotations

import importlib

__all__ = ["SceneGraph", "Node", "save_scene", "load_scene"]

_LAZY = {
    "SceneGraph": "scenes.graph",
    "Node": "scenes.graph",
    "save_scene": "scenes.io",
    "load_scene": "scenes.io",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scenes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
