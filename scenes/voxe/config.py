"""Configuration dataclasses for Vox-E (standard library only, so the CLI imports them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ReconConfig:
    """Coarse-to-fine voxel-grid reconstruction from posed images."""

    resolutions: tuple[int, ...] = (32, 64, 128)
    """Grid resolution of each stage; the grid is trilinearly upsampled between stages."""
    iters: tuple[int, ...] = (300, 300, 600)
    """Iterations per stage."""
    rays_per_batch: int = 4096
    samples_per_voxel: float = 1.0
    """Samples per ray = this * the stage's resolution * sqrt(3) (the box diagonal in voxels)."""
    color: Literal["rgb", "sh"] = "rgb"
    """Colour features: RGB (sigmoid) or view-dependent spherical harmonics of degree ``sh_degree``."""
    sh_degree: int = 2
    lr_density: float = 1.0
    lr_features: float = 0.1
    tv_density: float = 1e-3
    """Weight of the TV (L1, mean) on the raw density grid (geo.regularizers.total_variation)."""
    tv_features: float = 1e-3
    mask_weight: float = 0.1
    """L1 between rendered opacity and the capture's masks, when it has them (0 disables)."""
    init_density: float = -4.0
    """Raw density at start (softplus(-4) = 0.018)."""
    bounds: tuple[float, float, float, float, float, float] | None = None
    """Grid box (xmin, ymin, zmin, xmax, ymax, zmax); None fits the cameras' common view."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    skip_empty: bool = True
    """Skip samples in cells that are empty (sigma < 0.01, dilated by 2 cells) after the first stage."""
    holdout_every: int = 8
    max_size: int | None = None
    """Shrink images so the longer side is at most this (None: as captured)."""
    seed: int = 0


@dataclass
class GuidanceConfig:
    """Score distillation sampling (Poole et al. 2023) with a latent diffusion model."""

    model_path: str | None = None
    """(``geo edit --model-path`` sets this.) Local diffusers Stable Diffusion directory (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    backend: Literal["diffusers", "tiny"] = "diffusers"
    """(``geo edit --backend`` sets this.) ``tiny``: a small random UNet/VAE/text encoder built from configs in code (tests, benchmarks)."""
    guidance_scale: float = 100.0
    t_range: tuple[float, float] = (0.02, 0.98)
    """Timestep range as a fraction of the scheduler's steps."""
    t_anneal: tuple[float, float] = (0.98, 0.5)
    """The upper end of the range goes linearly from the first to the second value over the run."""
    weighting: Literal["sds", "uniform"] = "sds"
    """``sds``: w(t) = 1 - alpha_bar_t; ``uniform``: w(t) = 1."""
    grad_clip: float | None = 1.0
    """Clip the per-element SDS gradient to [-c, c] (None: off)."""
    view_prompts: bool = True
    """Append ', front view' / ', side view' / ', back view' / ', overhead view' from the camera pose."""
    negative_prompt: str = ""
    half: bool = False
    """float16 weights (CUDA only)."""
    device: str = "auto"


@dataclass
class EditConfig:
    """Text-guided editing of a voxel grid (Vox-E Sec. 4)."""

    iters: int = 1000
    render_size: int = 64
    """Rendered image size; the diffusion model sees it resized to its own resolution."""
    lr_density: float = 0.2
    lr_features: float = 0.02
    correlation_weight: float = 200.0
    """lambda of the volumetric term lambda (1 - Pearson(edited density, original density))."""
    camera_distance: tuple[float, float] = (1.0, 1.3)
    """Random camera distance, as a multiple of the distance at which the sphere inscribed in the grid's box fills the view."""
    elevation_deg: tuple[float, float] = (0.0, 40.0)
    fov_deg: float = 40.0
    n_samples: int = 96
    skip_empty: bool = True
    """Skip samples in cells farther than 3 cells from any cell with sigma > 0.01, refreshed every 10
    iterations (new geometry can still grow by 3 cells per refresh)."""
    up: tuple[float, float, float] = (0.0, 1.0, 0.0)
    """World up direction (front view = -z of the object; Spot faces +z by default: see front_dir)."""
    front_dir: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """Direction from the object towards a camera looking at its front."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    checkpoint_every: int = 250
    seed: int = 0


@dataclass
class LocalConfig:
    """Local refinement (Vox-E Sec. 4.3): attention grids and a graph cut."""

    edit_words: tuple[str, ...] = ()
    """Prompt words whose attention marks the edit (default: the other content words of the prompt)."""
    object_word: str | None = None
    """Word for the object (default: the prompt's first content word, e.g. "cow" in "a cow wearing a hat")."""
    iters: int = 200
    resolution: int = 64
    """Resolution of the attention grids."""
    lr: float = 0.05
    tv_weight: float = 1e-2
    seed_threshold: float = 0.85
    """Voxels with p(edit) above this are hard edit seeds; below 1 - this, hard object seeds."""
    smoothness: float = 1.0
    """Weight of the 6-neighbour pairwise term."""
    color_sigma: float = 0.1
    """Colour-similarity scale of the pairwise weights exp(-|c_i - c_j|^2 / (2 sigma^2))."""
    occupied_sigma: float = 0.5
    """Voxels with softplus density above this (in the edited or original grid) take part in the cut."""


@dataclass
class ExportConfig:
    mesh: bool = True
    gaussians: bool = True
    turntable: bool = True
    turntable_views: int = 8
    turntable_size: int = 128
    iso_sigma: float = 5.0
    """Density level of the marching-tetrahedra surface."""
    gaussian_min_alpha: float = 0.05
    """Voxels with opacity 1 - exp(-sigma voxel) below this get no Gaussian."""


__all__ = ["ReconConfig", "GuidanceConfig", "EditConfig", "LocalConfig", "ExportConfig", "field"]
