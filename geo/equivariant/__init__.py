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
  1/r² energy from an unseeded draw), so it is reproducible and cached.
* The reference N-body model rotates the grid randomly per graph at every
  forward pass; here the grid is fixed, so the model is a deterministic
  function whose (small) rotation-equivariance error is measured in the tests.
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
