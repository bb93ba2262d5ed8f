"""Score distillation sampling (SDS) guidance from a latent diffusion model.

SDS (Poole et al., "DreamFusion", ICLR 2023, Eq. 3): for a rendered image ``x`` with
latent ``z = E(x)``, noise ``eps``, timestep ``t`` and ``z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps``,
the gradient pushed into ``z`` is ``w(t) (eps_hat(z_t; y, t) - eps)``, skipping the
UNet Jacobian. ``eps_hat`` uses classifier-free guidance with scale ``s``:
``eps_u + s (eps_c - eps_u)``. Vox-E (Sec. 4.1) applies it to renders of the grid with
Stable Diffusion; the choices here follow common SDS code (threestudio, stable-dreamfusion):
``w(t) = 1 - abar_t`` or uniform, ``t`` uniform in a range whose upper end is annealed
linearly, element-wise gradient clipping, and view-dependent prompt suffixes.

Backends: :func:`load_stable_diffusion` reads a local diffusers directory with no
network access; :func:`build_tiny_model` builds a small random UNet / VAE / CLIP text
encoder from configs in code (tests, benchmarks). Both return a :class:`DiffusionModel`.
``diffusers`` and ``transformers`` (the ``[edit]`` extra) are imported only inside
these functions, never when the package is imported.

Cross-attention capture (for local edits, Vox-E Sec. 4.3): :class:`CrossAttentionStore`
installs a processor on every cross-attention layer (``attn2``) that records the
head-averaged attention probabilities ``softmax(QK^T / sqrt(d))`` ``[B, h w, L]``;
:meth:`Guidance.attention_maps` upsamples them to the image size and averages over layers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scenes.voxe.config import GuidanceConfig

__all__ = [
    "DiffusionModel", "Guidance", "WordTokenizer", "build_tiny_model", "build_sd2_sized_model", "load_stable_diffusion",
    "view_direction", "check_model_dir", "ModelPathError", "CrossAttentionStore",
]

# files a Stable Diffusion directory needs: (component, one-of file names)
_REQUIRED = [
    ("model_index.json", ("model_index.json",)),
    ("unet config", ("unet/config.json",)),
    ("unet weights", ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin",
                      "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.bin")),
    ("vae config", ("vae/config.json",)),
    ("vae weights", ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin",
                     "vae/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.bin")),
    ("text encoder config", ("text_encoder/config.json",)),
    ("text encoder weights", ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin",
                              "text_encoder/model.fp16.safetensors", "text_encoder/pytorch_model.fp16.bin")),
    ("tokenizer", ("tokenizer/vocab.json",)),
    ("tokenizer merges", ("tokenizer/merges.txt",)),
    ("scheduler config", ("scheduler/scheduler_config.json",)),
]


class ModelPathError(FileNotFoundError):
    """The diffusion model directory is missing or incomplete."""


def check_model_dir(path) -> Path:
    """Raise :class:`ModelPathError` naming every missing file of a diffusers SD directory."""
    expected = "\n".join(f"  {name}: {' or '.join(files)}" for name, files in _REQUIRED)
    if path is None or str(path) == "":
        raise ModelPathError(
            "no diffusion model given: pass --model-path DIR, a local Stable Diffusion directory in diffusers "
            "layout (e.g. a snapshot of stabilityai/stable-diffusion-2-1-base; nothing is downloaded). "
            f"It must contain:\n{expected}"
        )
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelPathError(f"--model-path {p} is not a directory; expected a diffusers Stable Diffusion directory with:\n{expected}")
    missing = [f"  {name}: {' or '.join(files)}" for name, files in _REQUIRED if not any((p / f).is_file() for f in files)]
    if missing:
        raise ModelPathError(f"--model-path {p} is incomplete (weights cannot be downloaded here); missing:\n" + "\n".join(missing))
    return p


class WordTokenizer:
    """A tiny word-level tokenizer for the config-built text encoder (no vocabulary files).

    Words are lower-cased runs of letters/digits; each maps to a stable id in
    ``[3, vocab_size)`` (a polynomial hash of its characters). Sequences are
    ``[BOS, w1, ..., EOS, PAD...]`` of length ``max_length``.
    """

    bos, eos, pad = 0, 1, 2

    def __init__(self, vocab_size: int = 1000, max_length: int = 16):
        self.vocab_size, self.max_length = vocab_size, max_length

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def word_id(self, w: str) -> int:
        h = 0
        for ch in w:
            h = (h * 131 + ord(ch)) % 1_000_003
        return 3 + h % (self.vocab_size - 3)

    def __call__(self, texts: list[str]):
        import torch

        rows = []
        for t in texts:
            ids = [self.bos] + [self.word_id(w) for w in self.words(t)][: self.max_length - 2] + [self.eos]
            rows.append(ids + [self.pad] * (self.max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def token_positions(self, prompt: str, word: str) -> list[int]:
        ws = self.words(prompt)[: self.max_length - 2]
        targets = set(self.words(word))
        return [i + 1 for i, w in enumerate(ws) if w in targets]


class _ClipTokenizer:
    """Adapter giving a transformers CLIP tokenizer the :class:`WordTokenizer` interface."""

    def __init__(self, tok):
        self.tok = tok
        self.max_length = tok.model_max_length

    def __call__(self, texts: list[str]):
        return self.tok(texts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt").input_ids

    def token_positions(self, prompt: str, word: str) -> list[int]:
        ids = self.tok(prompt, truncation=True, max_length=self.max_length).input_ids
        sub = [i for i in self.tok(word, add_special_tokens=False).input_ids]
        pos = []
        for s in range(len(ids) - len(sub) + 1):
            if sub and ids[s:s + len(sub)] == sub:
                pos += list(range(s, s + len(sub)))
        return pos


@dataclass
class DiffusionModel:
    """The parts of a latent diffusion model that SDS needs (all frozen, eval mode)."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any  # WordTokenizer interface: __call__(texts) -> ids, token_positions(prompt, word)
    scheduler: Any  # diffusers scheduler with alphas_cumprod and config.num_train_timesteps
    resolution: int  # image size the model expects (latents are resolution / 8)
    scaling_factor: float
    device: Any
    dtype: Any

    def freeze(self) -> DiffusionModel:
        for m in (self.unet, self.vae, self.text_encoder):
            m.requires_grad_(False)
            m.eval()
        return self


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def build_tiny_model(device: str = "cpu", seed: int = 0, resolution: int = 64) -> DiffusionModel:
    """A small random latent diffusion model from configs (no files, no network).

    UNet: 2 levels (32, 64 channels), cross-attention at the first level and in the mid
    block; VAE: 4 levels (downsampling 8x, like SD's) with 8-16 channels; text encoder:
    a 2-layer CLIP transformer of width 32 over :class:`WordTokenizer` ids.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = WordTokenizer(vocab_size=1000, max_length=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=tok.max_length,
                                        bos_token_id=tok.bos, eos_token_id=tok.eos, pad_token_id=tok.pad))
    unet = UNet2DConditionModel(
        sample_size=resolution // 8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=resolution,
    )
    dev = _device(device)
    m = DiffusionModel(unet.to(dev), vae.to(dev), text.to(dev), tok, _scheduler(), resolution, 0.18215, dev, torch.float32)
    return m.freeze()


def build_sd2_sized_model(device: str = "cpu", seed: int = 0) -> DiffusionModel:
    """Stable Diffusion 2 (base, 512 px) architecture with random weights, built from its config.

    For timing only: UNet (320-640-1280-1280, linear-projection transformers, 1024-d
    cross attention, ~865M parameters), SD's VAE, and a 23-layer 1024-wide CLIP text
    encoder (OpenCLIP ViT-H/14's text tower) over :class:`WordTokenizer` ids.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = WordTokenizer(vocab_size=49408, max_length=77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                                        bos_token_id=tok.bos, eos_token_id=tok.eos, pad_token_id=tok.pad))
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
    )
    dev = _device(device)
    m = DiffusionModel(unet.to(dev), vae.to(dev), text.to(dev), tok, _scheduler(), 512, 0.18215, dev, torch.float32)
    return m.freeze()


def load_stable_diffusion(model_path, device: str = "auto", half: bool = False) -> DiffusionModel:
    """Load a local diffusers Stable Diffusion directory without network access.

    Raises:
        ModelPathError: the directory is missing or lacks a component (the message lists
            the expected files).
        ImportError: diffusers / transformers are not installed (``pip install .[edit]``).
    """
    p = check_model_dir(model_path)
    try:
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"Stable Diffusion guidance needs the [edit] extra (diffusers, transformers): {e}") from e
    dev = _device(device)
    dtype = torch.float16 if (half and dev.type == "cuda") else torch.float32
    kw = dict(local_files_only=True, torch_dtype=dtype)
    try:
        unet = UNet2DConditionModel.from_pretrained(p, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(p, subfolder="vae", **kw)
        text = CLIPTextModel.from_pretrained(p, subfolder="text_encoder", **kw)
        tok = CLIPTokenizer.from_pretrained(p, subfolder="tokenizer", local_files_only=True)
        sched = DDPMScheduler.from_pretrained(p, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelPathError(f"could not load Stable Diffusion from {p}: {e}") from e
    res = int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)
    scale = float(getattr(vae.config, "scaling_factor", 0.18215))
    m = DiffusionModel(unet.to(dev), vae.to(dev), text.to(dev), _ClipTokenizer(tok), sched, res, scale, dev, dtype)
    return m.freeze()


def view_direction(c2w: np.ndarray, center, up=(0.0, 1.0, 0.0), front=(0.0, 0.0, 1.0), overhead_deg: float = 60.0) -> str:
    """``"front" | "side" | "back" | "overhead"`` for a camera (OpenCV c2w) looking at ``center``.

    Elevation above ``overhead_deg`` is overhead; otherwise the azimuth between the
    camera's direction from the centre and ``front`` (both projected on the ground plane)
    picks front (< 45 deg), back (> 135 deg) or side.
    """
    up_v = np.asarray(up, np.float64) / np.linalg.norm(up)
    v = np.asarray(c2w, np.float64)[:3, 3] - np.asarray(center, np.float64)
    v = v / max(np.linalg.norm(v), 1e-12)
    if math.degrees(math.asin(np.clip(v @ up_v, -1, 1))) > overhead_deg:
        return "overhead"
    f = np.asarray(front, np.float64)
    vh, fh = v - (v @ up_v) * up_v, f - (f @ up_v) * up_v
    cos = vh @ fh / max(np.linalg.norm(vh) * np.linalg.norm(fh), 1e-12)
    az = math.degrees(math.acos(np.clip(cos, -1, 1)))
    return "front" if az < 45 else "back" if az > 135 else "side"


class CrossAttentionStore:
    """Records head-averaged cross-attention probabilities of every ``attn2`` layer while enabled."""

    def __init__(self, unet):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.maps: list = []
        self.enabled = False
        default = AttnProcessor2_0()
        store = self

        class _Recorder:
            def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
                if not store.enabled or encoder_hidden_states is None:
                    return default(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
                import torch

                B, N, _ = hidden_states.shape
                q = attn.head_to_batch_dim(attn.to_q(hidden_states))
                ctx = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
                k = attn.head_to_batch_dim(attn.to_k(ctx))
                v = attn.head_to_batch_dim(attn.to_v(ctx))
                probs = attn.get_attention_scores(q, k, None)  # [B heads, N, L]
                store.maps.append(probs.reshape(B, attn.heads, N, -1).mean(1).detach())
                out = attn.batch_to_head_dim(torch.bmm(probs, v))
                out = attn.to_out[1](attn.to_out[0](out))
                if attn.residual_connection:
                    out = out + hidden_states
                return out / attn.rescale_output_factor

        procs = {name: (_Recorder() if name.endswith("attn2.processor") else default) for name in unet.attn_processors}
        unet.set_attn_processor(procs)


class Guidance:
    """SDS guidance: :meth:`sds_loss` for renders, :meth:`attention_maps` for local edits.

    Args:
        model: a :class:`DiffusionModel`.
        cfg: :class:`GuidanceConfig` (scale, timestep range and annealing, weighting, clipping).
        total_steps: length of the run, for the timestep annealing.
    """

    def __init__(self, model: DiffusionModel, cfg: GuidanceConfig | None = None, total_steps: int = 1000, seed: int = 0):
        import torch

        self.m, self.cfg, self.total_steps = model, cfg or GuidanceConfig(), max(1, total_steps)
        self.alphas = model.scheduler.alphas_cumprod.to(model.device, torch.float32)
        self.T = int(model.scheduler.config.num_train_timesteps)
        self.gen = torch.Generator(device=model.device).manual_seed(seed)
        self._emb_cache: dict[str, Any] = {}
        self.attn_store: CrossAttentionStore | None = None

    # ------------------------------------------------------------------ text
    def embed(self, prompts: list[str]):
        """Text embeddings ``[B, L, D]`` (cached per prompt)."""
        import torch

        todo = [p for p in dict.fromkeys(prompts) if p not in self._emb_cache]
        if todo:
            with torch.no_grad():
                ids = self.m.tokenizer(todo).to(self.m.device)
                emb = self.m.text_encoder(ids)[0].to(self.m.dtype)
            for p, e in zip(todo, emb):
                self._emb_cache[p] = e
        return torch.stack([self._emb_cache[p] for p in prompts])

    def view_prompt(self, prompt: str, direction: str) -> str:
        return f"{prompt}, {direction} view" if self.cfg.view_prompts else prompt

    # ------------------------------------------------------------------ timesteps
    def t_bounds(self, step: int) -> tuple[int, int]:
        lo, hi = self.cfg.t_range
        a0, a1 = self.cfg.t_anneal
        frac = min(max(step / self.total_steps, 0.0), 1.0)
        hi = min(hi, a0 + (a1 - a0) * frac)
        t_lo = int(round(lo * self.T))
        return t_lo, max(t_lo + 1, int(round(hi * self.T)))

    def sample_t(self, step: int, batch: int):
        import torch

        lo, hi = self.t_bounds(step)
        return torch.randint(lo, hi, (batch,), generator=self.gen, device=self.m.device)

    # ------------------------------------------------------------------ latents
    def encode(self, images):
        """``[B, 3, H, W]`` in ``[0, 1]`` -> latents ``[B, 4, r/8, r/8]`` (resized to the model's size)."""
        import torch.nn.functional as F

        x = images.to(self.m.device, self.m.dtype)
        r = self.m.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        post = self.m.vae.encode(2.0 * x - 1.0).latent_dist
        return post.mean * self.m.scaling_factor

    def _eps(self, noisy, t, cond, uncond):
        import torch

        x = torch.cat([noisy, noisy])
        emb = torch.cat([cond, uncond])
        tt = torch.cat([t, t])
        eps = self.m.unet(x, tt, encoder_hidden_states=emb).sample
        if getattr(self.m.scheduler.config, "prediction_type", "epsilon") == "v_prediction":
            # SD 2.x 768-v models predict v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)
            a = self.alphas[tt].view(-1, 1, 1, 1).to(eps.dtype)
            eps = a.sqrt() * eps + (1 - a).sqrt() * x
        e_c, e_u = eps.chunk(2)
        return e_u + self.cfg.guidance_scale * (e_c - e_u)

    def sds_loss(self, images, prompts: list[str], step: int) -> tuple[Any, dict]:
        """SDS surrogate loss whose gradient w.r.t. the latents is ``w(t) (eps_hat - eps)`` (clipped).

        Args:
            images: renders ``[B, 3, H, W]`` in ``[0, 1]`` with gradients.
            prompts: one (view-dependent) prompt per image.
            step: current iteration (timestep annealing).

        Returns:
            ``(loss, info)`` with ``info`` holding ``t`` and the mean gradient norm.
        """
        import torch

        B = images.shape[0]
        latents = self.encode(images)
        t = self.sample_t(step, B)
        with torch.no_grad():
            noise = torch.randn(latents.shape, generator=self.gen, device=latents.device, dtype=latents.dtype)
            a = self.alphas[t].view(-1, 1, 1, 1).to(latents.dtype)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            cond = self.embed(prompts)
            uncond = self.embed([self.cfg.negative_prompt] * B)
            eps = self._eps(noisy, t, cond, uncond)
            w = (1 - a) if self.cfg.weighting == "sds" else torch.ones_like(a)
            grad = torch.nan_to_num(w * (eps - noise))
            if self.cfg.grad_clip is not None:
                grad = grad.clamp(-self.cfg.grad_clip, self.cfg.grad_clip)
            target = (latents - grad).detach()
        loss = 0.5 * ((latents.float() - target.float()) ** 2).sum() / B
        return loss, {"t": t.float().mean().item(), "grad_norm": float(grad.float().norm() / B)}

    # ------------------------------------------------------------------ attention
    def attention_maps(self, images, prompt: str, words: list[str], t_frac: float = 0.3):
        """Cross-attention maps ``[B, len(words), H, W]`` of ``words`` in ``prompt`` on ``images``.

        The images are noised to ``t = t_frac T``; each layer's head-averaged map is
        reshaped to its feature size, upsampled bilinearly to ``H x W`` and averaged over
        layers; the maps of the tokens of each word are summed, then each map is divided
        by its maximum (so they lie in ``[0, 1]``).
        """
        import torch
        import torch.nn.functional as F

        if self.attn_store is None:
            self.attn_store = CrossAttentionStore(self.m.unet)
        B, _, H, W = images.shape
        pos = [self.m.tokenizer.token_positions(prompt, w) for w in words]
        for w, p in zip(words, pos):
            if not p:
                raise ValueError(f"word {w!r} is not in the prompt {prompt!r} (or is truncated)")
        with torch.no_grad():
            latents = self.encode(images)
            t = torch.full((B,), int(t_frac * self.T), device=latents.device, dtype=torch.long)
            noise = torch.randn(latents.shape, generator=self.gen, device=latents.device, dtype=latents.dtype)
            a = self.alphas[t].view(-1, 1, 1, 1).to(latents.dtype)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            self.attn_store.maps.clear()
            self.attn_store.enabled = True
            try:
                self.m.unet(noisy, t, encoder_hidden_states=self.embed([prompt] * B))
            finally:
                self.attn_store.enabled = False
            lh, lw = latents.shape[-2:]
            acc = torch.zeros(B, len(words), H, W, device=latents.device)
            for m in self.attn_store.maps:
                n = m.shape[1]
                s = int(round(math.sqrt(n * lh / lw)))
                hh, ww = s, n // s
                sel = torch.stack([m[:, :, p].sum(-1) for p in pos], 1).float().reshape(B, len(words), hh, ww)
                acc += F.interpolate(sel, size=(H, W), mode="bilinear", align_corners=False)
            acc /= max(1, len(self.attn_store.maps))
            self.attn_store.maps.clear()
        return acc / acc.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]
