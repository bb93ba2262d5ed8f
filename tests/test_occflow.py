"""VoxelSplat loss and voxel sampling (scenes.occflow.loss / sampling)."""

import numpy as np
import pytest
import torch

from geo.regularizers.schedule import Schedule
from scenes.occflow.loss import LabelImages, RigViews, VoxelSplatConfig, VoxelSplatLoss
from scenes.occflow.sampling import sample_voxels, sampling_weights
from scenes.occflow.synthetic import CLASSES, FREE, SyntheticConfig, make_sequence

K = len(CLASSES)


@pytest.fixture(scope="module")
def scene():
    cfg = SyntheticConfig(grid=(20, 20, 6), frames=2, n_cameras=4, width=32, height=24, n_cars=2, n_trucks=1,
                          n_pedestrians=2, n_barriers=1, n_poles=2)
    seq = make_sequence(3, cfg)
    f0, f1 = seq.frames
    labels = torch.from_numpy(f0.labels)[None]
    flow_gt = torch.from_numpy(f0.flow).permute(3, 0, 1, 2)[None]
    c2e = torch.from_numpy(np.stack([f0.cam_to_ego, seq.ego_to_ego(1, 0) @ f1.cam_to_ego])).float()[None]
    Ks = torch.from_numpy(np.stack([f0.Ks, f1.Ks])).float()[None]
    views = RigViews(Ks, c2e, [0.0, cfg.dt], cfg.width, cfg.height)
    images = LabelImages(torch.from_numpy(np.stack([f0.semantics, f1.semantics]))[None],
                         torch.from_numpy(np.stack([f0.depth, f1.depth]))[None])
    assert (flow_gt.norm(dim=1) > 0).sum() > 10  # something moves
    return cfg, labels, flow_gt, views, images


def perfect_logits(labels, scale=20.0):
    return (torch.nn.functional.one_hot(labels, K).permute(0, 4, 1, 2, 3).float() * 2 - 1) * scale


def run(loss_fn, cfg, logits, flow, labels, flow_gt, views, **kw):
    return loss_fn(logits, flow, labels, flow_gt, cfg.origin, cfg.voxel_size, views, **kw)


def test_perfect_prediction_loss_is_about_zero(scene):
    cfg, labels, flow_gt, views, _ = scene
    out = run(VoxelSplatLoss(), cfg, perfect_logits(labels), flow_gt.clone(), labels, flow_gt, views)
    assert set(out) == {"loss_sem2d", "loss_depth2d", "loss_flow2d", "loss_flow3d"}
    for k, v in out.items():
        assert v.item() < 5e-3, (k, v.item())
    # while a poor prediction is far from zero
    unit = VoxelSplatLoss(VoxelSplatConfig(w_sem2d=1.0, w_depth2d=1.0))  # the terms themselves, not their weights
    bad = run(unit, cfg, torch.zeros(1, K, *labels.shape[1:]), torch.zeros_like(flow_gt), labels, flow_gt, views)
    assert bad["loss_sem2d"] > 0.3 and bad["loss_depth2d"] > 0.3


def test_flow_loss_zero_for_true_flow_and_grows_with_error(scene):
    cfg, labels, flow_gt, views, _ = scene
    loss_fn = VoxelSplatLoss()
    logits = perfect_logits(labels)
    direction = torch.randn(flow_gt.shape, generator=torch.Generator().manual_seed(0))
    f2d, f3d = [], []
    for e in (0.0, 0.25, 0.5, 1.0, 2.0):
        out = run(loss_fn, cfg, logits, flow_gt + e * direction, labels, flow_gt, views)
        f2d.append(out["loss_flow2d"].item())
        f3d.append(out["loss_flow3d"].item())
    assert f2d[0] < 1e-6 and f3d[0] < 1e-6
    assert all(b > a for a, b in zip(f2d, f2d[1:])), f2d
    assert all(b > a for a, b in zip(f3d, f3d[1:])), f3d


def test_gradients_reach_logits_and_flow(scene):
    cfg, labels, flow_gt, views, _ = scene
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, K, *labels.shape[1:], generator=g).requires_grad_()
    flow = torch.randn(flow_gt.shape, generator=g).requires_grad_()
    out = run(VoxelSplatLoss(), cfg, logits, flow, labels, flow_gt, views)
    sum(out.values()).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.isfinite(flow.grad).all() and flow.grad.abs().sum() > 0
    # the free logit gets gradient through the opacity
    assert logits.grad[:, FREE].abs().sum() > 0


def test_motion_alone_carries_flow_gradient(scene):
    """With both flow terms off, the flow still learns from the adjacent frame's
    semantics and depth, through the moved Gaussians' centres (Sec. 3.3)."""
    cfg, labels, flow_gt, views, _ = scene
    flow = (flow_gt + 0.5).requires_grad_()
    loss_fn = VoxelSplatLoss(VoxelSplatConfig(w_flow2d=0.0, w_flow3d=0.0))
    out = run(loss_fn, cfg, perfect_logits(labels), flow, labels, flow_gt, views)
    (out["loss_sem2d"] + out["loss_depth2d"]).backward()
    assert flow.grad.abs().sum() > 0


def test_warmup_switches_flow_terms_and_adjacent_renders_off(scene):
    cfg, labels, flow_gt, views, _ = scene
    loss_fn = VoxelSplatLoss(VoxelSplatConfig(flow_schedule=Schedule("linear", start_step=10, end_step=20)))
    flow = (flow_gt + 0.5).requires_grad_()
    out = run(loss_fn, cfg, perfect_logits(labels), flow, labels, flow_gt, views, step=0)
    assert out["loss_flow2d"].item() == 0 and out["loss_flow3d"].item() == 0
    sum(out.values()).backward()
    assert flow.grad is None or flow.grad.abs().sum() == 0  # no moved render, no flow term
    on = run(loss_fn, cfg, perfect_logits(labels), flow, labels, flow_gt, views, step=25)
    assert on["loss_flow2d"].item() > 0 and on["loss_flow3d"].item() > 0


def test_chunked_checkpointed_matches_single_pass(scene):
    cfg, labels, flow_gt, views, _ = scene
    g = torch.Generator().manual_seed(2)
    logits0 = torch.randn(1, K, *labels.shape[1:], generator=g)
    flow0 = torch.randn(flow_gt.shape, generator=g)
    res = []
    for c in (VoxelSplatConfig(cameras_per_chunk=1, checkpoint=True), VoxelSplatConfig(cameras_per_chunk=1, checkpoint=False),
              VoxelSplatConfig(cameras_per_chunk=4, checkpoint=False)):
        logits, flow = logits0.clone().requires_grad_(), flow0.clone().requires_grad_()
        out = run(VoxelSplatLoss(c), cfg, logits, flow, labels, flow_gt, views)
        sum(out.values()).backward()
        res.append((torch.stack(list(out.values())), logits.grad, flow.grad))
    for a, b in zip(res[0], res[1]):  # checkpointing recomputes exactly
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # batching cameras changes the rasterizer's float32 summation order and, at a few
    # pixels, which Gaussians pass its alpha / transmittance cut-offs
    torch.testing.assert_close(res[0][0], res[2][0], rtol=1e-3, atol=1e-5)
    for a, b in zip(res[0][1:], res[2][1:]):
        assert (a - b).norm() < 1e-2 * a.norm()


def test_label_images_as_targets(scene):
    cfg, labels, flow_gt, views, images = scene
    logits = perfect_logits(labels).requires_grad_()
    out = run(VoxelSplatLoss(), cfg, logits, flow_gt.clone(), labels, flow_gt, views, images=images)
    sum(out.values()).backward()
    assert all(torch.isfinite(v) for v in out.values())
    # ray-cast label images agree with the splatted prediction except near edges
    assert out["loss_sem2d"].item() < 0.5
    assert logits.grad.abs().sum() > 0


def test_bad_shapes_are_reported(scene):
    cfg, labels, flow_gt, views, _ = scene
    with pytest.raises(ValueError, match="flow"):
        run(VoxelSplatLoss(), cfg, perfect_logits(labels), flow_gt[:, :1], labels, flow_gt, views)


# ---------------------------------------------------------------- sampling


def test_sampling_respects_cap_and_ignore():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (10, 10, 4), generator=g)
    labels[0] = 255
    flow = torch.zeros(10, 10, 4, 2)
    idx = sample_voxels(labels, flow, cap=50, num_classes=4, generator=g)
    assert idx.numel() == 50 and idx.unique().numel() == 50
    assert (labels.reshape(-1)[idx] != 255).all()
    every = sample_voxels(labels, flow, cap=10_000, num_classes=4)
    assert every.numel() == int((labels != 255).sum())


def test_sampling_weights_follow_inverse_frequency():
    labels = torch.zeros(1010, 1, 1, dtype=torch.long)
    labels[:10] = 1
    flow = torch.zeros(1010, 1, 1, 2)
    flow[500:510, ..., 0] = 3.0  # ten class-0 voxels moving at 3 m/s
    w = sampling_weights(labels, flow, num_classes=2).reshape(-1)
    # class: (1000 / 10) ** 0.5 = 10x; speed bin [2, 5): (1000 / 10) ** 0.5 = 10x
    assert w[0] / w[20] == pytest.approx(10.0, rel=1e-5)
    assert w[505] / w[20] == pytest.approx(10.0, rel=1e-5)
    frac = []
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = sample_voxels(labels, flow, cap=20, num_classes=2, generator=g)
        frac.append((labels.reshape(-1)[idx] == 1).float().mean().item())
    # weighted share of class 1 is 100 / (100 + 990 + 100) ~ 0.084, uniform would be 0.0099
    assert 0.06 < np.mean(frac) < 0.12


def _flow2d_at_scales(scene, cfg_loss, scales, margin=2.0):
    """loss_flow2d for flow = s * flow_gt, with occupied voxels only (free ones ignored) at opacity sigmoid(margin)."""
    cfg, labels, flow_gt, views, _ = scene
    lab = torch.where(labels == FREE, torch.full_like(labels, 255), labels)
    logits = perfect_logits(labels.clamp_max(K - 1), margin)
    loss_fn = VoxelSplatLoss(cfg_loss)
    return [run(loss_fn, cfg, logits, s * flow_gt, lab, flow_gt, views)["loss_flow2d"].item() for s in scales]


def test_expected_render_flow_is_unbiased_by_opacity(scene):
    # the accumulated render scales the flow by the predicted alpha (< 1), so the release's
    # term prefers an inflated flow; the alpha-normalised (expected) render prefers the true one
    scales = (1.0, 1.2)  # at opacity 0.5 (margin 0), as early in training
    acc = _flow2d_at_scales(scene, VoxelSplatConfig(depth_mode="accumulated", depth_metric="l1"), scales, margin=0.0)
    exp = _flow2d_at_scales(scene, VoxelSplatConfig(), scales, margin=0.0)
    assert acc[1] < acc[0], acc
    assert exp[0] < 0.5 * exp[1], exp


def test_flow_render_does_not_train_opacity_by_default(scene):
    cfg, labels, flow_gt, views, _ = scene
    for grad_on, expect in ((False, False), (True, True)):
        logits = torch.zeros(1, K, *labels.shape[1:], requires_grad=True)
        flow = torch.randn(flow_gt.shape, generator=torch.Generator().manual_seed(1)).requires_grad_()
        out = run(VoxelSplatLoss(VoxelSplatConfig(flow_opacity_grad=grad_on)), cfg, logits, flow, labels, flow_gt, views)
        g_logits, g_flow = torch.autograd.grad(out["loss_flow2d"], [logits, flow], allow_unused=True)
        assert g_flow is not None and g_flow.abs().sum() > 0
        reached = g_logits is not None and g_logits.abs().sum() > 0
        assert reached == expect


def test_log_depth_is_scale_free(scene):
    # |log D - log D*| does not change when the whole scene (and the cameras) is scaled
    cfg, labels, flow_gt, views, _ = scene
    logits = torch.zeros(1, K, *labels.shape[1:])
    c2e2 = views.cam_to_ego.clone()
    c2e2[..., :3, 3] *= 2
    views2 = RigViews(views.Ks, c2e2, views.dt, views.width, views.height)
    loss_fn = VoxelSplatLoss(VoxelSplatConfig())
    d1 = loss_fn(logits, flow_gt, labels, flow_gt, cfg.origin, cfg.voxel_size, views)["loss_depth2d"].item()
    o2 = tuple(2 * o for o in cfg.origin)
    d2 = loss_fn(logits, flow_gt, labels, flow_gt, o2, 2 * cfg.voxel_size, views2)["loss_depth2d"].item()
    assert abs(d1 - d2) < 0.05 * d1, (d1, d2)


def test_log_depth_needs_expected_mode():
    with pytest.raises(ValueError):
        VoxelSplatConfig(depth_mode="accumulated")  # depth_metric defaults to "log"
    VoxelSplatConfig(depth_mode="accumulated", depth_metric="l1")


def test_adjacent_frames_train_only_the_motion_in_motion_mode(scene):
    """adjacent_grad="motion": a render in an adjacent frame reaches the network only
    through the moved centres (the flow); "all" (the release) also trains logits / opacities."""
    cfg, labels, flow_gt, views, _ = scene
    adj = RigViews(views.Ks[:, 1:], views.cam_to_ego[:, 1:], [cfg.dt], views.width, views.height)
    g = torch.Generator().manual_seed(3)
    logits0 = torch.randn(1, K, *labels.shape[1:], generator=g)
    for mode, logits_learn in (("motion", False), ("all", True)):
        logits = logits0.clone().requires_grad_()
        flow = (flow_gt + 0.5).requires_grad_()
        loss_fn = VoxelSplatLoss(VoxelSplatConfig(adjacent_grad=mode, w_flow3d=0.0))
        out = run(loss_fn, cfg, logits, flow, labels, flow_gt, adj)
        g_logits, g_flow = torch.autograd.grad(sum(out.values()), [logits, flow], allow_unused=True)
        assert g_flow is not None and g_flow.abs().sum() > 0
        assert (g_logits is not None and g_logits.abs().sum() > 0) == logits_learn, mode
    with pytest.raises(ValueError):
        VoxelSplatConfig(adjacent_grad="none")


def test_sem2d_class_weights(scene):
    from scenes.occflow.loss import _class_weights

    cfg, labels, flow_gt, views, _ = scene
    occ = labels[0][(labels[0] != 255) & (labels[0] != FREE)]
    n = torch.bincount(occ, minlength=K - 1).float()
    w = _class_weights(labels[0], K, VoxelSplatConfig(sem2d_class_alpha=0.5))
    present = n > 0
    # rarer classes weigh more, as (n_c / n) ** -0.5, normalised to mean 1 over present classes
    ratio = w[present] * n[present].sqrt()
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)
    assert abs(w[present].mean().item() - 1) < 1e-5
    assert torch.equal(_class_weights(labels[0], K, VoxelSplatConfig(sem2d_class_alpha=0.0)), torch.ones(K - 1))
    # a perfect prediction still gives ~0 loss with the weighted mean
    out = run(VoxelSplatLoss(VoxelSplatConfig(sem2d_class_alpha=0.5)), cfg, perfect_logits(labels), flow_gt.clone(),
              labels, flow_gt, views)
    assert out["loss_sem2d"].item() < 5e-3


def test_soft_targets_need_rendered_probabilities(scene):
    """With soft targets (the pixel's class mixture), a perfect labelling costs ~0 only
    when the Gaussians carry probabilities: averaged logits cannot form a mixture."""
    cfg, labels, flow_gt, views, _ = scene
    res = {}
    for render in ("probs", "logits"):
        loss_fn = VoxelSplatLoss(VoxelSplatConfig(sem2d_render=render, w_sem2d=1.0))
        res[render] = run(loss_fn, cfg, perfect_logits(labels), flow_gt.clone(), labels, flow_gt, views)["loss_sem2d"].item()
    assert res["probs"] < 5e-3 and res["logits"] > 10 * max(res["probs"], 1e-3), res
    with pytest.raises(ValueError):
        VoxelSplatConfig(sem2d_render="rgb")
    with pytest.raises(ValueError):
        VoxelSplatConfig(sem2d_target="hard")


def _two_voxel_scene():
    """One camera looking along +x at two car voxels, at 3.25 m and 6.25 m, that do not overlap in the image."""
    labels = torch.full((1, 16, 8, 4), FREE, dtype=torch.long)
    near, far = (6, 2, 2), (12, 5, 2)
    labels[(0, *near)] = labels[(0, *far)] = CLASSES.index("car")
    origin, vs = (0.0, -2.0, -1.0), 0.5
    W, H, f = 256, 192, 128.0
    Ks = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])[None, None, None]
    c2e = torch.eye(4)
    c2e[:3, :3] = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # OpenCV x right, y down, z forward
    c2e[:3, 3] = torch.tensor([0.0, 0.0, 0.25])
    views = RigViews(Ks, c2e[None, None, None], [0.0], W, H)
    return labels, origin, vs, views, near, far


def test_voxel_pixel_weight_counts_near_and_far_voxels_alike():
    """A mislabelled voxel at twice the distance covers a quarter of the pixels: the pixel mean
    ("uniform") charges it ~4x less, the footprint-corrected weights ("voxel") about the same."""
    labels, origin, vs, views, near, far = _two_voxel_scene()
    flow = torch.zeros(1, 2, *labels.shape[1:])
    ratio = {}
    for mode in ("uniform", "voxel"):
        loss_fn = VoxelSplatLoss(VoxelSplatConfig(pixel_weight=mode, w_sem2d=1.0, sem2d_class_alpha=0.0))
        cost = []
        for wrong in (near, far):
            logits = perfect_logits(labels)
            truck = perfect_logits(torch.tensor([[[[CLASSES.index("truck")]]]]))[0, :, 0, 0, 0]
            logits[(0, slice(None), *wrong)] = truck
            out = loss_fn(logits, flow, labels, flow, origin, vs, views)
            cost.append(out["loss_sem2d"].item())
        ratio[mode] = cost[0] / cost[1]
    assert ratio["uniform"] > 2.5, ratio
    assert 0.75 < ratio["voxel"] < 1.33, ratio
    # a perfect prediction still costs ~0 under the voxel weights
    out = VoxelSplatLoss(VoxelSplatConfig(pixel_weight="voxel"))(perfect_logits(labels), flow, labels, flow, origin, vs,
                                                                  views)
    assert out["loss_sem2d"].item() < 5e-3 and out["loss_depth2d"].item() < 5e-3
    with pytest.raises(ValueError):
        VoxelSplatConfig(pixel_weight="area")


def test_surface_pixel_weights_are_depth_squared_with_mean_one():
    from scenes.occflow.loss import surface_pixel_weights

    depth = torch.tensor([[[2.0, 4.0], [0.0, 8.0]]])
    valid = depth > 0
    Ks = torch.tensor([[[100.0, 0, 1], [0, 100.0, 1], [0, 0, 1]]])
    w = surface_pixel_weights(depth, valid, Ks)
    assert torch.allclose(w[valid].mean(), torch.tensor(1.0))
    assert torch.allclose(w[valid] / w[valid][0], torch.tensor([1.0, 4.0, 16.0]))
    assert w[~valid].item() == 1.0


def test_sample_free_false_renders_only_occupied_voxels(scene):
    cfg, labels, flow_gt, views, _ = scene
    # a free voxel predicted occupied: rendered (and penalised) only when free voxels are sampled
    logits = perfect_logits(labels)
    free_idx = torch.nonzero(labels[0] == FREE)
    out = {}
    for sample_free in (True, False):
        lg = logits.clone()
        for i, j, k in free_idx[::7].tolist():
            lg[0, :, i, j, k] = perfect_logits(torch.tensor([[[[CLASSES.index("car")]]]]))[0, :, 0, 0, 0]
        loss_fn = VoxelSplatLoss(VoxelSplatConfig(sample_free=sample_free))
        out[sample_free] = run(loss_fn, cfg, lg, flow_gt.clone(), labels, flow_gt, views)["loss_depth2d"].item()
    assert out[True] > 10 * max(out[False], 1e-3), out


def test_render_schedule_scales_the_semantic_and_depth_terms(scene):
    cfg, labels, flow_gt, views, _ = scene
    sched = Schedule("linear", start_step=0, end_step=10)
    loss_fn = VoxelSplatLoss(VoxelSplatConfig(render_schedule=sched))
    logits = torch.zeros(1, K, *labels.shape[1:])
    half, full = (run(loss_fn, cfg, logits, flow_gt.clone(), labels, flow_gt, views, step=step,
                      generator=torch.Generator().manual_seed(0)) for step in (5, 10))
    for k in ("loss_sem2d", "loss_depth2d"):
        assert abs(half[k].item() - 0.5 * full[k].item()) < 1e-5 * full[k].item(), k
    assert half["loss_flow2d"].item() == pytest.approx(full["loss_flow2d"].item())
