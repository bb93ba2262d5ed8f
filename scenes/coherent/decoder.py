"""Implicit per-view decoder: view index -> per-segment residual maps at full resolution.

CoherentGS (Sec. 3.3, "single-view constraint") predicts each attribute's per-pixel
residual with a convolutional decoder in the style of X-Fields (Bemana et al.,
SIGGRAPH Asia 2020): the input is a sinusoidal encoding of the view index, a
1x1 "image" that is repeatedly upsampled x2 and convolved until it reaches the
image size. Because every output pixel comes out of the same smooth
upsampling/convolution stack, neighbouring Gaussians of a view receive
correlated updates: they move together.

Departures: CoordConv channels (x, y in [-1, 1]) are concatenated before *every*
convolution (the released code adds them once, after the first); the last
upsampling step resizes bilinearly to the exact image size instead of padding
odd sizes; the last layer is zero-initialised so the residual is exactly 0 at
the start (the initial geometry is the depth initialisation, bit for bit).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["view_encoding", "ImplicitDecoder", "combine_segments"]


def view_encoding(num_views: int, freqs: int = 10) -> Tensor:
    """Sinusoidal encoding ``[V, 2 * freqs, 1, 1]`` of view indices spread over [0, 1].

    ``x_v = v / (V - 1)``; channels ``sin(2^k pi x), cos(2^k pi x)`` for ``k < freqs``.
    """
    x = torch.linspace(0.0, 1.0, num_views) if num_views > 1 else torch.zeros(1)
    k = (2.0 ** torch.arange(freqs, dtype=torch.float32)) * math.pi
    ang = x[:, None] * k[None]
    return torch.cat([torch.sin(ang), torch.cos(ang)], 1)[:, :, None, None]


def _coords(n: int, h: int, w: int, dtype, device) -> Tensor:
    ys = torch.linspace(-1.0, 1.0, h, dtype=dtype, device=device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])[None].expand(n, -1, -1, -1)


class ImplicitDecoder(nn.Module):
    """Upsampling CoordConv decoder from a ``[V, C_in, 1, 1]`` code to ``[V, C_out, H, W]``.

    Args:
        height, width: output size.
        out_channels: one channel per depth segment.
        in_channels: encoding channels (``2 * freqs``).
        ngf: width multiplier; layer widths are ``ngf * (16, 16, 16, 8, 8, 8, 4, 4, ...)``.
    """

    def __init__(self, height: int, width: int, out_channels: int, in_channels: int = 20, ngf: int = 4) -> None:
        super().__init__()
        self.height, self.width = int(height), int(width)
        n_up = max(1, math.ceil(math.log2(max(height, width))))
        widths = [16, 16, 16, 8, 8, 8] + [4] * max(0, n_up - 6)
        widths = [ngf * w for w in widths[:n_up]]
        self.sizes = []
        for i in range(n_up):
            s = 2 ** (i + 1)
            self.sizes.append((min(s, self.height), min(s, self.width)))
        self.sizes[-1] = (self.height, self.width)
        layers = []
        c = in_channels
        for i, w in enumerate(widths):
            k = 1 if i == 0 else 3
            conv = nn.Conv2d(c + 2, w, k)
            nn.init.normal_(conv.weight, 0.0, 0.02 if i > 0 else 0.2)
            nn.init.zeros_(conv.bias)
            layers.append(conv)
            c = w
        self.layers = nn.ModuleList(layers)
        self.last = nn.Conv2d(c + 2, out_channels, 3)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def _block(self, conv: nn.Conv2d, x: Tensor) -> Tensor:
        x = torch.cat([x, _coords(x.shape[0], x.shape[2], x.shape[3], x.dtype, x.device)], 1)
        if conv.kernel_size[0] == 3:
            x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return conv(x)

    def forward(self, code: Tensor) -> Tensor:
        """``[V, C_in, 1, 1]`` -> ``[V, C_out, H, W]`` (unbounded; callers apply tanh)."""
        x = code
        for conv, size in zip(self.layers, self.sizes):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
            x = F.leaky_relu(self._block(conv, x), 0.2)
        return self._block(self.last, x)


def combine_segments(raw: Tensor, onehot: Tensor) -> Tensor:
    """Per-segment residuals ``[V, K, H, W]`` -> one map ``[V, H, W]`` through segment masks ``[V, K, H, W]``.

    ``sum_k m_k tanh(raw_k) / max(sum_k m_k, eps)``: each pixel takes its own layer's channel,
    so a depth discontinuity between layers can open without the decoder blurring across it.
    """
    t = torch.tanh(raw) * onehot
    return t.sum(1) / onehot.sum(1).clamp_min(1e-10)
