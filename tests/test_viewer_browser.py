"""The HTML export and `geo view`, loaded in a real (headless) Chromium.

Each test renders the bundled Spot sample from a held-out camera in the
browser, screenshots it, and checks that the object is where the project's
CPU rasterizer puts it (silhouette IoU > 0.8) and that the page logged no
JavaScript error. Screenshots are kept in ``docs/screenshots/``.

Needs Debian's ``chromium`` and the npm package ``playwright-core``; without
them the tests fail (never skip) with the commands that install them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from tools.browser import BrowserMissing, find_browser, shoot

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "docs" / "screenshots"
SIZE = 512  # screenshot and reference render size (4x the sample's 128 px cameras)
VIEW_CAMERA = "/cameras/r_008"  # a held-out view of the sample
# -- the sample scene and its reference silhouette ------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Spot: per-pixel Gaussians lifted from three training views, plus the Spot mesh
    (normalised as the sample was rendered, so the two coincide), saved as a scene."""
    from scenes.data import load_capture
    from scenes.payloads import Camera, GaussianCloud, Mesh
    from scenes.render import pixel_gaussians

    data = REPO / "assets" / "spot_sample"
    g = load_capture(data, holdout_every=8)
    train = [n for n in g.find(Camera) if n.meta.get("split") == "train"]
    g.add("/gaussians", payload=GaussianCloud.concat([pixel_gaussians(train[i]) for i in (0, 5, 10)]))
    mesh = Mesh.load(REPO / "assets" / "spot" / "spot_triangulated.obj", texture=REPO / "assets" / "spot" / "spot_texture.png")
    N = np.array(json.loads((data / "transforms.json").read_text())["synthetic"]["normalization"]["matrix"])
    mesh.vertices = mesh.vertices @ N[:3, :3].T + N[:3, 3]
    g.add("/spot", payload=mesh)
    scene_dir = tmp_path_factory.mktemp("sample") / "scene"
    g.save(scene_dir)
    return g, scene_dir


def _view_camera(g):
    """The held-out camera scaled to SIZE x SIZE: (CameraModel, c2w)."""
    from geo.cameras import CameraModel

    node = g[VIEW_CAMERA]
    m = node.payload.model
    s = SIZE / m.width
    return CameraModel(width=SIZE, height=SIZE, fx=m.fx * s, fy=m.fy * s, cx=m.cx * s, cy=m.cy * s), node.world_transform


def _reference_silhouette(g) -> np.ndarray:
    """Where the CPU rasterizer puts the Gaussians (alpha > 0.5) from the view camera."""
    from scenes.graph import SceneGraph
    from scenes.payloads import Camera
    from scenes.render import render_gaussians

    model, c2w = _view_camera(g)
    cams = SceneGraph()
    cams.add("/view", payload=Camera(model=model), transform=c2w)
    out = render_gaussians(g["/gaussians"].payload, [cams["/view"]], device="cpu")
    return out.alpha[0] > 0.5


def _silhouette(png: Path, background=(255, 255, 255)) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(np.int32)
    assert img.shape[:2] == (SIZE, SIZE), f"{png}: screenshot is {img.shape[:2]}, expected {(SIZE, SIZE)}"
    return np.abs(img - np.array(background)).max(-1) > 24


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def reference(sample):
    ref = _reference_silhouette(sample[0])
    assert 0.05 < ref.mean() < 0.9, "the reference view should see the object"
    return ref


# -- tests ----------------------------------------------------------------------------------


def test_html_export_renders_like_the_rasterizer(sample, reference, tmp_path):
    from scenes.export.cli import export_scene

    g, scene_dir = sample
    t = time.perf_counter()
    page = export_scene(scene_dir, "html", tmp_path / "page")
    export_s = time.perf_counter() - t
    model, c2w = _view_camera(g)
    view = {"c2w": c2w.reshape(-1).tolist(), "fx": model.fx, "fy": model.fy, "cx": model.cx, "cy": model.cy, "w": SIZE, "h": SIZE}
    cameras = ",".join(n.path for n in g if n.path.startswith("/cameras/"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, hide in (("html_splats", cameras + ",/spot"), ("html_scene", cameras)):
        url = page.as_uri() + "?" + urllib.parse.urlencode({"ui": "0", "hide": hide, "view": json.dumps(view)})
        shot = SHOTS / f"{name}.png"
        r = _shoot(tmp_path, url, "window.__geo !== undefined", "window.__geo", [{"path": str(shot)}])
        assert r["errors"] == [], f"{name}: JavaScript errors: {r['errors']}\nlog: {r['logs']}"
        assert r["info"]["ready"] and r["info"]["splats"] == g["/gaussians"].payload.num
        iou = _iou(_silhouette(shot), reference)
        results[name] = iou
        assert iou > 0.8, f"{name}: silhouette IoU {iou:.3f} against the CPU rasterizer (see {shot})"
    print(f"html export {export_s:.1f} s, {page.stat().st_size / 1e6:.2f} MB; IoU {results}")


def _shoot(tmp: Path, url: str, ready: str, info: str, shots: list[dict], **kw) -> dict:
    try:
        return shoot(tmp, url, ready, info, shots, size=(SIZE, SIZE), **kw)
    except BrowserMissing as e:  # part of the issue: never skip, say how to install
        pytest.fail(str(e), pytrace=False)


def _browser() -> None:
    try:
        find_browser()
    except BrowserMissing as e:
        pytest.fail(str(e), pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_geo_view_renders_like_the_rasterizer(sample, reference, tmp_path):
    g, scene_dir = sample
    _browser()
    port = _free_port()
    log = tmp_path / "view.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scenes.export.cli", "view", str(scene_dir), "--port", str(port),
             "--camera", VIEW_CAMERA, "--hide", "/cameras"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 90
        while "serving" not in log.read_text():
            assert proc.poll() is None, f"geo view exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"geo view did not start in 90 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        SHOTS.mkdir(parents=True, exist_ok=True)
        ui, canvas_only = SHOTS / "geo_view_ui.png", SHOTS / "geo_view.png"
        r = _shoot(
            tmp_path, f"http://127.0.0.1:{port}/", "document.querySelector('canvas') !== null", "document.title",
            [{"path": str(ui)},
             # the 3D view alone: hide viser's panels and notifications for the silhouette
             {"path": str(canvas_only), "css": "* { visibility: hidden !important; } canvas { visibility: visible !important; }"}],
            # viser streams the splats after the page is up; on a busy machine a fixed wait was
            # not always enough (IoU 0.41 once in CI), so also wait for the 3D view to stop changing
            settle_ms=6000, stable_selector="canvas", stable_interval_ms=1500,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # viser's splat object computes a bounding sphere over a placeholder geometry, which three.js
    # reports as a console error on every load; it is the client's own, not caused by the scene.
    errors = [e for e in r["errors"] if "computeBoundingSphere(): Computed radius is NaN" not in e]
    assert errors == [], f"JavaScript errors: {errors}\nlog: {r['logs']}"
    assert "Connected!" in " ".join(r["logs"]), f"the page never connected to geo view: {r['logs']}"
    iou = _iou(_silhouette(canvas_only), reference)
    print(f"geo view IoU {iou:.3f}; canvas settled: {r['stable']} after {r['total_ms']} ms")
    assert iou > 0.8, f"geo view: silhouette IoU {iou:.3f} against the CPU rasterizer (see {canvas_only})"
