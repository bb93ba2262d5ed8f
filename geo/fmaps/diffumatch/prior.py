"""The DiffuMatch spectral prior: a score-based denoiser ``D(x, σ)`` over ``|C| [k, k]``.

Paper (Pierson, Li, Dai, Ovsjanikov, ICCV 2025, §3.2): an EDM-framework diffusion
model (Karras et al., "Elucidating the Design Space of Diffusion-Based Generative
Models", NeurIPS 2022) trained on the absolute values of k = 30 functional maps with the
**VP** loss and **VP** preconditioning (EDM Table 1, "VP" column), a DiT-S/4
denoiser (Peebles & Xie 2023) on the map seen as a one-channel 30 × 30 image.

What we keep: the VP column of EDM Table 1 exactly —
``D(x; σ) = c_skip x + c_out F(c_in x; c_noise)`` with ``c_skip = 1``,
``c_out = -σ``, ``c_in = 1/sqrt(σ² + 1)``, ``c_noise = (M - 1) t(σ)``, where
``σ(t) = sqrt(exp(½ β_d t² + β_min t) - 1)`` (β_d = 19.9, β_min = 0.1, M = 1000), and
the VP loss ``λ(σ) = 1/σ²`` with ``t ~ U(ε_t, t_max)``.

Where we depart, and why:

* **Denoiser**: a small DiT-style transformer instead of DiT-S/4 (33M parameters):
  ``patch × patch`` patches as tokens (5 × 5 → 36 tokens for k = 30), width 64,
  4 blocks, 4 heads, MLP ratio 2, learned positional embedding, σ conditioning by *adaLN-single* (one shared
  MLP of the noise embedding produces the shift/scale/gate of every block, plus a
  learned per-block offset, as in PixArt-α) with zero-initialised gates (adaLN-Zero). It
  has 0.18M parameters (a 0.75 MB float32 checkpoint); one forward on 200 maps is
  ~1.9 GFLOP (measured 0.16–0.18 s on the project's 2-core machine while it was
  loaded at 6–8 runnable jobs; the distilled mask needs 200 maps per solve).
* **Data normalisation** (inside the module): the network sees
  ``x̂ = (x - μ) / s`` with the per-entry mean ``μ [k, k]`` and scalar std ``s`` of the
  training maps, and noise level ``σ̂ = σ / s``; ``D(x, σ) = μ + s · D̂(x̂, σ̂)``. This is
  an exact change of variables, so σ keeps its meaning in units of ``|C|`` (what the
  paper's mask and SDS noise levels refer to).
* **Training noise range**: ``t_max`` is set so that ``σ̂ ≤ σ̂_max`` (10 by default)
  instead of ``t_max = 1`` (σ ≈ 152): large noise levels carry no information about
  30 × 30 maps and would take most of a CPU training budget.
* **Training maps**: our own deformation / remeshing pairs (:mod:`.data`) instead of
  DFAUST/SURREAL humans-to-template maps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_PRIOR = Path(__file__).resolve().parents[3] / "assets" / "fmaps" / "diffumatch_prior.pt"


@dataclass
class PriorConfig:
    """Architecture and VP-schedule hyper-parameters (saved in the checkpoint)."""

    k: int = 30
    patch: int = 5
    width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    beta_d: float = 19.9  # VP schedule (Song et al. 2021), EDM Table 1
    beta_min: float = 0.1
    M: int = 1000
    eps_t: float = 1e-5
    sigma_max: float = 10.0  # in normalised units (σ / s)


def _modules():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, width: int, heads: int, mlp_ratio: float):
            super().__init__()
            self.heads = heads
            self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)
            self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
            hidden = int(width * mlp_ratio)
            self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
            self.offset = nn.Parameter(torch.zeros(6, width))  # adaLN-single per-block offset

        def forward(self, h, mod):  # h [B, T, W], mod [B, 6, W]
            shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.offset).unbind(1)
            B, T, W = h.shape
            a = self.norm1(h) * (1 + scale1[:, None]) + shift1[:, None]
            q, k, v = self.qkv(a).view(B, T, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, W)
            h = h + gate1[:, None] * self.proj(a)
            a = self.norm2(h) * (1 + scale2[:, None]) + shift2[:, None]
            return h + gate2[:, None] * self.mlp(a)

    class FmapPrior(nn.Module):
        """EDM/VP-preconditioned denoiser ``D(x, σ)`` of ``|C|`` maps.

        Args:
            cfg: :class:`PriorConfig`.

        Shape:
            ``forward(x [B?, k, k], sigma)`` with ``sigma`` a float, ``[B]`` or
            ``[B, 1, 1]`` (σ in units of ``|C|``) → ``[B?, k, k]``, the estimate of
            the clean map. Buffers ``mean [k, k]`` and ``scale []`` hold the data
            normalisation (set by training, saved in the checkpoint).

        Example:
            >>> prior = load_prior()
            >>> x = C.abs() + 0.3 * torch.randn_like(C)
            >>> den = prior(x, 0.3)
        """

        def __init__(self, cfg: PriorConfig | None = None):
            super().__init__()
            cfg = cfg or PriorConfig()
            if cfg.k % cfg.patch:
                raise ValueError(f"k = {cfg.k} must be a multiple of patch = {cfg.patch}")
            self.cfg = cfg
            k, p, W = cfg.k, cfg.patch, cfg.width
            self.n_side = k // p
            self.register_buffer("mean", torch.zeros(k, k))
            self.register_buffer("scale", torch.ones(()))
            self.embed = nn.Linear(p * p, W)
            self.pos = nn.Parameter(torch.randn(self.n_side**2, W) * 0.02)
            self.t_mlp = nn.Sequential(nn.Linear(W, W), nn.SiLU(), nn.Linear(W, W))
            self.t_mod = nn.Sequential(nn.SiLU(), nn.Linear(W, 6 * W))
            self.blocks = nn.ModuleList([Block(W, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
            self.norm_out = nn.LayerNorm(W, elementwise_affine=False, eps=1e-6)
            self.out_mod = nn.Linear(W, 2 * W)
            self.out = nn.Linear(W, p * p)
            for lin in (self.t_mod[-1], self.out_mod, self.out):  # adaLN-Zero: blocks start as identity
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

        # -- VP schedule (EDM Table 1) ------------------------------------------------
        def sigma_of_t(self, t):
            c = self.cfg
            return torch.sqrt(torch.exp(0.5 * c.beta_d * t**2 + c.beta_min * t) - 1)

        def t_of_sigma(self, sigma):
            c = self.cfg
            return (torch.sqrt(c.beta_min**2 + 2 * c.beta_d * torch.log1p(sigma**2)) - c.beta_min) / c.beta_d

        def _noise_embedding(self, c_noise):  # [B] -> [B, W] sinusoidal (DiT's timestep embedding)
            half = self.cfg.width // 2
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
            a = c_noise[:, None].float() * freqs[None]
            return self.t_mlp(torch.cat([torch.cos(a), torch.sin(a)], -1))

        def network(self, x, c_noise):
            """``F(x̂ [B, k, k], c_noise [B]) -> [B, k, k]`` (normalised units)."""
            B, k, p, n = x.shape[0], self.cfg.k, self.cfg.patch, self.n_side
            tok = x.reshape(B, n, p, n, p).permute(0, 1, 3, 2, 4).reshape(B, n * n, p * p)
            h = self.embed(tok) + self.pos
            e = self._noise_embedding(c_noise)
            mod = self.t_mod(e).view(B, 6, -1)
            for blk in self.blocks:
                h = blk(h, mod)
            shift, scale = self.out_mod(torch.nn.functional.silu(e)).chunk(2, -1)
            h = self.out(self.norm_out(h) * (1 + scale[:, None]) + shift[:, None])
            return h.view(B, n, n, p, p).permute(0, 1, 3, 2, 4).reshape(B, k, k)

        def denoise_normalized(self, xn, sn):
            """``D̂(x̂, σ̂)`` with the VP preconditioning; ``xn [B, k, k]``, ``sn [B]``."""
            s = sn.view(-1, 1, 1)
            F = self.network(xn / torch.sqrt(s**2 + 1), (self.cfg.M - 1) * self.t_of_sigma(sn))
            return xn - s * F  # c_skip = 1, c_out = -σ

        def forward(self, x, sigma):
            x = torch.as_tensor(x)
            unb = x.dim() == 2
            if unb:
                x = x.unsqueeze(0)
            k = self.cfg.k
            if x.dim() != 3 or x.shape[-2:] != (k, k):
                raise ValueError(f"expected maps of shape [B, {k}, {k}] or [{k}, {k}], got {tuple(x.shape)}")
            dtype = x.dtype
            x = x.to(self.mean.dtype)
            sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
            sig = sig.expand(x.shape[0]) if sig.numel() == 1 else sig
            if sig.numel() != x.shape[0]:
                raise ValueError(f"sigma must be a scalar or have one value per map ({x.shape[0]}), got {sig.numel()}")
            xn = (x - self.mean) / self.scale
            out = self.mean + self.scale * self.denoise_normalized(xn, sig / self.scale)
            out = out.to(dtype)
            return out[0] if unb else out

    return FmapPrior


_CLASSES: dict = {}


def _cls():
    if "FmapPrior" not in _CLASSES:
        _CLASSES["FmapPrior"] = _modules()
    return _CLASSES["FmapPrior"]


def __getattr__(name):
    if name == "FmapPrior":
        return _cls()
    raise AttributeError(name)


def build_prior(cfg: PriorConfig | None = None):
    """A fresh (untrained) :class:`FmapPrior`."""
    return _cls()(cfg)


def save_prior(path, model, meta: dict | None = None) -> Path:
    """Atomically write ``model`` (config, float32 state, JSON-able ``meta``) to ``path``."""
    import torch

    from geo.fileio import atomic_write, jsonable

    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"config": asdict(model.cfg), "state_dict": state, "meta": jsonable(meta or {})}
    return atomic_write(path, lambda p: torch.save(payload, p))


def load_prior(path=None, device=None):
    """The :class:`FmapPrior` at ``path`` (default ``assets/fmaps/diffumatch_prior.pt``),
    float32, eval mode, gradients off; ``model.meta`` holds the saved metadata.

    Raises:
        FileNotFoundError: naming the path and the command that trains a prior.
    """
    import torch

    path = Path(path or DEFAULT_PRIOR)
    if not path.exists():
        raise FileNotFoundError(
            f"no DiffuMatch prior checkpoint at {path}; train one with "
            f"`python -m geo.fmaps.diffumatch.train --out {path}`"
        )
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = build_prior(PriorConfig(**ck["config"]))
    model.load_state_dict(ck["state_dict"])
    model.eval().requires_grad_(False)
    model.meta = ck.get("meta", {})
    return model.to(device) if device is not None else model
