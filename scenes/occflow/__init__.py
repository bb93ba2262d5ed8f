"""VoxelSplat: dynamic Gaussian splatting as a training loss for occupancy and scene flow.

Paper: Ziyue Zhu, Shenlong Wang, Jin Xie, Jiangjiang Liu, Jingdong Wang, Jian Yang,
"VoxelSplat: Dynamic Gaussian Splatting as an Effective Loss for Occupancy and Flow
Prediction", CVPR 2025 (arXiv:2506.05563). Facts and settings were read from the
paper and its released code (github.com/ZZY816/VoxelSplat); no code was copied.

The user's path::

    loss_fn = VoxelSplatLoss(VoxelSplatConfig())                       # loss.py / config.py
    terms = loss_fn(logits, flow, labels, flow_gt, grid_origin, voxel_size,
                    RigViews(Ks, cam_to_ego, dt, W, H), step=it)        # dict of 4 losses
    (voxel_losses + sum(terms.values())).backward()

    # inside: sample_voxels -> decode_gaussians -> rasterize (key + adjacent frames)
    # evaluation: OccupancyMIoU, RayMetrics (RayIoU, mAVE)             # metrics.py

Modules: ``config`` (:class:`VoxelSplatConfig`, standard library only), ``loss``,
``sampling`` (capped inverse-frequency x speed-bin sampling), ``raycast`` (exact
voxel traversal), ``metrics``, ``synthetic`` (dynamic scenes with a camera rig),
``model`` (image lifting + a small 3D U-Net for the benchmark in
``tools/bench/occflow.py``).

Settings taken from the release (``occupancy_configs/voxelsplat``,
``gaussian_head*.py``): Gaussian std 0.12 m at 0.4 m voxels (``scale_fraction
0.3``), opacity ``sigmoid(-free logit)``, ground-truth Gaussians with opacity 1
on occupied voxels, 2D CE weight 0.5, depth weight 1, flow weight ``|flow_gt| + 0.1``
normalised by its sum, 100k samples, sampling exponents 0.5 and speed bins
[0, 1, 2, 5, 10, inf) m/s.

Departures, and why:

* **Alpha-normalised renders** (``depth_mode="expected"``): depth, logits and flow
  are ``sum w_i x_i / sum w_i`` on pixels with a ground-truth surface; the release
  renders ``RGB+D`` (``sum w_i x_i``, depth L1 over all pixels), which scales every
  channel by the predicted alpha: its "depth" is part opacity (gradient ~z metres
  per unit opacity, and free voxels in front can raise it) and its rendered flow
  shrinks with alpha, so the flow term rewards an inflated flow.
* **Log depth** (``depth_metric="log"``): ``|log D - log D*|`` is dimensionless like
  the cross-entropies; the release's metres L1 scales with the scene.
* **Flow render without opacity gradient** (``flow_opacity_grad=False``): flow
  errors train the flow (values and motion), not the occupancy.
* **2D flow weight 0.17** (release 1): set so that its parameter gradient at
  initialisation equals ``loss_flow3d``'s (see :class:`VoxelSplatConfig`).

* **2D semantic target** is the ``argmax`` of the rendered ground-truth one-hot
  (or the given label image), with pixels of ground-truth opacity > 0.5; the
  release uses the soft rendered one-hot. A hard label treats rendered and given
  label images alike, and makes a perfect prediction cost ~0 (the soft target
  leaves its entropy).
* **Static / dynamic split**: only Gaussians whose *true* speed exceeds
  ``dynamic_speed`` (0.1 m/s) move in adjacent frames, as the paper describes
  (Fig. 2, step 3); the release moves every sampled Gaussian, free ones included
  (``dynamic_speed < 0`` restores that). Rendering is joint, not per type.
* **Motion**: Gaussians move by ``dt * flow`` with ``dt`` the adjacent frame's time
  offset, so flow is a velocity; the release adds one frame's flow. 3-channel flow
  moves in z too (the release is xy only).
* **Sampling counts** default to the sample's own class / speed histograms; the
  release uses dataset-wide counts (pass ``class_counts`` / ``speed_counts`` to
  :func:`sample_voxels` for that).
* **Flow terms**: ``loss_flow3d`` is on non-ignored voxels (the release: all);
  the warm-up is a :class:`geo.regularizers.Schedule` on both flow terms, and no
  adjacent frame is rendered while it is 0 (as the release's ``flow_loss_weight == 0``).
* **Memory**: cameras are rendered in chunks under activation checkpointing; the
  release renders all views at once on a GPU.
* The release's extra opacity-on-free-voxels term (``loss_3d``, unused in its
  configs) is left out.
"""

from __future__ import annotations

import importlib

__all__ = ["VoxelSplatConfig", "VoxelSplatLoss", "RigViews", "LabelImages", "decode_gaussians", "weighted_flow_l1",
           "sample_voxels", "sampling_weights", "OccupancyMIoU", "RayMetrics", "lidar_ray_directions", "cast_rays"]

_LAZY = {
    "VoxelSplatConfig": "config",
    "VoxelSplatLoss": "loss", "RigViews": "loss", "LabelImages": "loss", "decode_gaussians": "loss",
    "weighted_flow_l1": "loss",
    "sample_voxels": "sampling", "sampling_weights": "sampling",
    "OccupancyMIoU": "metrics", "RayMetrics": "metrics", "lidar_ray_directions": "metrics",
    "cast_rays": "raycast",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
