"""StoredRun, one run as analysis sees it, and the runs frame: one row per run, built only here.

The results store, the study's published files (analysis.paper.ingest) and the regression
baseline all give StoredRun records; `to_frame` turns any of them into the frame that
analysis.cells.summarize_cells, analysis.speedups, sweeps.report and the regression check read.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from bench.model.scales import get_scale
from bench.run.spec import RunResult

if TYPE_CHECKING:  # imported where a frame is built: the store's writers never need pandas
    import pandas as pd


@dataclass(frozen=True)
class StoredRun:
    """One run, whatever its source: its fields are the runs frame's columns, in order."""

    run_key: str
    optimizer: str
    scale: str
    ladder: str = field(init=False)  # the scale's ladder ("cpu" or "paper")
    ratio: float
    seed: int
    status: str  # ok | diverged | failed
    final_loss: float  # end-of-budget held-out loss; NaN when the run reported none
    steps: int | float  # NaN where the source does not say
    tokens: int | float  # NaN where the source does not say
    non_embedding_params: int
    wall_time_s: float
    hparams: Mapping[str, Any]
    created_at: str | None = None  # when the store took the run; None for runs from elsewhere
    reason: str = ""  # why a run failed or diverged; empty for a finished one

    def __post_init__(self) -> None:
        object.__setattr__(self, "ladder", get_scale(self.scale).ladder)

    @classmethod
    def from_result(cls, result: RunResult, created_at: str | None = None) -> StoredRun:
        """What analysis reads of a finished run (`created_at`: when the store took it)."""
        spec = result.spec
        return cls(result.run_key, spec["optimizer"], spec["scale"], spec["ratio"], spec["seed"],
                   result.status, math.nan if result.final_loss is None else result.final_loss,
                   result.steps, result.tokens, result.non_embedding_params, result.wall_time_s,
                   spec["hparams"], created_at, result.reason or "")


RUN_COLUMNS = tuple(f.name for f in fields(StoredRun))
# What a runs frame must have: every column but the store's own notes (created_at, reason).
REQUIRED_COLUMNS = tuple(f.name for f in fields(StoredRun) if f.default is MISSING)


def to_frame(runs: Iterable[StoredRun]) -> pd.DataFrame:
    """The runs frame: one row per run, the columns RUN_COLUMNS in that order."""
    import pandas as pd

    rows = [tuple(getattr(run, name) for name in RUN_COLUMNS) for run in runs]
    return pd.DataFrame.from_records(rows, columns=list(RUN_COLUMNS))
