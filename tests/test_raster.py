"""geo.raster: the tiled torch rasterizer against the dense reference, gsplat's
torch maths and (on CUDA) gsplat itself; gradients; degenerate input; validation."""

from __future__ import annotations

import math

import pytest
import torch

from geo.raster import rasterize
from geo.raster._project import project_gaussians
from geo.raster.reference import rasterize_dense
from geo.raster.sh import eval_sh

MODES = ["RGB", "D", "ED", "RGB+D", "RGB+ED"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # tiny scenes gain nothing from intra-op threads, and on a shared CPU the
    # OpenMP barriers of many small ops cost more than they save
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_scene(n=120, n_cams=2, channels=3, dtype=torch.float32, seed=0, sh_degree=None,
               per_camera_colors=False, opaque=False, device="cpu"):
    """Random Gaussians in front of ``n_cams`` slightly shifted pinhole cameras."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor([1.2, 0.9, 0.8], dtype=dtype)
    means[:, 2] += 5.0
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.25 + 0.02
    opacities = torch.rand(n, generator=g, dtype=dtype) * (0.3 if opaque else 0.9) + (0.7 if opaque else 0.05)
    if sh_degree is None:
        shape = (n_cams, n, channels) if per_camera_colors else (n, channels)
    else:
        k = (sh_degree + 1) ** 2
        shape = (n_cams, n, k, 3) if per_camera_colors else (n, k, 3)
    colors = torch.rand(*shape, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype).repeat(n_cams, 1, 1)
    for c in range(n_cams):
        a = 0.1 * c
        viewmats[c, 0, 0] = viewmats[c, 2, 2] = math.cos(a)
        viewmats[c, 0, 2], viewmats[c, 2, 0] = math.sin(a), -math.sin(a)
        viewmats[c, 0, 3] = 0.2 * c
    Ks = torch.tensor([[55.0, 0, 36.0], [0, 58.0, 27.0], [0, 0, 1]], dtype=dtype).repeat(n_cams, 1, 1)
    Ks[:, 0, 2] += torch.arange(n_cams, dtype=dtype)  # cameras differ in intrinsics too
    out = [means, quats, scales, opacities, colors, viewmats, Ks]
    return [t.to(device) for t in out]


W, H = 75, 53  # not a multiple of the tile size


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


# ---------------------------------------------------------------- forward parity


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [3, 5])
def test_forward_matches_dense(mode, channels):
    scene = make_scene(channels=channels, seed=channels)
    bg = torch.rand(2, channels)
    img, alpha, meta = rasterize(*scene, W, H, render_mode=mode, backgrounds=bg)
    ref, ref_alpha, _ = rasterize_dense(*scene, W, H, render_mode=mode, backgrounds=bg)
    x = channels if mode == "RGB" else 1 if mode in ("D", "ED") else channels + 1
    assert img.shape == (2, H, W, x) and alpha.shape == (2, H, W, 1)
    assert float(alpha.mean()) > 0.2  # the scene covers the image
    _close(alpha, ref_alpha)
    # expected depth divides by alpha: compare it relative to the depth scale
    _close(img, ref)


@pytest.mark.parametrize("rasterize_mode", ["classic", "antialiased"])
def test_forward_matches_dense_options(rasterize_mode):
    scene = make_scene(channels=4, per_camera_colors=True, seed=3)
    kw = dict(rasterize_mode=rasterize_mode, eps2d=0.1, near_plane=4.5, far_plane=6.5, radius_clip=1.0)
    img, alpha, _ = rasterize(*scene, W, H, **kw)
    ref, ref_alpha, _ = rasterize_dense(*scene, W, H, **kw)
    _close(img, ref)
    _close(alpha, ref_alpha)


def test_early_termination_matches_dense():
    # many opaque Gaussians: most pixels stop long before their list ends
    scene = make_scene(n=400, n_cams=1, opaque=True, seed=7)
    img, alpha, _ = rasterize(*scene, W, H)
    ref, ref_alpha, _ = rasterize_dense(*scene, W, H)
    assert float((1 - alpha).min()) < 2e-4
    _close(img, ref)
    _close(alpha, ref_alpha)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_forward_matches_dense(degree):
    scene = make_scene(sh_degree=degree, seed=degree, per_camera_colors=degree == 2)
    scene[4] = scene[4] - 0.5  # SH DC terms centred like trained ones
    img, alpha, _ = rasterize(*scene, W, H, sh_degree=degree, render_mode="RGB+ED")
    ref, ref_alpha, _ = rasterize_dense(*scene, W, H, sh_degree=degree, render_mode="RGB+ED")
    _close(img, ref)


# ------------------------------------------------------------ gsplat's torch maths


def test_sh_matches_gsplat():
    from gsplat.cuda._torch_impl import _spherical_harmonics

    dirs = torch.randn(50, 3, dtype=torch.float64)
    coeffs = torch.randn(50, 16, 3, dtype=torch.float64)
    for degree in range(4):
        torch.testing.assert_close(eval_sh(degree, dirs, coeffs), _spherical_harmonics(degree, dirs, coeffs))


def test_sh_rotation_equivariance_degree1():
    # a degree-1 SH colour is linear in the direction: f(d) = B d with fixed B
    coeffs = torch.randn(1, 4, 3, dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64), dim=-1)
    f = eval_sh(1, d, coeffs.expand(20, 4, 3)) - eval_sh(0, d, coeffs.expand(20, 4, 3))
    B = torch.linalg.lstsq(d, f).solution
    torch.testing.assert_close(d @ B, f)


@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_matches_gsplat(antialiased):
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    means, quats, scales, opac, _, viewmats, Ks = make_scene(n=300, dtype=torch.float64)
    means[:10, 2] = -1.0  # behind the camera
    p = project_gaussians(means, quats, scales, opac, viewmats, Ks, W, H, antialiased=antialiased)
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, m2d, depths, conics, comp = _fully_fused_projection(
        means, covars, viewmats, Ks, W, H, calc_compensations=antialiased
    )
    ok = (p.radii > 0).all(-1)
    assert ok.sum() > 300 and not ok[:, :10].any()
    # gsplat's torch reference uses a fixed 3.33 sigma box (its CUDA kernel is
    # opacity aware, as we are), so only the visible set is compared
    assert ((radii > 0).all(-1) | ~ok).all()
    torch.testing.assert_close(p.means2d[ok], m2d[ok])
    torch.testing.assert_close(p.conics[ok], conics[ok])
    torch.testing.assert_close(p.depths, depths)
    if antialiased:
        torch.testing.assert_close(p.opacities[ok], (opac * comp)[ok])


# --------------------------------------------------------------------- gradients


def _grads(fn, scene, mode, **kw):
    params = [t.detach().clone().requires_grad_(i < 5) for i, t in enumerate(scene)]
    img, alpha, meta = fn(*params, W, H, render_mode=mode, **kw)
    g = torch.Generator().manual_seed(1)
    loss = (img * torch.randn(img.shape, generator=g, dtype=img.dtype)).sum()
    loss = loss + (alpha * torch.randn(alpha.shape, generator=g, dtype=img.dtype)).sum()
    loss.backward()
    return [p.grad for p in params[:5]], meta


@pytest.mark.parametrize(
    "mode,kw",
    [
        ("RGB", {}),
        ("RGB", {"rasterize_mode": "antialiased", "backgrounds": "bg"}),
        ("RGB+ED", {"sh_degree": 2}),
        ("D", {}),
    ],
)
def test_gradients_match_dense(mode, kw):
    kw = dict(kw)
    scene = make_scene(n=60, dtype=torch.float64, sh_degree=kw.get("sh_degree"), seed=11)
    if kw.get("backgrounds") == "bg":
        kw["backgrounds"] = torch.rand(2, 3, dtype=torch.float64)
    ours, meta = _grads(rasterize, scene, mode, **kw)
    ref, _ = _grads(rasterize_dense, scene, mode, **kw)
    names = ["means", "quats", "scales", "opacities", "colors"]
    for name, a, b in zip(names, ours, ref):
        if name == "colors" and mode == "D":  # depth-only render ignores colours
            assert a is None and b is None
            continue
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7, msg=name)
    assert meta["means2d"].grad is not None and meta["means2d"].grad.abs().sum() > 0


def test_gradcheck_tiny_scene():
    # 4 Gaussians, one tile: every parameter, float64
    means, quats, scales, opac, colors, viewmats, Ks = make_scene(n=4, n_cams=1, dtype=torch.float64, seed=5)
    means = means * torch.tensor([0.15, 0.15, 1.0], dtype=torch.float64)
    scales = scales + 0.1
    inputs = [t.requires_grad_() for t in (means, quats, scales, opac, colors)]
    Ks = torch.tensor([[[20.0, 0, 6.5], [0, 20.0, 5.5], [0, 0, 1]]], dtype=torch.float64)

    def f(m, q, s, o, c):
        img, alpha, _ = rasterize(m, q, s, o, c, viewmats, Ks, 13, 11, render_mode="RGB+D")
        return img, alpha

    # fast mode checks random projections of the Jacobian (the full one costs a
    # backward pass per output pixel); the float64 parity with the dense
    # reference's autograd above covers the full gradients
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_gradcheck_sh_antialiased():
    means, quats, scales, opac, sh, viewmats, Ks = make_scene(n=3, n_cams=2, dtype=torch.float64, seed=9, sh_degree=1)
    means = means * torch.tensor([0.15, 0.15, 1.0], dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (means, quats, scales + 0.1, opac, sh)]
    Ks = torch.tensor([[20.0, 0, 6.5], [0, 20.0, 5.5], [0, 0, 1]], dtype=torch.float64).repeat(2, 1, 1)

    def f(m, q, s, o, c):
        img, alpha, _ = rasterize(m, q, s, o, c, viewmats, Ks, 13, 11, sh_degree=1, rasterize_mode="antialiased")
        return img, alpha

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_absgrad():
    params = [t.requires_grad_(i < 5) for i, t in enumerate(make_scene(n=50, n_cams=1))]
    img, alpha, meta = rasterize(*params, W, H, absgrad=True)
    assert meta["backend"] == "torch"  # auto on CPU
    for key in ("means2d", "radii", "depths", "width", "height", "n_cameras", "gaussian_ids"):
        assert key in meta  # what gsplat's DefaultStrategy reads (packed=False)
    assert meta["radii"].shape == (1, 50, 2) and meta["radii"].dtype == torch.int32
    img.sum().backward()
    m2d = meta["means2d"]
    assert m2d.absgrad.shape == m2d.shape
    assert (m2d.absgrad >= m2d.grad.abs() - 1e-5).all()


# ------------------------------------------------------------------ degenerate input


def _render_and_backward(scene, w=W, h=H):
    params = [t.detach().clone().requires_grad_(i < 5) for i, t in enumerate(scene)]
    img, alpha, meta = rasterize(*params, w, h)
    (img.sum() + alpha.sum()).backward()
    for p in params[:5]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert torch.isfinite(img).all() and torch.isfinite(alpha).all()
    return img, alpha, meta


def test_zero_gaussians():
    scene = make_scene(n=0)
    img, alpha, meta = _render_and_backward(scene)
    assert img.shape == (2, H, W, 3) and (img == 0).all() and (alpha == 0).all()
    assert meta["radii"].shape == (2, 0, 2)


def test_gaussians_behind_camera_and_off_screen():
    scene = make_scene(n=40)
    scene[0][:20, 2] = -3.0  # behind
    scene[0][20:, 0] = 50.0  # far to the side
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    img, alpha, meta = rasterize(*scene, W, H, backgrounds=bg)
    assert (meta["radii"] == 0).all()
    assert (alpha == 0).all()
    torch.testing.assert_close(img, bg[:, None, None, :].expand_as(img))
    _render_and_backward(scene)


@pytest.mark.parametrize("scale", [1e-9, 1e4, 1e20])
def test_extreme_scales(scale):
    scene = make_scene(n=30)
    scene[2] = torch.full_like(scene[2], scale)
    img, alpha, _ = _render_and_backward(scene)  # finite images and gradients
    if scale == 1e4:  # huge Gaussians cover everything (1e20 overflows float32 and is culled)
        assert float(alpha.detach().min()) > 0.5
    ref, ref_alpha, _ = rasterize_dense(*scene, W, H)
    _close(img, ref)


def test_gaussian_at_camera_centre_and_zero_quaternion():
    scene = make_scene(n=10)
    scene[0][0] = torch.tensor([0.0, 0.0, 0.0])
    scene[1][1:3] = 0.0
    _render_and_backward(scene)


# ------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "index,bad,name",
    [
        (0, torch.zeros(5, 2), "means"),
        (1, torch.zeros(4, 4), "quats"),
        (2, torch.zeros(5, 3, 1), "scales"),
        (3, torch.zeros(5, 1), "opacities"),
        (4, torch.zeros(6, 3), "colors"),
        (5, torch.zeros(2, 3, 4), "viewmats"),
        (6, torch.zeros(3, 3, 3), "Ks"),
    ],
)
def test_wrong_shape_names_argument(index, bad, name):
    scene = make_scene(n=5)
    scene[index] = bad
    with pytest.raises(ValueError, match=rf"^{name}: expected"):
        rasterize(*scene, W, H)


def test_nan_dtype_and_options_rejected():
    scene = make_scene(n=5)
    nan = [t.clone() for t in scene]
    nan[2][1, 0] = float("nan")
    with pytest.raises(ValueError, match="scales: contains NaN"):
        rasterize(*nan, W, H)
    ints = list(scene)
    ints[3] = torch.ones(5, dtype=torch.int64)
    with pytest.raises(ValueError, match="opacities: expected a float32 or float64"):
        rasterize(*ints, W, H)
    with pytest.raises(ValueError, match="render_mode"):
        rasterize(*scene, W, H, render_mode="RGBD")
    with pytest.raises(ValueError, match="backgrounds: expected shape"):
        rasterize(*scene, W, H, backgrounds=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="colors: sh_degree=2 needs K >= 9"):
        rasterize(*make_scene(n=5, sh_degree=1), W, H, sh_degree=2)
    with pytest.raises(ValueError, match="width"):
        rasterize(*scene, 0, H)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="gsplat"):
            rasterize(*scene, W, H, backend="gsplat")


# ----------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for gsplat's kernels")
@pytest.mark.parametrize("mode,kw", [("RGB", {}), ("RGB+ED", {"sh_degree": 3}), ("RGB", {"rasterize_mode": "antialiased"})])
def test_torch_backend_matches_gsplat_on_cuda(mode, kw):
    scene = make_scene(n=500, channels=3, sh_degree=kw.get("sh_degree"), seed=2, device="cuda")
    out = {}
    for backend in ("torch", "gsplat"):
        params = [t.detach().clone().requires_grad_(i < 5) for i, t in enumerate(scene)]
        img, alpha, meta = rasterize(*params, W, H, render_mode=mode, backend=backend, **kw)
        g = torch.Generator(device="cuda").manual_seed(0)
        loss = (img * torch.rand(img.shape, generator=g, device="cuda")).sum() + alpha.sum()
        loss.backward()
        out[backend] = (img.detach(), alpha.detach(), [p.grad for p in params[:5]], meta)
    (i1, a1, g1, m1), (i2, a2, g2, m2) = out["torch"], out["gsplat"]
    torch.testing.assert_close(a1, a2, atol=1e-4, rtol=1e-4)
    if mode == "RGB+ED":  # expected depth is depth-scaled; compare the colours absolutely
        torch.testing.assert_close(i1[..., :3], i2[..., :3], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(i1[..., 3:], i2[..., 3:], atol=1e-3, rtol=1e-4)
    else:
        torch.testing.assert_close(i1, i2, atol=1e-4, rtol=1e-4)
    # radii may differ by a pixel where ceil() meets float rounding (gsplat uses fast-math logf)
    assert int((m1["radii"] - m2["radii"]).abs().max()) <= 1
    g2d1, g2d2 = m1["means2d"].grad, m2["means2d"].grad
    scale = float(g2d2.abs().max()) + 1e-12
    torch.testing.assert_close(g2d1 / scale, g2d2 / scale, atol=1e-3, rtol=1e-3)
    for a, b in zip(g1, g2):
        scale = float(b.abs().max()) + 1e-12
        torch.testing.assert_close(a / scale, b / scale, atol=1e-3, rtol=1e-3)


def test_small_chunks_and_batches_match_dense(monkeypatch):
    # tiny blocks exercise the transmittance carry across chunks, the per-batch
    # early exit and the active-tile subsets, forward and backward
    import geo.raster as gr

    monkeypatch.setattr(gr, "_CHUNK", 5)
    monkeypatch.setattr(gr, "_BUDGET", 3 * 64 * 5)
    scene = make_scene(n=150, n_cams=2, dtype=torch.float64, opaque=True, seed=4)
    img, alpha, _ = rasterize(*scene, W, H, render_mode="RGB+D")
    ref, ref_alpha, _ = rasterize_dense(*scene, W, H, render_mode="RGB+D")
    torch.testing.assert_close(img, ref, atol=1e-10, rtol=1e-10)
    ours, _ = _grads(rasterize, scene, "RGB+D")
    theirs, _ = _grads(rasterize_dense, scene, "RGB+D")
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)
