"""SE(n)-equivariant networks in position-orientation space: PΘNITA.

Bekkers, Vadgama, Hesselink, van der Linden, Romero. "Fast, Expressive SE(n)
Equivariant Networks through Weight-Sharing in Position-Orientation Space",
ICLR 2024 (arXiv:2310.02970).

Modules, in the order the method is described:

* :mod:`.invariants` — the invariant attributes of point pairs (Thm. 1);
* :mod:`.grids` — orientation grids on S^1 / S^2;
* :mod:`.graph` — radius / kNN / fully connected graphs for batches of clouds,
  and the point-cloud-mode lifting (edge directions as orientations);
* :mod:`.conv` — shared kernel bases, the separable fiber-bundle convolution,
  ConvNeXt blocks;
* :mod:`.ponita` — the networks (fiber-bundle and point-cloud mode) and task
  heads (N-body, invariant cloud head, per-point vector head);
* :mod:`.egnn` — the EGNN baseline (Satorras et al., ICML 2021);
* :mod:`.nbody` — the charged-particle N-body data set
  (``python -m geo.equivariant.nbody --full`` writes the full split).

Where this code departs from the paper / its reference implementation:

* Plain torch: scatter sums are ``index_add_``; graphs are built with chunked
  ``torch.cdist`` or a scipy KD-tree (no torch_scatter / torch_cluster / pyg).
* The S^2 grid is made by annealed projected gradient descent on the Coulomb
  (1/r) energy from a fixed seed in numpy float64 (the reference uses SGD on a
  1/r² energy from an unseeded draw), then refined to a spherical t-design
  (equal-weight quadrature exact up to degree t: 5 at 12 and 16 points, 7 at
  32, 8 at 64), so it is reproducible, cached, and integrates smooth functions
  on the sphere far better than the Thomson grid alone.
* The kernel basis embeds ``[oᵀΔx, ‖Δx‖] / s`` instead of the paper's
  ``[oᵀΔx, ‖Δx − (oᵀΔx)o‖]``: the same information (a bijective change of
  variables in 3D), but smooth in ``o`` (the orthogonal norm has a kink at
  ``o = ±Δx/‖Δx‖``), and scaled by a kernel length scale ``s``
  (``PonitaConfig.length_scale``; the N-body head uses 4, about the median
  particle distance).
* The N-body head can condition the spatial kernel on the invariant edge
  attribute ``q_i q_j`` (``NBodyPonita(edge_charges=True)``, via
  ``PonitaConfig.edge_dim``), which EGNN's N-body model gets as its edge
  input and the paper's PΘNITA does not; the benchmark turns it on so both
  models see the same inputs. It does not touch the symmetries (it is
  invariant) and cut PΘNITA's short-budget test MSE by ~20 % (0.038 → 0.029
  after ~23 epochs on 500 systems).
* N-body batches (equal-size, fully connected clouds) run in dense mode
  (``Ponita.forward_dense``, tensors ``[B, N, N, O, C]``), like the reference
  code's ``dense_mode``; the graph path gives the same numbers.
* The reference N-body model is trained with random rotations of each system
  (equivalently, of the grid); the benchmark does the same. The model itself
  keeps a fixed grid, so it is a deterministic function.

Rotation equivariance of the fiber-bundle network (the grid makes it
approximate): relative error ``‖R f(x) − f(Rx + t)‖ / ‖f(x)‖`` of the vector
output of an untrained 3-layer, 32-channel N-body network in float64, on
unit-Gaussian clouds: ~0.04 at 8 orientations, ~5e-3 at 12, 2–6e-3 at 16,
2–4e-3 at 20, ~5e-5 at 32 and ~6e-6 at 64 (before these changes: 0.07–0.08
at 16, 0.013–0.02 at 32, 0.005–0.008 at 64). The error is a quadrature error
of the sums over the grid and grows with ``distance / s``: on N-body systems
(median distance 3.7) it is ~0.013 at 16, 2e-3 at 32, 6e-4 at 64 orientations.
Trained models: see ``tools/bench/equivariant.py``. The tolerances are asserted
in ``tests/test_equivariant_ponita.py``.

* In 2D the orthogonal spatial invariant is the signed component ``o⊥ᵀΔx``
  (as in the reference code), not its absolute value.
* Only depthwise (groups = channels) convolutions are provided, as used in the
  paper's ConvNeXt blocks; the attention variant is not implemented.
* The N-body simulator is vectorised over simulations and seeded per
  simulation, so it reproduces the *distribution* of the EGNN data set, not its
  exact files.
"""

from .conv import ConvNextBlock, KernelBasis, PointCloudConv, PolynomialFeatures, SeparableFiberBundleConv, polynomial_cutoff
from .graph import batch_from_sizes, collate_clouds, fully_connected_graph, knn_graph, lift_to_edge_orientations, radius_graph
from .grids import orientation_grid, s1_grid, s2_grid
from .invariants import fiber_invariant, pair_distance, point_cloud_invariants, relative_positions, spatial_invariants
from .ponita import (
    NBodyPonita,
    PointCloudInvariantHead,
    PointVectorHead,
    Ponita,
    PonitaConfig,
    PonitaPointCloud,
    lift_scalars,
    lift_vectors,
    pool_clouds,
    scalar_readout,
    vector_readout,
)
