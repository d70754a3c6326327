"""The regression check's statistics: did an optimizer's speedup over AdamW move, beyond seed noise?

Each optimizer has one statistic:
- every optimizer but AdamW: the mean over its ratios of log(speedup), the log of its
  geometric-mean speedup (a change of 0.1 is a speedup about 10% higher);
- AdamW, whose speedup is 1 by construction: the mean over its ratios of its mean loss, so a
  fault in AdamW itself shows up as a loss shift (and would move every other speedup).

Speedups and their replicates are analysis's (analysis.speedups.estimate_speedups,
analysis.bootstrap.speedup_replicates): a replicate resamples the seeds of every cell, refits
AdamW's law on the resampled AdamW cells and reads each cell through that law.

- Each measurement (baseline, now) on its own gives the speedups and intervals the table shows.
- The change (now - baseline) reads both measurements through one shared AdamW law per
  replicate, fitted on the AdamW seeds of both measurements together, so that AdamW's seed noise
  (the largest noise at this scale) does not enter every change twice. A shared law is valid
  because an AdamW that did change is caught by AdamW's own row.
- Intervals are studentized: the point estimate +- t(df) x the replicates' standard error, with
  df = seeds - 1 for one measurement and 2 x (seeds - 1) for a change. With 3-5 seeds a
  percentile interval has the tails of the few seeds, far too short at the corrected level; the
  bootstrap carries the nonlinearity of the law fit into the standard error, the t quantile
  restores the tails.
- A regression is a one-sided test (only a worse optimizer fails the check): flagged when the
  change's upper bound lies below 0, the bound's tail holding alpha/m (Bonferroni over the m
  optimizers checked), so the family-wise false-alarm rate stays at or below alpha. The
  interval shown is two-sided at 1 - 2 alpha/m; IMPROVED? is the mirror test, for information.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.bootstrap import Observed, speedup_replicates
from analysis.fit import FitError, fit_power_law
from analysis.speedups import SpeedupOptions, estimate_speedups, observed
from bench.study import REFERENCE_OPTIMIZER

OK, REGRESSION, IMPROVED = "ok", "REGRESSION", "IMPROVED?"
SIDE_LEVEL = 0.9  # the per-measurement intervals shown beside the change (readers' level)

Estimates = tuple[dict[str, float], dict[str, np.ndarray]]  # per optimizer: point, replicates


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
    result = estimate_speedups(cells, SpeedupOptions(n_boot=options.n_boot, level=SIDE_LEVEL,
                                                     seed=(options.seed, stream)))
    table = result.speedups
    ref = (table["optimizer"] == REFERENCE_OPTIMIZER).to_numpy()
    point = {REFERENCE_OPTIMIZER: float(np.mean(table["loss"].to_numpy(dtype=float)[ref]))}
    replicates = {REFERENCE_OPTIMIZER: np.mean(result.loss_replicates[ref], axis=0),
                  **_means(table[~ref], _log(result.speedup_replicates[~ref]))}
    for name, group in table[~ref].groupby("optimizer", sort=False):
        point[name] = float(np.log(group["speedup"].astype(float)).mean())  # skips cells without a loss
    seeds = int(cells["n_seeds"].min()) if len(cells) else 0
    return Side(point, replicates, table, seeds)


def change(base_cells: pd.DataFrame, now_cells: pd.DataFrame, base: Side, now: Side,
           options: CheckOptions) -> Estimates:
    """Point estimate and replicates of (now - baseline) for every optimizer."""
    rng = np.random.default_rng([options.seed, 2])
    point = {REFERENCE_OPTIMIZER: now.point[REFERENCE_OPTIMIZER] - base.point[REFERENCE_OPTIMIZER]}
    replicates = {REFERENCE_OPTIMIZER: now.replicates[REFERENCE_OPTIMIZER] - base.replicates[REFERENCE_OPTIMIZER]}
    now_rows, base_rows = (c[c["optimizer"] != REFERENCE_OPTIMIZER] for c in (now_cells, base_cells))
    logs, reps = _shared_law(_pooled_reference(base_cells, now_cells), pd.concat([now_rows, base_rows]),
                             options.n_boot, rng)
    k = len(now_rows)
    now_logs, now_reps = _means(now_rows, logs[:k]), _means(now_rows, reps[:k])
    base_logs, base_reps = _means(base_rows, logs[k:]), _means(base_rows, reps[k:])
    for name in base_logs:
        if name in now_logs:
            point[name] = float(now_logs[name]) - float(base_logs[name])
            with np.errstate(invalid="ignore"):  # inf - inf (unbounded on both sides) is NaN: dropped
                replicates[name] = now_reps[name] - base_reps[name]
    return point, replicates


def _pooled_reference(base_cells: pd.DataFrame, now_cells: pd.DataFrame) -> list[Observed]:
    """AdamW's cells with the finished seeds of both measurements (ratios both have)."""
    def reference(cells):
        return {float(c["ratio"]): tuple(c["losses"])
                for _, c in cells[cells["optimizer"] == REFERENCE_OPTIMIZER].sort_values("ratio").iterrows()}

    now = reference(now_cells)
    pooled = [Observed(ratio, losses + now[ratio]) for ratio, losses in reference(base_cells).items()
              if ratio in now]
    return [p for p in pooled if p.losses]


def _shared_law(points: list[Observed], cells: pd.DataFrame, n_boot: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """log(speedup) of each cell read through AdamW's law fitted on `points`, and its
    (cells, n_boot) replicates; NaN where the law cannot be fitted."""
    try:
        fit = fit_power_law([p.ratio for p in points], [p.loss for p in points])
    except FitError:
        return np.full(len(cells), np.nan), np.full((len(cells), n_boot), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.array([np.log(fit.speedup(c["loss"], c["ratio"])) for _, c in cells.iterrows()])
    reps = speedup_replicates(fit, points, [observed(c) for _, c in cells.iterrows()],
                              [None] * len(cells), math.nan, n_boot=n_boot, rng=rng)
    return logs, _log(reps.speedups)


def _means(rows: pd.DataFrame, values: np.ndarray) -> dict[str, np.ndarray]:
    """Per optimizer of `rows` (cells, in order): the mean over its cells of `values` (row i: cell i)."""
    names = rows["optimizer"].to_numpy()
    return {name: np.mean(values[names == name], axis=0) for name in dict.fromkeys(names)}


def _log(speedups: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(speedups)


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


def compare(base: Side, now: Side, diff: Estimates, names: list[str], options: CheckOptions, notes: dict[str, str] | None = None) -> list[Verdict]:
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
