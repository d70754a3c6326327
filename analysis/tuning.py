"""Tuning cost: the best loss a protocol has found after n trials, over seeds of its search, against
the "approximately best" band (within APPROX_BEST_TOL of the best loss any protocol found).

The reference is coordinate descent in the study's key order (search seed 0) run until it stops:
its trial count C is what the study pays per cell. A search meets the goal (a third of the study's
cost) when its best-so-far enters the band within C/3 trials. The rate of success over seeds is
reported with its one-sided 90% Clopper-Pearson lower bound, the loss gap at the goal's budget with
a 90% Student-t interval over seeds. Seed-0 losses carry the training seed's luck, so each search's
winner (its best seed-0 config, or with finalists the best mean over the seeds they all ran) is
also compared with the reference's on the training seeds neither was chosen on, paired by seed
(docs/TUNING.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

from bench.study import APPROX_BEST_TOL

REFERENCE = ("coordinate", 0)  # the study's protocol and key order
CONFIDENCE = 0.9


@dataclass(frozen=True)
class Trace:
    """One protocol's trials at one search seed, in the order it asked for them."""

    protocol: str
    search_seed: int
    label: str
    losses: tuple[float, ...]  # seed-0 end-of-budget loss per trial; +inf: diverged or failed
    finished: bool  # the protocol stopped by itself (else the store lacked its next trial)
    configs: tuple[dict[str, Any], ...] = ()
    run_keys: tuple[str, ...] = ()
    winner: dict[str, Any] | None = None  # its best config (ties: the sweep's choice)
    winner_losses: tuple[float, ...] = ()  # the winner's loss at every stored training seed, 0 first
    chosen_on: int = 1  # training seeds 0..chosen_on-1 chose the winner (more than 1: finalists' means)

    def best_so_far(self) -> np.ndarray:
        return np.minimum.accumulate(np.asarray(self.losses, dtype=float)) if self.losses else np.empty(0)

    def best(self, trials: int | None = None) -> float:
        """The best loss within its first `trials` trials (all: None); +inf when it has none."""
        curve = self.best_so_far()[:trials]
        return float(curve[-1]) if len(curve) else math.inf

    def trials_to(self, threshold: float) -> int | None:
        """The first trial (1-based) whose best-so-far is within `threshold`; None if none is."""
        hits = np.flatnonzero(self.best_so_far() <= threshold)
        return int(hits[0]) + 1 if len(hits) else None


@dataclass(frozen=True)
class ProtocolCost:
    protocol: str
    seeds: tuple[int, ...]
    trials: tuple[int, ...]  # trials each seed asked for (finished or as far as the store goes)
    to_band: tuple[int | None, ...]  # per seed: the trial it entered the band, None: never
    within_goal: int  # seeds in the band within the goal's budget
    rate_lower: float  # one-sided CONFIDENCE lower bound on the rate of such seeds
    gap_at_goal: tuple[float, float, float]  # best loss minus the band's base at the goal's budget: mean, lo, hi
    judged: int  # seeds whose trials reach the goal's budget (or that finished before it)
    winner_gap: tuple[float, float, float]  # its winners minus the reference's, paired by training seed


@dataclass(frozen=True)
class TuningCost:
    best: float  # the best seed-0 loss any trial found (the band is [best, best + tol])
    tol: float
    reference_trials: int | None  # C: coordinate descent's trials (study order) when it finished
    goal: int | None  # C // 3, the budget each protocol has to enter the band
    protocols: tuple[ProtocolCost, ...]
    seed_sd: float  # the reference winner's loss, sd over training seeds after 0 (nan: fewer than 2)


def tuning_cost(traces: Sequence[Trace], tol: float = APPROX_BEST_TOL) -> TuningCost:
    """Trials to the band and the loss gap at the goal's budget, per protocol over its seeds."""
    finite = [x for t in traces for x in t.losses if math.isfinite(x)]
    if not finite:
        raise ValueError("no trial finished with a loss")
    best = min(finite)
    ref = reference_trace(traces)
    reference = len(ref.losses) if ref else None
    goal = reference // 3 if reference else None
    protocols = []
    for name in dict.fromkeys(t.protocol for t in traces):
        group = sorted((t for t in traces if t.protocol == name), key=lambda t: t.search_seed)
        protocols.append(_protocol_cost(name, group, best, best + tol, goal, ref))
    spread = [x for x in (ref.winner_losses[ref.chosen_on:] if ref else ()) if math.isfinite(x)]  # not those it won on
    seed_sd = float(np.std(spread, ddof=1)) if len(spread) >= 2 else math.nan
    return TuningCost(best, tol, reference, goal, tuple(protocols), seed_sd)


def reference_trace(traces: Sequence[Trace]) -> Trace | None:
    """Coordinate descent in the study's key order, if it finished."""
    return next((t for t in traces if (t.protocol, t.search_seed) == REFERENCE and t.finished), None)


def _protocol_cost(name: str, group: list[Trace], best: float, threshold: float,
                   goal: int | None, ref: Trace | None) -> ProtocolCost:
    seeds, trials = tuple(t.search_seed for t in group), tuple(len(t.losses) for t in group)
    to_band = tuple(t.trials_to(threshold) for t in group)
    winners = mean_interval([d for t in group if not math.isnan(d := winner_gap(t, ref))])
    if goal is None:
        return ProtocolCost(name, seeds, trials, to_band, 0, math.nan, (math.nan,) * 3, 0, winners)
    judged = [t for t in group if len(t.losses) >= goal or t.finished]
    hits = sum(1 for t in judged if (t.trials_to(threshold) or math.inf) <= goal)
    gaps = [t.best(goal) - best for t in judged]
    return ProtocolCost(name, seeds, trials, to_band, hits, rate_lower_bound(hits, len(judged)),
                        mean_interval(gaps), len(judged), winners)


def winner_gap(trace: Trace, ref: Trace | None) -> float:
    """Mean over the training seeds both winners ran at of (its winner's loss - the reference
    winner's): pairing by seed cancels what a seed does to every config (init, data order). Only
    seeds neither winner was chosen on count; nan without one."""
    if ref is None:
        return math.nan
    pairs = list(zip(trace.winner_losses, ref.winner_losses))[max(trace.chosen_on, ref.chosen_on):]
    diffs = [a - b for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    return float(np.mean(diffs)) if diffs else math.nan


def rate_lower_bound(successes: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson lower bound on a success rate (0 when none succeeded)."""
    if n == 0:
        return math.nan
    if successes == 0:
        return 0.0
    return float(stats.beta.ppf(1 - confidence, successes, n - successes + 1))


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval; the interval is nan with fewer than two values or an
    infinite one."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (math.nan,) * 3
    mean = float(x.mean())
    if len(x) < 2 or not np.all(np.isfinite(x)):
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half
