"""Does a ours ladder rank the optimizers as the study did? Agreement of two sets of speedups.

Each side (a CPU measurement, the study at one of its scales) gives every optimizer one number:
the mean over its cells of log(speedup over AdamW), the log of its geometric-mean speedup, with
bootstrap replicates (analysis.speedups: seeds resampled where a cell has seeds, the fit's residual
scale where it has one run). Over the optimizers both sides have:

- Kendall's tau-b between the two sides' numbers, AdamW included (its own cells read through its
  law, about 1 on both sides): does the ours side put the optimizers in the study's order?
- the mean absolute difference of log speedups, AdamW left out (it is 0 on both sides by
  construction and would only dilute the mean): how far apart are the speedups themselves?

Intervals pair the sides' replicates column by column (the sides are independent, so any pairing
is a draw from the joint distribution) and take percentiles of the statistic. Noise in either side
pulls a replicate's tau towards 0 and its difference up, so the intervals lean pessimistic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.bootstrap import percentile_interval
from analysis.speedups import SpeedupResult
from bench.errors import UserError
from bench.study import REFERENCE_OPTIMIZER

MIN_OPTIMIZERS = 3  # tau over two points is +-1 whatever the speedups


@dataclass(frozen=True)
class Side:
    """One side: per optimizer, the mean of log(speedup) over its cells, that mean's bootstrap
    replicates, and the ratios it was taken over."""

    label: str
    point: dict[str, float]
    replicates: dict[str, np.ndarray]
    ratios: dict[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Agreement:
    table: pd.DataFrame  # one row per optimizer both sides have
    tau: tuple[float, float, float]  # point, interval low, high
    mad: tuple[float, float, float]  # mean |log speedup difference|, low, high
    level: float
    only_one_side: dict[str, str]  # optimizer -> the side it is on, left out


def side(result: SpeedupResult, scale: str, label: str,
         ratios: tuple[float, ...] | None = None) -> Side:
    """Every optimizer's mean log speedup at `scale` over its cells with a speedup (only `ratios`'
    cells where given), from analysis.speedups' table and replicates."""
    table = result.speedups.reset_index(drop=True)
    keep = (table["scale"] == scale) & table["speedup"].notna()
    if ratios is not None:
        keep &= table["ratio"].isin(ratios)
    point, replicates, used = {}, {}, {}
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(table["speedup"].to_numpy(dtype=float))
        reps = np.log(result.speedup_replicates)
    for name, rows in table[keep].groupby("optimizer", sort=False):
        idx = rows.index.to_numpy()
        point[name] = float(np.mean(logs[idx]))
        replicates[name] = np.mean(reps[idx], axis=0)
        used[name] = tuple(sorted(float(r) for r in rows["ratio"]))
    if not point:
        why = next((n for n in result.notes if n.startswith(f"scale {scale}:")), f"scale {scale}: none")
        raise UserError(f"{label}: no speedups ({why})")
    return Side(label, point, replicates, used)


def agreement(ours: Side, study: Side, level: float = 0.9) -> Agreement:
    """Kendall's tau and the mean absolute log difference between `ours` and `study` over the
    optimizers both have, with percentile intervals at `level` (module docstring)."""
    names = [n for n in study.point if n in ours.point]
    if len(names) < MIN_OPTIMIZERS:
        raise UserError(f"{ours.label} and {study.label} share {len(names)} optimizer(s) "
                        f"({', '.join(names) or 'none'}); agreement needs at least {MIN_OPTIMIZERS}")
    x = np.array([study.point[n] for n in names])
    y = np.array([ours.point[n] for n in names])
    xr = np.vstack([study.replicates[n] for n in names])
    yr = np.vstack([ours.replicates[n] for n in names])
    others = np.array([n != REFERENCE_OPTIMIZER for n in names])
    tau = (_tau(x, y), *percentile_interval(_tau_replicates(xr, yr), level))
    mad = (_mad(x[others], y[others]), *percentile_interval(_mad(xr[others], yr[others]), level))
    only = {n: ours.label for n in ours.point if n not in study.point}
    only |= {n: study.label for n in study.point if n not in ours.point}
    return Agreement(_table(names, ours, study, level), tau, mad, level, only)


def speedup_ratios(result: SpeedupResult, scale: str) -> list[float]:
    """The ratios at `scale` where some optimizer has a speedup, smallest first."""
    table = result.speedups
    return sorted(set(table.loc[(table["scale"] == scale) & table["speedup"].notna(), "ratio"]))


def by_ratio(result: SpeedupResult, scale: str, label: str, study: Side,
             level: float = 0.9) -> pd.DataFrame:
    """Agreement with our side read at one ratio at a time: which of our budgets predicts the
    study best. A ratio where fewer than MIN_OPTIMIZERS optimizers have a speedup is left out."""
    rows = []
    for ratio in speedup_ratios(result, scale):
        ours = side(result, scale, f"{label} at {ratio:g}x", (ratio,))
        if sum(n in ours.point for n in study.point) < MIN_OPTIMIZERS:
            continue
        agr = agreement(ours, study, level)
        rows.append({"ratio": ratio, "optimizers": len(agr.table),
                     "tau": agr.tau[0], "tau_low": agr.tau[1], "tau_high": agr.tau[2],
                     "mad": agr.mad[0], "mad_low": agr.mad[1], "mad_high": agr.mad[2]})
    return pd.DataFrame(rows, columns=["ratio", "optimizers", "tau", "tau_low", "tau_high",
                                       "mad", "mad_low", "mad_high"])


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return math.nan  # an unbounded speedup has no place in a ranking
    return float(stats.kendalltau(x, y).statistic)


def _tau_replicates(xr: np.ndarray, yr: np.ndarray) -> np.ndarray:
    """Tau per replicate column; NaN where a column has a failed refit or an unbounded speedup."""
    return np.array([_tau(xr[:, b], yr[:, b]) for b in range(xr.shape[1])])


def _mad(x: np.ndarray, y: np.ndarray) -> float | np.ndarray:
    """Mean over optimizers (axis 0) of |x - y|: a number, or one per replicate column."""
    with np.errstate(invalid="ignore"):
        return np.mean(np.abs(x - y), axis=0)


def _table(names: list[str], ours: Side, study: Side, level: float) -> pd.DataFrame:
    rows = []
    for n in names:
        row = {"optimizer": n}
        for key, s in (("ours", ours), ("study", study)):
            low, high = percentile_interval(s.replicates[n], level)
            row |= {key: math.exp(s.point[n]), f"{key}_low": math.exp(low), f"{key}_high": math.exp(high),
                    f"{key}_ratios": ",".join(f"{r:g}" for r in s.ratios.get(n, ()))}
        row["log_diff"] = ours.point[n] - study.point[n]
        rows.append(row)
    return pd.DataFrame(rows)
