"""Configuration dataclasses for ``geo reconstruct`` (CoherentGS and the plain 3DGS baseline).

Standard library only at module level: tyro turns these into the CLI and
``geo --help`` must stay fast. Every field is a flag (``--coherent.tv-weight``,
``--baseline.densify``, ...). Where the paper and its released code disagree, the
chosen value and the alternative are named in the field's docstring and in
:mod:`scenes.coherent`'s module docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple

__all__ = ["CoherentConfig", "BaselineConfig", "DataConfig", "INIT_OPACITY_BY_VIEWS"]

#: Initial opacity by number of training views (released code: 2 -> 0.6, 3 -> 0.5, 4 -> 0.35).
INIT_OPACITY_BY_VIEWS = {1: 0.8, 2: 0.6, 3: 0.5, 4: 0.35}


@dataclass
class DataConfig:
    """How training views are read and prepared (shared by both methods)."""

    holdout_every: int = 8
    """Every k-th frame (sorted by name) is held out for evaluation (LLFF convention)."""
    holdout: Tuple[str, ...] = ()
    """Explicit held-out frames (names, file names or indices); overrides holdout_every."""
    view_selection: Literal["spread", "first"] = "spread"
    """Which train frames to use: evenly spread over the sorted train list, or the first N."""
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour behind the Gaussians (the synthetic datasets are composited on white)."""
    use_masks: bool = True
    """Use dataset alpha masks: no Gaussians on masked-out pixels, loss still on every pixel."""


@dataclass
class CoherentConfig:
    """CoherentGS (Paliwal et al., ECCV 2024) settings; iteration counts are fractions of ``--iters``."""

    # ---- representation / initialisation
    depth_source: Literal["auto", "dataset", "sfm", "mvs"] = "auto"
    """Initial depth: ``auto`` = dataset depth maps, else SfM-anchored plane sweep, else plain plane sweep."""
    radius_mult: float = 1.2
    """Initial std-dev = radius_mult * half the pixel footprint (z / 2f); released code: 1.2."""
    init_opacity: Optional[float] = None
    """Initial opacity; None picks by number of views (2: 0.6, 3: 0.5, 4: 0.35, as released)."""
    num_segments: int = 4
    """Depth layers per view from 1D k-means on disparity (released code: 5, agglomerative)."""
    sh_degree: int = 3
    """Maximum SH degree reached by the ramp."""

    # ---- plane-sweep MVS (used when the dataset has no depth)
    mvs_planes: int = 48
    """Depth hypotheses, uniform in inverse depth."""
    mvs_window: int = 5
    """Side of the square window of the NCC matching cost (pixels)."""
    mvs_near: Optional[float] = None
    """Nearest hypothesis depth; None: from SfM points / dataset bounds / camera layout."""
    mvs_far: Optional[float] = None
    """Farthest hypothesis depth; None: as mvs_near."""
    mvs_min_confidence: float = 0.05
    """Pixels below this confidence get their depth filled from confident neighbours."""

    # ---- optical flow
    flow_source: Literal["auto", "dataset", "dis", "farneback"] = "auto"
    """``auto`` = dataset flow when stored, else OpenCV DIS (classical, no weights)."""
    fb_check: bool = True
    """Count only forward-backward consistent pixels in the flow loss."""

    # ---- alignment stage (per-view depth scale and offset from the flow loss)
    align_iters: int = 60
    """Adam steps of the alignment stage (released code: 1000); 0 skips it."""
    align_lr: float = 0.005
    """Learning rate of log-scale and of offset / median depth (cosine annealed)."""

    # ---- implicit decoders
    decoder_width: int = 4
    """ngf of the depth decoder; layer widths 16, 16, 16, 8, 8, 8, 4, 4... x ngf (code: 15 at 3 views)."""
    opacity_decoder_width: int = 3
    """ngf of the opacity decoder (code: 10 at 3 views)."""
    encoding_freqs: int = 10
    """Sinusoidal frequencies of the view-index encoding (2 * freqs input channels)."""
    depth_residual: float = 0.1
    """Max depth residual, times the median scene depth (tanh-bounded; code: 50 in its units)."""
    opacity_residual: float = 10.0
    """Max opacity-logit residual (tanh-bounded; code: 100)."""
    decoder_lr: float = 1e-3
    opacity_decoder_lr: float = 3e-4

    # ---- other learnable attributes
    color_lr: float = 0.01
    """SH DC learning rate (higher bands: /20). Code: 5e-4 over 13k steps; we run ~100x fewer."""
    scale_lr: float = 0.005
    rotation_lr: float = 0.001
    scale_reset_every: int = 50
    """Reset scales from the (decoded) depth every k steps until the SH ramp starts (code: 100); 0 = never."""
    exposure_compensation: bool = True
    """Per-training-view affine colour correction (3x3 + bias) applied to renders in the loss."""
    exposure_lr: float = 1e-3

    # ---- losses
    ssim_weight: float = 0.2
    """lambda of D-SSIM in (1 - lambda) * multi-scale L1 + lambda * (1 - SSIM)."""
    l1_scales: int = 3
    """Scales of the multi-scale L1 (1, 1/2, 1/4, ...)."""
    tv_weight: float = 5.0
    """Weight of the TV on rendered disparity (code: smooth_coeff = 5)."""
    tv_gamma_start: float = 0.35
    """Segment-aware share gamma of the TV, ramped linearly to 1: loss = gamma TV_seg + (1 - gamma) TV.
    Paper: starts at 0; released code: ~0.35 (iteration / 20000 from 7001). We use the code's."""
    flow_weight: float = 0.1
    """Flow-loss weight. Paper: 0.1; released code: effectively 0.01 (applied twice). We use the paper's."""

    # ---- schedules
    sh_ramp_start: float = 0.5
    """Fraction of the run after which the SH degree rises by one every ``sh_ramp_every`` (code: 8k of 13k)."""
    sh_ramp_every: float = 0.08
    multisample_start: float = 0.8
    """Fraction of the run after which renders are multisampled (code: ~0.4 with up to 4x)."""
    multisample_max: int = 2
    """Largest supersampling factor (random in 1..max per step; code: 4 — too slow on CPU)."""


@dataclass
class BaselineConfig:
    """Plain 3DGS (Kerbl et al. 2023) with gsplat's DefaultStrategy, on the same renderer."""

    init: Literal["auto", "sfm", "random"] = "auto"
    """``auto`` = SfM points when the dataset has them, else random points in the cameras' view."""
    num_random: int = 5000
    """Number of random initial points."""
    init_opacity: float = 0.1
    sh_degree: int = 3
    sh_ramp_every: float = 0.1
    """Raise the SH degree every this fraction of the run (3DGS: every 1000 of 30k)."""
    means_lr: float = 1.6e-4
    """Position learning rate times the scene extent (3DGS), decayed x0.01 exponentially."""
    color_lr: float = 0.0025
    opacity_lr: float = 0.05
    scale_lr: float = 0.005
    rotation_lr: float = 0.001
    lr_boost: float = 4.0
    """Multiplier on all rates: the CPU runs are ~100x shorter than 3DGS' 30k steps."""
    ssim_weight: float = 0.2
    densify: bool = True
    """gsplat DefaultStrategy: clone / split / prune, opacity reset."""
    refine_start: float = 0.1
    """Fraction of the run at which densification starts (3DGS: 500 of 30k)."""
    refine_stop: float = 0.7
    refine_every: int = 25
    reset_every: int = 150
    grow_grad2d: float = 0.0002
