"""Configuration dataclasses of shape matching (torch-free, so ``geo --help`` stays fast).

:class:`MatchConfig` drives :func:`geo.fmaps.match` and is the flag set of ``geo match``;
:class:`DiffuMatchConfig` holds the DiffuMatch test-time settings
(:mod:`geo.fmaps.diffumatch.matching` explains each departure from the paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["MatchConfig", "DiffuMatchConfig"]


@dataclass
class DiffuMatchConfig:
    """Settings of the DiffuMatch test-time optimisation (``geo match --diffumatch.*``)."""

    mode: Literal["trained", "zero_shot"] = "trained"
    """``trained``: features from the feature network trained offline on our generated
    pairs (the paper's unsupervised training with the prior); ``zero_shot``: a fresh
    network optimised on each pair (the paper's zero-shot setting; slower)."""
    features: Path | None = None
    """Feature-network checkpoint for ``trained`` (default: the shipped
    ``assets/fmaps/diffumatch_features.pt``)."""
    finetune_iter: int = 0
    """``trained`` only: test-time steps of the DiffuMatch objective on the pair."""
    n_iter: int = 50
    """``zero_shot`` only: Adam steps of the per-pair feature optimisation (paper: 300)."""
    lr: float = 1e-3
    width: int = 64
    """DiffusionNet width (paper: 128)."""
    n_blocks: int = 4
    n_features: int = 128
    """Output feature channels (the descriptors of the solve)."""
    n_input: int = 64
    """WKS energies fed to the network."""
    k_operators: int = 64
    """Eigenpairs used by DiffusionNet's spectral diffusion."""
    mask_weight: float = 0.1
    """λ of the distilled-mask row-wise solve (paper: 0.1)."""
    mask_sigma: float = 1.0
    """Noise level of the mask distillation (paper: 1)."""
    n_mask: int = 64
    """Noise samples per mask (paper: 200)."""
    sds_sigma: float = 1.0
    """SDS noise levels are 0.01 + U(0, 1) · this (paper: 1)."""
    n_sds: int = 8
    """Noise samples per SDS step (paper: 32)."""
    w_sds: float = 1.0
    w_proper: float = 1.0
    proper_k: int = 40
    """ZoomOut size of the proper-map target (paper: 40)."""
    proper_every: int = 10
    """Steps between recomputations of the proper-map target."""
    proper_points: int = 800
    """Farthest-point subsample size for the proper-map ZoomOut."""
    w_orient: float = 1.0
    """Weight of the orientation-preserving term (Ren et al. 2018; not in DiffuMatch, see
    :mod:`geo.fmaps.diffumatch.matching`). 0 disables it."""
    n_orient: int = 8
    """Descriptors (a subset of the WKS input) whose orientation operators are used."""
    max_points: int = 2000
    """Shapes with more vertices are optimised on a farthest-point subsample of this size."""
    max_points_forward: int = 10000
    """``trained`` without fine-tuning: the network runs on the whole shape up to this many
    vertices (forward only, no optimisation), on a farthest-point subsample above it."""
    n_starts: int = 2
    """``zero_shot`` only: independent optimisations (network seeds); the refined map of lowest intrinsic
    energy is kept (:func:`geo.fmaps.diffumatch.matching.map_energy`)."""
    second_start: bool = True
    """Also refine the WKS map (the ``zoomout`` method's start) and keep whichever
    refined map has the lower intrinsic energy (:func:`geo.fmaps.diffumatch.matching.map_energy`)."""
    k_select: int = 50
    """ZoomOut size at which the candidate maps are compared; the winner continues to ``k_final``."""
    bf16: bool = True
    """Run DiffusionNet under bfloat16 autocast (about 3× faster on CPUs with AVX512-BF16)."""
    prior: Path | None = None
    """Prior checkpoint (default: the shipped ``assets/fmaps/diffumatch_prior.pt``)."""
    progress: bool = False



@dataclass
class MatchConfig:
    """Options of :func:`match` (also the flags of ``geo match``)."""

    method: Literal["diffumatch", "zoomout", "fmap"] = "diffumatch"
    """``diffumatch`` (learned prior, default), ``zoomout`` (WKS solve + ZoomOut) or ``fmap`` (WKS solve only)."""
    k: int = 30
    """Size of the initial functional map (the prior is trained at 30)."""
    k_final: int = 80
    """Final size after ZoomOut (``diffumatch`` and ``zoomout``)."""
    zoomout_step: int = 2
    """Basis functions added per ZoomOut iteration (1 is the paper's; 2 halves the time)."""
    n_descriptors: int = 100
    """WKS energies (descriptors of the ``fmap``/``zoomout`` solve)."""
    mask_weight: float = 0.1
    """Weight of the resolvent Laplacian mask in the ``fmap``/``zoomout`` solve (descriptors
    have unit M-norm; 0.1 measured best on the cactus pair, mesh and point cloud, vs 1e-3)."""
    laplacian: Literal["auto", "cotan", "robust"] = "auto"
    """``auto``: cotangent when both inputs are meshes, otherwise robust on both sides."""
    confidence_sigma: float = 0.05
    """Scale of the cycle-consistency confidence, in units of ``sqrt(area)``."""
    seed: int = 0
    diffumatch: DiffuMatchConfig = field(default_factory=DiffuMatchConfig)
