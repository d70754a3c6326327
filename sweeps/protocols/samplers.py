"""Optuna's TPE and GP samplers over the same grid and with the same budget as coordinate descent,
so tuning cost can be compared as well as the losses reached.

Trials are asked in fixed-size rounds and told (in ask order) only when the whole round is known.
With a fixed sampler seed the proposals are then a function of the losses alone, not of which run
finished first or how many workers there are: a resumed sweep replays the same rounds, finds their
runs in the store, and goes on where it stopped. The first trial is the baseline config, as in
coordinate descent. A diverged run is told the worst finished loss seen so far (the study counted
divergence as the worst loss); before any run has finished it is told as failed. The startup
(random) trials do not depend on the budget, so a search with a larger budget asks the same configs
first: its trials extend, never reorder, a smaller one's (sweeps/replay.py relies on it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from analysis.cells import config_key
from sweeps.grid import Config, unique_configs
from sweeps.protocols.base import Losses

SAMPLERS = ("tpe", "gp")
ROUND_SIZE = 4  # trials per round; fixed (not the worker count) so a resume may change --workers
ASKS_PER_RUN = 5  # samplers repeat configs on a small grid; stop asking after this many per run
STARTUP_TRIALS = 10  # random trials before the model takes over (Optuna's default for both)


@dataclass
class SamplerSearch:
    sampler: str  # "tpe" or "gp"
    grid: dict[str, list]
    start: Config
    budget: int  # most distinct configs to run
    seed: int = 0
    label: str = field(default="", init=False)
    _study: optuna.Study = field(init=False, repr=False)
    _round: list[tuple[optuna.Trial, Config]] = field(default_factory=list, init=False, repr=False)
    _seen: set[str] = field(default_factory=set, init=False, repr=False)
    _asks: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.label = f"Optuna {self.sampler.upper()} sampler (seed {self.seed})"
        self._dists = {k: CategoricalDistribution(v) for k, v in self.grid.items()}
        self._study = optuna.create_study(direction="minimize", sampler=self._make_sampler())
        on_grid = {k: v for k, v in self.start.items() if k in self.grid and v in self.grid[k]}
        self._study.enqueue_trial(on_grid)
        self._size = math.prod(len(v) for v in self.grid.values())

    @property
    def max_runs(self) -> int:
        return min(self.budget, self._size)

    def propose(self, losses: Losses) -> list[Config] | None:
        while True:
            if self._round:
                missing = unique_configs([c for _, c in self._round if config_key(c) not in losses])
                if missing:
                    return missing
                self._tell_round(losses)
            if not self._ask_round():
                return None

    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        if self.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=STARTUP_TRIALS)
        if self.sampler == "gp":
            return optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=STARTUP_TRIALS)
        raise ValueError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")

    def _ask_round(self) -> bool:
        """Ask trials until the round holds ROUND_SIZE new configs (or the budget is spent)."""
        want = min(ROUND_SIZE, self.max_runs - len(self._seen))
        new = 0
        while new < want and self._asks < ASKS_PER_RUN * self.budget:
            trial = self._study.ask(self._dists)
            self._asks += 1
            config = {**self.start, **trial.params}
            if config_key(config) not in self._seen:
                self._seen.add(config_key(config))
                new += 1
            self._round.append((trial, config))
        return bool(self._round)

    def _tell_round(self, losses: Losses) -> None:
        finished = [v for v in losses.values() if math.isfinite(v)]
        for trial, config in self._round:
            loss = losses[config_key(config)]
            if math.isfinite(loss):
                self._study.tell(trial, loss)
            elif finished:
                self._study.tell(trial, max(finished))
            else:
                self._study.tell(trial, state=TrialState.FAIL)
        self._round = []
