"""CoherentGS: sparse-view reconstruction with coherent per-pixel 3D Gaussians, and a plain 3DGS baseline.

Paper: Avinash Paliwal, Wei Ye, Jinhui Xiong, Dmytro Kotovenko, Rakesh Ranjan,
Vikas Chandra, Nima Khademi Kalantari, "CoherentGS: Sparse Novel View Synthesis
with Coherent 3D Gaussians", ECCV 2024 (arXiv:2403.19495). Facts and settings
were read from the paper and its released code (github.com/avinashpaliwal/CoherentGS);
no code was copied.

The user's path (:func:`scenes.coherent.train.reconstruct`, ``geo reconstruct``)::

    views   = prepare_view(...)          # undistort, downscale           (views.py)
    depths  = initial_depths(views)      # dataset / SfM-anchored / sweep (mvs.py)
    flows   = pair_flows(views)          # dataset / OpenCV DIS           (flow.py)
    model   = PixelGaussians(views, depths, cfg)   # + depth layers      (representation.py)
    align   : per-view depth scale/offset by the flow loss               (train.py)
    optimise: decoders (depth, opacity), SH, scales, rotations           (train.py, decoder.py, losses.py)
    export  : scene dir, INRIA PLY, .splat, TSDF mesh                     (scenes/export)

Modules: ``config`` (tyro dataclasses), ``views``, ``mvs``, ``flow``,
``representation``, ``decoder``, ``losses`` (glue over :mod:`geo.regularizers` and
kornia's SSIM), ``train``, ``baseline`` (3DGS + gsplat ``DefaultStrategy``),
``evaluate``, ``cli``. Rendering goes through :func:`scenes.render.render_camera`,
the project's one call of :func:`geo.raster.rasterize`.

Paper vs released code — the value chosen (all exposed in :class:`CoherentConfig`):

* flow-loss weight: paper 0.1; code effectively 0.01 (``warp_coeff`` applied twice).
  We use **0.1** (``flow_weight``); our flow loss is divided by the median scene
  depth so the weight does not depend on scene units.
* TV schedule: the segment-aware share gamma of ``gamma TV_seg + (1 - gamma) TV``
  starts at 0 in the paper and at ~0.35 in the code (iteration / 20000 from
  step 7001). We use the code's **0.35** (``tv_gamma_start``), ramped linearly to 1;
  TV weight 5 (code's ``smooth_coeff``).
* initial opacity by view count (code: 2 -> 0.6, 3 -> 0.5, 4 -> 0.35), scale
  ``1.2 x`` half the pixel footprint (code's ``radius_mult``), as released.

Departures, and why:

* **No monocular depth network** (no downloaded weights): depth comes from the
  dataset, else a plane sweep fitted per view (scale + shift) to the SfM points,
  else the plain plane sweep with an NCC cost and a confidence map (``mvs.py``).
* **No learned optical flow** (RAFT/FlowFormer in the paper): dataset flow, else
  OpenCV DIS / Farnebäck. The occlusion mask is the forward-backward check of
  :func:`geo.regularizers.fb_consistency_mask` (code: a precomputed flow mask > 0.5).
* **No VGG perceptual loss** (the code adds 0.05 x VGG): it needs downloaded weights.
* **Depth layering** by 1D k-means on disparity, 4 layers (code: agglomerative
  clustering, 5 layers).
* **Alignment stage**: every view is the reference in every step (code: one at
  random), 60 steps instead of 1000, log-scale + offset parameterisation.
* **Decoder**: CoordConv channels before every convolution, exact-size final
  resize, zero-initialised last layer (residual 0 at step 0); residuals bounded
  by ``tanh`` times 0.1 x median depth (depth) and 10 (opacity logit) instead of
  the code's 50 / 100 in its own units; Adam with exponential decay instead of
  cyclic learning rates.
* **CPU-length schedules**: hundreds of steps instead of 20k; learning rates are
  raised accordingly (colour 0.01 instead of 5e-4); the SH ramp, scale resets and
  multisampling start at fractions of the run; multisampling is at most 2x (code: 4x).
* **Masks**: on object datasets with alpha masks, only foreground pixels carry
  Gaussians; the photometric loss still covers the whole image (white background).
* **Exposure**: an optional per-view affine colour correction (3x3 + bias) absorbs
  exposure differences of real captures (not in the paper).
* The flow loss compares the per-pixel Gaussian centres (as the code does), not
  rendered xyz maps; pixels whose flow lands next to a pixel without a Gaussian are
  excluded.
"""

from __future__ import annotations

__all__: list[str] = []
