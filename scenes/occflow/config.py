"""Configuration of :class:`scenes.occflow.loss.VoxelSplatLoss` (standard library only,
so CLIs can build it with tyro without importing torch).

Defaults follow the released VoxelSplat code (FB-OCC config) where it states a value:
Gaussian scale 0.12 m at 0.4 m voxels (``scale_fraction = 0.3``), 2D cross-entropy
weight 0.5, depth weight 1, flow weight 1, 100k sampled voxels, sampling exponents 0.5,
speed bins ``[0, 1, 2, 5, 10, inf)`` m/s, near/far planes 0.1 / 100.
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
        depth_mode: ``"accumulated"`` (``sum_i w_i z_i``, the release's ``RGB+D``;
            its L1 over all pixels also pushes opacity down in free space) or
            ``"expected"`` (``RGB+ED``, L1 on pixels with ground-truth depth only).
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
    w_flow2d: float = 1.0
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
    depth_mode: str = "accumulated"
    near_plane: float = 0.1
    far_plane: float = 100.0
    cameras_per_chunk: int = 1
    checkpoint: bool = True
    min_alpha_gt: float = 0.5

    def __post_init__(self) -> None:
        if self.depth_mode not in ("accumulated", "expected"):
            raise ValueError(f"depth_mode must be 'accumulated' or 'expected', got {self.depth_mode!r}")
        if self.max_gaussians < 1 or self.cameras_per_chunk < 1:
            raise ValueError("max_gaussians and cameras_per_chunk must be >= 1")
        if self.scale_fraction <= 0:
            raise ValueError(f"scale_fraction must be > 0, got {self.scale_fraction}")
