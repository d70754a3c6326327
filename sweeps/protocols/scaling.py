"""Phase III: fit each hyperparameter's tuned value as h(N, D) = A * N^B * D^C + E over the tuned
cells and predict the configuration of a cell that was not tuned (Wen et al. 2025, arXiv
2509.02046: fitted on 130m-520m, used for 1.2B and 16x).

N is the non-embedding parameter count and D the training tokens, both divided by their geometric
means over the tuned cells so the fit is well conditioned. With fewer than four cells (or a failed
fit) a three-parameter power law without E is used where the values are positive; with fewer than
three, or for hyperparameters that are not numbers (booleans, schedule names), the value of the
nearest tuned cell (largest N, then nearest D) is taken. Integer hyperparameters (batch, block
size) are snapped to their grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.optimize import least_squares

from sweeps.grid import Config, snap

SIGNIFICANT = 4  # predicted floats are rounded to this many significant digits


@dataclass(frozen=True)
class TunedCell:
    params: float  # N, non-embedding parameters
    tokens: float  # D, training tokens
    config: Config  # its best config


Predictor = Callable[[float, float], float]


def predict_config(tuned: list[TunedCell], grid: dict[str, list], params: float,
                   tokens: float) -> Config:
    """The predicted config at (params, tokens): every grid key fitted over `tuned`."""
    if not tuned:
        raise ValueError("Phase III needs at least one tuned cell")
    nearest = nearest_cell(tuned, params, tokens).config
    n0, d0 = _geomean([c.params for c in tuned]), _geomean([c.tokens for c in tuned])
    n, d = [c.params / n0 for c in tuned], [c.tokens / d0 for c in tuned]
    out = {}
    for key in grid:
        values = [c.config.get(key) for c in tuned]
        predictor = fit_hparam(n, d, values) if all(_is_number(v) for v in values) else None
        value = predictor(params / n0, tokens / d0) if predictor else math.nan
        out[key] = _finish(value, grid[key], nearest.get(key))
    return out


def fit_hparam(n: list[float], d: list[float], y: list[float]) -> Predictor | None:
    """h(n, d) = A n^B d^C + E by least squares; fewer points or a failed fit: A n^B d^C; None
    when neither can be fitted."""
    n, d, y = (np.asarray(v, dtype=float) for v in (n, d, y))
    if np.allclose(y, y[0]):
        return lambda n_, d_: float(y[0])
    loglinear = _fit_loglinear(n, d, y)
    if len(y) >= 4:
        full = _fit_full(n, d, y, loglinear)
        if full is not None:
            return full
    return loglinear


def nearest_cell(tuned: list[TunedCell], params: float, tokens: float) -> TunedCell:
    """The tuned cell closest to (params, tokens): nearest N first, then nearest D (log scale)."""
    return min(tuned, key=lambda c: (abs(math.log(c.params / params)), abs(math.log(c.tokens / tokens))))


def _fit_loglinear(n, d, y) -> Predictor | None:
    """log h = log A + B log n + C log d (E = 0); needs 3+ points with positive values."""
    if len(y) < 3 or np.any(y <= 0):
        return None
    design = np.column_stack([np.ones_like(n), np.log(n), np.log(d)])
    if np.linalg.matrix_rank(design) < 3:  # all cells at one scale or one budget
        return None
    (log_a, b, c), *_ = np.linalg.lstsq(design, np.log(y), rcond=None)
    return lambda n_, d_: float(math.exp(log_a) * n_ ** b * d_ ** c)


def _fit_full(n, d, y, start: Predictor | None) -> Predictor | None:
    def model(p, n_, d_):
        return p[0] * np.power(n_, p[1]) * np.power(d_, p[2]) + p[3]

    if start is not None:
        a0 = start(1.0, 1.0)
        x0 = [a0, *_loglinear_exponents(n, d, y), 0.0]
    else:
        x0 = [float(np.ptp(y)) or 1.0, 0.0, 0.0, float(np.min(y))]
    try:
        fit = least_squares(lambda p: model(p, n, d) - y, x0, method="lm" if len(y) > 4 else "trf")
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not (fit.success and np.all(np.isfinite(fit.x))):
        return None
    p = fit.x
    return lambda n_, d_: float(model(p, n_, d_))


def _loglinear_exponents(n, d, y) -> tuple[float, float]:
    design = np.column_stack([np.ones_like(n), np.log(n), np.log(d)])
    (_, b, c), *_ = np.linalg.lstsq(design, np.log(y), rcond=None)
    return float(b), float(c)


def _finish(value: float, choices: list, fallback: Any) -> Any:
    """Integers snap to the grid; floats are rounded; no prediction (NaN) keeps `fallback`."""
    if not math.isfinite(value):
        return fallback
    if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        return snap(value, choices) if value > 0 else fallback
    return float(f"{value:.{SIGNIFICANT}g}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _geomean(values: list[float]) -> float:
    return float(math.exp(np.mean(np.log(values))))
