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


def save_train_state(path, step: int, train_s: float, history: list, **modules) -> None:
    """Atomically write the full training state for ``--resume``: each of ``modules`` (model, EMA,
    optimiser, by keyword) as its ``state_dict`` under its keyword, the step, the training seconds,
    the history and torch's RNG state."""
    import json

    import torch

    from geo.fileio import atomic_write

    st = {name: m.state_dict() for name, m in modules.items()}
    st.update(step=step, train_s=train_s, history=json.dumps(history), torch_rng=torch.get_rng_state())
    atomic_write(path, lambda p: torch.save(st, p))


def load_train_state(path, **modules) -> tuple[int, float, list]:
    """Restore what :func:`save_train_state` wrote into ``modules`` (same keywords) and torch's RNG;
    returns ``(step, train_s, history)``. A missing file is an error naming ``--resume``."""
    import json
    from pathlib import Path

    import torch

    if not Path(path).exists():
        raise FileNotFoundError(f"--resume: no training state at {path}")
    st = torch.load(path, map_location="cpu", weights_only=True)
    for name, m in modules.items():
        m.load_state_dict(st[name])
    torch.set_rng_state(st["torch_rng"])
    print(f"resumed from {path} at step {int(st['step'])}", flush=True)
    return int(st["step"]), float(st["train_s"]), json.loads(st["history"])
