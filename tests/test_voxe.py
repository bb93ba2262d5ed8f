"""Vox-E (scenes/voxe): SDS with the tiny model, the volumetric term, local refinement, reconstruction, CLI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scenes.voxels import VoxelGrid

REPO = Path(__file__).resolve().parents[1]
SPOT = REPO / "assets" / "spot_sample"
LO, HI = np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0])

# The short reconstruction run below (16^3 -> 32^3, 60 + 120 iterations of 2048 rays on the
# 16-view 128 px Spot sample) measured 21.4 dB held-out PSNR; the test asks for 20.
SMALL_RECON_PSNR = 20.0


def _blob_grid(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = (np.indices((n, n, n)).transpose(1, 2, 3, 0) + 0.5) / n * 2 - 1
    r = np.linalg.norm(x, axis=-1)
    dens = np.where(r < 0.6, 8.0, -6.0).astype(np.float32)
    feat = (rng.normal(size=(n, n, n, 3)) * 0.1).astype(np.float32)
    return VoxelGrid(dens, feat, LO, HI), x, r


@pytest.fixture(scope="module")
def tiny():
    from scenes.voxe.guidance import build_tiny_model

    return build_tiny_model(seed=0)


def test_one_sds_step_gives_finite_grid_gradients(tiny):
    from scenes.voxe.config import EditConfig, GuidanceConfig
    from scenes.voxe.edit import random_camera
    from scenes.voxe.guidance import Guidance
    from scenes.voxels import render_view

    grid, _, _ = _blob_grid(16)
    d, f = grid.tensors()
    d.requires_grad_(True)
    f.requires_grad_(True)
    g = Guidance(tiny, GuidanceConfig(backend="tiny", guidance_scale=7.5), total_steps=10)
    model, c2w = random_camera(np.random.default_rng(0), grid, EditConfig(), 32)
    out = render_view(d, f, LO, HI, model, c2w, n_samples=32, stratified=True, background=torch.ones(3))
    loss, info = g.sds_loss(out["rgb"].permute(2, 0, 1)[None], ["a cow wearing a hat, front view"], step=0)
    loss.backward()
    assert torch.isfinite(loss)
    for p in (d, f):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    lo, hi = g.t_bounds(0)
    assert 20 <= info["t"] < hi and g.t_bounds(10)[1] < hi  # annealed upper end


def test_timestep_weighting_and_view_prompts(tiny):
    from scenes.voxe.config import GuidanceConfig
    from scenes.voxe.edit import look_at
    from scenes.voxe.guidance import Guidance, view_direction

    g = Guidance(tiny, GuidanceConfig(t_range=(0.1, 0.9), t_anneal=(0.9, 0.3)), total_steps=100)
    assert g.t_bounds(0) == (100, 900) and g.t_bounds(100) == (100, 300) and g.t_bounds(50) == (100, 600)
    c = np.zeros(3)
    assert view_direction(look_at([0, 0.3, 3], c), c) == "front"
    assert view_direction(look_at([0, 0.3, -3], c), c) == "back"
    assert view_direction(look_at([3, 0.3, 0], c), c) == "side"
    assert view_direction(look_at([0.1, 3, 0.1], c), c) == "overhead"
    assert g.view_prompt("a cow", "side") == "a cow, side view"


def test_correlation_is_zero_for_identical_grids_and_pulls_edits_back():
    from scenes.voxe.edit import density_correlation_loss

    gen = torch.Generator().manual_seed(0)
    d0 = torch.randn(12, 12, 12, generator=gen)
    assert density_correlation_loss(d0, d0).item() == 0.0
    assert density_correlation_loss(3 * d0 + 1, d0).item() == pytest.approx(0.0, abs=1e-6)  # scale / offset invariant
    noise = torch.randn(12, 12, 12, generator=gen)
    d = (d0 + noise).requires_grad_(True)
    loss0 = density_correlation_loss(d, d0)
    loss0.backward()
    # the descent direction points from the edit back towards the original
    assert (-d.grad * (d0 - d.detach())).sum() > 0
    opt = torch.optim.SGD([d], lr=2000.0)  # the gradient scales like 1 / (N std)
    for _ in range(20):
        opt.zero_grad()
        density_correlation_loss(d, d0).backward()
        opt.step()
    assert density_correlation_loss(d, d0).item() < 0.2 * loss0.item()


def test_graph_cut_recovers_region_and_restores_outside_bit_exact():
    from scenes.voxe.local import refine_local

    rng = np.random.default_rng(1)
    orig, x, r = _blob_grid(24)
    region_true = (np.linalg.norm(x - np.array([0.3, 0.3, 0.0]), axis=-1) < 0.35) & (r < 0.6)
    # the edit drifted everywhere (as SDS does) and changed colour in the region
    ed_d = orig.density + rng.normal(size=orig.density.shape).astype(np.float32) * 0.5
    ed_f = orig.features + rng.normal(size=orig.features.shape).astype(np.float32) * 0.05
    ed_f[region_true] += 2.0
    edited = VoxelGrid(ed_d, ed_f, LO, HI)
    # a noisy synthetic attention field marking the region
    att_edit = np.clip(np.where(region_true, 0.8, 0.2) + rng.normal(size=r.shape) * 0.15, 0, 1)
    att_obj = np.clip(np.where(r < 0.6, 0.6, 0.0) + rng.normal(size=r.shape) * 0.1, 0, 1)
    out, region = refine_local(edited, orig, np.stack([att_edit, att_obj]).astype(np.float32))
    iou = (region & region_true).sum() / (region | region_true).sum()
    assert iou > 0.9
    outside = ~region
    assert out.density[outside].tobytes() == orig.density[outside].tobytes()
    assert out.features[outside].tobytes() == orig.features[outside].tobytes()
    assert out.density[region].tobytes() == edited.density[region].tobytes()


def test_reconstruction_reaches_stated_psnr_on_small_grid():
    from scenes.voxe.config import ReconConfig
    from scenes.voxe.reconstruct import evaluate_grid, load_views, reconstruct

    views = load_views(SPOT)
    assert sum(v.split == "test" for v in views) == 2
    grid, stats = reconstruct(views, ReconConfig(resolutions=(16, 32), iters=(60, 120), rays_per_batch=2048), progress=False)
    assert grid.resolution == (32, 32, 32)
    assert evaluate_grid(grid, views)["psnr"] >= SMALL_RECON_PSNR


def test_missing_model_path_gives_clear_error(tmp_path):
    from scenes.voxe.cli import Edit
    from scenes.voxe.guidance import ModelPathError, check_model_dir

    with pytest.raises(SystemExit, match="--model-path"):
        Edit(source=SPOT, prompt="a cow wearing a hat", out=tmp_path / "out").run()
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    (tmp_path / "sd" / "model_index.json").write_text("{}")
    (tmp_path / "sd" / "unet" / "config.json").write_text("{}")
    with pytest.raises(ModelPathError, match=r"incomplete[\s\S]*unet weights[\s\S]*tokenizer") as e:
        check_model_dir(tmp_path / "sd")
    assert "unet config" not in str(e.value)
    assert not (tmp_path / "out").exists()  # failed before any work


def test_core_does_not_import_the_edit_extra():
    code = ("import sys, scenes.voxels, scenes.voxe, scenes.voxe.cli, scenes.voxe.guidance, scenes.voxe.edit, "
            "scenes.voxe.local, scenes.voxe.export, scenes.voxe.pipeline; "
            "bad = [m for m in ('diffusers', 'transformers', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_exports_mesh_gaussians(tmp_path):
    import trimesh

    from scenes.export.ply_gaussians import read_gaussian_ply
    from scenes.voxe.config import ExportConfig
    from scenes.voxe.export import export_all

    grid, _, r = _blob_grid(20)
    files = export_all(tmp_path, grid, grid, ExportConfig(turntable_views=2, turntable_size=24), log=lambda *_: None)
    m = trimesh.load(files["mesh.ply"], process=False, force="mesh")
    assert m.is_watertight and m.volume > 0
    assert m.volume == pytest.approx(4 / 3 * np.pi * 0.6**3, rel=0.1)
    assert trimesh.load(files["mesh.glb"]).geometry
    cloud = read_gaussian_ply(files["gaussians.ply"])
    assert cloud.num == int((grid.density > 0).sum())
    from PIL import Image

    assert Image.open(files["turntable.png"]).size == (2 * 24, 2 * 24)


def _write_clip_tokenizer(d: Path, max_length: int) -> None:
    """A character-level CLIP BPE vocabulary (no merges), written locally."""
    import json
    import string

    d.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + ",.":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    (d / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length, "tokenizer_class": "CLIPTokenizer"}))


def test_load_stable_diffusion_from_local_directory(tiny, tmp_path):
    import json

    from scenes.voxe.config import GuidanceConfig
    from scenes.voxe.guidance import Guidance, load_stable_diffusion

    d = tmp_path / "sd"
    tiny.unet.save_pretrained(d / "unet")
    tiny.vae.save_pretrained(d / "vae")
    tiny.text_encoder.save_pretrained(d / "text_encoder")
    tiny.scheduler.save_pretrained(d / "scheduler")
    _write_clip_tokenizer(d / "tokenizer", 16)
    (d / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    m = load_stable_diffusion(d, device="cpu")
    assert m.resolution == 64
    g = Guidance(m, GuidanceConfig(), total_steps=4)
    img = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss, _ = g.sds_loss(img, ["a hat, side view"], 0)
    loss.backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0
    att = g.attention_maps(img.detach(), "a cow with a hat", ["hat", "cow"])
    assert att.shape == (1, 2, 32, 32) and torch.isfinite(att).all() and att.amax() <= 1.0 + 1e-6


def test_attention_grids_fit_through_frozen_density(tiny):
    from scenes.voxe.config import GuidanceConfig, LocalConfig
    from scenes.voxe.guidance import Guidance
    from scenes.voxe.local import fit_attention_grids, split_prompt_words

    grid, _, _ = _blob_grid(16)
    prompt = "a cow wearing a party hat"
    obj, words = split_prompt_words(prompt, None, ())
    assert (obj, words) == ("cow", ["party", "hat"])
    g = Guidance(tiny, GuidanceConfig(), total_steps=2)
    before = grid.density.copy()
    att = fit_attention_grids(grid, g, prompt, obj, words, LocalConfig(iters=2, resolution=8), render_size=32, n_samples=32)
    assert att.shape == (2, 8, 8, 8) and torch.isfinite(att).all() and 0 <= att.min() and att.max() <= 1
    assert np.array_equal(grid.density, before)  # the density is frozen


def test_geo_edit_end_to_end_with_tiny_backend(tiny, tmp_path):
    """Capture -> reconstruction -> SDS edit -> local refinement -> scene + exports (tiny sizes)."""
    from scenes.io import load_scene
    from scenes.voxe import pipeline
    from scenes.voxe.config import EditConfig, ExportConfig, GuidanceConfig, LocalConfig, ReconConfig

    out = tmp_path / "edit"
    s = pipeline.run_edit(SPOT, "a cow wearing a party hat", out, guidance_cfg=GuidanceConfig(backend="tiny"),
                          recon_cfg=ReconConfig(resolutions=(16,), iters=(20,), rays_per_batch=512),
                          edit_cfg=EditConfig(iters=2, render_size=32, n_samples=32),
                          local_cfg=LocalConfig(iters=1, resolution=8),
                          export_cfg=ExportConfig(turntable_views=2, turntable_size=24, iso_sigma=1.0),
                          progress=False, log=lambda *_: None, model=tiny)
    scene = load_scene(out)
    orig, edited = scene["/voxe/original"].payload, scene["/voxe/edited"].payload
    assert len([n for n in scene if n.path.startswith("/cameras/")]) == 16
    region = (edited.density != orig.density) | (edited.features != orig.features).any(-1)
    assert region.sum() <= s["local_region_voxels"]  # nothing changed outside the cut
    for f in ("mesh.ply", "mesh.glb", "gaussians.ply", "turntable.png", "voxe.json"):
        assert (out / f).is_file(), f
