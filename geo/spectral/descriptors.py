"""Spectral point descriptors: heat kernel signature and wave kernel signature.

Both take an eigendecomposition ``(evals [K], evecs [N, K])`` with M-orthonormal
eigenvectors (as returned by :func:`geo.spectral.eigenbasis`, any method).

* HKS — Sun, Ovsjanikov & Guibas, "A Concise and Provably Informative Multi-Scale
  Signature Based on Heat Diffusion", SGP 2009: ``h(x, t) = Σ_k e^{-λ_k t} φ_k(x)²``.
  Default times: ``T`` log-spaced between ``4 ln 10 / λ_max`` and ``4 ln 10 / λ_1``
  (their Section 5).
* WKS — Aubry, Schlickewei & Cremers, "The Wave Kernel Signature", ICCV 2011:
  ``w(x, e) = Σ_k φ_k(x)² g_e(λ_k) / Σ_k g_e(λ_k)`` with log-normal bands
  ``g_e(λ) = exp(-(e - log λ)² / 2σ²)``, ``e`` evenly spaced in the log spectrum and
  ``σ = variance · δe`` (their Eq. 13 and Section 4; zero eigenvalues are skipped).
"""

from __future__ import annotations

import numpy as np


def _check(evals, evecs):
    w = np.asarray(evals, dtype=np.float64).ravel()
    phi = np.asarray(evecs, dtype=np.float64)
    if phi.ndim != 2 or phi.shape[1] != len(w):
        raise ValueError(f"evecs must be [N, K] with K = len(evals) = {len(w)}, got {phi.shape}")
    return w, phi


def hks(evals, evecs, times=None, n_times: int = 16) -> np.ndarray:
    """Heat kernel signature ``[N, T]``.

    Args:
        evals: ``[K]`` ascending eigenvalues (``evals[0] = 0``).
        evecs: ``[N, K]`` M-orthonormal eigenvectors.
        times: ``[T]`` diffusion times; default ``n_times`` log-spaced (Sun et al.).
    """
    w, phi = _check(evals, evecs)
    if times is None:
        pos = w[w > 1e-12 * max(w.max(), 1e-300)]
        if len(pos) == 0:
            raise ValueError("HKS default times need at least one positive eigenvalue")
        times = np.geomspace(4 * np.log(10) / pos.max(), 4 * np.log(10) / pos.min(), n_times)
    t = np.asarray(times, dtype=np.float64).ravel()
    return (phi**2) @ np.exp(-np.outer(w, t))


def wks(evals, evecs, n_energies: int = 16, variance: float = 6.0) -> np.ndarray:
    """Wave kernel signature ``[N, E]`` (Aubry et al. 2011), each column sums-normalised."""
    w, phi = _check(evals, evecs)
    keep = w > 1e-12 * max(w.max(), 1e-300)
    if keep.sum() < 2:
        raise ValueError("WKS needs at least two positive eigenvalues")
    logw = np.log(w[keep])
    phi = phi[:, keep]
    lo, hi = logw.min(), logw.max()
    delta = (hi - lo) / n_energies
    sigma = variance * delta
    if hi - lo > 4 * sigma:  # keep the bands inside the spectrum (Aubry et al.)
        e = np.linspace(lo + 2 * sigma, hi - 2 * sigma, n_energies)
    else:
        e = np.linspace(lo, hi, n_energies)
    g = np.exp(-((e[None, :] - logw[:, None]) ** 2) / (2 * sigma**2))  # [K, E]
    return (phi**2) @ g / g.sum(axis=0, keepdims=True)
