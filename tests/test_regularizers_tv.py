"""Total variation and edge-aware smoothness: hand-computed values in 1D, 2D and 3D."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from geo.regularizers import EdgeAwareSmoothness, TotalVariation, edge_aware_smoothness, total_variation

D64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _t(values):
    return torch.tensor(values, dtype=D64)


# --- step edges and ramps, against hand-computed values ------------------------------

def test_tv_1d_step_and_ramp():
    step = _t([[[0.0, 0.0, 1.0, 1.0]]])  # [1, 1, 4]
    assert total_variation(step, reduction="sum") == 1.0
    assert total_variation(step) == pytest.approx(1 / 3)  # 3 differences
    assert total_variation(step, penalty="l2", reduction="sum") == 1.0
    assert total_variation(step, penalty="huber", delta=2.0, reduction="sum") == pytest.approx(0.25)  # 1^2 / (2*2)
    assert total_variation(step, penalty="huber", delta=0.5, reduction="sum") == pytest.approx(0.75)  # 1 - 0.5/2
    ramp = 2.0 * _t([[[0.0, 1.0, 2.0, 3.0]]])
    assert total_variation(ramp, reduction="sum") == pytest.approx(6.0)
    assert total_variation(ramp) == pytest.approx(2.0)
    assert total_variation(ramp, penalty="l2") == pytest.approx(4.0)
    assert total_variation(ramp, isotropic=True, reduction="sum") == pytest.approx(6.0)


def test_tv_2d_step_and_ramp():
    h, w = 3, 4
    step = torch.zeros(1, 1, h, w, dtype=D64)
    step[..., 2:] = 1.0  # vertical edge between columns 1 and 2
    assert total_variation(step, reduction="sum") == pytest.approx(3.0)  # one jump per row
    assert total_variation(step) == pytest.approx(3.0 / ((h - 1) * w + h * (w - 1)))  # 3 / 17
    assert total_variation(step, isotropic=True, reduction="sum") == pytest.approx(2.0)  # interior rows 0..1
    assert total_variation(step, isotropic=True) == pytest.approx(2.0 / ((h - 1) * (w - 1)))

    i = torch.arange(h, dtype=D64).view(h, 1)
    j = torch.arange(w, dtype=D64).view(1, w)
    ramp = (1.0 * i + 2.0 * j).expand(h, w)[None, None]
    assert total_variation(ramp, reduction="sum") == pytest.approx(1.0 * (h - 1) * w + 2.0 * h * (w - 1))  # 26
    assert total_variation(ramp, penalty="l2", reduction="sum") == pytest.approx(1.0 * (h - 1) * w + 4.0 * h * (w - 1))  # 44
    assert total_variation(ramp, isotropic=True, reduction="sum") == pytest.approx(math.sqrt(5) * (h - 1) * (w - 1))
    assert total_variation(ramp, isotropic=True, penalty="l2", reduction="sum") == pytest.approx(5.0 * (h - 1) * (w - 1))
    # Huber with a large threshold is l2 / (2 delta)
    assert total_variation(ramp, penalty="huber", delta=10.0) == pytest.approx(total_variation(ramp, penalty="l2") / 20.0)


def test_tv_3d_step_and_ramp_include_depth_term():
    d, h, w = 2, 3, 4
    step = torch.zeros(1, 1, d, h, w, dtype=D64)
    step[:, :, 1] = 1.0  # an edge along the depth axis only (kornia's TV would give 0)
    count = (d - 1) * h * w + d * (h - 1) * w + d * h * (w - 1)  # 46
    assert total_variation(step, reduction="sum") == pytest.approx(h * w)
    assert total_variation(step) == pytest.approx(h * w / count)
    assert total_variation(step, isotropic=True, reduction="sum") == pytest.approx((h - 1) * (w - 1))

    k, i, j = torch.meshgrid(*(torch.arange(s, dtype=D64) for s in (d, h, w)), indexing="ij")
    ramp = (1.0 * k + 2.0 * i + 3.0 * j)[None, None]
    assert total_variation(ramp, reduction="sum") == pytest.approx(1.0 * 12 + 2.0 * 16 + 3.0 * 18)  # 98
    assert total_variation(ramp, isotropic=True, reduction="sum") == pytest.approx(math.sqrt(14) * (d - 1) * (h - 1) * (w - 1))


def test_tv_batch_channels_and_none_reduction():
    x = torch.rand(3, 2, 5, 6, dtype=D64)
    per = total_variation(x, reduction="none")
    assert per.shape == (3,)
    assert per.sum() == pytest.approx(float(total_variation(x, reduction="sum")))
    n_terms = 3 * 2 * (4 * 6 + 5 * 5)
    assert total_variation(x) == pytest.approx(float(per.sum()) / n_terms)


def test_tv_mask_and_segments():
    step = _t([[[0.0, 0.0, 1.0, 1.0]]])
    mask = _t([[[1.0, 1.0, 0.0, 1.0]]])
    assert total_variation(step, mask=mask, reduction="sum") == 0.0  # the jump touches a masked point
    assert total_variation(step, mask=mask) == 0.0  # one counted difference, of 0
    seg = torch.tensor([[[0, 0, 1, 1]]])
    assert total_variation(step, segments=seg, reduction="sum") == 0.0  # boundary excluded
    assert total_variation(step, segments=seg, boundary_weight=0.5, reduction="sum") == pytest.approx(0.5)
    ramp = _t([[[0.0, 1.0, 2.0, 3.0]]])
    sw = _t([2.0, 3.0])
    assert total_variation(ramp, segments=seg, segment_weights=sw, reduction="sum") == pytest.approx(5.0)
    assert total_variation(ramp, segments=seg, segment_weights=sw) == pytest.approx(1.0)  # 5 / (2 + 0 + 3)
    # 2D isotropic: a segment boundary along a row removes the interior cells touching it
    x = torch.rand(1, 1, 4, 4, dtype=D64)
    seg2 = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    seg2[..., 2:, :] = 1
    full = total_variation(x, isotropic=True, reduction="none")
    cut = total_variation(x, isotropic=True, segments=seg2, reduction="none")
    assert 0 < cut < full


def test_tv_dimension_generic_module():
    tv = TotalVariation(weight=0.5, penalty="huber", delta=0.1)
    img, vol = torch.rand(2, 3, 8, 8), torch.rand(1, 4, 6, 6, 6)
    for x in (img, vol):
        out = tv(x)
        assert out.ndim == 0 and out > 0
        assert tv(torch.ones_like(x)) == 0
        assert out == pytest.approx(0.5 * float(total_variation(x, "huber", delta=0.1)), rel=1e-6)


@pytest.mark.parametrize("penalty", ["l1", "l2", "huber"])
@pytest.mark.parametrize("isotropic", [False, True])
@pytest.mark.parametrize("shape", [(1, 2, 5), (1, 2, 3, 4), (1, 1, 3, 3, 3)])
def test_tv_gradcheck(penalty, isotropic, shape):
    x = torch.rand(*shape, dtype=D64, requires_grad=True)
    m = (torch.rand(shape[0], 1, *shape[2:], dtype=D64) > 0.2).to(D64)
    assert gradcheck(lambda t: total_variation(t, penalty, isotropic, delta=0.3, mask=m), (x,))


def test_tv_isotropic_zero_gradient_in_flat_regions():
    x = torch.zeros(1, 1, 4, 4, dtype=D64, requires_grad=True)
    total_variation(x, isotropic=True).backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()


def test_tv_input_errors():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        total_variation(torch.rand(4, 4))
    with pytest.raises(ValueError, match="NaN"):
        total_variation(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        total_variation(torch.rand(1, 0, 4, 4))
    with pytest.raises(ValueError, match="mask"):
        total_variation(torch.rand(1, 2, 4, 4), mask=torch.ones(1, 1, 4, 5))
    with pytest.raises(ValueError, match="segments"):
        total_variation(torch.rand(1, 2, 4, 4), segments=torch.zeros(1, 2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        total_variation(torch.rand(1, 2, 4, 4), segments=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="penalty"):
        total_variation(torch.rand(1, 1, 4, 4), penalty="l3")


# --- edge-aware smoothness -------------------------------------------------------------

def test_edge_aware_smoothness_hand_value():
    depth = torch.arange(3, dtype=D64).view(1, 1, 1, 3).expand(1, 1, 2, 3).contiguous()  # d/dx = 1
    image = torch.zeros(1, 3, 2, 3, dtype=D64)
    image[..., 2] = 1.0  # an edge between columns 1 and 2
    gamma = 2.0
    expected = (1.0 + math.exp(-gamma)) / 2  # x-terms: weights 1 and exp(-gamma); y-terms are 0
    assert edge_aware_smoothness(depth, image, gamma=gamma) == pytest.approx(expected)
    # gamma = 0 reduces to per-axis mean L1 differences
    assert edge_aware_smoothness(depth, image, gamma=0.0) == pytest.approx(1.0)


def test_edge_aware_smoothness_2d_and_3d_and_normalisation():
    mod = EdgeAwareSmoothness(weight=1.0, normalize=True)
    for shape in ((2, 1, 8, 8), (1, 1, 4, 6, 6)):
        disp = torch.rand(*shape, dtype=D64) + 0.1
        img = torch.rand(shape[0], 3, *shape[2:], dtype=D64)
        out = mod(disp, img)
        assert out.ndim == 0 and out > 0
        # mean-normalised disparity is scale invariant
        assert mod(5.0 * disp, img) == pytest.approx(float(out), rel=1e-6)
        assert gradcheck(lambda d, i: edge_aware_smoothness(d, i, 1.5, True), (disp.clone().requires_grad_(), img.clone().requires_grad_()))


def test_edge_aware_smoothness_errors():
    with pytest.raises(ValueError, match=r"\[B, 1, \*S\]"):
        edge_aware_smoothness(torch.rand(1, 2, 4, 4), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="image"):
        edge_aware_smoothness(torch.rand(1, 1, 4, 4), torch.rand(1, 3, 4, 5))
