"""Tests for geo.cameras: analytic values, round trips, symmetries, gradients."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from geo.cameras import CameraModel, opencv_to_opengl, opengl_to_opencv
from geo.transforms import axis_angle_to_rotmat, se3_from_rt, se3_inverse, transform_points

F64 = torch.float64

PINHOLE = CameraModel(640, 480, 500.0, 510.0, 321.0, 239.0)
OPENCV = CameraModel(640, 480, 500.0, 510.0, 321.0, 239.0, "opencv", k1=-0.2, k2=0.05, k3=-0.01, p1=1e-3, p2=-2e-3)
FISHEYE = CameraModel(640, 480, 200.0, 202.0, 322.0, 238.0, "fisheye", k1=0.05, k2=-0.01, k3=0.002, k4=-3e-4)
CAMERAS = {"pinhole": PINHOLE, "opencv": OPENCV, "fisheye": FISHEYE}


def _points_in_front(n: int, max_angle_deg: float, seed: int = 0) -> torch.Tensor:
    """Random camera-frame points at angles up to ``max_angle_deg`` off the optical axis."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, generator=g, dtype=F64) * math.radians(max_angle_deg)
    phi = torch.rand(n, generator=g, dtype=F64) * 2 * math.pi
    dirs = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], -1)
    return dirs * (0.5 + 5 * torch.rand(n, 1, generator=g, dtype=F64))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name,max_deg", [("pinhole", 45), ("opencv", 40), ("fisheye", 80)])
def test_project_unproject_round_trip(name, max_deg):
    cam = CAMERAS[name]
    p = _points_in_front(2000, max_deg)
    uv, depth, valid = cam.project(p, return_valid=True)
    assert valid.all()
    assert torch.equal(depth, p[..., 2])
    q, qvalid = cam.unproject(uv, depth, return_valid=True)
    assert qvalid.all()
    assert (q - p).abs().max() < 1e-9
    # and pixel -> point -> pixel
    assert (cam.project(q)[0] - uv).abs().max() < 1e-9


@pytest.mark.parametrize("name", ["opencv", "fisheye"])
def test_distort_undistort_round_trip(name):
    cam = CAMERAS[name]
    g = torch.Generator().manual_seed(1)
    xy = (torch.rand(1000, 2, generator=g, dtype=F64) - 0.5) * 1.4  # up to ~45 degrees off axis
    xd = cam.distort(xy)
    assert (xd - xy).abs().max() > 1e-3  # the distortion is not trivially the identity
    assert (cam.undistort(xd) - xy).abs().max() < 1e-10
    assert (cam.distort(cam.undistort(xy)) - xy).abs().max() < 1e-10


def test_distort_hand_computed_opencv():
    cam = CameraModel(640, 480, 500.0, 400.0, 320.0, 240.0, "opencv", k1=0.1, k2=0.01, k3=0.001, p1=0.002, p2=0.003)
    # r2 = 0.13; radial = 1 + 0.1*0.13 + 0.01*0.0169 + 0.001*0.002197 = 1.013171197
    # x_d = 0.3*radial + 2*p1*x*y + p2*(r2 + 2x^2) = 0.3039513591 - 0.00024 + 0.00093
    # y_d = -0.2*radial + p1*(r2 + 2y^2) + 2*p2*x*y = -0.2026342394 + 0.00042 - 0.00036
    xd = cam.distort(torch.tensor([0.3, -0.2], dtype=F64))
    torch.testing.assert_close(xd, torch.tensor([0.3046413591, -0.2025742394], dtype=F64), rtol=0, atol=1e-12)
    # and the full projection of X = (0.6, -0.4, 2): u = 500 x_d + 320, v = 400 y_d + 240
    uv, depth = cam.project(torch.tensor([0.6, -0.4, 2.0], dtype=F64))
    torch.testing.assert_close(uv, torch.tensor([472.32067955, 158.97030424], dtype=F64), rtol=0, atol=1e-8)
    assert depth.item() == 2.0


def test_distort_hand_computed_fisheye():
    cam = CameraModel(640, 480, 300.0, 300.0, 320.0, 240.0, "fisheye", k1=0.1)
    # r = 0.5, theta = atan(0.5) = 0.4636476090, theta_d = theta (1 + 0.1 theta^2) = 0.4736084400
    # x_d = theta_d / r * (0.3, 0.4)
    xd = cam.distort(torch.tensor([0.3, 0.4], dtype=F64))
    torch.testing.assert_close(xd, torch.tensor([0.28416876010, 0.37889168014], dtype=F64), rtol=0, atol=1e-10)
    # on the axis the scale theta_d / r tends to 1
    assert torch.equal(cam.distort(torch.zeros(2, dtype=F64)), torch.zeros(2, dtype=F64))
    # (1, 0, 1) is 45 degrees off axis: theta_d = pi/4 (1 + 0.1 pi^2 / 16) = 0.8338454707
    uv, _ = cam.project(torch.tensor([2.0, 0.0, 2.0], dtype=F64))
    torch.testing.assert_close(uv, torch.tensor([320 + 300 * 0.8338454707104168, 240.0], dtype=F64))


def test_pinhole_projection_and_batching():
    cam = CameraModel(100, 80, 50.0, 40.0, 50.0, 40.0)
    p = torch.tensor([[[1.0, 2.0, 4.0], [-2.0, 0.0, 2.0]]] * 3)  # [3, 2, 3]
    uv, depth = cam.project(p)
    assert uv.shape == (3, 2, 2) and depth.shape == (3, 2)
    torch.testing.assert_close(uv[0], torch.tensor([[62.5, 60.0], [0.0, 40.0]]))
    # numpy input is converted and comes back as a tensor
    uv_np, _ = cam.project(np.array([1.0, 2.0, 4.0]))
    assert isinstance(uv_np, torch.Tensor) and uv_np.dtype == F64
    torch.testing.assert_close(uv_np, torch.tensor([62.5, 60.0], dtype=F64))


# -------------------------------------------------------------- invalid points


def test_points_behind_pinhole_and_opencv_are_flagged_not_nan():
    p = torch.tensor([[0.1, 0.2, -1.0], [0.3, 0.1, 0.0], [0.0, 0.0, 0.0], [0.1, 0.1, 1.0]], dtype=F64)
    for cam in (PINHOLE, OPENCV):
        uv, depth, valid = cam.project(p, return_valid=True)
        assert valid.tolist() == [False, False, False, True]
        assert torch.isfinite(uv).all()
        assert torch.equal(uv[0], torch.tensor([cam.cx, cam.cy], dtype=F64))


def test_opencv_fold_over_is_flagged():
    # r_d = r (1 - 0.5 r^2) stops increasing at r^2 = 2/3; past it far points would land back in the image
    cam = CameraModel(640, 480, 500.0, 500.0, 320.0, 240.0, "opencv", k1=-0.5)
    p = torch.tensor([[0.5, 0.0, 1.0], [0.9, 0.0, 1.0], [3.0, 0.0, 1.0]], dtype=F64)
    _, _, valid = cam.project(p, return_valid=True)
    assert valid.tolist() == [True, False, False]
    # and the inverse of a pixel beyond the fold's image radius is NaN, not a wrong point
    r_max = math.sqrt(2 / 3) * (1 - 0.5 * 2 / 3)
    uv = torch.tensor([[320 + 500 * 0.9 * r_max, 240.0], [320 + 500 * 1.1 * r_max, 240.0]], dtype=F64)
    pts, valid = cam.unproject(uv, torch.ones(2, dtype=F64), return_valid=True)
    assert valid.tolist() == [True, False]
    assert torch.isfinite(pts[0]).all() and torch.isnan(pts[1]).all()


def test_fisheye_max_angle_and_rays_behind_the_camera():
    # d theta_d / d theta = 1 - 0.15 theta^2 vanishes at theta = sqrt(1 / 0.15) (148 degrees)
    cam = CameraModel(800, 800, 150.0, 150.0, 400.0, 400.0, "fisheye", k1=-0.05)
    assert cam.max_angle == pytest.approx(math.sqrt(1 / 0.15), abs=1e-12)
    assert CameraModel(64, 64, 30.0, 30.0, 32.0, 32.0, "fisheye").max_angle == pytest.approx(math.pi)
    assert PINHOLE.max_angle == math.pi / 2
    # the principal point looks straight down the axis
    centre = cam.pixel_rays(torch.tensor([400.0, 400.0], dtype=F64))
    assert torch.equal(centre, torch.tensor([0.0, 0.0, 1.0], dtype=F64))

    th = torch.tensor([math.radians(100), math.radians(140)], dtype=F64)  # both behind the image plane
    d = torch.stack([th.sin() * 0.6, th.sin() * -0.8, th.cos()], -1)
    uv, depth, valid = cam.project(3 * d, return_valid=True)
    assert valid.all() and (depth < 0).all()
    rays, rvalid = cam.pixel_rays(uv, return_valid=True)
    assert rvalid.all()
    assert (rays - d).abs().max() < 1e-10
    # no positive z-depth along those rays: unproject gives NaN and flags them
    pts, pvalid = cam.unproject(uv, torch.ones(2, dtype=F64), return_valid=True)
    assert not pvalid.any() and torch.isnan(pts).all()
    # normalised coordinates cannot represent theta >= 90 degrees either
    assert torch.isnan(cam.undistort(cam._pixel_to_normalised(uv))).all()

    # past the model's maximum angle: flagged on projection, NaN on the way back
    beyond = torch.tensor([math.sin(2.7), 0.0, math.cos(2.7)], dtype=F64)
    uv_b, _, valid_b = cam.project(beyond, return_valid=True)
    assert not valid_b and torch.isfinite(uv_b).all()
    far_pixel = torch.tensor([400 + 150 * 1.8, 400.0], dtype=F64)  # theta_d = 1.8 > theta_d(max_angle) ~ 1.72
    r, v = cam.pixel_rays(far_pixel, return_valid=True)
    assert not v and torch.isnan(r).all()


# ------------------------------------------------------------------------ rays


def test_centre_ray_of_centred_even_camera_is_the_optical_axis():
    cam = CameraModel(64, 48, 40.0, 40.0, 32.0, 24.0)
    origins, dirs = cam.rays(dtype=F64)
    assert origins.shape == dirs.shape == (48, 64, 3)
    assert torch.equal(origins, torch.zeros_like(origins))
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(48, 64, dtype=F64))
    # pixel (23, 31) is centred half a pixel up-left of the principal point
    expected = torch.tensor([-0.5 / 40, -0.5 / 40, 1.0], dtype=F64)
    torch.testing.assert_close(dirs[23, 31], expected / expected.norm())
    assert dirs[23, 31, 2] > math.cos(1 / 40)
    # the four central rays are symmetric about +z
    mean = dirs[23:25, 31:33].reshape(4, 3).mean(0)
    torch.testing.assert_close(mean / mean.norm(), torch.tensor([0.0, 0.0, 1.0], dtype=F64))


@pytest.mark.parametrize("name", ["pinhole", "opencv", "fisheye"])
def test_rays_reproject_to_their_pixel_centres(name):
    cam = CAMERAS[name].downscale(8)  # 80 x 60, keeps the test fast
    _, dirs = cam.rays(dtype=F64)
    uv, _, valid = cam.project(dirs * 2.5, return_valid=True)
    assert valid.all()
    j, i = torch.meshgrid(torch.arange(cam.width, dtype=F64), torch.arange(cam.height, dtype=F64), indexing="xy")
    torch.testing.assert_close(uv, torch.stack([j + 0.5, i + 0.5], -1), rtol=0, atol=1e-9)
    assert dirs.dtype == F64


@pytest.mark.parametrize("as_numpy", [True, False])
def test_world_rays_follow_the_pose(as_numpy):
    cam = OPENCV.downscale(16)
    R = axis_angle_to_rotmat(np.array([0.3, -0.2, 0.5]))
    t = np.array([1.0, -2.0, 0.5])
    c2w = se3_from_rt(R, t)
    _, dirs_cam = cam.rays(dtype=F64)
    origins, dirs = cam.rays(c2w if as_numpy else torch.from_numpy(c2w), dtype=F64)
    torch.testing.assert_close(origins, torch.from_numpy(t).expand(cam.height, cam.width, 3))
    torch.testing.assert_close(dirs, dirs_cam @ torch.from_numpy(R).T)
    # a world point along a ray maps back, through w2c, onto that ray's pixel
    world = origins[5, 7] + 3.0 * dirs[5, 7]
    p_cam = transform_points(torch.from_numpy(se3_inverse(c2w)), world[None])
    torch.testing.assert_close(cam.project(p_cam)[0][0], torch.tensor([7.5, 5.5], dtype=F64))


def test_rays_batched_poses_and_dtype():
    cam = PINHOLE.downscale(32)
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[1, :3, 3] = torch.tensor([0.0, 1.0, 0.0])
    origins, dirs = cam.rays(c2w)
    assert origins.shape == dirs.shape == (2, cam.height, cam.width, 3)
    assert dirs.dtype == torch.float32 and cam.rays(c2w.double())[1].dtype == F64
    assert cam.rays(np.eye(4))[1].dtype == torch.float32
    assert torch.equal(origins[1, 3, 4], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(dirs[0], dirs[1])


# ---------------------------------------------------------------------- resize


@pytest.mark.parametrize("name", ["pinhole", "opencv", "fisheye"])
def test_resize_scales_pixel_coordinates(name):
    cam = CAMERAS[name]
    p = _points_in_front(200, 35, seed=2)
    uv, _ = cam.project(p)
    for small in (cam.resize(0.5), cam.resize(width=200), cam.resize(width=100, height=300), cam.downscale(3)):
        sx, sy = small.width / cam.width, small.height / cam.height
        uv_small, _ = small.project(p)
        torch.testing.assert_close(uv_small, uv * torch.tensor([sx, sy], dtype=F64), rtol=0, atol=1e-9)
        assert (small.k1, small.k2, small.p1) == (cam.k1, cam.k2, cam.p1)
    assert (cam.resize(0.5).width, cam.resize(0.5).height) == (320, 240)
    assert (cam.resize(width=200).width, cam.resize(width=200).height) == (200, 150)
    assert (cam.downscale(3).width, cam.downscale(3).height) == (213, 160)


# ------------------------------------------------------------ axis conventions


def test_opencv_opengl_conversion():
    R = axis_angle_to_rotmat(np.array([0.4, 0.1, -0.7]))
    c2w = se3_from_rt(R, np.array([3.0, -1.0, 2.0]))
    gl = opencv_to_opengl(c2w)
    assert isinstance(gl, np.ndarray) and gl.dtype == np.float64
    np.testing.assert_array_equal(opengl_to_opencv(gl), c2w)  # involution, exactly
    np.testing.assert_array_equal(gl[:, 3], c2w[:, 3])  # camera centre kept
    np.testing.assert_array_equal(gl[:3, 0], c2w[:3, 0])  # x axis kept
    np.testing.assert_array_equal(gl[:3, 1:3], -c2w[:3, 1:3])  # y (down -> up) and z (forward -> back) flipped
    # an OpenGL camera looks down its -z axis: the same world direction as OpenCV's +z
    np.testing.assert_array_equal(-gl[:3, 2], c2w[:3, 2])

    batch = torch.from_numpy(np.stack([c2w, np.eye(4)])).float()
    gl_t = opencv_to_opengl(batch)
    assert isinstance(gl_t, torch.Tensor) and gl_t.dtype == torch.float32 and gl_t.shape == (2, 4, 4)
    torch.testing.assert_close(gl_t[0], torch.from_numpy(gl).float())
    assert torch.equal(opengl_to_opencv(gl_t), batch)
    assert opencv_to_opengl(c2w.astype(np.float32)).dtype == np.float32


# ---------------------------------------------------------------- undistortion


def _pattern(x, y):
    """A smooth test image as a function of undistorted normalised coordinates."""
    return 0.5 + 0.25 * torch.sin(6 * x + 1) * torch.cos(5 * y) + 0.2 * x * y


def _render_distorted(cam: CameraModel) -> torch.Tensor:
    """[H, W] image that ``cam`` sees of ``_pattern`` drawn on the z = 1 plane."""
    dirs = cam.rays(dtype=F64)[1]
    front = dirs[..., 2] > 0.1  # wide fisheye pixels see past the plane; leave them black
    z = torch.where(front, dirs[..., 2], torch.ones_like(dirs[..., 2]))
    return torch.where(front, _pattern(dirs[..., 0] / z, dirs[..., 1] / z), torch.zeros_like(z))


def _expected_on(target: CameraModel) -> torch.Tensor:
    j, i = torch.meshgrid(torch.arange(target.width, dtype=F64), torch.arange(target.height, dtype=F64), indexing="xy")
    return _pattern((j + 0.5 - target.cx) / target.fx, (i + 0.5 - target.cy) / target.fy)


def _interior(cam: CameraModel, target: CameraModel, margin: float = 2.0, max_xy: float = 1.0) -> torch.Tensor:
    """Output pixels whose source lies at least ``margin`` pixels inside the source image.

    Also within ``|x|, |y| <= max_xy`` in normalised coordinates: further out a
    fisheye packs many normalised units into one source pixel, so bilinear
    resampling of ``_pattern`` is (rightly) coarse there.
    """
    j, i = torch.meshgrid(torch.arange(target.width, dtype=F64), torch.arange(target.height, dtype=F64), indexing="xy")
    xy = torch.stack([(j + 0.5 - target.cx) / target.fx, (i + 0.5 - target.cy) / target.fy], -1)
    src = cam.distort(xy) * torch.tensor([cam.fx, cam.fy], dtype=F64) + torch.tensor([cam.cx, cam.cy], dtype=F64)
    return (
        (xy.abs() <= max_xy).all(-1)
        & (src[..., 0] > margin) & (src[..., 0] < cam.width - margin)
        & (src[..., 1] > margin) & (src[..., 1] < cam.height - margin)
    )


@pytest.mark.parametrize("name", ["opencv", "fisheye"])
def test_undistort_image_recovers_the_pinhole_view(name):
    cam = CAMERAS[name].downscale(4 if name == "opencv" else 2)  # 160 x 120 or 320 x 240
    img = _render_distorted(cam)
    expected = _expected_on(cam.undistorted())

    # torch [B, C, H, W]
    out, pin = cam.undistort_image(img.float()[None, None].expand(2, 3, -1, -1))
    assert pin.model == "pinhole" and (pin.fx, pin.fy, pin.cx, pin.cy) == (cam.fx, cam.fy, cam.cx, cam.cy)
    assert out.shape == (2, 3, cam.height, cam.width) and out.dtype == torch.float32
    inner = _interior(cam, pin)
    assert inner.float().mean() > (0.7 if name == "opencv" else 0.25)
    # bilinear interpolation error ~ |f''| h^2 / 8 with h = 1 / f in normalised units
    err = (out[1, 2].double() - expected)[inner].abs().max()
    assert err < 2e-3
    # without undistortion the image would be far off: the check can fail
    assert (img - expected)[inner].abs().max() > 0.05

    # numpy [H, W, C] uint8 round trip in the input's type and layout
    img_u8 = (img.numpy()[..., None].repeat(3, -1).clip(0, 1) * 255).round().astype(np.uint8)
    out_u8, _ = cam.undistort_image(img_u8)
    assert isinstance(out_u8, np.ndarray) and out_u8.dtype == np.uint8 and out_u8.shape == img_u8.shape
    assert np.abs(out_u8[..., 1].astype(np.float64) / 255 - expected.numpy())[inner.numpy()].max() < 2e-3 + 1 / 255


def test_undistort_image_zero_outside_and_balance():
    # pincushion (k1 > 0): the pinhole view's border comes from outside the source image
    cam = CameraModel(120, 90, 80.0, 80.0, 60.0, 45.0, "opencv", k1=0.3)
    img = np.ones((90, 120), dtype=np.float32)
    out, _ = cam.undistort_image(img)
    assert out.shape == (90, 120) and out[0, 0] == 0.0 and out[45, 60] == 1.0

    # barrel fisheye (about 120 degrees across): balance 1 widens the view so the whole source border fits
    fish = CameraModel(320, 240, 150.0, 150.0, 161.0, 119.0, "fisheye", k1=0.05, k2=-0.01)
    wide = fish.undistorted(balance=1.0)
    assert wide.fx < fish.fx and wide.fy < fish.fy and (wide.cx, wide.cy) == (fish.cx, fish.cy)
    half = fish.undistorted(balance=0.5)
    assert half.fx == pytest.approx((fish.fx + wide.fx) / 2)
    border = torch.tensor([[0.0, fish.cy], [fish.width, fish.cy], [fish.cx, 0.0], [fish.cx, fish.height]], dtype=F64)
    mapped = fish.undistort_points(border, target=wide)
    assert mapped[:, 0].min() >= -1e-9 and mapped[:, 0].max() <= fish.width + 1e-9
    assert mapped[:, 1].min() >= -1e-9 and mapped[:, 1].max() <= fish.height + 1e-9
    # the widened image still shows the pattern at the widened camera's pixels
    out, pin = fish.undistort_image(_render_distorted(fish)[None], balance=1.0)
    assert pin == wide and out.shape == (1, fish.height, fish.width)
    inner = _interior(fish, wide)
    assert (out[0] - _expected_on(wide))[inner].abs().max() < 4e-3


@pytest.mark.parametrize("name", ["opencv", "fisheye"])
def test_undistort_points_agrees_with_pinhole_projection(name):
    cam = CAMERAS[name]
    p = _points_in_front(300, 40, seed=3)
    uv_pin, _ = cam.undistorted().project(p)
    torch.testing.assert_close(cam.undistort_points(cam.project(p)[0]), uv_pin, rtol=0, atol=1e-9)


# --------------------------------------------------------- intrinsics and I/O


def test_K_from_K_dict_and_fov():
    K = OPENCV.K(dtype=F64)
    torch.testing.assert_close(K, torch.tensor([[500.0, 0, 321.0], [0, 510.0, 239.0], [0, 0, 1]], dtype=F64))
    assert OPENCV.K().dtype == torch.float32
    again = CameraModel.from_K(K.numpy(), 640, 480, "opencv", k1=-0.2, k2=0.05, k3=-0.01, p1=1e-3, p2=-2e-3)
    assert again == OPENCV
    assert CameraModel.from_K(K, 640, 480) == PINHOLE

    d = FISHEYE.to_dict()
    assert CameraModel.from_dict(json.loads(json.dumps(d))) == FISHEYE
    assert d["model"] == "fisheye" and type(d["width"]) is int and type(d["k4"]) is float
    assert CameraModel.from_dict({"width": 4, "height": 2, "fx": 1, "fy": 1, "cx": 2, "cy": 1}).fx == 1.0

    square = CameraModel(200, 100, 100.0, 50.0, 100.0, 50.0)
    assert square.fov_x == pytest.approx(math.pi / 2) and square.fov_y == pytest.approx(math.pi / 2)


def test_fields_are_normalised_and_frozen():
    cam = CameraModel(np.int64(64), 48.0, np.float32(50.0), 50, 32, 24)
    assert type(cam.width) is int and type(cam.height) is int and type(cam.fy) is float
    with pytest.raises(AttributeError):
        cam.fx = 3.0  # type: ignore[misc]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(width=0), r"width: expected a positive integer"),
        (dict(height=10.5), r"height: expected a positive integer"),
        (dict(width=True), r"width: expected a positive integer"),
        (dict(fx=-1.0), r"fx: expected a positive focal length"),
        (dict(fy=0.0), r"fy: expected a positive focal length"),
        (dict(cx=float("nan")), r"cx: expected a finite real number"),
        (dict(k1=float("inf"), model="opencv"), r"k1: expected a finite real number"),
        (dict(fx="500"), r"fx: expected a finite real number"),
        (dict(model="kannala"), r"model: expected one of"),
        (dict(k1=0.1), r"k1: the 'pinhole' model does not use k1"),
        (dict(model="opencv", k4=0.1), r"k4: the 'opencv' model does not use k4"),
        (dict(model="fisheye", p1=0.01), r"p1: the 'fisheye' model does not use p1"),
    ],
)
def test_bad_fields_raise(kwargs, match):
    base = dict(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0)
    with pytest.raises(ValueError, match=match):
        CameraModel(**{**base, **kwargs})


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['k5'\]"):
        CameraModel.from_dict({**PINHOLE.to_dict(), "k5": 0.0})
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['cy'\]"):
        CameraModel.from_dict({"width": 4, "height": 2, "fx": 1, "fy": 1, "cx": 2})
    with pytest.raises(ValueError, match=r"K: expected \[\[fx, 0, cx\]"):
        CameraModel.from_K([[500.0, 1.0, 320.0], [0, 500.0, 240.0], [0, 0, 1]], 640, 480)
    with pytest.raises(ValueError, match=r"K: expected shape \(3, 3\)"):
        CameraModel.from_K(np.eye(4), 640, 480)
    with pytest.raises(ValueError, match=r"unknown distortion coefficient\(s\) \['k9'\]"):
        CameraModel.from_K(np.eye(3), 640, 480, "opencv", k9=0.1)
    with pytest.raises(ValueError, match=r"points_cam: expected shape \[\.\.\., 3\], got \(4, 2\)"):
        PINHOLE.project(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"uv: expected shape \[\.\.\., 2\]"):
        PINHOLE.pixel_rays(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"xy: expected shape \[\.\.\., 2\]"):
        OPENCV.distort(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"depth: expected shape \(4,\) \(uv's batch shape\), got \(4, 1\)"):
        PINHOLE.unproject(torch.zeros(4, 2), torch.ones(4, 1))
    with pytest.raises(ValueError, match=r"c2w: expected shape \[\.\.\., 4, 4\], got \(3, 4\)"):
        PINHOLE.rays(np.eye(4)[:3])
    with pytest.raises(ValueError, match=r"c2w: expected shape \[\.\.\., 4, 4\]"):
        opencv_to_opengl(torch.eye(3))
    with pytest.raises(ValueError, match=r"image: expected height x width 480 x 640"):
        OPENCV.undistort_image(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"image: expected a tensor \[C, H, W\] or \[B, C, H, W\]"):
        OPENCV.undistort_image(torch.zeros(480, 640))
    with pytest.raises(ValueError, match=r"interpolation: expected"):
        OPENCV.undistort_image(np.zeros((480, 640)), interpolation="lanczos")
    with pytest.raises(ValueError, match=r"balance: expected a number in \[0, 1\]"):
        OPENCV.undistorted(balance=2.0)
    with pytest.raises(ValueError, match=r"resize: give either scale or width/height"):
        PINHOLE.resize(0.5, width=100)
    with pytest.raises(ValueError, match=r"resize: scale must be a positive"):
        PINHOLE.resize(-1.0)
    with pytest.raises(ValueError, match=r"downscale: factor must be a positive integer"):
        PINHOLE.downscale(1.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", ["pinhole", "opencv", "fisheye"])
def test_gradcheck_project(name):
    cam = CAMERAS[name]
    p = _points_in_front(4, 60 if name == "fisheye" else 30, seed=4)
    p = torch.cat([p, torch.tensor([[0.0, 0.0, 2.0]], dtype=F64)])  # on the axis (fisheye's 1/Z branch)
    p.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: cam.project(q)[0], (p,))


@pytest.mark.parametrize("name", ["opencv", "fisheye"])
def test_gradcheck_inverse_maps(name):
    # gradients of the Newton solves come from the implicit function theorem
    cam = CAMERAS[name]
    uv, depth = cam.project(_points_in_front(4, 40, seed=5))
    uv.requires_grad_(True)
    depth.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: cam.unproject(a, b), (uv, depth))
    assert torch.autograd.gradcheck(lambda a: cam.pixel_rays(a), (uv,))


def test_invalid_points_have_finite_zero_gradients():
    p = torch.tensor([[0.1, 0.2, -1.0], [0.0, 0.0, 0.0], [0.1, 0.1, 1.0]], dtype=F64, requires_grad=True)
    for cam in CAMERAS.values():
        uv, _ = cam.project(p)
        (g,) = torch.autograd.grad(uv.sum(), p)
        assert torch.isfinite(g).all()
        assert torch.equal(g[1], torch.zeros(3, dtype=F64))


@pytest.mark.parametrize("name", ["opencv", "fisheye"])
def test_inverse_maps_have_finite_gradients_next_to_invalid_pixels(name):
    # the last pixel lies beyond what the model can image; NaN in its output must not leak into gradients
    # (for the fisheye also one 100 degrees off axis: a valid ray, but with no positive z-depth)
    cam = CAMERAS[name]
    far = [cam.cx + cam.fx * 3.0, cam.cy] if name == "opencv" else [cam.cx + cam.fx * 2.9, cam.cy]
    behind = [260.0, 250.0]
    if name == "fisheye":
        th = math.radians(100)
        behind = cam.project(torch.tensor([math.sin(th), 0.0, math.cos(th)], dtype=F64))[0].tolist()
    uv = torch.tensor([[300.0, 200.0], [420.0, 300.0], behind, far], dtype=F64, requires_grad=True)
    depth = torch.full((4,), 2.0, dtype=F64, requires_grad=True)
    pts, valid = cam.unproject(uv, depth, return_valid=True)
    assert valid.tolist() == [True, True, name == "opencv", False] and torch.isnan(pts[~valid]).all()
    pts[valid].sum().backward()
    assert torch.isfinite(uv.grad).all() and torch.isfinite(depth.grad).all()
    assert torch.equal(uv.grad[~valid], torch.zeros_like(uv.grad[~valid])) and (depth.grad[~valid] == 0).all()
    dirs, rvalid = cam.pixel_rays(uv, return_valid=True)
    assert rvalid.tolist() == [True, True, True, False]
    (g,) = torch.autograd.grad(dirs[rvalid].sum(), uv)
    assert torch.isfinite(g).all()


# ------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    for cam in CAMERAS.values():
        p = _points_in_front(100, 40, seed=6)
        uv, depth = cam.project(p.cuda())
        assert uv.device.type == "cuda"
        torch.testing.assert_close(uv.cpu(), cam.project(p)[0])
        torch.testing.assert_close(cam.unproject(uv, depth).cpu(), p, rtol=0, atol=1e-9)
        origins, dirs = cam.rays(torch.eye(4, device="cuda"))
        assert dirs.device.type == "cuda" and origins.device.type == "cuda"
    small = OPENCV.downscale(4)
    img = torch.rand(1, 3, small.height, small.width, device="cuda")
    out, _ = small.undistort_image(img)
    torch.testing.assert_close(out.cpu(), small.undistort_image(img.cpu())[0], rtol=0, atol=1e-5)


def test_optical_axes_system_recovers_the_common_look_at_point():
    from geo.cameras import optical_axes_system
    from geo.transforms import look_at

    rng = np.random.default_rng(0)
    target = np.array([0.3, -1.2, 2.0])
    c2ws = [look_at(target + rng.normal(size=3) * 4, target) for _ in range(6)]
    A, b = optical_axes_system(c2ws)
    np.testing.assert_allclose(np.linalg.solve(A, b), target, atol=1e-10)
    A1, _ = optical_axes_system(c2ws[:1])  # one axis: a line of solutions
    assert np.linalg.matrix_rank(A1) == 2
