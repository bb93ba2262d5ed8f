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
on occupied voxels, soft 2D semantic targets (the rendered ground-truth class
mixture), flow weight ``|flow_gt| + 0.1`` normalised by its sum, 100k samples, sampling exponents 0.5 and speed bins
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
* **Adjacent frames train only the motion** (``adjacent_grad="motion"``): there the
  predicted features and opacities are constants, so a moving object's Gaussians
  that a wrong flow puts on another object's pixels are not relabelled or made
  transparent (the release trains everything there; on the benchmark that
  collapsed pedestrians).
* **Rendered class probabilities** (``sem2d_render="probs"``): Gaussians carry the
  softmax of their non-free logits and ``loss_sem2d`` is ``KL(q || P)`` against the
  soft target ``q``, so a perfect labelling costs 0 on every pixel, mixed boundary
  pixels of thin objects included; the release renders logits (cross-entropy of
  averaged logits, which no labelling makes 0 on mixed pixels).
* **Class-balanced 2D semantics** (``sem2d_class_alpha=0.5``): weights
  ``(n_c / n) ** -0.5`` from the sample's occupied voxels; the release balances
  through the sampling cap alone, which removes little on small grids.
* **Coverage term** (``w_alpha2d=0.1``, inside ``loss_depth2d``): ``|alpha - alpha*|``
  on all pixels, the coverage the release's accumulated renders carry implicitly.
* **2D weights 0.1 / 0.1 / 0.08** (sem / depth / flow; release 0.5 / 1 / 1, next to
  a four-term voxel loss): each 2D term's parameter gradient at initialisation is
  at most a quarter of the voxel cross-entropy's (see :class:`VoxelSplatConfig`).
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

What it does on the synthetic benchmark (``tools/bench/occflow.py``, figures in
``docs/benchmarks.md``): the paper's mIoU gain is not reproduced. The 2D targets are
renders of the same voxel labels, so the loss adds no information; it reweights
voxel errors towards the surfaces the cameras see. At 200 steps the differences are
within the seed noise. Near convergence (500 steps) mIoU is a few thousandths
lower and RayIoU slightly higher than without it.
"""

from __future__ import annotations

from geo._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

