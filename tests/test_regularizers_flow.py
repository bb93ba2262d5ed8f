"""Flow warping (pixel-centre convention), forward-backward consistency, flow-warp loss."""

import pytest
import torch
from torch.autograd import gradcheck

from geo.regularizers import FlowWarpLoss, backward_warp, fb_consistency_mask, flow_in_bounds, flow_warp_loss

D64 = torch.float64


def _const_flow(b, h, w, du, dv, dtype=D64):
    f = torch.zeros(b, 2, h, w, dtype=dtype)
    f[:, 0], f[:, 1] = du, dv
    return f


@pytest.mark.parametrize("dtype", [torch.float32, D64])
def test_integer_flow_shifts_exactly(dtype):
    h, w, du, dv = 7, 10, 2, -1
    img = torch.rand(2, 3, h, w, dtype=dtype)
    out = backward_warp(img, _const_flow(2, h, w, du, dv, dtype))
    # out[i, j] = img[i + dv, j + du] wherever that pixel exists
    expected = img[:, :, 0 : h + dv, du:w]
    if dtype == D64:  # exact: the normalised grid round-trips to the integer pixel
        assert torch.equal(out[:, :, -dv:h, 0 : w - du], expected)
    else:  # grid_sample's float32 (un)normalisation leaves interpolation weights of ~1e-7
        torch.testing.assert_close(out[:, :, -dv:h, 0 : w - du], expected, rtol=0, atol=1e-6)
    inb = flow_in_bounds(_const_flow(2, h, w, du, dv, dtype))
    assert inb.shape == (2, 1, h, w)
    assert inb[:, :, -dv:h, 0 : w - du].all() and inb.sum() == 2 * (h + dv) * (w - du)


def test_zero_flow_is_identity_and_half_pixel_interpolates():
    img = torch.rand(1, 1, 4, 5, dtype=D64)
    assert torch.equal(backward_warp(img, torch.zeros(1, 2, 4, 5, dtype=D64)), img)
    half = backward_warp(img, _const_flow(1, 4, 5, 0.5, 0.0))
    assert torch.allclose(half[..., :4], 0.5 * (img[..., :4] + img[..., 1:]))


def test_fb_consistency_all_true_for_consistent_flows():
    h, w = 8, 9
    fw, bw = _const_flow(1, h, w, 3.0, 1.0), _const_flow(1, h, w, -3.0, -1.0)
    assert fb_consistency_mask(fw, bw).all()
    assert fb_consistency_mask(torch.zeros(2, 2, h, w), torch.zeros(2, 2, h, w)).all()
    # with the bounds test, pixels that leave the image are dropped
    assert not fb_consistency_mask(fw, bw, check_bounds=True).all()


def test_fb_consistency_false_in_constructed_occlusion():
    # An object (rows 2..4, cols 2..4 of view a) moves 4 px right; view b shows background
    # there (zero backward flow): those pixels are occluded in b, all others consistent.
    h, w = 8, 12
    fw = torch.zeros(1, 2, h, w, dtype=D64)
    fw[:, 0, 2:5, 2:5] = 4.0
    bw = torch.zeros(1, 2, h, w, dtype=D64)
    mask = fb_consistency_mask(fw, bw)
    expected = torch.ones(1, 1, h, w, dtype=torch.bool)
    expected[:, :, 2:5, 2:5] = False
    assert torch.equal(mask, expected)


def test_flow_warp_loss_zero_for_matching_maps_and_positive_otherwise():
    h, w = 6, 9
    map_b = torch.rand(1, 3, h, w, dtype=D64)
    map_a = torch.roll(map_b, shifts=-2, dims=3)  # map_a[i, j] = map_b[i, j + 2]
    flow = _const_flow(1, h, w, 2.0, 0.0)
    assert flow_warp_loss(map_a, map_b, flow) == 0.0
    assert flow_warp_loss(map_a, map_b, torch.zeros_like(flow)) > 0
    # masks: nothing valid -> 0
    assert flow_warp_loss(map_a, map_b, torch.zeros_like(flow), valid=torch.zeros(1, 1, h, w, dtype=torch.bool)) == 0
    # fb-consistency excludes an inconsistent region
    flow_ba = -flow.clone()
    flow_ba[..., :, :3] = 5.0
    mod = FlowWarpLoss(weight=2.0)
    assert mod(map_a, map_b, flow, flow_ba=flow_ba) == 0.0


def test_flow_warp_loss_gradcheck():
    h, w = 4, 5
    map_a = torch.rand(1, 2, h, w, dtype=D64, requires_grad=True)
    map_b = torch.rand(1, 2, h, w, dtype=D64, requires_grad=True)
    flow = (0.3 + 0.4 * torch.rand(1, 2, h, w, dtype=D64)).requires_grad_()  # away from pixel centres
    assert gradcheck(flow_warp_loss, (map_a, map_b, flow))


def test_flow_input_errors():
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        backward_warp(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="flow"):
        backward_warp(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 5))
    with pytest.raises(ValueError, match="NaN"):
        fb_consistency_mask(torch.full((1, 2, 4, 4), float("nan")), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        flow_warp_loss(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
