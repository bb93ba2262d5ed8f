"""Shared regularizers for the 2D (image) and 3D (volume, point, weight) stacks.

Every regularizer is a plain function plus a thin ``nn.Module`` holding its weight and
an optional :class:`Schedule`; the modules are registered by name so configs can list
them (``parse_regularizers(["tv:0.1", "correlation:200"])``).

========================  ==========================================================
function                  module (registry name)
========================  ==========================================================
total_variation           TotalVariation (``tv``): 1D/2D/3D, L1/L2/Huber, aniso/iso,
                          mask, segment maps
edge_aware_smoothness     EdgeAwareSmoothness (``edge_smoothness``): Monodepth term
backward_warp,            --  (flow utilities, pixel-centre convention)
fb_consistency_mask
flow_warp_loss            FlowWarpLoss (``flow_warp``): CoherentGS flow regulariser
correlation_loss          CorrelationLoss (``correlation``): Vox-E, 1 - Pearson
orthogonality,            Orthogonality (``orthogonality``),
lambda_orthogonality      LambdaOrthogonality (``lambda_orthogonality``)
equivariance_regularizer  EquivarianceRegularizer (``equivariance``): Kim et al. 2023
sinkhorn_divergence,      SinkhornDivergence (``sinkhorn``), MongeGap (``monge_gap``)
monge_gap
sliced_wasserstein        SlicedWasserstein (``sliced_wasserstein``, ``sw``, ``cvsw``)
sinkhorn_newton_sparse    --  (solver, with the ``sinkhorn_log`` reference)
========================  ==========================================================

Submodules: ``tv``, ``smoothness``, ``flow``, ``correlation``, ``orthogonal``,
``equivariance``, ``ot`` (POT-backed), ``sliced``, ``sns``, ``schedule``, ``registry``.
Each module docstring cites its paper(s) and states where the code departs from them.

Importing this package is cheap: the registry and schedules are standard-library
only, and every other name is imported on first access.
"""

from __future__ import annotations

from geo._lazy import lazy_exports

from .registry import ALIASES, REGULARIZERS, build, known_names, parse_regularizer_spec, parse_regularizers
from .schedule import Schedule

_LAZY = {
    "Regularizer": "schedule",
    "total_variation": "tv", "TotalVariation": "tv", "spatial_differences": "tv",
    "edge_aware_smoothness": "smoothness", "EdgeAwareSmoothness": "smoothness",
    "backward_warp": "flow", "flow_in_bounds": "flow", "fb_consistency_mask": "flow",
    "flow_warp_loss": "flow", "FlowWarpLoss": "flow",
    "correlation_loss": "correlation", "CorrelationLoss": "correlation",
    "orthogonality": "orthogonal", "lambda_orthogonality": "orthogonal", "gram_residual": "orthogonal",
    "Orthogonality": "orthogonal", "LambdaOrthogonality": "orthogonal",
    "reynolds_projection": "equivariance", "equivariance_error": "equivariance",
    "equivariance_regularizer": "equivariance", "EquivarianceRegularizer": "equivariance",
    "cyclic_permutations": "equivariance",
    "entropic_ot": "ot", "sinkhorn_divergence": "ot", "monge_gap": "ot",
    "SinkhornDivergence": "ot", "MongeGap": "ot",
    "random_projections": "sliced", "wasserstein_1d": "sliced", "sliced_wasserstein": "sliced",
    "SlicedWasserstein": "sliced",
    "sinkhorn_log": "sns", "sinkhorn_newton_sparse": "sns", "OTSolution": "sns", "marginal_error": "sns",
}

__all__ = ["REGULARIZERS", "ALIASES", "build", "known_names", "parse_regularizer_spec", "parse_regularizers", "Schedule", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

