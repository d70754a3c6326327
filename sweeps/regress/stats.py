"""The regression check's statistics: did an optimizer's speedup over AdamW move, beyond seed noise?

Each optimizer has one statistic:
- every optimizer but AdamW: the mean over its ratios of log(speedup), the log of its
  geometric-mean speedup (a change of 0.1 is a speedup about 10% higher). Weighting the ratios
  by their precision was tried and dropped: with five seeds it caught no more faults and raised
  no fewer false alarms (results/baselines/README.md);
- AdamW, whose speedup is 1 by construction: the mean over its ratios of its mean loss, so a
  fault in AdamW itself shows up as a loss shift (and would move every other speedup).

Everything is a bootstrap over seeds: a replicate resamples the seeds of every cell (AdamW's cells
included, analysis.bootstrap.perturbations), refits AdamW's law on the replicate
(analysis.fit.profile_fit, the solver analysis uses for its intervals) and reads each replicate
cell through its replicate law. The point estimates use analysis.speedups / analysis.fit.

- Each measurement (baseline, now) on its own gives the speedups and intervals the table shows.
- The change (now - baseline) reads both measurements through one shared AdamW law per
  replicate, fitted on the AdamW seeds of both measurements together. At this scale AdamW's
  seed noise is the largest noise there is (its early loss plateau ends at a seed-dependent
  step); with a law refitted per measurement, that noise entered every change twice and hid
  changes of 30%. A shared law is valid because an AdamW that did change is caught by AdamW's
  own row.
- Intervals are studentized: the point estimate +- t(df) x the replicates' standard error, with
  df = seeds - 1 for one measurement and 2 x (seeds - 1) for a change. With 3-5 seeds a
  percentile interval has the tails of the few seeds, far too short at the corrected level: on
  real runs (12 seeds per cell, disjoint random 3-seed sets as baseline and now) percentile
  intervals alarmed in 19% of unchanged checks at a nominal 5%. The bootstrap still carries the
  nonlinearity of the law fit into the standard error; the t quantile restores the tails.
- A regression is a one-sided test (only a worse optimizer fails the check): flagged when the
  change's upper bound lies below 0, the bound's tail holding alpha/m (Bonferroni over the m
  optimizers checked), so the family-wise false-alarm rate stays at or below alpha. The
  interval shown is two-sided at 1 - 2 alpha/m; IMPROVED? is the mirror test, for information.
  The measured rate is in results/baselines/README.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.bootstrap import Observed, perturbations
from analysis.fit import FitError, effective_budget, fit_power_law, profile_fit
from analysis.speedups import SpeedupOptions, estimate_speedups, observed
from bench.study import REFERENCE_OPTIMIZER

OK, REGRESSION, IMPROVED = "ok", "REGRESSION", "IMPROVED?"
SIDE_LEVEL = 0.9  # the per-measurement intervals shown beside the change (readers' level)


@dataclass(frozen=True)
class CheckOptions:
    alpha: float = 0.05  # family-wise false-alarm rate over all optimizers checked
    n_boot: int = 10000
    seed: int = 0

    def level(self, m: int) -> float:
        """Bonferroni over m one-sided tests: intervals whose each tail holds alpha/m."""
        return 1.0 - 2.0 * self.alpha / max(1, m)


@dataclass
class Side:
    """One measurement's statistics: point estimates and bootstrap replicates per optimizer."""

    point: dict[str, float]
    replicates: dict[str, np.ndarray]
    speedups: pd.DataFrame  # analysis' per-cell table (speedup, ci_low, ci_high, ...)
    seeds: int  # finished seeds in its thinnest cell

    def interval(self, name: str, level: float = SIDE_LEVEL) -> tuple[float, float]:
        return studentized(self.point.get(name, math.nan), self.replicates.get(name), level, self.seeds - 1)


def measure_side(cells: pd.DataFrame, options: CheckOptions, stream: int) -> Side:
    """Point estimates and replicates of every optimizer's statistic from one measurement's cells
    (analysis.cells.summarize_cells of its runs). `stream` picks an independent random stream."""
    rng = np.random.default_rng([options.seed, stream])
    speedups = estimate_speedups(cells, SpeedupOptions(n_boot=2000, level=0.9, seed=options.seed)).speedups
    points = _reference(cells)
    params = _replicate_fits(points, options.n_boot, rng)
    point = {REFERENCE_OPTIMIZER: float(np.mean([_mean(p) for p in points]))}
    replicates = {REFERENCE_OPTIMIZER: np.mean([_loss_reps(p, options.n_boot, rng) for p in points], axis=0)}
    for name, group in _others(cells):
        replicates[name] = _log_speedup_reps(group, params, options.n_boot, rng)
        sub = speedups[speedups["optimizer"] == name]
        point[name] = float(np.mean(np.log(sub["speedup"].astype(float)))) if len(sub) else math.nan
    return Side(point, replicates, speedups, _fewest_seeds(cells))


def studentized(point: float, replicates: np.ndarray | None, level: float, df: int) -> tuple[float, float]:
    """point +- t(df) x se at `level`; se is half the width of the replicates' central 68.3%
    (robust to the odd unbounded replicate; an infinite se gives an unbounded interval)."""
    if replicates is None or df < 1 or not math.isfinite(point):
        return math.nan, math.nan
    se = _robust_se(replicates)
    if math.isnan(se):
        return math.nan, math.nan
    t = float(stats.t.ppf(0.5 + level / 2, df))
    return point - t * se, point + t * se


def _robust_se(replicates: np.ndarray) -> float:
    """Half the width of the replicates' central 68.3% (a standard error that one unbounded
    replicate does not make infinite); NaN without replicates."""
    x = np.asarray(replicates, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan
    low, high = np.quantile(x, 0.15866, method="lower"), np.quantile(x, 0.84134, method="higher")
    return (high - low) / 2 if math.isfinite(high - low) else math.inf


def _fewest_seeds(cells: pd.DataFrame) -> int:
    return min((len(observed(c).losses) for _, c in cells.iterrows()), default=0)


def change(base_cells: pd.DataFrame, now_cells: pd.DataFrame, base: Side, now: Side,
           options: CheckOptions) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Point estimate and replicates of (now - baseline) for every optimizer."""
    rng = np.random.default_rng([options.seed, 2])
    pooled = _pooled_reference(base_cells, now_cells)
    params = _replicate_fits(pooled, options.n_boot, rng)
    fit = _point_fit(pooled)
    point = {REFERENCE_OPTIMIZER: now.point[REFERENCE_OPTIMIZER] - base.point[REFERENCE_OPTIMIZER]}
    replicates = {REFERENCE_OPTIMIZER: now.replicates[REFERENCE_OPTIMIZER] - base.replicates[REFERENCE_OPTIMIZER]}
    now_groups = {name: group for name, group in _others(now_cells)}
    for name, group in _others(base_cells):
        if name not in now_groups:
            continue
        rep = [_log_speedup_reps(g, params, options.n_boot, rng) for g in (now_groups[name], group)]
        with np.errstate(invalid="ignore"):  # inf - inf (unbounded on both sides) is NaN: dropped
            replicates[name] = rep[0] - rep[1]
        point[name] = _log_speedup(now_groups[name], fit) - _log_speedup(group, fit)
    return point, replicates


def _reference(cells: pd.DataFrame) -> list[Observed]:
    ref = cells[cells["optimizer"] == REFERENCE_OPTIMIZER].sort_values("ratio")
    return [observed(c) for _, c in ref.iterrows()]


def _others(cells: pd.DataFrame):
    return cells[cells["optimizer"] != REFERENCE_OPTIMIZER].groupby("optimizer", sort=False)


def _pooled_reference(base_cells: pd.DataFrame, now_cells: pd.DataFrame) -> list[Observed]:
    """AdamW's cells with the seeds of both measurements (ratios both have)."""
    now = {p.ratio: p for p in _reference(now_cells)}
    return [Observed(p.ratio, p.losses + now[p.ratio].losses) for p in _reference(base_cells)
            if p.ratio in now]


def _replicate_fits(points: list[Observed], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, 3) [alpha, B, beta] of AdamW's law refitted on seed-resampled cells; NaN rows
    where a refit failed."""
    reps = np.column_stack([_loss_reps(p, n_boot, rng) for p in points])
    return profile_fit(np.array([p.ratio for p in points]), reps)


def _point_fit(points: list[Observed]):
    try:
        return fit_power_law([p.ratio for p in points], [_mean(p) for p in points])
    except FitError:
        return None


def _loss_reps(obs: Observed, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of a cell's mean loss, its seeds resampled (NaN where it has fewer than 2
    finished seeds: the check then cannot tell noise from change, and says so)."""
    if not obs.seeded:
        return np.full(n_boot, np.nan)
    return obs.loss + perturbations(obs, math.nan, n_boot, rng)


def _mean(obs: Observed) -> float:
    return obs.loss if obs.losses else math.nan


def _log_speedup_reps(group: pd.DataFrame, params: np.ndarray, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Replicates of the mean over an optimizer's cells of log(speedup), each cell's seeds
    resampled and read through the replicate laws `params`."""
    alpha, b, beta = params.T
    logs = []
    for _, cell in group.iterrows():
        obs = observed(cell)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs.append(np.log(effective_budget(_loss_reps(obs, n_boot, rng), alpha, b, beta) / obs.ratio))
    return np.mean(logs, axis=0)


def _log_speedup(group: pd.DataFrame, fit) -> float:
    if fit is None:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean([np.log(fit.speedup(_mean(observed(c)), c["ratio"])) for _, c in group.iterrows()]))


@dataclass
class Verdict:
    optimizer: str
    kind: str  # "speedup" (statistic: log geometric-mean speedup) or "loss" (AdamW's mean loss)
    base: float
    base_ci: tuple[float, float]
    now: float
    now_ci: tuple[float, float]
    diff: float  # the change of the statistic, now - baseline
    diff_ci: tuple[float, float]
    verdict: str
    note: str = ""


def compare(base: Side, now: Side, diff: tuple[dict[str, float], dict[str, np.ndarray]],
            names: list[str], options: CheckOptions, notes: dict[str, str] | None = None) -> list[Verdict]:
    """One verdict per optimizer in `names`; `notes` marks optimizers whose runs failed now
    (they are regressions whatever the numbers say)."""
    notes = notes or {}
    level = options.level(len(names))
    point, replicates = diff
    out = []
    for name in names:
        kind = "loss" if name == REFERENCE_OPTIMIZER else "speedup"
        if name not in replicates:
            out.append(_missing(name, kind, base, now, notes.get(name, "no runs to compare")))
            continue
        d_ci = studentized(point[name], replicates[name], level, base.seeds + now.seeds - 2)
        verdict = REGRESSION if name in notes else _verdict(kind, d_ci)
        out.append(Verdict(name, kind, base.point[name], base.interval(name), now.point.get(name, math.nan),
                           now.interval(name), point[name], d_ci, verdict, notes.get(name, "")))
    return out


def _verdict(kind: str, ci: tuple[float, float]) -> str:
    """Worse: a higher AdamW loss, or a lower speedup; only when the interval excludes 0."""
    low, high = ci
    if math.isnan(low) or math.isnan(high):  # no replicate could be computed: nothing to trust
        return REGRESSION
    worse, better = (low > 0, high < 0) if kind == "loss" else (high < 0, low > 0)
    return REGRESSION if worse else IMPROVED if better else OK


def _missing(name: str, kind: str, base: Side, now: Side, note: str) -> Verdict:
    nan2 = (math.nan, math.nan)
    return Verdict(name, kind, base.point.get(name, math.nan), nan2, now.point.get(name, math.nan),
                   nan2, math.nan, nan2, REGRESSION, note)
