"""Learning-rate schedules: linear warmup, optional stable phase (WSD), then decay to min_lr_ratio.

Conventions follow the study's (Levanter's): `warmup` and `decay` below 1 are fractions of the run's
steps, from 1 up step counts; `decay` None decays over everything after warmup; the decay shape is
`lr_schedule` (cosine, linear or constant).
"""
from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant")


def _steps(value: float | None, total: int) -> int | None:
    if value is None:
        return None
    return int(round(value * total)) if value < 1 else int(value)


def lr_multiplier(step: int, total: int, warmup: float, schedule: str = "cosine",
                  decay: float | None = None, min_lr_ratio: float = 0.0) -> float:
    """The factor applied to every param group's peak lr at `step` (0-based) of `total` steps."""
    warm = min(_steps(warmup, total) or 0, total)
    if step < warm:
        return (step + 1) / warm
    decay_steps = _steps(decay, total)
    decay_steps = total - warm if decay_steps is None else min(decay_steps, total - warm)
    start = total - decay_steps
    if schedule == "constant" or step < start or decay_steps <= 0:
        return 1.0
    progress = (step - start + 1) / decay_steps
    if schedule == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape
