"""CoherentGS: per-pixel initialisation, decoder coherence, flow loss, plane sweep, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scenes.coherent.config import CoherentConfig
from scenes.coherent.views import prepare_view

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "spot_sample"


@pytest.fixture(scope="module")
def graph():
    from scenes.data import load_capture

    return load_capture(SAMPLE, holdout_every=None)


def _views(graph, ids, res):
    return [prepare_view(graph[f"/cameras/r_{i:03d}"], res) for i in ids]


def test_pixel_init_reproduces_view(graph):
    """Step 0: the training view rendered from its own camera with its own per-pixel Gaussians.

    With opacity 0.999, a 3D std-dev of 0.02 x half a pixel footprint and the rasterizer's
    low-pass filter eps2d lowered to 1e-4 px^2, each pixel sees exactly its own Gaussian,
    so the render equals the image up to the 0.1 % of background behind an opacity of 0.999.
    Stated tolerance: max |render - image| <= 2e-3 on every pixel with a Gaussian, and
    the rendered depth equals the input depth to 1e-4 relative.
    """
    from scenes.render import render_camera
    from scenes.coherent.representation import PixelGaussians

    vs = _views(graph, (1, 5, 11), 48)
    m = PixelGaussians(vs, [v.depth for v in vs], CoherentConfig(radius_mult=0.02, init_opacity=0.999))
    v = vs[0]
    own = m.index < v.height * v.width
    with torch.no_grad():
        means = m.means_from_depth(m.depth_maps())
        rgb, depth, alpha = render_camera(means[own], m.quats[own], torch.exp(m.log_scales[own]), m.opacities()[own],
                                          m.sh()[own], 0, v.model, v.c2w, eps2d=1e-4)
    keep = m.keep[0]
    gt = torch.as_tensor(v.image)
    assert float((rgb - gt).abs()[keep].max()) <= 2e-3
    rel = ((depth - torch.as_tensor(v.depth)).abs() / torch.as_tensor(v.depth).clamp_min(1e-6))[keep]
    assert float(rel.max()) <= 1e-4
    # background pixels stay background
    assert float((rgb - 1.0).abs()[~keep].max()) <= 2e-3


def test_decoder_shape_and_coherence():
    """Decoder: [V, K, H, W] output, zero residual at init, and one gradient step that pulls a single
    pixel moves its neighbours the same way (a free per-pixel depth would move that pixel only)."""
    from scenes.coherent.decoder import ImplicitDecoder, combine_segments, view_encoding

    torch.manual_seed(0)
    V, K, H, W = 3, 2, 24, 20
    dec = ImplicitDecoder(H, W, K, 20, ngf=2)
    enc = view_encoding(V, 10)
    assert enc.shape == (V, 20, 1, 1)
    out = dec(enc)
    assert out.shape == (V, K, H, W)
    onehot = torch.zeros(V, K, H, W)
    onehot[:, 0, :, : W // 2] = 1
    onehot[:, 1, :, W // 2 :] = 1
    res = combine_segments(out, onehot)
    assert res.shape == (V, H, W) and float(res.detach().abs().max()) == 0.0
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        r = combine_segments(dec(enc), onehot)
        (-r[0, 12, 5]).backward()  # raise one pixel of view 0
        opt.step()
    r = combine_segments(dec(enc), onehot).detach()
    centre = float(r[0, 12, 5])
    assert centre > 0
    for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0), (1, 1)):
        nb = float(r[0, 12 + di, 5 + dj])
        assert nb > 0.5 * centre, (di, dj, nb, centre)  # neighbours move together
    # and the field is smooth: neighbouring differences are small next to the displacement
    dx = (r[0, :, 1 : W // 2] - r[0, :, : W // 2 - 1]).abs().max()
    assert float(dx) < 0.5 * centre


def test_flow_loss_zero_for_exact_geometry(graph):
    """Ground-truth depth + dataset flow: the flow loss vanishes; perturbing depth makes it positive."""
    from scenes.coherent.flow import pair_flows
    from scenes.coherent.losses import flow_consistency_loss
    from scenes.coherent.representation import PixelGaussians
    from scenes.coherent.views import dataset_frame_index

    ids = (1, 2, 3)
    vs = [prepare_view(graph[f"/cameras/r_{i:03d}"], None, True, dataset_frame_index(graph, graph[f"/cameras/r_{i:03d}"])) for i in ids]
    flows, src = pair_flows(vs, "dataset", SAMPLE)
    assert src == "dataset" and len(flows) == 6
    fl = {k: (torch.as_tensor(f).permute(2, 0, 1)[None], torch.as_tensor(ok)[None, None]) for k, (f, ok) in flows.items()}
    m = PixelGaussians(vs, [v.depth for v in vs], CoherentConfig())
    with torch.no_grad():
        exact = sum(float(flow_consistency_loss(m.xyz_maps(), m.keep, fl, r, True, m.median_depth)) for r in range(3)) / 3
        z = m.depth_maps()
        noise = 1 + 0.05 * torch.sin(torch.arange(z.numel()).reshape(z.shape) * 0.37)
        perturbed = sum(float(flow_consistency_loss(m.xyz_maps(z * noise), m.keep, fl, r, True, m.median_depth)) for r in range(3)) / 3
        scaled = sum(float(flow_consistency_loss(m.xyz_maps(z * 1.05), m.keep, fl, r, True, m.median_depth)) for r in range(3)) / 3
    # exact geometry: only float16 flow storage and bilinear sampling of a curved surface remain
    assert exact < 2e-3
    assert perturbed > 5 * exact and perturbed > 5e-3
    assert scaled > 5 * exact


def test_plane_sweep_recovers_depth(graph):
    """Plane sweep on three ring views 22.5 degrees apart at 128 px.

    Stated error: on pixels with confidence >= 0.2 (at least 40 % of the object), the
    median relative depth error is below 3 % and 75 % of them are within 5 %.
    """
    from scenes.coherent.mvs import depth_range, plane_sweep_depth

    vs = _views(graph, (0, 1, 2), None)
    near, far = depth_range(vs)
    d, conf = plane_sweep_depth(vs[1], [vs[0], vs[2]], near, far, planes=48, window=5)
    gt, mask = vs[1].depth, vs[1].mask & (vs[1].depth > 0)
    k = mask & (conf >= 0.2)
    assert k.sum() >= 0.4 * mask.sum()
    rel = np.abs(d - gt)[k] / gt[k]
    assert np.median(rel) < 0.03
    assert (rel < 0.05).mean() > 0.75


def test_depth_segments_order():
    from scenes.coherent.representation import depth_segments

    d = np.concatenate([np.full((4, 4), 1.0), np.full((4, 4), 2.0), np.full((4, 4), 8.0)], 1).astype(np.float32)
    lab = depth_segments(d, d > 0, 3)
    assert (lab[:, :4] == 0).all() and (lab[:, 4:8] == 1).all() and (lab[:, 8:] == 2).all()


@pytest.mark.parametrize("method", ["coherent", "3dgs"])
def test_checkpoint_resume_matches_uninterrupted(tmp_path, method):
    """Same seed: stop after k steps (checkpoint), resume to the end == one uninterrupted run."""
    from scenes.coherent.config import BaselineConfig
    from scenes.coherent.train import reconstruct

    cfg = CoherentConfig(align_iters=2, multisample_start=0.5, sh_ramp_start=0.3, sh_ramp_every=0.2, scale_reset_every=2)
    bcfg = BaselineConfig(num_random=300, refine_start=0.2, refine_every=2, reset_every=5)
    kw = dict(method=method, iters=6, resolution=24, seed=3, checkpoint_every=0, coherent=cfg, baseline=bcfg,
              exports=False, progress=False, log=lambda *a: None)
    full = reconstruct(SAMPLE, tmp_path / "full", **kw)["trainer"].cloud_arrays()
    part = reconstruct(SAMPLE, tmp_path / "split", stop_after=4, **kw)
    assert part["stopped"] and (tmp_path / "split" / "checkpoint.pt").is_file()
    resumed = reconstruct(SAMPLE, tmp_path / "split", resume=True, **kw)["trainer"].cloud_arrays()
    assert full.keys() == resumed.keys()
    for k in full:
        assert full[k].shape == resumed[k].shape, k
        np.testing.assert_allclose(resumed[k], full[k], rtol=0, atol=1e-6, err_msg=k)
