"""Optical flow between training views: stored dataset flow, or classical dense flow.

CoherentGS computes flow with a pretrained network (RAFT / FlowFormer); no
downloaded weights are allowed here, so flow comes from the dataset when it
stores it (:func:`scenes.data.synthetic.load_flow`) and otherwise from OpenCV's
DIS (Kroeger et al., ECCV 2016) or Farnebäck (SCIA 2003) dense flow, both
classical. The forward-backward occlusion test is applied later, in the loss
(:func:`geo.regularizers.flow_warp_loss` with ``flow_ba``).

Conventions (docs/architecture.md): ``flow [H, W, 2]`` float32 pixels from view a
to view b, ``valid [H, W]`` bool.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["pair_flows", "classical_flow", "resample_flow"]


def resample_flow(flow: np.ndarray, valid: np.ndarray, width: int, height: int, src_size_b: tuple[int, int] | None = None):
    """Flow of a ``[H0, W0]`` image pair for the same pair resampled to ``[height, width]``.

    Each target pixel takes the source pixel under its centre (nearest) and its
    flow is recomputed exactly for that source pixel's end point:
    ``du' = (u_src + du) * sx - u'``.
    """
    h0, w0 = flow.shape[:2]
    if (w0, h0) == (width, height):
        return flow.astype(np.float32), valid.astype(bool)
    wb, hb = src_size_b or (w0, h0)
    sx, sy = width / wb, height / hb
    rows = np.minimum(((np.arange(height) + 0.5) * (h0 / height)).astype(np.int64), h0 - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w0 / width)).astype(np.int64), w0 - 1)
    f = flow[rows[:, None], cols[None, :]].astype(np.float64)
    u_src = cols[None, :] + 0.5
    v_src = rows[:, None] + 0.5
    u_t = np.arange(width)[None, :] + 0.5
    v_t = np.arange(height)[:, None] + 0.5
    out = np.stack([(u_src + f[..., 0]) * sx - u_t, (v_src + f[..., 1]) * sy - v_t], -1)
    return out.astype(np.float32), valid[rows[:, None], cols[None, :]].astype(bool)


def classical_flow(image_a: np.ndarray, image_b: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow a -> b ``[H, W, 2]`` from float RGB images in [0, 1] with OpenCV."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "classical optical flow needs OpenCV: pip install opencv-python-headless "
            "(or use a dataset that stores flow)"
        ) from e
    ga = cv2.cvtColor((np.clip(image_a, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor((np.clip(image_b, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(ga, gb, None)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 4, 15, 5, 5, 1.1, 0)
    else:
        raise ValueError(f"classical_flow: method must be 'dis' or 'farneback', got {method!r}")
    # OpenCV's flow maps pixel index to pixel index; with centres at +0.5 on both sides it is the same displacement
    return flow.astype(np.float32)


def pair_flows(views, source: str = "auto", dataset_dir: str | Path | None = None):
    """Flow for every ordered pair of views.

    Args:
        views: list of :class:`scenes.coherent.views.View`.
        source: ``"auto"`` (dataset when every view has a stored frame, else DIS),
            ``"dataset"``, ``"dis"`` or ``"farneback"``.
        dataset_dir: the dataset root (holding ``transforms.json``) for stored flow.

    Returns:
        ``({(a, b): (flow [H, W, 2], valid [H, W])}, source_used)``.
    """
    have_stored = dataset_dir is not None and all(v.frame is not None for v in views)
    if source == "dataset" and not have_stored:
        raise ValueError("flow_source='dataset' but the dataset stores no flow for these views")
    use = "dataset" if (source == "auto" and have_stored) else ("dis" if source == "auto" else source)
    out = {}
    for a, va in enumerate(views):
        for b, vb in enumerate(views):
            if a == b:
                continue
            if use == "dataset":
                from scenes.data.synthetic import load_flow

                f, ok = load_flow(dataset_dir, va.frame, vb.frame)
                f, ok = resample_flow(f, ok, va.width, va.height, src_size_b=(f.shape[1], f.shape[0]))
            else:
                try:
                    f = classical_flow(va.image, vb.image, use)
                except ImportError as e:
                    warnings.warn(f"{e}; the flow loss and alignment stage are disabled", stacklevel=2)
                    return {}, "none"
                ok = np.ones(f.shape[:2], bool)
            if va.mask is not None:
                ok = ok & va.mask
            out[(a, b)] = (f, ok)
    return out, use
