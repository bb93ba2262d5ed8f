"""Registry of regularizers by name, and the ``name:weight[:key=value,...]`` spec parser.

Standard library only at import time (the CLI must start fast); a module's class is
imported when it is built.

Spec grammar (one string per regularizer, as on a command line)::

    name:weight                     tv:0.1
    name:weight:key=value,...       tv:0.1:penalty=huber,delta=0.05,isotropic=true
                                    correlation:200:ramp=cosine,ramp_steps=1000

Values parse as int, float, bool (``true``/``false``) or string. Keys ``ramp``
(``constant``/``linear``/``cosine``), ``ramp_steps``, ``ramp_start`` and ``ramp_from``
build the :class:`~geo.regularizers.schedule.Schedule` (``ramp_from -> 1`` over
``[ramp_start, ramp_start + ramp_steps]``); every other key goes to the module's
constructor.
"""

from __future__ import annotations

import importlib
from typing import Any

from .schedule import Schedule

__all__ = ["REGULARIZERS", "ALIASES", "build", "parse_regularizer_spec", "parse_regularizers", "known_names"]

#: name -> "module:Class" (relative to geo.regularizers)
REGULARIZERS: dict[str, str] = {
    "tv": "tv:TotalVariation",
    "edge_smoothness": "smoothness:EdgeAwareSmoothness",
    "flow_warp": "flow:FlowWarpLoss",
    "correlation": "correlation:CorrelationLoss",
    "orthogonality": "orthogonal:Orthogonality",
    "lambda_orthogonality": "orthogonal:LambdaOrthogonality",
    "equivariance": "equivariance:EquivarianceRegularizer",
    "sinkhorn": "ot:SinkhornDivergence",
    "monge_gap": "ot:MongeGap",
    "sliced_wasserstein": "sliced:SlicedWasserstein",
}

#: alternative spellings -> (registered name, default keyword arguments)
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "total_variation": ("tv", {}),
    "smoothness": ("edge_smoothness", {}),
    "ortho": ("orthogonality", {}),
    "sw": ("sliced_wasserstein", {}),
    "cvsw": ("sliced_wasserstein", {"control_variate": "upper"}),
    "cvsw_lower": ("sliced_wasserstein", {"control_variate": "lower"}),
    "cvsw_upper": ("sliced_wasserstein", {"control_variate": "upper"}),
    "sinkhorn_divergence": ("sinkhorn", {}),
}

_SCHEDULE_KEYS = {"ramp", "ramp_steps", "ramp_start", "ramp_from"}


def known_names() -> list[str]:
    return sorted(set(REGULARIZERS) | set(ALIASES))


def _resolve(name: str) -> tuple[str, dict[str, Any]]:
    key = name.strip().lower().replace("-", "_")
    if key in REGULARIZERS:
        return key, {}
    if key in ALIASES:
        return ALIASES[key]
    raise KeyError(f"unknown regularizer {name!r}; known: {', '.join(known_names())}")


def _schedule(kw: dict[str, Any]) -> Schedule | None:
    if not (_SCHEDULE_KEYS & set(kw)):
        return None
    kind = str(kw.pop("ramp", "linear"))
    steps = int(kw.pop("ramp_steps", 1000))
    start = int(kw.pop("ramp_start", 0))
    start_value = float(kw.pop("ramp_from", 0.0))
    return Schedule(kind, start_step=start, end_step=start + steps, start_value=start_value, end_value=1.0)


def build(name: str, weight: float = 1.0, **kw: Any):
    """Build a registered regularizer module.

    Args:
        name: a name from :data:`REGULARIZERS` or :data:`ALIASES` (case-insensitive, ``-`` = ``_``).
        weight: its weight.
        **kw: constructor arguments; ``schedule=Schedule(...)`` or the ``ramp*`` keys of the
            spec grammar set the schedule.

    Returns:
        the ``nn.Module``.

    Raises:
        KeyError: unknown name (the message lists the known ones).

    Example:
        >>> tv = build("tv", 0.1, penalty="huber", delta=0.05)
    """
    key, defaults = _resolve(name)
    kw = {**defaults, **kw}
    sched = _schedule(kw)
    if sched is not None:
        if "schedule" in kw:
            raise ValueError("give either schedule= or the ramp* keys, not both")
        kw["schedule"] = sched
    module, cls = REGULARIZERS[key].split(":")
    klass = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    try:
        return klass(weight=float(weight), **kw)
    except TypeError as e:
        raise TypeError(f"bad arguments for regularizer {key!r}: {e}") from None


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_regularizer_spec(spec: str) -> tuple[str, float, dict[str, Any]]:
    """``"tv:0.1:penalty=huber"`` -> ``("tv", 0.1, {"penalty": "huber"})`` (name resolved, no torch import)."""
    parts = spec.strip().split(":", 2)
    if not parts[0]:
        raise ValueError(f"empty regularizer name in spec {spec!r}; expected name:weight[:key=value,...]")
    name, defaults = _resolve(parts[0])
    try:
        weight = float(parts[1]) if len(parts) > 1 and parts[1] else 1.0
    except ValueError:
        raise ValueError(f"bad weight {parts[1]!r} in spec {spec!r}; expected name:weight[:key=value,...]") from None
    kw: dict[str, Any] = dict(defaults)
    if len(parts) > 2 and parts[2]:
        for item in parts[2].split(","):
            if "=" not in item:
                raise ValueError(f"bad option {item!r} in spec {spec!r}; expected key=value")
            k, v = item.split("=", 1)
            kw[k.strip()] = _value(v.strip())
    return name, weight, kw


def parse_regularizers(specs: list[str] | tuple[str, ...]) -> list:
    """Build one module per spec string, e.g. ``parse_regularizers(["tv:0.1", "correlation:200"])``."""
    if isinstance(specs, str):
        specs = [specs]
    out = []
    for spec in specs:
        name, weight, kw = parse_regularizer_spec(spec)
        out.append(build(name, weight, **kw))
    return out
