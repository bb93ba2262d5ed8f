"""Configuration of :class:`scenes.occflow.loss.VoxelSplatLoss` (standard library only,
so CLIs can build it with tyro without importing torch).

Defaults follow the released VoxelSplat code (FB-OCC config) where it states a value:
Gaussian scale 0.12 m at 0.4 m voxels (``scale_fraction = 0.3``), 2D cross-entropy
weight 0.5, depth weight 1, 100k sampled voxels, sampling exponents 0.5,
speed bins ``[0, 1, 2, 5, 10, inf)`` m/s, near/far planes 0.1 / 100. Departures
(each explained at its attribute): alpha-normalised renders (``depth_mode``),
log depth (``depth_metric``), stop-gradient opacities in the flow render
(``flow_opacity_grad``) and the 2D flow weight (``w_flow2d``). The release's
behaviour: ``depth_mode="accumulated", depth_metric="l1", flow_opacity_grad=True,
w_flow2d=1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geo.regularizers.schedule import Schedule

__all__ = ["VoxelSplatConfig"]


@dataclass
class VoxelSplatConfig:
    """Weights and knobs of the VoxelSplat loss.

    Attributes:
        w_sem2d: weight of the rendered-semantics cross-entropy (``loss_sem2d``).
        w_depth2d: weight of the rendered-depth L1 (``loss_depth2d``).
        w_flow2d: weight of the rendered-flow weighted L1 (``loss_flow2d``).
            Default 0.17, a departure from the release's 1: the image-space mean
            concentrates the gradient on the few surface voxels, so at weight 1
            the term's gradient on the network's parameters was ~6x that of
            ``loss_flow3d`` (26.9 vs 4.6 at initialisation on the synthetic
            benchmark; key frame alone 30 vs 4.6, although it supervises the same
            flow) and ~4x the voxel cross-entropy's (6.3), so under the shared
            trunk and the global gradient clip it crowded out the semantic
            gradients (mIoU fell). 0.17 = 4.6 / 26.9 gives it the gradient of
            the 3D flow term it complements. Measured on training data at
            initialisation; re-measure for another network or resolution.
        w_flow3d: weight of the voxel flow weighted L1 (``loss_flow3d``).
        flow_schedule: multiplier of both flow terms and of the adjacent-frame
            renders over training steps (the warm-up); while it is 0, adjacent
            frames are not rendered at all (as in the release).
        flow_eps: the ``0.1`` in the flow weight ``|flow_gt| + 0.1``.
        dynamic_speed: Gaussians whose *true* speed exceeds this are dynamic and
            move by their (predicted / true) flow in adjacent frames; the others,
            free voxels included, stay put (the paper's static / dynamic split).
            Negative: move every Gaussian (the released code).
        scale_fraction: isotropic Gaussian std as a fraction of the voxel size.
        max_gaussians: cap on sampled voxels (Gaussians) per batch element.
        class_alpha, speed_beta: inverse-frequency exponents of the sampling weights.
        speed_edges: lower edges (m/s) of the speed bins; the last bin is open.
        free_index: index of the "free" class in the logits (negative counts from the end).
        ignore_index: label value that marks unknown voxels / pixels.
        depth_mode: ``"expected"`` (default): every rendered channel -- depth,
            logits and flow -- is alpha-normalised, ``sum_i w_i x_i / sum_i w_i``,
            and the 2D terms use only pixels with a ground-truth surface.
            ``"accumulated"``: the raw ``sum_i w_i x_i`` (the release's ``RGB+D``),
            depth L1 over all pixels. Why the default departs from the release:
            the accumulated render multiplies every channel by the predicted
            alpha, so (i) "depth" ``sum w_i z_i`` mixes opacity with distance
            (its gradient on an opacity is ``~z``, metres, and it can raise the
            depth by making *free* voxels in front opaque), and (ii) the rendered
            flow shrinks with alpha, so the flow term rewards an inflated flow
            (at opacity 0.5 it prefers ~1.2x the true flow; test
            ``test_expected_render_flow_is_unbiased_by_opacity``). Normalised,
            opacity only decides *which* Gaussians a pixel sees, not the scale.
        depth_metric: ``"log"`` (default): ``|log D - log D*|``, dimensionless like
            the cross-entropies, so the balance does not depend on the scene's
            metric scale (a departure; the release uses metres L1, and at 0.5 m
            voxels / ~10 m depths the metres L1 gave the free logits ~14x the
            gradient of the voxel cross-entropy at initialisation, log ~8x).
            ``"l1"``: metres (the release). ``"log"`` needs ``depth_mode="expected"``.
        flow_opacity_grad: let ``loss_flow2d`` reach the opacities (free logits)
            as in the release. Default ``False``: the flow render uses
            stop-gradient opacities (rendered separately), so flow errors train
            the flow -- its values and, in adjacent frames, the motion of the
            Gaussians -- but do not make wrongly-moved Gaussians transparent,
            which would trade occupancy for flow error.
        alpha_floor: floor of the alpha in the normalisation (bounds the gradient
            ``1 / alpha`` on pixels the prediction barely covers).
        near_plane, far_plane: rasterizer culling planes (metres).
        cameras_per_chunk: cameras rendered (and back-propagated) together;
            memory grows with it, speed too.
        checkpoint: recompute each chunk's render in backward instead of keeping
            its activations (memory bound at the cost of one extra forward).
        min_alpha_gt: pixels whose ground-truth render has less accumulated
            opacity than this have no valid ground-truth depth (rendered targets;
            with given label images, valid means depth > 0 and a known label).
    """

    w_sem2d: float = 0.5
    w_depth2d: float = 1.0
    w_flow2d: float = 0.17
    w_flow3d: float = 1.0
    flow_schedule: Schedule = field(default_factory=Schedule)
    flow_eps: float = 0.1
    dynamic_speed: float = 0.1
    scale_fraction: float = 0.3
    max_gaussians: int = 100_000
    class_alpha: float = 0.5
    speed_beta: float = 0.5
    speed_edges: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0)
    free_index: int = -1
    ignore_index: int = 255
    depth_mode: str = "expected"
    near_plane: float = 0.1
    far_plane: float = 100.0
    cameras_per_chunk: int = 1
    checkpoint: bool = True
    min_alpha_gt: float = 0.5
    alpha_floor: float = 0.05
    depth_metric: str = "log"
    flow_opacity_grad: bool = False

    def __post_init__(self) -> None:
        if self.depth_mode not in ("accumulated", "expected"):
            raise ValueError(f"depth_mode must be 'accumulated' or 'expected', got {self.depth_mode!r}")
        if self.depth_metric not in ("l1", "log"):
            raise ValueError(f"depth_metric must be 'l1' or 'log', got {self.depth_metric!r}")
        if self.depth_metric == "log" and self.depth_mode != "expected":
            raise ValueError("depth_metric='log' needs depth_mode='expected' (accumulated depth is 0 off surfaces)")
        if self.max_gaussians < 1 or self.cameras_per_chunk < 1:
            raise ValueError("max_gaussians and cameras_per_chunk must be >= 1")
        if self.scale_fraction <= 0:
            raise ValueError(f"scale_fraction must be > 0, got {self.scale_fraction}")
