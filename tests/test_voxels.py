"""VoxelGrid payload and the differentiable volume renderer (scenes/voxels.py)."""

import math

import numpy as np
import pytest
import torch

from scenes.io import load_scene, save_scene
from scenes.graph import SceneGraph
from scenes.voxels import VoxelGrid, ray_box, render_rays, render_view, sample_grid, voxel_colors

LO, HI = np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0])


def _rand_grid(n=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, n, generator=g), torch.randn(c, n, n, n, generator=g)


def test_ray_box_analytic():
    o = torch.tensor([[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    tn, tf, hit = ray_box(o, d, LO, HI)
    assert hit.tolist() == [True, True, False]
    assert torch.allclose(tn[:2], torch.tensor([2.0, 0.0])) and torch.allclose(tf[:2], torch.tensor([4.0, 1.0]))


def test_sample_grid_hits_voxel_centres_and_interpolates():
    dens, feat = _rand_grid(4, 2)
    grid = VoxelGrid.from_tensors(dens, feat, LO, HI)
    centres = torch.as_tensor(grid.voxel_centers().reshape(-1, 3), dtype=torch.float32)
    raw, f = sample_grid(dens, feat, LO, HI, centres)
    assert torch.allclose(raw, dens.reshape(-1), atol=1e-5)
    assert torch.allclose(f, feat.reshape(2, -1).T, atol=1e-5)
    mid = torch.tensor([[(centres[0, 0] + centres[16, 0]) / 2, centres[0, 1], centres[0, 2]]])  # between (0,0,0), (1,0,0)
    raw_mid, _ = sample_grid(dens, None, LO, HI, mid)
    assert torch.allclose(raw_mid, (dens[0, 0, 0] + dens[1, 0, 0])[None] / 2, atol=1e-5)


def test_constant_grid_matches_beer_lambert():
    raw, f = 0.3, 0.7
    dens = torch.full((5, 5, 5), raw)
    feat = torch.full((3, 5, 5, 5), f)
    o = torch.tensor([[-4.0, 0.1, -0.2], [0.2, -4.0, 0.3]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = render_rays(dens, feat, LO, HI, o, d, n_samples=64, background=(1.0, 1.0, 1.0))
    sigma = math.log1p(math.exp(raw))
    alpha = 1 - math.exp(-sigma * 2.0)
    assert torch.allclose(out["alpha"], torch.full((2,), alpha), atol=1e-5)
    c = 1 / (1 + math.exp(-f))
    assert torch.allclose(out["rgb"], torch.full((2, 3), c * alpha + (1 - alpha)), atol=1e-5)
    # expected distance of a homogeneous slab entered at t=3: 3 + (1/s - L e^{-sL}/(1-e^{-sL})) weighted by alpha
    L = 2.0
    mean_t = 3.0 + 1 / sigma - L * math.exp(-sigma * L) / (1 - math.exp(-sigma * L))
    assert out["t"][0].item() == pytest.approx(alpha * mean_t, rel=2e-3)


def test_chunking_occupancy_and_checkpoint_agree_with_one_pass():
    dens, feat = _rand_grid(8, 3)
    dens = dens * 3
    gen = torch.Generator().manual_seed(1)
    o = torch.randn(50, 3, generator=gen) * 0.2 + torch.tensor([0.0, 0.0, -3.0])
    d = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + 0.2 * torch.randn(50, 3, generator=gen), dim=-1)
    p1 = dens.clone().requires_grad_(True)
    a = render_rays(p1, feat, LO, HI, o, d, n_samples=40, chunk=1000)
    a["rgb"].sum().backward()
    p2 = dens.clone().requires_grad_(True)
    b = render_rays(p2, feat, LO, HI, o, d, n_samples=40, chunk=7, checkpoint=True,
                    occupancy=torch.ones(8, 8, 8, dtype=torch.bool))
    b["rgb"].sum().backward()
    assert torch.allclose(a["rgb"], b["rgb"], atol=1e-6) and torch.allclose(a["t"], b["t"], atol=1e-5)
    assert torch.allclose(p1.grad, p2.grad, atol=1e-6)


def test_empty_occupancy_skips_everything():
    dens, feat = _rand_grid(4, 3)
    o, d = torch.tensor([[0.0, 0.0, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    out = render_rays(dens, feat, LO, HI, o, d, occupancy=torch.zeros(4, 4, 4, dtype=torch.bool), background=(0.2, 0.3, 0.4))
    assert out["alpha"].item() == 0 and torch.allclose(out["rgb"], torch.tensor([[0.2, 0.3, 0.4]]))


def test_extras_are_composited_with_the_colour_weights():
    dens, feat = _rand_grid(6, 3)
    o, d = torch.tensor([[0.1, 0.0, -3.0], [0.3, -0.2, -3.0]]), torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    ones = torch.ones(2, 3, 3, 3)  # constant extras at another resolution: composite to the opacity
    out = render_rays(dens, feat, LO, HI, o, d, extras=ones)
    assert out["extras"].shape == (2, 2)
    assert torch.allclose(out["extras"], out["alpha"][:, None].expand(2, 2), atol=1e-6)
    out2 = render_rays(dens, torch.zeros_like(feat), LO, HI, o, d, extras=torch.full((3, 6, 6, 6), 0.5))
    assert torch.allclose(out2["extras"], out2["rgb"], atol=1e-6)


def test_render_view_gives_z_depth():
    from scenes.data.synthetic import pinhole_camera

    n = 32
    dens = torch.full((n, n, n), -20.0)
    dens[:, :, 24:] = 30.0  # an opaque wall filling z >= 0.5 (cells 24.. start at z = -1 + 24/16)
    cam = pinhole_camera(8, 30.0)  # every ray enters through the z = -1 face
    T = np.eye(4)
    T[2, 3] = -3.0  # camera at z=-3 looking along +z
    out = render_view(dens, None, LO, HI, cam, T, n_samples=512)
    assert out["alpha"].min() > 0.99
    # the wall's surface at z = 0.5 +- half a voxel (softplus of the interpolated raw value): 3.5 from the camera
    assert np.allclose(out["depth"].numpy(), 3.5, atol=0.05)
    assert out["depth"].std() < 0.01  # z-depth, not ray length


def test_sh_degree0_matches_3dgs_and_rgb_mode():
    f = torch.randn(10, 27)
    dirs = torch.nn.functional.normalize(torch.randn(10, 3), dim=-1)
    f0 = f.clone()
    f0[:, 3:] = 0  # only the DC coefficients
    c = voxel_colors(f0, "sh", dirs)
    assert torch.allclose(c, (0.28209479177387814 * f0[:, :3] + 0.5).clamp_min(0))
    assert voxel_colors(f, "sh", dirs).shape == (10, 3)
    assert torch.allclose(voxel_colors(f, "rgb", None), torch.sigmoid(f[:, :3]))


def test_sh_grid_roundtrips_through_scene_io(tmp_path):
    rng = np.random.default_rng(0)
    g = VoxelGrid(rng.normal(size=(3, 4, 5)).astype(np.float32), rng.normal(size=(3, 4, 5, 27)).astype(np.float32),
                  np.array([-1.0, -1, -1]), np.array([1.0, 2, 3]), color="sh")
    sg = SceneGraph()
    sg.add("/grid", payload=g)
    save_scene(sg, tmp_path / "s")
    back = load_scene(tmp_path / "s")["/grid"].payload
    assert back.color == "sh" and back.sh_degree == 2
    assert back.density.tobytes() == g.density.tobytes() and back.features.tobytes() == g.features.tobytes()
    with pytest.raises(ValueError, match="color"):
        VoxelGrid(g.density, g.features, g.bounds_min, g.bounds_max, color="hsv")


def test_bad_shapes_are_reported():
    dens, feat = _rand_grid(4, 3)
    with pytest.raises(ValueError, match=r"\[R, 3\]"):
        render_rays(dens, feat, LO, HI, torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[C, X, Y, Z\]"):
        render_rays(dens, feat[:, :2], LO, HI, torch.zeros(1, 3), torch.ones(1, 3))
