"""Using the prior: the distilled mask (in-network regulariser) and SDS guidance
(test-time optimisation) of DiffuMatch (Pierson, Li, Dai, Ovsjanikov, ICCV 2025).

**Distilled mask** (paper §3.3). The row-wise functional-map solve
(:func:`geo.fmaps.solve_fmap`) penalises ``Σ mask_ij C_ij²``; the hand-made choice is
the Laplacian-commutativity resolvent mask. DiffuMatch distils a mask from the prior
instead: noise the current ``|C|`` ``n`` times at one fixed level σ, denoise, and
measure, per entry, how far the denoiser moves it relative to its size::

    x_s   = | |C| + σ ε_s |,              ε_s ~ N(0, I),  s = 1..n
    r     = mean_s |x_s - D(x_s, σ)| / (2σ)  /  mean_s |x_s|          (per entry)
    mask  = sqrt(r) - min(sqrt(r))

Entries the prior is sure are small (off the diagonal band) get a large penalty,
entries it expects to be large (the diagonal band) a small one. ``normalize=True`` is
the official code's optional median clamp, ``sqrt(clamp(r - med/2, 0, 2 med))``. The
outer ``| · |`` on the noisy maps follows the official code with ``abs: True`` (it
keeps the input non-negative like the training data); ``fold=False`` leaves it out.
Paper settings: σ = 1 ("time"), n = 200.

**SDS guidance** (paper §3.4, score distillation as in DreamFusion, Poole et al. 2023).
For the current map ``x = |C|``: ``σ_b = 0.01 + U(0, 1) · sigma_scale`` for a batch of
``b`` noise draws, and the gradient of the spectral loss is
``g = mean_b (x - D(x + σ_b ε_b, σ_b))`` — no back-propagation through the
denoiser (the weighting ``w(σ)`` of DreamFusion is 1, as in the official code). A
descent step ``x ← x - η g`` moves ``x`` towards the prior's denoised estimates. To
use it as a loss on a map that requires grad: ``(g.detach() * C).sum()``.

Departures: both functions take an optional batch of maps (the official code works on
one map at a time); :func:`sds_grad` takes a *signed* ``C`` and returns the gradient
with respect to ``C`` by the chain rule through the absolute value,
``∂|C|/∂C = sign(C)`` (the official code applies the loss to ``|C|``, which back-
propagates the same way); ``absolute=False`` treats the input as ``|C|`` already.
"""

from __future__ import annotations


def _as_batch(C, k: int):
    import torch

    C = torch.as_tensor(C)
    unb = C.dim() == 2
    if unb:
        C = C.unsqueeze(0)
    if C.dim() != 3 or C.shape[-2:] != (k, k):
        raise ValueError(f"expected a functional map [{k}, {k}] or a batch [B, {k}, {k}] (the prior's k), got {tuple(C.shape)}")
    return C, unb


def _forward_chunked(prior, x, sigma, chunk: int = 1024):
    import torch

    if x.shape[0] <= chunk:
        return prior(x, sigma)
    sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
    return torch.cat([prior(x[i : i + chunk], sig[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


def distilled_mask(C, prior, sigma: float = 1.0, n_samples: int = 200, normalize: bool = False, generator=None, fold: bool = True):
    """The prior's per-entry mask for the row-wise fmap solve (see the module docstring).

    Args:
        C: ``[k2, k1]`` or ``[B, k2, k1]`` current map(s), signed or not (``|C|`` is used).
        prior: an :class:`~.prior.FmapPrior` (``k`` must match).
        sigma: noise level in units of ``|C|`` (paper: 1).
        n_samples: noise draws per map (paper: 200).
        normalize: the official code's median clamp.
        generator: optional ``torch.Generator`` for the noise.
        fold: take ``|·|`` of the noisy maps (official code, ``abs: True``).

    Returns:
        ``mask [k2, k1]`` or ``[B, k2, k1]``, non-negative, same dtype/device as ``C``;
        its minimum is 0.
    """
    import torch

    k = prior.cfg.k
    C, unb = _as_batch(C, k)
    dtype = C.dtype
    pdt = prior.mean.dtype
    x = C.detach().abs().to(pdt)
    B = x.shape[0]
    eps = torch.randn((B, n_samples, k, k), generator=generator, dtype=pdt, device=x.device)
    noisy = x[:, None] + sigma * eps
    if fold:
        noisy = noisy.abs()
    with torch.no_grad():
        den = _forward_chunked(prior, noisy.reshape(B * n_samples, k, k), float(sigma)).view(B, n_samples, k, k)
    r = ((noisy - den).abs().mean(1) / (2 * sigma)) / noisy.abs().mean(1).clamp_min(1e-12)
    if normalize:
        med = r.flatten(1).median(1).values.view(B, 1, 1)
        m = torch.sqrt(torch.minimum((r - med / 2).clamp_min(0), 2 * med))
    else:
        m = torch.sqrt(r)
    m = m - m.flatten(1).min(1).values.view(B, 1, 1)
    m = m.to(dtype)
    return m[0] if unb else m


def sds_grad(C, prior, sigma_scale: float = 1.0, batch_size: int = 32, generator=None, absolute: bool = True):
    """Score-distillation gradient of the spectral prior loss at ``C``.

    Args:
        C: ``[k, k]`` or ``[B, k, k]`` map(s).
        prior: an :class:`~.prior.FmapPrior`.
        sigma_scale: noise levels ``σ ~ 0.01 + U(0, 1) · sigma_scale`` (units of ``|C|``).
        batch_size: noise draws averaged per map (paper: 32).
        generator: optional ``torch.Generator``.
        absolute: ``C`` is signed and the prior sees ``|C|``; the result is
            ``sign(C) · g`` (chain rule). With ``False`` ``C`` is taken as ``|C|``.

    Returns:
        ``grad`` with ``C``'s shape, dtype and device, detached:
        ``g = mean_b (x - D(x + σ_b ε_b, σ_b))``, ``x = |C|``.
    """
    import torch

    k = prior.cfg.k
    C, unb = _as_batch(C, k)
    dtype = C.dtype
    pdt = prior.mean.dtype
    Cd = C.detach()
    x = (Cd.abs() if absolute else Cd).to(pdt)
    B = x.shape[0]
    sig = 0.01 + torch.rand((B, batch_size), generator=generator, dtype=pdt, device=x.device) * sigma_scale
    eps = torch.randn((B, batch_size, k, k), generator=generator, dtype=pdt, device=x.device)
    with torch.no_grad():
        noisy = x[:, None] + sig[..., None, None] * eps
        den = _forward_chunked(prior, noisy.reshape(B * batch_size, k, k), sig.reshape(-1)).view(B, batch_size, k, k)
    g = (x[:, None] - den).mean(1)
    g = torch.nan_to_num(g)
    if absolute:
        g = g * torch.sign(Cd).to(pdt)
    g = g.to(dtype)
    return g[0] if unb else g
