"""geo: geometry library (transforms, cameras, rasterization, spectral geometry, ...).

Submodules are imported on demand (``import geo.cameras``); importing ``geo``
itself is cheap so the CLI starts fast.
"""

__version__ = "0.1.0"

from geo._lazy import lazy_exports  # noqa: E402

# ``geo.match`` / ``geo.Correspondence``: the shape-matching API (geo.fmaps), loaded on first use
__getattr__, __dir__ = lazy_exports(__name__, {"match": "fmaps", "Correspondence": "fmaps", "MatchConfig": "fmaps", "DiffuMatchConfig": "fmaps"})
