"""What every tuning protocol is to a cell: given the losses so far, the configs it wants next.

A protocol is deterministic given the losses it has been told (keyed by config id), so a resumed
sweep that finds the earlier runs in the store replays the same decisions and asks for the same
configs: nothing finished is lost or run twice. A diverged or failed run has loss +inf here: the
worst loss, as in the study.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

from analysis.cells import config_key
from sweeps.grid import Config

Losses = Mapping[str, float]  # config id -> end-of-budget loss (+inf: diverged or failed)


class TuningProtocol(Protocol):
    label: str  # what it is, for the plan and the study record, e.g. "coordinate descent (Phase I)"
    max_runs: int  # most distinct configs it can ask for (the budget, or fewer on a small grid)
    start: Config  # the first config it asks for (the baseline)

    def propose(self, losses: Losses) -> list[Config] | None:
        """Configs whose losses are needed next (possibly already running); None when done."""


@dataclass
class FixedConfig:
    """One given config, run once (Phase III runs its predicted configuration this way)."""

    config: Config
    label: str = "one fixed config"
    max_runs: int = 1

    @property
    def start(self) -> Config:
        return self.config

    def propose(self, losses: Losses) -> list[Config] | None:
        return None if config_key(self.config) in losses else [self.config]
