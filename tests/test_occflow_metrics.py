"""Occupancy / flow metrics, the voxel ray caster, the synthetic scenes and the model (scenes.occflow)."""

import math

import numpy as np
import pytest
import torch

from scenes.occflow.metrics import OccupancyMIoU, RayMetrics, confusion_matrix, lidar_ray_directions
from scenes.occflow.raycast import cast_rays


def test_occ3d_miou_hand_computed():
    gt = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    mask = torch.tensor([True, True, True, True, True, False])  # last voxel not camera-visible
    cm = confusion_matrix(pred, gt, 3, mask)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    m = OccupancyMIoU(3, free_index=2)
    m.update(pred[:3], gt[:3], mask[:3])  # accumulated over a "split" of two samples
    m.update(pred[3:], gt[3:], mask[3:])
    out = m.compute()
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; free excluded from the mean
    assert out["iou"][0] == pytest.approx(0.5) and out["iou"][1] == pytest.approx(2 / 3)
    assert out["miou"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_miou_skips_absent_classes():
    m = OccupancyMIoU(4, free_index=3)
    m.update(torch.tensor([0, 3]), torch.tensor([0, 3]))
    assert m.compute()["miou"] == pytest.approx(1.0)  # classes 1, 2 absent: NaN, skipped


def test_rayiou_and_mave_hand_computed():
    # classes: 0 car (dynamic), 1 pole, 2 free
    m = RayMetrics(3, free_index=2, dynamic_classes=[0])
    gt_cls = torch.tensor([0, 0, 1, 2])
    gt_dist = torch.tensor([5.0, 5.0, 5.0, math.inf])
    pred_cls = torch.tensor([0, 1, 1, 0])
    pred_dist = torch.tensor([5.5, 5.0, 7.0, 3.0])
    gt_flow = torch.zeros(4, 2)
    pred_flow = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [9.0, 9.0]])
    m.update_rays(pred_cls, pred_dist, gt_cls, gt_dist, pred_flow, gt_flow)
    out = m.compute()
    # the free-gt ray is dropped; counts gt (2, 1), pred (1, 2)
    # tau=1: car TP 1 -> 1/(2+1-1); pole TP 0 -> 0.   tau=2: same (|7-5| < 2 is false)
    # tau=4: car 1/2, pole TP 1 -> 1/(1+2-1)
    assert out["rayiou@1"] == pytest.approx(0.25)
    assert out["rayiou@2"] == pytest.approx(0.25)
    assert out["rayiou@4"] == pytest.approx(0.5)
    assert out["rayiou"] == pytest.approx(1 / 3)
    assert out["mave"] == pytest.approx(1.0)  # the one TP car ray at 2 m has error |(1, 0)|


def test_rayiou_on_a_tiny_grid():
    # 6 x 1 x 1 grid of 1 m voxels; a car at x in [3, 4); rays along +x from x = 0.5
    gt = torch.full((6, 1, 1), 2)
    gt[3] = 0
    near = torch.full((6, 1, 1), 2)
    near[4] = 0  # one voxel too far: 1 m off
    o = torch.tensor([[0.5, 0.5, 0.5]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    m = RayMetrics(3, free_index=2, dynamic_classes=[0])
    m.update(near, gt, (0, 0, 0), 1.0, o, ray_dirs=d)
    out = m.compute()
    assert out["rayiou@1"] == pytest.approx(0.0)  # error 1 is not < 1
    assert out["rayiou@2"] == pytest.approx(1.0) and out["rayiou@4"] == pytest.approx(1.0)


def test_cast_rays_matches_dense_marching():
    g = torch.Generator().manual_seed(0)
    occ = torch.rand(7, 6, 5, generator=g) < 0.12
    origin, vs = (-1.0, -2.0, 0.5), 0.5
    R = 300
    starts = torch.tensor(origin) + torch.rand(R, 3, generator=g) * torch.tensor([7, 6, 5]) * vs
    dirs = torch.randn(R, 3, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    hits = cast_rays(occ, origin, vs, starts, dirs)
    # reference: march in 1e-3 m steps
    ts = torch.arange(0, 12, 1e-3)
    pts = starts[:, None] + dirs[:, None] * ts[None, :, None]
    ijk = ((pts - torch.tensor(origin)) / vs).floor().long()
    inside = ((ijk >= 0) & (ijk < torch.tensor([7, 6, 5]))).all(-1)
    flat = (ijk.clamp_min(0) * torch.tensor([30, 5, 1])).sum(-1).clamp_max(occ.numel() - 1)
    hit = inside & occ.reshape(-1)[flat]
    # a ray that leaves the grid never re-enters (convex box), so the first hit is the answer
    first = torch.where(hit.any(1), hit.float().argmax(1), torch.full((R,), -1))
    ref_idx = torch.where(first >= 0, flat[torch.arange(R), first.clamp_min(0)], torch.full((R,), -1))
    agree = ref_idx == hits.index
    assert agree.float().mean() > 0.97  # marching can skip voxel corners
    ok = agree & (ref_idx >= 0)
    assert torch.allclose(hits.dist[ok], ts[first[ok]], atol=2e-3)


def test_lidar_ray_directions_are_unit_and_cover_the_circle():
    d = lidar_ray_directions()
    assert d.shape[1] == 3 and d.shape[0] % 360 == 0
    assert torch.allclose(d.norm(dim=-1), torch.ones(d.shape[0]), atol=1e-6)
    assert d[:, 2].max() < math.sin(0.25) and d[:, 2].min() == pytest.approx(-math.sin(math.pi / 4), abs=1e-6)


# ---------------------------------------------------------------- synthetic scenes and model


@pytest.fixture(scope="module")
def small_seq():
    from scenes.occflow.synthetic import SyntheticConfig, make_sequence

    cfg = SyntheticConfig(grid=(16, 16, 6), frames=2, n_cameras=4, width=32, height=24)
    return make_sequence(5, cfg)


def test_synthetic_is_deterministic_and_flow_is_on_movers(small_seq):
    from scenes.occflow.synthetic import CLASSES, DYNAMIC_CLASSES, make_sequence

    again = make_sequence(5, small_seq.config)
    for a, b in zip(small_seq.frames, again.frames):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.depth, b.depth)
    f = small_seq.frames[0]
    moving = np.linalg.norm(f.flow, axis=-1) > 0
    dyn = np.isin(f.labels, [CLASSES.index(c) for c in DYNAMIC_CLASSES])
    assert not (moving & ~dyn).any()
    # the image sees what the camera mask says: every pixel's depth lies on a visible occupied voxel
    assert f.mask_camera.any() and (f.depth > 0).any()


def test_lifting_gt_images_lands_on_gt_voxels(small_seq):
    from scenes.occflow.model import OccFlowNet, lift_views
    from scenes.occflow.synthetic import CLASSES, FREE

    cfg = small_seq.config
    f = small_seq.frames[0]
    K = len(CLASSES)
    x = lift_views(torch.from_numpy(f.semantics), torch.from_numpy(f.depth), torch.from_numpy(f.Ks).float(),
                   torch.from_numpy(f.cam_to_ego).float(), cfg.grid, cfg.origin, cfg.voxel_size, K, FREE)
    assert x.shape == (K, *cfg.grid)
    cls_ev = x[: K - 1]
    has = cls_ev.sum(0) > 0
    lifted = cls_ev.argmax(0)
    gt = torch.from_numpy(f.labels)
    assert (lifted[has] == gt[has]).float().mean() > 0.8
    net = OccFlowNet(2 * K, K, 2, width=8)
    logits, flow = net(torch.cat([x, x])[None])
    assert logits.shape == (1, K, *cfg.grid) and flow.shape == (1, 2, *cfg.grid)
