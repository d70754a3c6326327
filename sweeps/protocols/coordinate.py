"""The study's coordinate descent (Phase I), and its Phase II variant on a subset of keys.

From a baseline config, sweep one hyperparameter over its grid with the others fixed, move the
baseline to the best value if it beats the baseline, go on to the next hyperparameter, and repeat
passes until a whole pass moves nothing (Wen et al. 2025, arXiv 2509.02046, Phase I). Phase II is
the same walk over only the keys whose optimum moved between scales, from the smaller scale's best.

The walk is replayed from the start on every call, so it is a pure function of the losses: the
configs of one sweep step are asked for together (they can run in parallel) and the walk waits
until all of them are known. A budget of distinct configs cuts the walk short; candidates are
tried nearest the baseline first so a small budget spends its runs where they matter most.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.cells import config_key
from sweeps.grid import Config, centre_out, unique_configs
from sweeps.protocols.base import Losses


@dataclass
class CoordinateDescent:
    grid: dict[str, list]
    start: Config
    keys: list[str]  # the hyperparameters swept, in order
    budget: int  # most distinct configs to run
    label: str = "coordinate descent (Phase I)"

    @property
    def max_runs(self) -> int:
        return min(self.budget, math.prod(len(self.grid[k]) for k in self.keys))

    def propose(self, losses: Losses) -> list[Config] | None:
        seen: set[str] = set()
        centre = dict(self.start)
        step = self._step(seen, [centre], losses)
        if step is not None:
            return step or None
        moved = True
        while moved:
            moved = False
            for key in self.keys:
                candidates = [{**centre, key: v} for v in centre_out(self.grid[key], centre.get(key))]
                step = self._step(seen, candidates, losses)
                if step is not None:
                    return step or None
                best = min(candidates, key=lambda c: losses[config_key(c)])  # ties keep the centre
                if losses[config_key(best)] < losses[config_key(centre)]:
                    centre, moved = best, True
        return None

    def _step(self, seen: set[str], candidates: list[Config], losses: Losses) -> list[Config] | None:
        """None when every candidate is known; else the unknown ones within the budget ([] when
        the budget is spent: the walk ends)."""
        new = [c for c in unique_configs(candidates) if config_key(c) not in seen]
        taken = new[:max(0, self.budget - len(seen))]
        seen.update(config_key(c) for c in taken)
        missing = [c for c in taken if config_key(c) not in losses]
        if missing:
            return missing
        return [] if len(taken) < len(new) else None
