"""gsplat's DefaultStrategy densifies and prunes on CPU from geo.raster's means2d gradients."""

from __future__ import annotations

import pytest
import torch
from gsplat.strategy import DefaultStrategy

from geo.raster import rasterize

W, H = 48, 40


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # tiny scenes gain nothing from intra-op threads, and on a shared CPU the
    # OpenMP barriers of many small ops cost more than they save
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _params(n_small=12, n_large=12, n_faint=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_small + n_large + n_faint
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.6, 0.5, 0.3]) + torch.tensor([0.0, 0.0, 4.0])
    means[n_small + n_large :, 2] = -2.0  # faint ones sit behind the camera: never visible, never grown
    scale = torch.cat([torch.full((n_small,), 0.005), torch.full((n_large,), 0.08), torch.full((n_faint,), 0.05)])
    log_scales = torch.log(scale)[:, None].repeat(1, 3)
    logit_op = torch.cat([torch.full((n_small + n_large,), 1.0), torch.full((n_faint,), -8.0)])  # sigmoid(-8) < 0.005
    params = torch.nn.ParameterDict(
        {
            "means": means,
            "scales": log_scales,
            "quats": torch.randn(n, 4, generator=g),
            "opacities": logit_op,
            "colors": torch.rand(n, 3, generator=g),
        }
    )
    return params, (n_small, n_large, n_faint)


@pytest.mark.parametrize("absgrad", [False, True])
def test_default_strategy_grows_and_prunes(absgrad):
    params, (n_small, n_large, n_faint) = _params()
    n0 = len(params["means"])
    optimizers = {k: torch.optim.Adam([p], lr=1e-4) for k, p in params.items()}
    strategy = DefaultStrategy(
        refine_start_iter=0, refine_every=2, reset_every=1000, grow_grad2d=1e-12,
        grow_scale3d=0.01, absgrad=absgrad, verbose=False,
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[40.0, 0, 24], [0, 40.0, 20], [0, 0, 1]]])
    target = torch.rand(1, H, W, 3)

    for step in range(3):
        img, _, info = rasterize(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            params["colors"], viewmats, Ks, W, H, absgrad=absgrad,
        )
        if step == 0:
            visible = (info["radii"] > 0).all(-1)[0]
            assert visible[: n_small + n_large].all() and not visible[n_small + n_large :].any()
        strategy.step_pre_backward(params, optimizers, state, step, info)
        (img - target).abs().mean().backward()
        assert info["means2d"].grad is not None and info["means2d"].grad.shape == (1, n0, 2)
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)

    n1 = len(params["means"])
    # small visible ones are duplicated (+1 each), large ones split (2 replace 1),
    # faint ones pruned
    assert n1 == n0 + n_small + n_large - n_faint
    assert (torch.sigmoid(params["opacities"]) >= strategy.prune_opa).all()
    s = torch.exp(params["scales"]).max(-1).values
    assert int((s < 0.01).sum()) == 2 * n_small  # originals and their duplicates
    assert int(((s - 0.08 / 1.6).abs() < 1e-3).sum()) == 2 * n_large  # split halves shrink by 1.6
    # the optimizer state follows the new parameter count
    assert optimizers["means"].state[params["means"]]["exp_avg"].shape[0] == n1
