"""Functional maps: solve, refine, convert, evaluate (torch, batched, CPU or GPU), and
the one-call matching API.

Most users want :func:`match` (also ``geo.match`` and ``geo match A B`` on the command
line), which returns a :class:`Correspondence`:

    >>> import geo
    >>> corr = geo.match(mesh_a, cloud_b)                     # DiffuMatch (default)
    >>> corr = geo.match(mesh_a, mesh_b, method="zoomout")    # WKS solve + ZoomOut
    >>> labels_b = corr.transfer(labels_a); corr.save("map.npz")

Modules: :mod:`.api` (match, input handling, Correspondence), :mod:`.config`
(MatchConfig, DiffuMatchConfig), :mod:`.diffusionnet` (DiffusionNet features),
:mod:`.diffumatch` (the spectral diffusion prior, its training data and training, and
the test-time matching), :mod:`.plot` (the side-by-side transfer picture).

The building blocks read like the method (pyFM's order: preprocess, fit, refine, convert):

    >>> import geo.fmaps as fm
    >>> src, tgt = fm.preprocess(mesh1, 60), fm.preprocess(mesh2, 60)     # eigenbasis + WKS
    >>> C = fm.fit(src, tgt, k=6)                                         # [6, 6], source → target
    >>> C = fm.zoomout(C, src.basis, tgt.basis, k_final=60, mass2=tgt.mass)
    >>> p2p_21 = fm.fmap_to_p2p(C, src.basis, tgt.basis)                 # target vertex → source vertex
    >>> err = fm.geodesic_error(p2p_21, gt_21, mesh1).mean()

Convention: ``C12 [k2, k1]`` maps coefficients of functions on the source (basis
``Φ1``) to the target (``Φ2``); a point map ``p2p_21 [N2]`` gives a source vertex for
each target vertex, and they correspond through ``Φ2 C12 ≈ Φ1[p2p_21]``. Every tensor
function takes an optional leading batch dimension.

References:

* M. Ovsjanikov, M. Ben-Chen, J. Solomon, A. Butscher, L. Guibas, "Functional Maps: A
  Flexible Representation of Maps Between Shapes", SIGGRAPH 2012 — the least-squares
  descriptor-preservation solve, the point-map conversion (nearest neighbour in the
  spectral embedding) and orthogonal ICP refinement (:mod:`.solver`, :mod:`.convert`,
  :func:`.refine.icp`).
* J. Ren, M. Panine, P. Wonka, M. Ovsjanikov, "Structured Regularization of Functional
  Map Computations", SGP 2019 — the resolvent Laplacian-commutativity term
  (:func:`.solver.resolvent_mask`), diagonal in the eigenbases, hence a per-entry mask.
* S. Melzi, J. Ren, E. Rodolà, A. Sharma, P. Wonka, M. Ovsjanikov, "ZoomOut: Spectral
  Upsampling for Efficient Shape Correspondence", SIGGRAPH Asia 2019 (:func:`.refine.zoomout`).
* Evaluation protocol: V. Kim, Y. Lipman, T. Funkhouser, "Blended Intrinsic Maps",
  SIGGRAPH 2011 (geodesic error normalised by ``sqrt(area)``).

Where the code departs:

* The solve keeps only descriptor preservation plus a per-entry mask, as in the
  learned-feature pipelines (DPFM, ULRSSM, DiffuMatch), and solves it row by row in
  closed form. The descriptor *commutativity* (multiplication-operator) term of pyFM /
  Nogneng & Ovsjanikov 2017 is left out: it couples all entries of ``C`` and would need
  an iterative solver.
* The orthogonality term ``μ‖CᵀC − I‖²`` (:func:`geo.regularizers.orthogonality`) makes
  the energy non-quadratic; we start L-BFGS from the closed-form solution instead of the
  original's joint quasi-Newton solve.
* Bijectivity (:func:`.solver.solve_fmap_bijective`) couples ``C12`` and ``C21`` through
  ``‖C12 C21 − I‖²`` and ``‖C21 C12 − I‖²``, each used for the map it splits by rows,
  and alternates exact row-wise solves (a fixed-point scheme, not a descent on one energy).
* The resolvent mask scales both spectra by their joint maximum eigenvalue before the
  power ``γ`` (as the DPFM/ULRSSM code does), so the mask is scale-invariant.
* ZoomOut grows both sides together (square maps) and uses ``Φ2ᵀ M2`` as the
  pseudo-inverse when the target mass is given (Euclidean ``lstsq`` otherwise).
"""

from __future__ import annotations

from geo._lazy import lazy_exports

# Submodules load on first use, so that ``geo.fmaps.config`` (imported by the CLI to
# build its flags) does not pull in torch.
_EXPORTS = {
    "match": "api",
    "MatchConfig": "config",
    "DiffuMatchConfig": "config",
    "Correspondence": "api",
    "ShapeSpectrum": "solver",
    "preprocess": "solver",
    "project": "solver",
    "resolvent_mask": "solver",
    "solve_fmap": "solver",
    "solve_fmap_bijective": "solver",
    "fmap_energy": "solver",
    "fit": "solver",
    "zoomout": "refine",
    "icp": "refine",
    "fmap_to_p2p": "convert",
    "p2p_to_fmap": "convert",
    "nearest_neighbor": "convert",
    "geodesic_error": "evaluate",
    "coverage": "evaluate",
    "bijectivity": "evaluate",
    "surface_area": "evaluate",
    "DiffusionNet": "diffusionnet",
    "spectral_operators": "diffusionnet",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
