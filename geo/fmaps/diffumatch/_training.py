"""Pieces shared by the two DiffuMatch training commands (:mod:`.train`, :mod:`.train_features`)."""

from __future__ import annotations

import math


def warmup_cosine_lr(step: int, steps: int, warmup: int, lr: float, floor: float = 0.05) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``floor · lr`` at ``steps``."""
    frac = step / max(steps, 1)
    return lr * min(1.0, (step + 1) / max(warmup, 1)) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))


def ema_update(ema, model, step: int, halflife: float) -> None:
    """``ema ← β ema + (1 − β) model`` with ``β = 0.5^(1/halflife)``, ramped up over the first
    steps (``β ≤ (step + 1) / (step + 10)``) so that the early average follows the weights."""
    import torch

    beta = min(0.5 ** (1.0 / halflife), (step + 1) / (step + 10))
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - beta)
