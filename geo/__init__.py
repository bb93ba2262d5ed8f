"""geo: geometry library (transforms, cameras, rasterization, spectral geometry, ...).

Submodules are imported on demand (``import geo.cameras``); importing ``geo``
itself is cheap so the CLI starts fast.
"""

__version__ = "0.1.0"
