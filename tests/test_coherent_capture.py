"""CoherentGS on real-capture conditions: lens distortion, large images, exposure differences.

The bundled sample is a clean pinhole render, so each condition is made from it
with a known transform and the pipeline is checked to undo it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from geo.cameras import CameraModel
from scenes.coherent.views import prepare_view
from scenes.graph import SceneGraph
from scenes.payloads import Camera

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "spot_sample"


@pytest.fixture(scope="module")
def sample():
    from scenes.data import load_capture

    return load_capture(SAMPLE, holdout_every=None)


def _distort(image: np.ndarray, pinhole: CameraModel, distorted: CameraModel) -> np.ndarray:
    """What ``distorted`` would photograph of the pinhole image (bilinear, 0 outside)."""
    H, W = distorted.height, distorted.width
    v, u = np.mgrid[0:H, 0:W] + 0.5
    src = distorted.undistort_points(torch.as_tensor(np.stack([u, v], -1), dtype=torch.float64), target=pinhole)
    grid = torch.stack([src[..., 0] / pinhole.width * 2 - 1, src[..., 1] / pinhole.height * 2 - 1], -1)
    img = torch.as_tensor(image, dtype=torch.float64).permute(2, 0, 1)[None]
    out = torch.nn.functional.grid_sample(img, grid[None].nan_to_num(9.0), align_corners=False, padding_mode="zeros")
    return out[0].permute(1, 2, 0).numpy()


def test_distorted_capture_is_undistorted_before_training(sample):
    node = sample["/cameras/r_001"]
    pin = node.payload.model
    dist = CameraModel(pin.width, pin.height, pin.fx, pin.fy, pin.cx, pin.cy, model="opencv", k1=-0.25, k2=0.05, p1=2e-3, p2=-1e-3)
    rgb = node.payload.image[..., :3].astype(np.float64) / 255.0
    photo = np.clip(np.rint(_distort(rgb, pin, dist) * 255), 0, 255).astype(np.uint8)
    g = SceneGraph()
    g.add("/cameras/r_001", payload=Camera(model=dist, image=photo), transform=node.world_transform)

    view = prepare_view(g["/cameras/r_001"], None)
    assert view.model.model == "pinhole" and not view.model.has_distortion
    assert (view.model.fx, view.model.cx) == (pin.fx, pin.cx)
    # Undistorted, the photo matches the pinhole render up to two bilinear resamplings
    # (which blur texture edges); left distorted, it is misaligned by up to pixels.
    inner = node.payload.mask & view.mask  # the object, where the images have texture
    assert inner.sum() > 500
    bad_fixed = (np.abs(view.image - rgb).max(-1) > 0.2)[inner].mean()
    bad_raw = (np.abs(photo / 255.0 - rgb).max(-1) > 0.2)[inner].mean()
    assert bad_fixed < 0.02, bad_fixed
    assert bad_raw > 3 * bad_fixed, (bad_raw, bad_fixed)


def test_large_images_are_downscaled_with_consistent_intrinsics(sample):
    node = sample["/cameras/r_005"]
    big = node.payload.model.resize(4.0)  # 512 px
    image = np.repeat(np.repeat(node.payload.image, 4, 0), 4, 1)
    g = SceneGraph()
    g.add("/cameras/big", payload=Camera(model=big, image=image), transform=node.world_transform)
    view = prepare_view(g["/cameras/big"], 64)
    assert (view.width, view.height) == (64, 64)
    assert view.model.fx == pytest.approx(big.fx / 8) and view.model.cx == pytest.approx(big.cx / 8)
    # area downscaling of a 4x nearest upscale = the 128 px image, 2x area-downscaled
    ref = node.payload.image[..., :3].astype(np.float64).reshape(64, 2, 64, 2, 3).mean((1, 3)) / 255
    assert np.abs(view.image - ref).max() < 2.5 / 255


def test_exposure_compensation_absorbs_a_darker_photo(tmp_path):
    """One training photo 30 % darker: the per-view colour correction learns a gain below 1
    for it (renders are mapped to the photo), and about 1 for the others."""
    from PIL import Image

    from scenes.coherent.config import CoherentConfig
    from scenes.coherent.train import reconstruct

    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    frames = json.loads((data / "transforms.json").read_text())["frames"]
    dark = next(f for f in frames if Path(f["file_path"]).stem == "r_005")
    p = data / dark["file_path"]
    img = np.asarray(Image.open(p)).astype(np.float64)
    img[..., :3] *= 0.7
    Image.fromarray(np.rint(img).astype(np.uint8)).save(p)

    res = reconstruct(data, tmp_path / "out", method="coherent", views=3, iters=60, resolution=32, exports=False,
                      progress=False, log=lambda *a: None, coherent=CoherentConfig(exposure_lr=2e-2, align_iters=5))
    trainer = res["trainer"]
    names = [v.name for v in trainer.views]
    gain = {n: float(torch.diagonal(trainer.exposure[k][:, :3].detach()).mean()) for k, n in enumerate(names)}
    assert "r_005" in gain, names
    others = [g for n, g in gain.items() if n != "r_005"]
    assert gain["r_005"] < min(others) - 0.08, gain
