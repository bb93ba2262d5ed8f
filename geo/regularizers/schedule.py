"""Weight schedules and the thin ``nn.Module`` base every regularizer module shares.

A regularizer module holds a ``weight`` and an optional :class:`Schedule`; its
value at training step ``t`` is ``weight * schedule(t) * loss``. The schedule
is a frozen dataclass of plain numbers (standard library only), so method
configs can embed it and tyro can expose it.

Schedules (``u = clip((t - start_step) / (end_step - start_step), 0, 1)``):

* ``constant``: ``1``;
* ``linear``:   ``start_value + (end_value - start_value) * u``;
* ``cosine``:   ``start_value + (end_value - start_value) * (1 - cos(pi u)) / 2``.

Before ``start_step`` a ramp gives ``start_value``; after ``end_step``, ``end_value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Schedule", "Regularizer"]

_KINDS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class Schedule:
    """Multiplier ramp over training steps (see the module docstring for the formulas).

    Example:
        >>> Schedule("linear", start_step=0, end_step=100)(50)
        0.5
    """

    kind: str = "constant"
    start_step: int = 0
    end_step: int = 1
    start_value: float = 0.0
    end_value: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"schedule kind must be one of {list(_KINDS)}, got {self.kind!r}")
        if self.kind != "constant" and self.end_step <= self.start_step:
            raise ValueError(f"schedule needs end_step > start_step, got {self.start_step} -> {self.end_step}")

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return 1.0
        u = min(max((step - self.start_step) / (self.end_step - self.start_step), 0.0), 1.0)
        if self.kind == "cosine":
            u = 0.5 * (1.0 - math.cos(math.pi * u))
        return self.start_value + (self.end_value - self.start_value) * u


def _module_base():
    import torch

    class Regularizer(torch.nn.Module):
        """Thin base: ``forward(*inputs, step=None) = weight * schedule(step) * loss(*inputs)``.

        Subclasses implement ``loss``; ``step`` defaults to the module's own counter
        (``self.step``), which callers advance with :meth:`set_step`.
        """

        name: str = "regularizer"

        def __init__(self, weight: float = 1.0, schedule: Schedule | None = None) -> None:
            super().__init__()
            self.weight = float(weight)
            self.schedule = schedule if schedule is not None else Schedule()
            self.step = 0

        def set_step(self, step: int) -> None:
            self.step = int(step)

        def current_weight(self, step: int | None = None) -> float:
            return self.weight * self.schedule(self.step if step is None else step)

        def loss(self, *args, **kwargs):  # pragma: no cover - abstract
            raise NotImplementedError

        def forward(self, *args, step: int | None = None, **kwargs):
            return self.current_weight(step) * self.loss(*args, **kwargs)

        def extra_repr(self) -> str:
            return f"weight={self.weight}, schedule={self.schedule}"

    Regularizer.__qualname__ = "Regularizer"
    Regularizer.__module__ = __name__
    return Regularizer


def __getattr__(name: str):
    # The nn.Module base needs torch; build it on first use so that importing the
    # schedule (for configs) stays torch-free.
    if name == "Regularizer":
        cls = _module_base()
        globals()["Regularizer"] = cls
        return cls
    raise AttributeError(name)
