"""Vox-E: text-guided volumetric editing of 3D objects.

Sella, Fiebelman, Hedman and Averbuch-Elor, "Vox-E: Text-guided Voxel Editing of 3D
Objects", ICCV 2023 (arXiv:2303.12048).

The pipeline reads like the paper:

1. :func:`reconstruct.reconstruct` fits an explicit voxel grid (raw density, softplus
   after trilinear interpolation; colour features) to posed images, coarse to fine
   (32^3 -> 64^3 -> 128^3), with an L1 photometric loss and TV from
   :mod:`geo.regularizers`; rendering is :func:`scenes.voxels.render_rays`.
2. :func:`edit.edit_grid` optimises a copy of the grid with score distillation sampling
   (:class:`guidance.Guidance`, Stable Diffusion from a local directory) plus the
   volumetric regulariser ``lambda (1 - Pearson(edited density, original density))``
   (Sec. 4.2; :func:`geo.regularizers.correlation_loss`).
3. For local edits, :mod:`local` fits two attention grids (edit words, object) to the
   UNet's cross-attention maps through the frozen edited density, cuts the occupied
   voxels into edit / keep with a graph cut (PyMaxflow) and copies every voxel outside the
   edit back from the original (Sec. 4.3).
4. :mod:`export` writes a marching-tetrahedra mesh, one Gaussian per voxel (3DGS PLY) and
   a before/after turntable; :mod:`pipeline` and ``geo edit`` (:mod:`cli`) tie it together.

Where this code departs from the paper:

* Grid: a plain dense grid with RGB (sigmoid) or degree <= 2 SH colour in the 3DGS
  convention; the paper builds on ReLU Fields' grid and renderer. Samples are
  uniformly stratified between the ray's box entry and exit; cells found empty after
  the first stage are skipped.
* Reconstruction adds an optional L1 term between rendered opacity and the capture's
  masks (off when the capture has none).
* The volumetric term is taken on the raw (pre-softplus) density grids, which are the
  optimised variables.
* Guidance follows common SDS code (threestudio / stable-dreamfusion) for the timestep
  schedule, weighting, clipping and view suffixes; the paper's exact values are not
  all given. The tiny config-built backend exists for tests and timing only.
* Attention grids are fitted with an L2 loss to opacity-weighted, max-normalised maps;
  the graph-cut unaries are ``-log p`` with ``p = A_edit / (A_edit + A_obj)``, and its
  pairwise term is a colour-weighted Potts model on 6-neighbours.
* Meshes come from marching tetrahedra (no scikit-image dependency), not marching cubes.
"""

from scenes.voxe.config import EditConfig, ExportConfig, GuidanceConfig, LocalConfig, ReconConfig

__all__ = ["ReconConfig", "GuidanceConfig", "EditConfig", "LocalConfig", "ExportConfig"]
