"""DiffuMatch prior: training pairs, ground-truth maps, the shipped denoiser, the
distilled mask and SDS guidance. Held-out data: Spot (never used to train the prior)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from geo.fmaps.diffumatch import (
    PriorConfig,
    build_prior,
    distilled_mask,
    ground_truth_fmap,
    load_prior,
    make_pair,
    sds_grad,
    save_prior,
)

@pytest.fixture(scope="module")
def prior():
    return load_prior()  # the shipped prior must exist: FileNotFoundError names DEFAULT_PRIOR


@pytest.fixture(scope="module")
def heldout_map(spot_unit):
    """|C| of a fresh Spot deformation (Spot is held out of the prior's training)."""
    pair = make_pair(*spot_unit, np.random.default_rng(7), strength=0.5)
    return ground_truth_fmap(pair, k=30).abs().float()


def test_make_pair_shared_connectivity_keeps_vertex_identity(spot_unit):
    v, f = spot_unit
    pair = make_pair(v, f, np.random.default_rng(0), strength=0.5)
    assert np.array_equal(pair["p2p_21"], np.arange(len(v)))
    assert np.array_equal(pair["tgt_f"], f) and np.array_equal(pair["src_v"], v)
    assert np.abs(pair["tgt_v"] - v).max() > 0.05  # it did deform
    # near-isometric: edge lengths mostly preserved
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    ratio = np.linalg.norm(np.diff(pair["tgt_v"][e], axis=1), axis=-1) / np.linalg.norm(np.diff(v[e], axis=1), axis=-1)
    assert np.median(np.abs(ratio[:, 0] - 1)) < 0.15


def test_make_pair_remeshed_ground_truth_is_nearest_surface_vertex(spot_unit):
    v, f = spot_unit
    pair = make_pair(v, f, np.random.default_rng(1), remesh=True, strength=0.0)
    assert len(pair["tgt_v"]) != len(v)
    edge = np.linalg.norm(v[f[:, 0]] - v[f[:, 1]], axis=1).mean()
    d = np.linalg.norm(pair["tgt_v"] - v[pair["p2p_21"]], axis=1)
    assert d.mean() < edge and np.quantile(d, 0.99) < 2 * edge


def test_identity_pair_fmap_is_signed_identity(spot_unit):
    pair = make_pair(*spot_unit, np.random.default_rng(0), strength=0.0)
    C = ground_truth_fmap(pair, k=30)
    assert C.shape == (30, 30)
    assert torch.allclose(C.abs(), torch.eye(30, dtype=C.dtype), atol=1e-6)


def test_shipped_prior_denoises_heldout_maps(prior, heldout_map):
    C = heldout_map
    g = torch.Generator().manual_seed(0)
    for sigma in (0.05, 0.1, 0.2, 0.5):
        x = C + sigma * torch.randn((16, 30, 30), generator=g)
        d = prior(x, sigma)
        ratio = ((d - C).flatten(1).norm(dim=1) / (x - C).flatten(1).norm(dim=1)).mean()
        assert ratio < 0.8, f"sigma={sigma}: ||D(x)-C|| / ||x-C|| = {ratio:.3f}"


def test_prior_shapes_and_input_check(prior):
    x = torch.rand(30, 30)
    assert prior(x, 0.1).shape == (30, 30)
    assert prior(torch.rand(3, 30, 30), torch.tensor([0.1, 0.2, 0.3])).shape == (3, 30, 30)
    with pytest.raises(ValueError, match=r"\[B, 30, 30\]"):
        prior(torch.rand(20, 20), 0.1)


def test_distilled_mask_penalises_off_diagonal(prior):
    g = torch.Generator().manual_seed(0)
    C = torch.eye(30) + 0.02 * torch.randn((30, 30), generator=g)
    m = distilled_mask(C, prior, sigma=1.0, n_samples=64, generator=g)
    assert m.shape == (30, 30) and (m >= 0).all() and m.min() == 0
    off = ~torch.eye(30, dtype=torch.bool)
    assert m.diagonal().mean() < 0.75 * m[off].mean()
    mb = distilled_mask(torch.stack([C, -C]), prior, n_samples=16, generator=g)
    assert mb.shape == (2, 30, 30) and (mb >= 0).all()
    assert distilled_mask(C, prior, n_samples=16, normalize=True, generator=g).min() == 0


def test_sds_grad_small_at_data_and_points_to_data(prior, heldout_map):
    C = heldout_map
    g = torch.Generator().manual_seed(0)
    grad0 = sds_grad(C, prior, sigma_scale=0.3, batch_size=64, generator=g, absolute=False)
    assert grad0.shape == C.shape and not grad0.requires_grad
    assert abs(float(grad0.mean())) < 0.02
    x = C + 0.3 * torch.randn((30, 30), generator=g)
    grad = sds_grad(x, prior, sigma_scale=0.3, batch_size=64, generator=g, absolute=False)
    assert grad.norm() > 2 * grad0.norm()
    cos = torch.nn.functional.cosine_similarity((-grad).flatten(), (C - x).flatten(), dim=0)
    assert cos > 0.5, f"cos(-grad, C - x) = {cos:.3f}"
    # signed input: the chain rule through |C| flips the gradient with the sign
    gs = sds_grad(-C, prior, batch_size=8, generator=torch.Generator().manual_seed(1))
    ga = sds_grad(C, prior, batch_size=8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(gs, -ga)


def test_save_load_round_trip_exact(tmp_path):
    torch.manual_seed(0)
    model = build_prior(PriorConfig(width=32, depth=2, heads=2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.mean.copy_(torch.rand(30, 30))
        model.scale.fill_(0.3)
    path = save_prior(tmp_path / "p.pt", model, {"note": "test", "t": (1, 2)})
    loaded = load_prior(path)
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert loaded.meta == {"note": "test", "t": [1, 2]}
    x = torch.rand(4, 30, 30)
    with torch.no_grad():
        assert torch.equal(model.eval()(x, 0.2), loaded(x, 0.2))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_prior(tmp_path / "missing.pt")
