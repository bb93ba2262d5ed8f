"""VoxelSplat at Occ3D size on CPU: 200 x 200 x 16 voxels, 6 cameras, key + adjacent frame."""

import resource
import time

import numpy as np
import pytest
import torch

from scenes.occflow.loss import RigViews, VoxelSplatConfig, VoxelSplatLoss
from scenes.occflow.synthetic import SyntheticConfig, rig_cameras


def occ3d_sized_scene(seed=0, K=17):
    """Labels on Occ3D's grid (0.4 m voxels over [-40, 40]^2 x [-1, 5.4]) with ground and random boxes."""
    g = torch.Generator().manual_seed(seed)
    X, Y, Z = 200, 200, 16
    free = K - 1
    labels = torch.full((X, Y, Z), free, dtype=torch.long)
    labels[:, :, :3] = 10  # ground up to z = 0.2 m
    flow = torch.zeros(2, X, Y, Z)
    for _ in range(300):
        x, y = torch.randint(0, X - 12, (2,), generator=g).tolist()
        if abs(x - 100) < 8 and abs(y - 100) < 8:
            continue  # keep the rig clear
        sx, sy, sz = torch.randint(2, 12, (3,), generator=g).tolist()
        c = int(torch.randint(0, 10, (1,), generator=g))
        labels[x:x + sx, y:y + sy, 3:3 + sz] = c
        if c < 8:  # the dynamic classes move
            flow[:, x:x + sx, y:y + sy, 3:3 + sz] = (torch.rand(2, 1, 1, 1, generator=g) - 0.5) * 10
    return labels, flow


@pytest.mark.slow
def test_occ3d_size_six_cameras_runs_on_cpu():
    K = 17
    labels, flow_gt = occ3d_sized_scene(K=K)
    rig = SyntheticConfig(n_cameras=6, width=400, height=225, hfov_deg=70.0, camera_height=1.6)
    c2e, Ks = rig_cameras(rig)
    c2e_next = c2e.copy()
    c2e_next[:, 0, 3] += 2.0  # the ego moved 2 m forward by the next frame
    views = RigViews(torch.from_numpy(np.stack([Ks, Ks])).float()[None],
                     torch.from_numpy(np.stack([c2e, c2e_next])).float()[None], [0.0, 0.5], rig.width, rig.height)
    logits = torch.randn(1, K, 200, 200, 16, generator=torch.Generator().manual_seed(1)).requires_grad_()
    flow = torch.zeros(1, 2, 200, 200, 16, requires_grad=True)
    loss_fn = VoxelSplatLoss(VoxelSplatConfig(max_gaussians=100_000, cameras_per_chunk=1, checkpoint=True))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    out = loss_fn(logits, flow, labels[None], flow_gt[None], (-40.0, -40.0, -1.0), 0.4, views,
                  generator=torch.Generator().manual_seed(0))
    t1 = time.perf_counter()
    sum(out.values()).backward()
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n200x200x16, 6 cams x 2 frames at {rig.width}x{rig.height}, 100k Gaussians: "
          f"forward {t1 - t0:.1f} s, backward {t2 - t1:.1f} s, peak RSS {rss:.0f} MiB (+{rss - rss0:.0f} MiB)")
    assert all(torch.isfinite(v) for v in out.values())
    assert logits.grad.abs().sum() > 0 and flow.grad.abs().sum() > 0
    assert rss < 16_000
