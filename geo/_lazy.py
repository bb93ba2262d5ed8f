"""Lazy package exports: names resolved from submodules on first access.

Packages whose submodules import torch (or other heavy libraries) list their public
names here instead of importing them, so that ``import geo.<package>`` — and the
CLI, which imports config dataclasses from such packages — stays fast:

    >>> _LAZY = {"zoomout": "refine", "fit": "solver"}
    >>> __getattr__, __dir__ = lazy_exports(__name__, _LAZY)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(module_name: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``module_name``.

    Args:
        module_name: the package's ``__name__``.
        exports: public name → submodule (relative to the package) that defines it.
            A resolved name is cached in the package's namespace. Other public names
            are tried as submodules (``import geo; geo.fmaps``).
    """
    module = sys.modules[module_name]

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(f"{module_name}.{exports[name]}"), name)
            setattr(module, name, value)
            return value
        if not name.startswith("_"):  # a subpackage, as ``import geo; geo.fmaps`` expects
            try:
                return importlib.import_module(f"{module_name}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{module_name}.{name}":
                    raise
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(module)) | set(exports))

    return __getattr__, __dir__
