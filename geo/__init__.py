"""geo: geometry library (transforms, cameras, rasterization, spectral geometry, ...).

Submodules are imported on demand (``import geo.cameras``); importing ``geo``
itself is cheap so the CLI starts fast.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # ``geo.match`` / ``geo.Correspondence``: the shape-matching API (geo.fmaps), loaded on first use
    if name in ("match", "Correspondence", "MatchConfig"):
        from geo import fmaps

        return getattr(fmaps, name)
    raise AttributeError(f"module 'geo' has no attribute {name!r}")
