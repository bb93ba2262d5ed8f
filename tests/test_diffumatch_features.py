"""DiffuMatch's trained feature network: the shipped checkpoint beats its own WKS input on
held-out Spot pairs, checkpoints round-trip and reject bad files clearly, and the
training command runs, checkpoints and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geo.fmaps.api import _prepare
from geo.fmaps.config import DiffuMatchConfig
from geo.fmaps.convert import fmap_to_p2p
from geo.fmaps.diffumatch import load_prior, make_pair
from geo.fmaps.diffumatch.matching import (
    _lstsq_maps,
    build_network,
    load_features,
    masked_solves,
    pair_features,
    pair_inputs,
)
from geo.fmaps.diffumatch.train_features import FeatureTrainConfig, save_features, train


@pytest.fixture(scope="module")
def spot_pairs(spot_unit):
    """Three deformations of Spot (held out of all training), prepared as geo.match does."""
    v, f = spot_unit
    rng = np.random.default_rng(11)
    out = []
    for remesh in (False, True, False):
        p = make_pair(v, f, rng, remesh=remesh)
        s = _prepare(p["src_v"], p["src_f"], "src", 64, "cotan")
        t = _prepare(p["tgt_v"], p["tgt_f"], "tgt", 64, "cotan")
        out.append((s, t, p["p2p_21"]))
    return out


def _error(C, s, t, gt):
    p2p = fmap_to_p2p(C, torch.as_tensor(s.basis[:, :30]), torch.as_tensor(t.basis[:, :30])).numpy()
    return float(np.linalg.norm(s.vertices[p2p] - s.vertices[gt], axis=1).mean())


def test_shipped_features_beat_their_wks_input_on_heldout_spot(spot_pairs):
    """The k = 30 map of the trained features (distilled-mask solve) against the
    least-squares map of the WKS descriptors the network reads, with no refinement."""
    cfg = DiffuMatchConfig()
    net = load_features(None, cfg)
    prior = load_prior()
    g = torch.Generator().manual_seed(0)
    ours, wks = [], []
    for s, t, gt in spot_pairs:
        a, b = pair_inputs(s, t, 30, cfg, optimise=False)  # as geo.match runs it
        with torch.no_grad():
            C = masked_solves(*pair_features(net, a, b), prior, cfg, g)[0]
        ours.append(_error(C, s, t, gt))
        wks.append(_error(_lstsq_maps(a.proj @ a.x, b.proj @ b.x)[0].double(), s, t, gt))
    assert np.mean(ours) < 0.5 * np.mean(wks), (ours, wks)


def test_feature_checkpoint_round_trip_and_bad_files(tmp_path):
    cfg = DiffuMatchConfig(width=16, n_blocks=1, n_features=8)
    torch.manual_seed(0)
    net = build_network(cfg)
    path = save_features(tmp_path / "f.pt", net, cfg, {"note": "test"})
    loaded = load_features(path, cfg)
    for (k1, v1), (k2, v2) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert json.loads(torch.load(path, weights_only=True)["meta"]) == {"note": "test"}
    with pytest.raises(ValueError, match="width"):
        load_features(path, DiffuMatchConfig(width=32, n_blocks=1, n_features=8))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_features(tmp_path / "missing.pt", cfg)
    torch.save({"config": {}, "state_dict": {}}, tmp_path / "prior_like.pt")
    with pytest.raises(ValueError, match="not a DiffuMatch feature checkpoint"):
        load_features(tmp_path / "prior_like.pt", cfg)


def test_training_runs_checkpoints_and_resumes(tmp_path):
    match = DiffuMatchConfig(width=16, n_blocks=1, n_features=16, n_input=16, k_operators=32, n_mask=4, n_sds=2,
                             proper_points=200, max_points=400)
    cfg = FeatureTrainConfig(out=str(tmp_path / "f.pt"), state=str(tmp_path / "state.pt"), shape_cache=str(tmp_path / "shapes.pt"),
                             n_groups=2, n_variants=1, n_vertices=300, p_remesh=0.0, p_cloud=0.5, val_groups=1,
                             match=match, steps=2, val_every=1, checkpoint_every=1, pairs_per_step=1, threads=1)
    train(cfg, argv=[])
    st = torch.load(cfg.state, weights_only=True)
    assert st["step"] == 2
    hist = json.loads(st["history"])
    assert [h["step"] for h in hist][:2] == [1, 2] and all(np.isfinite(h["val_error"]) for h in hist)
    net = load_features(cfg.out, match)
    assert sum(p.numel() for p in net.parameters()) > 0
    # resume continues from the saved step; the shape cache is reused
    cfg.steps, cfg.resume = 3, True
    train(cfg, argv=[])
    assert torch.load(cfg.state, weights_only=True)["step"] == 3
