"""A sweep's cells (optimizer x scale x ratio, one Optuna study each) and what it will cost.

The cost is an upper bound: every cell's protocol may stop early (coordinate descent when a pass
improves nothing), and runs already in the store are reused when a protocol asks for them again
(which of them it asks for is known only as it goes, so they are counted, not subtracted). Time
comes from
runs of this scale already in the store when there are some (they include data loading and
evaluation), else from bench.run.estimate's measured training burst on this machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from bench.model.flops import flops_per_token
from bench.model.scales import get_scale
from bench.run.estimate import seconds_per_token
from bench.run.spec import RunSpec
from bench.store.record import StoredRun
from bench.urls import shown_url
from sweeps.grid import Config


@dataclass(frozen=True)
class Cell:
    optimizer: str
    scale: str
    ratio: float
    protocol: str  # coordinate | tpe | gp | predict

    @property
    def study_name(self) -> str:
        """The Optuna study's name, grouped by path in optuna-dashboard."""
        return f"optbench/{self.scale}/{self.ratio:g}x/{self.optimizer}/{self.protocol}"

    @property
    def label(self) -> str:
        return f"{self.optimizer} {self.ratio:g}x"

    def spec(self, config: Config, seed: int = 0, device: str = "cpu") -> RunSpec:
        precision = "bf16" if device == "cuda" else "fp32"  # docs/DESIGN.md: bf16 autocast on CUDA
        return RunSpec(self.optimizer, self.scale, self.ratio, dict(config), seed,
                       precision=precision, device=device)


@dataclass(frozen=True)
class CellCost:
    cell: Cell
    label: str  # the protocol's description
    max_runs: int  # protocol runs plus extra seeds
    stored: int  # runs of this cell already in the store

    @property
    def tokens_per_run(self) -> int:
        return get_scale(self.cell.scale).tokens(self.cell.ratio)


@dataclass(frozen=True)
class Cost:
    runs: int
    tokens: int
    flops: float
    seconds: float  # wall time with the given workers; nan when unknown
    time_source: str


def estimate_cost(cells: list[CellCost], workers: int, threads: int, device: str,
                  stored: Sequence[StoredRun]) -> Cost:
    """Runs, tokens, FLOPs and wall time of every run the protocols may ask for (an upper bound)."""
    runs = sum(c.max_runs for c in cells)
    tokens = sum(c.max_runs * c.tokens_per_run for c in cells)
    flops = sum(c.max_runs * c.tokens_per_run * flops_per_token(get_scale(c.cell.scale)) for c in cells)
    scale = cells[0].cell.scale
    rates = [r.wall_time_s / r.tokens for r in stored if r.scale == scale and r.status == "ok" and r.tokens > 0]
    per_token, source = seconds_per_token(scale, threads, device, rates)
    return Cost(runs, tokens, flops, tokens * per_token / max(1, workers), source)


def stored_runs(stored: Sequence[StoredRun], cell: Cell) -> int:
    """Runs of this optimizer x scale x ratio among `stored` (any protocol, any seed)."""
    return sum(r.optimizer == cell.optimizer and r.scale == cell.scale and r.ratio == cell.ratio
               for r in stored)


def format_plan(cells: list[CellCost], cost: Cost, settings: dict[str, Any]) -> str:
    """The plan as the user sees it before confirming; the store URLs with their passwords hidden."""
    scale = get_scale(cells[0].cell.scale)
    lines = [f"Sweep at {scale.name} ({scale.non_embedding_params:,} non-embedding params), "
             f"protocol {cells[0].cell.protocol}, {len(cells)} cells:",
             f"  {'cell':16} {'runs (most)':>11} {'stored':>7} {'tokens/run':>12}  protocol"]
    for c in cells:
        lines.append(f"  {c.cell.label:16} {c.max_runs:11d} {c.stored:7d} {c.tokens_per_run:12,}  {c.label}")
    when = f"about {_duration(cost.seconds)}" if math.isfinite(cost.seconds) else "unknown time"
    stored = sum(c.stored for c in cells)
    lines += [f"Cost (at most): {cost.runs} runs, {cost.tokens:,} tokens, {cost.flops:.3g} FLOPs, "
              f"{when} with {settings['workers']} worker(s) x {settings['threads']} thread(s) on "
              f"{settings['device']}",
              f"  (time from {cost.time_source})"]
    if stored:
        lines.append(f"  {stored} runs of these cells are in the store already: those the protocols "
                     f"ask for are read back, not trained (a rerun resumes)")
    lines += [f"Results store: {shown_url(settings['store'])}",
              f"Optuna studies: {shown_url(settings['optuna'])}"]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
