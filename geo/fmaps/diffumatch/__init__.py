"""DiffuMatch: a spectral diffusion prior over functional maps.

R. Pierson, Y. Li, D. Dai, M. Ovsjanikov, "DiffuMatch: Category-Agnostic Spectral
Diffusion Priors for Robust Non-rigid Shape Matching", ICCV 2025.

A score-based denoiser ``D(x, σ)`` is trained on ``|C|`` of k = 30 functional maps
(EDM framework, VP preconditioning and loss) and used in two ways:

* in the solve, as the **distilled mask** replacing the Laplacian-commutativity mask
  (:func:`distilled_mask` → :func:`geo.fmaps.solve_fmap` ``mask=``);
* as **SDS guidance** on the map (:func:`sds_grad`), in the objective that trains the
  feature network offline (:mod:`.train_features`, the default ``trained`` mode of
  :func:`geo.match`) or optimises a fresh one per pair (``zero_shot`` mode,
  :mod:`.matching`).

    >>> from geo.fmaps.diffumatch import load_prior, distilled_mask, sds_grad
    >>> prior = load_prior()                               # assets/fmaps/diffumatch_prior.pt
    >>> mask = distilled_mask(C12, prior)                   # [30, 30], ≥ 0
    >>> g = sds_grad(C12, prior)                            # descend C12 - η g

Modules: :mod:`.data` (our training pairs and ground-truth maps; Spot and the cactus
held out), :mod:`.prior` (the denoiser), :mod:`.guidance` (mask and SDS),
:mod:`.train` (``python -m geo.fmaps.diffumatch.train``), :mod:`.matching` (the objective and
the matching of one pair) and :mod:`.train_features` (``python -m
geo.fmaps.diffumatch.train_features``; the shipped ``assets/fmaps/diffumatch_features.pt``). Each module docstring says
where we depart from the paper; in short: our own deformation/remeshing training maps
instead of DFAUST/SURREAL, a ~0.2M-parameter transformer instead of DiT-S/4, and a
CPU training budget.
"""

from __future__ import annotations

from .data import build_dataset, ground_truth_fmap, make_pair
from .guidance import distilled_mask, sds_grad
from .prior import DEFAULT_PRIOR, PriorConfig, build_prior, load_prior, save_prior


def __getattr__(name):
    if name == "FmapPrior":
        from .prior import _cls

        return _cls()
    raise AttributeError(name)


__all__ = [
    "FmapPrior",
    "PriorConfig",
    "build_prior",
    "load_prior",
    "save_prior",
    "DEFAULT_PRIOR",
    "distilled_mask",
    "sds_grad",
    "make_pair",
    "ground_truth_fmap",
    "build_dataset",
]
