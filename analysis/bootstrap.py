"""Confidence intervals for speedups: a bootstrap over seeds and over the fit's residuals.

The study reported one seed per cell and no intervals. Here every replicate perturbs each cell's
loss and refits AdamW's law, so an interval carries both the noise of the cell itself and the
uncertainty of the fit it is read against:

- a cell with two or more seeds is resampled from its seeds (the mean of a resample with
  replacement, its deviation scaled by sqrt(n/(n-1)) so its variance matches the mean's):
  nonparametric, no assumption about the noise's shape;
- a single-seed cell gets Gaussian noise at the fit's residual scale `sigma` (a parametric
  residual bootstrap). With 3 parameters on 4-5 budgets, resampling the residuals themselves would
  draw from 4-5 numbers with 1-2 degrees of freedom, which is too few to mean anything.

AdamW's fit points are rebuilt per replicate (single-seed points around the fitted curve, seeded
points around their mean), refitted with the vectorised profile solver, and each cell's perturbed
loss is inverted through its replicate's fit. An AdamW cell that is also a fit point reuses that
point's perturbation, so the two stay consistent. The interval is the percentile interval of the
replicate speedups; where a replicate's loss falls below its fit's asymptote the speedup is
infinite, which shows up as an unbounded upper end. speedup_replicates gives the replicates
themselves, for statistics built on them (the regression check averages them over ratios).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from analysis.fit import PowerLawFit, effective_budget, profile_fit

MAX_FAILED_SHARE = 0.1  # more failed refits than this and the interval is not reported


@dataclass(frozen=True)
class Observed:
    """One cell's end-of-budget losses at a data budget: one per seed of its best config."""

    ratio: float
    losses: tuple[float, ...]

    @property
    def loss(self) -> float:
        return float(np.mean(self.losses))

    @property
    def seeded(self) -> bool:
        return len(self.losses) >= 2


@dataclass(frozen=True)
class Intervals:
    """Per-cell [low, high] speedup bounds (NaN where none could be given) and why not."""

    bounds: np.ndarray  # (cells, 2)
    failed_refits: int
    n_boot: int
    reason: str = ""


def perturbations(obs: Observed, sigma: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot draws of (replicate loss - observed loss) for one cell."""
    if obs.seeded:
        seeds = np.asarray(obs.losses, dtype=float)
        n = len(seeds)
        picks = rng.integers(0, n, size=(n_boot, n))
        # a resampled mean varies (n-1)/n as much as the mean itself; rescale to unbias it
        return (seeds[picks].mean(axis=1) - seeds.mean()) * np.sqrt(n / (n - 1))
    return rng.normal(0.0, sigma, size=n_boot)


@dataclass(frozen=True)
class Replicates:
    """Per-cell bootstrap replicates, one column per replicate: each cell's perturbed loss and the
    speedup its replicate fit reads from it. NaN rows: a cell with no noise estimate; NaN columns
    of `speedups`: a refit that failed. `reason` says why there are none at all."""

    losses: np.ndarray  # (cells, n_boot)
    speedups: np.ndarray  # (cells, n_boot)
    failed_refits: int
    reason: str = ""

    def intervals(self, level: float) -> Intervals:
        """Percentile intervals at `level` of every cell's replicate speedups."""
        bounds = np.full((len(self.speedups), 2), np.nan)
        for c, samples in enumerate(self.speedups):
            bounds[c] = percentile_interval(samples, level)
        return Intervals(bounds, self.failed_refits, self.losses.shape[1], self.reason)


def speedup_replicates(fit: PowerLawFit, fit_points: Sequence[Observed],
                       cells: Sequence[Observed], fit_index: Sequence[int | None], sigma: float,
                       *, n_boot: int = 2000,
                       rng: np.random.Generator | None = None) -> Replicates:
    """Bootstrap replicates of every cell's loss and speedup against `fit`.

    `fit_points` are the AdamW cells `fit` was made on (same order as fit.ratios);
    `fit_index[c]` names the fit point that cell c is (an AdamW cell), else None.
    `sigma` is the residual scale used for single-seed cells (NaN: none is known).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    losses = np.full((len(cells), n_boot), np.nan)
    speedups = losses.copy()
    if not np.isfinite(sigma) and not all(p.seeded for p in fit_points):
        return Replicates(losses, speedups, 0, "no residual scale: the fit has no spare points "
                                               "and its single-seed losses give no noise estimate")
    point_delta = [perturbations(p, sigma, n_boot, rng) for p in fit_points]
    params = profile_fit(np.asarray(fit.ratios), _replicate_points(fit, fit_points, point_delta))
    failed = ~np.all(np.isfinite(params), axis=1)
    if failed.mean() > MAX_FAILED_SHARE:
        return Replicates(losses, speedups, int(failed.sum()),
                          f"{failed.sum()} of {n_boot} bootstrap refits failed")
    alpha, b, beta = params[~failed].T
    for c, (obs, idx) in enumerate(zip(cells, fit_index)):
        if obs.seeded or np.isfinite(sigma):
            delta = point_delta[idx] if idx is not None else perturbations(obs, sigma, n_boot, rng)
            losses[c] = obs.loss + delta
            speedups[c, ~failed] = effective_budget(losses[c, ~failed], alpha, b, beta) / obs.ratio
    return Replicates(losses, speedups, int(failed.sum()))


def speedup_intervals(fit: PowerLawFit, fit_points: Sequence[Observed],
                      cells: Sequence[Observed], fit_index: Sequence[int | None], sigma: float,
                      *, n_boot: int = 2000, level: float = 0.9,
                      rng: np.random.Generator | None = None) -> Intervals:
    """Percentile intervals at `level` for every cell's speedup against `fit` (arguments as
    speedup_replicates)."""
    return speedup_replicates(fit, fit_points, cells, fit_index, sigma, n_boot=n_boot,
                              rng=rng).intervals(level)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` interval of `samples`; inf samples (unbounded speedups) allowed.

    Order statistics rather than interpolation, because inf - inf would make the bound NaN; the
    lower bound takes the order statistic below, the upper the one above (the wider choice).
    """
    x = np.asarray(samples, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low = np.quantile(x, tail, method="lower")
    high = np.quantile(x, 1.0 - tail, method="higher")
    return float(low), float(high)


def _replicate_points(fit: PowerLawFit, points: Sequence[Observed], deltas) -> np.ndarray:
    """(n_boot, n) replicate AdamW losses: fitted value (single seed) or mean (seeded) + delta."""
    fitted = fit.predict(fit.ratios)
    centre = np.array([p.loss if p.seeded else f for p, f in zip(points, fitted)])
    return centre[None, :] + np.column_stack(deltas)
