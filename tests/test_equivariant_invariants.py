"""Invariant attributes, orientation grids and graph construction (geo.equivariant)."""

import math

import numpy as np
import pytest
import torch

from geo.equivariant.graph import (
    batch_from_sizes,
    collate_clouds,
    fully_connected_graph,
    knn_graph,
    lift_to_edge_orientations,
    radius_graph,
)
from geo.equivariant.grids import design_error, design_strength, grid_covering_radius, orientation_grid, s1_grid, s2_grid
from geo.equivariant.invariants import (
    fiber_invariant,
    pair_distance,
    point_cloud_invariants,
    relative_positions,
    spatial_invariants,
)
from geo.transforms import axis_angle_to_rotmat

TOL = 1e-10


def random_rigid(dim, gen):
    """Random proper rotation (float64) and translation in R^dim."""
    if dim == 3:
        R = axis_angle_to_rotmat(torch.randn(3, generator=gen, dtype=torch.float64) * 2)
    else:
        a = float(torch.rand((), generator=gen, dtype=torch.float64)) * 2 * math.pi
        R = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    return R, torch.randn(dim, generator=gen, dtype=torch.float64) * 5


@pytest.mark.parametrize("dim", [2, 3])
def test_distance_and_spatial_invariants_are_se_n_invariant(dim):
    g = torch.Generator().manual_seed(dim)
    pos = torch.randn(20, dim, generator=g, dtype=torch.float64)
    edges = fully_connected_graph(torch.zeros(20, dtype=torch.long))
    grid = orientation_grid(dim, 16)
    R, t = random_rigid(dim, g)
    pos2, grid2 = pos @ R.T + t, grid @ R.T  # the group acts on positions and orientations
    d1, d2 = pair_distance(pos, edges), pair_distance(pos2, edges)
    assert torch.allclose(d1, d2, atol=TOL, rtol=0)
    a1 = spatial_invariants(relative_positions(pos, edges), grid)
    a2 = spatial_invariants(relative_positions(pos2, edges), grid2)
    assert a1.shape == (len(edges[0]), 16, 2)
    assert (a1 - a2).abs().max() < TOL
    f1, f2 = fiber_invariant(grid), fiber_invariant(grid2)
    assert f1.shape == (16, 16, 1) and (f1 - f2).abs().max() < TOL


def test_spatial_invariants_values():
    # along / orthogonal decomposition, and the signed 2D variant
    rel = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)
    grid = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(spatial_invariants(rel, grid)[0], torch.tensor([[3.0, 4.0], [0.0, 5.0]], dtype=torch.float64))
    a = spatial_invariants(torch.tensor([[1.0, 2.0], [1.0, -2.0]], dtype=torch.float64), torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert a[:, 0].tolist() == [[1.0, 2.0], [1.0, -2.0]]  # left and right stay distinct in SE(2)


@pytest.mark.parametrize("dim", [2, 3])
def test_point_cloud_mode_invariants_are_se_n_invariant(dim):
    g = torch.Generator().manual_seed(10 + dim)
    pos = torch.randn(12, dim, generator=g, dtype=torch.float64)
    edges = knn_graph(pos, 4)
    lp, lo, base, le = lift_to_edge_orientations(pos, edges)
    R, t = random_rigid(dim, g)
    lp2, lo2, base2, le2 = lift_to_edge_orientations(pos @ R.T + t, edges)
    assert torch.equal(le, le2) and torch.equal(base, base2)
    a1, a2 = point_cloud_invariants(lp, lo, le), point_cloud_invariants(lp2, lo2, le2)
    assert a1.shape == (le.shape[1], 3) and (a1 - a2).abs().max() < TOL


def test_lift_to_edge_orientations_matches_brute_force():
    pos = torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    edges = knn_graph(pos, 3)
    lp, lo, base, le = lift_to_edge_orientations(pos, edges)
    assert len(lp) == edges.shape[1] and torch.allclose(lo.norm(dim=-1), torch.ones(len(lo), dtype=torch.float64))
    base_edges = {(int(s), int(d)) for s, d in edges.T} | {(i, i) for i in range(9)}
    expect = {(a, b) for a in range(len(lp)) for b in range(len(lp)) if (int(base[a]), int(base[b])) in base_edges}
    got = {(int(s), int(d)) for s, d in le.T}
    assert got == expect and le.shape[1] == len(expect)


# ------------------------------------------------------------------ grids


def test_s1_grid_uniform():
    g = s1_grid(12)
    assert g.shape == (12, 2) and np.allclose(np.linalg.norm(g, axis=1), 1)
    assert np.allclose(np.diff(np.unwrap(np.arctan2(g[:, 1], g[:, 0]))), 2 * np.pi / 12)


@pytest.mark.parametrize("n", [8, 12, 16, 32])
def test_s2_grid_deterministic_cached_and_spread(n):
    a, b = s2_grid(n), s2_grid(n)
    assert a.shape == (n, 3) and np.array_equal(a, b)
    a[0] = 0  # callers get a copy: the cache is not corrupted
    assert np.allclose(np.linalg.norm(s2_grid(n), axis=1), 1)
    d = np.linalg.norm(s2_grid(n)[:, None] - s2_grid(n)[None], axis=-1) + 9 * np.eye(n)
    # nearest-neighbour distances are nearly equal (uniform spread); 12 gives the icosahedron
    assert d.min() > 0.85 * np.sqrt(8 * np.pi / (n * np.sqrt(3)))  # hexagonal-packing spacing
    if n == 12:
        assert abs(d.min() - 1.0514622) < 1e-3  # icosahedron edge
    assert grid_covering_radius(s2_grid(n)) < 3.3 / math.sqrt(n)


def test_s2_grid_is_a_spherical_design():
    # equal-weight quadrature exact up to degree t (the Thomson grid alone is not: errors of 2-3% at degree 3-4)
    for n, t in ((12, 5), (16, 5), (32, 7), (64, 8)):
        assert design_strength(s2_grid(n)) >= t, n
    assert design_error(s2_grid(16, design=False), 3) > 0.02
    g = s2_grid(16)
    assert np.abs(3 / 16 * g.T @ g - np.eye(3)).max() < 1e-7  # tight frame: exact vector readout


def test_kernel_attributes_are_invariant_and_equivalent_to_the_paper_attributes():
    from geo.equivariant.invariants import kernel_attributes, spatial_invariants

    g = torch.Generator().manual_seed(3)
    rel, grid = torch.randn(20, 3, generator=g, dtype=torch.float64), orientation_grid(3, 16)
    R = axis_angle_to_rotmat(torch.tensor([0.3, -2.0, 1.1], dtype=torch.float64))
    a = kernel_attributes(rel, grid, 2.0)
    assert torch.allclose(kernel_attributes(rel @ R.T, grid @ R.T, 2.0), a, atol=1e-10)
    along, perp = spatial_invariants(rel, grid).unbind(-1)
    assert torch.allclose(a[..., 0] * 2, along, atol=1e-12)
    assert torch.allclose(((a[..., 1] * 2) ** 2 - along**2).clamp_min(0).sqrt(), perp, atol=1e-10)


def test_s2_grid_depends_on_seed_and_size_is_configurable():
    assert not np.allclose(s2_grid(10, seed=0), s2_grid(10, seed=1))
    assert orientation_grid(3, 20).shape == (20, 3) and orientation_grid(2, 5).shape == (5, 2)
    with pytest.raises(ValueError):
        orientation_grid(4, 10)


# ------------------------------------------------------------------ graphs


def _brute(pos, batch, pred):
    n = len(pos)
    d = torch.cdist(pos, pos)
    return {(j, i) for i in range(n) for j in range(n) if batch[i] == batch[j] and pred(d, i, j)}


@pytest.mark.parametrize("method", ["torch", "kdtree"])
@pytest.mark.parametrize("loop", [False, True])
def test_radius_graph_matches_brute_force_without_cross_cloud_edges(method, loop):
    g = torch.Generator().manual_seed(0)
    pos, batch = collate_clouds([torch.randn(n, 3, generator=g) for n in (7, 1, 12, 5)])
    e = radius_graph(pos, 1.3, batch, loop=loop, method=method, chunk=5)
    expect = _brute(pos, batch, lambda d, i, j: d[i, j] < 1.3 and (loop or i != j))
    assert {(int(s), int(t)) for s, t in e.T} == expect and e.shape[1] == len(expect)
    assert bool((e[1][1:] >= e[1][:-1]).all())  # sorted by receiver


@pytest.mark.parametrize("method", ["torch", "kdtree"])
def test_knn_graph_matches_brute_force(method):
    g = torch.Generator().manual_seed(1)
    pos, batch = collate_clouds([torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (9, 3, 15)])
    e = knn_graph(pos, 4, batch, method=method, chunk=7)
    d = torch.cdist(pos, pos) + torch.where(batch[:, None] == batch[None], 0.0, math.inf) + torch.eye(len(pos)) * 1e9
    for i in range(len(pos)):
        senders = sorted(int(s) for s in e[0][e[1] == i])
        k = min(4, int((batch == batch[i]).sum()) - 1)
        assert senders == sorted(torch.topk(d[i], k, largest=False).indices.tolist())
    assert bool((batch[e[0]] == batch[e[1]]).all())


def test_fully_connected_graph_counts():
    batch = batch_from_sizes([3, 5, 1])
    assert fully_connected_graph(batch).shape[1] == 9 + 25 + 1
    e = fully_connected_graph(batch, loop=False)
    assert e.shape[1] == 6 + 20 and bool((batch[e[0]] == batch[e[1]]).all()) and bool((e[0] != e[1]).all())


def test_graph_inputs_checked():
    with pytest.raises(ValueError, match="sorted"):
        radius_graph(torch.randn(4, 3), 1.0, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"\[N, n\]"):
        knn_graph(torch.randn(4), 2)
