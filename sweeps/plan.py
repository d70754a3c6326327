"""A sweep's cells (optimizer x scale x ratio, one Optuna study each) and what it will cost.

The cost is an upper bound: every cell's protocol may stop early (coordinate descent when a pass
improves nothing), and runs already in the store are reused when a protocol asks for them again
(which of them it asks for is known only as it goes, so they are counted, not subtracted). Time
comes from
runs of this scale already in the store when there are some (they include data loading and
evaluation), else from bench.run.estimate's measured training burst on this machine.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from bench.model.flops import flops_per_token
from bench.model.scales import Scale
from bench.run.estimate import seconds_per_token
from bench.run.spec import RunSpec
from bench.store.record import StoredRun, arch_label
from bench.urls import shown_url
from sweeps.grid import Config


@dataclass(frozen=True)
class SweepContext:
    """What every run of a sweep shares besides its optimizer, scale, ratio and config: RunSpec's
    data, eval_data, tokenizer and model (as canonical JSON, so a cell stays hashable)."""

    data: str = "default"
    eval_data: str = ""
    tokenizer: str = "bpe-512"
    model: str = "{}"

    def spec_fields(self) -> dict[str, Any]:
        return {"data": self.data, "eval_data": self.eval_data, "tokenizer": self.tokenizer,
                "model": json.loads(self.model)}

    def label(self, scale: str) -> str:
        """The fields that differ from the defaults, "" for none (study names, plans)."""
        default = SweepContext()
        parts = [f"{name}={getattr(self, name)}" for name in ("data", "eval_data", "tokenizer")
                 if getattr(self, name) != getattr(default, name)]
        if self.model != default.model:
            parts.append(f"arch={arch_label(scale, json.loads(self.model))}")
        return ",".join(parts)


@dataclass(frozen=True)
class Cell:
    optimizer: str
    scale: str
    ratio: float
    protocol: str  # coordinate | tpe | gp | predict
    context: SweepContext = field(default_factory=SweepContext)
    search_seed: int = 0  # TPE/GP's sampler seed, coordinate descent's key order (0: the study's)
    space: str = ""  # the digest of a --space amendment of a shipped optimizer's grid (sweeps.grid)

    @property
    def study_name(self) -> str:
        """The Optuna study's name, grouped by path in optuna-dashboard; a context other than the
        default, a search seed other than 0 and an amended grid get studies of their own."""
        label = self.context.label(self.scale)
        return (f"optbench/{self.scale}/{self.ratio:g}x/{self.optimizer}/{self.protocol}"
                + (f"/seed{self.search_seed}" if self.search_seed else "")
                + (f"/space-{self.space}" if self.space else "")
                + (f"/{label}" if label else ""))

    @property
    def label(self) -> str:
        return f"{self.optimizer} {self.ratio:g}x"

    @property
    def shape(self) -> Scale:
        return self.spec({}).shape

    @property
    def tokens_per_run(self) -> int:
        return self.shape.tokens(self.ratio)

    @property
    def grid_ladder(self) -> str:
        """Whose search grid it tunes on: its ladder's, and a shape of the user's own the CPU
        ladder's up to 10M non-embedding parameters, else the paper's."""
        shape = self.shape
        if shape.ladder in ("cpu", "paper"):
            return shape.ladder
        return "cpu" if shape.non_embedding_params < 10**7 else "paper"

    def spec(self, config: Config, seed: int = 0, device: str = "cpu") -> RunSpec:
        precision = "bf16" if device == "cuda" else "fp32"  # docs/DESIGN.md: bf16 autocast on CUDA
        return RunSpec(self.optimizer, self.scale, self.ratio, dict(config), seed,
                       precision=precision, device=device, **self.context.spec_fields())


@dataclass(frozen=True)
class CellCost:
    cell: Cell
    label: str  # the protocol's description
    max_runs: int  # protocol runs plus extra seeds
    stored: int  # runs of this cell already in the store


@dataclass(frozen=True)
class Cost:
    runs: int
    tokens: int
    flops: float
    seconds: float  # wall time with the given workers; nan when unknown
    time_source: str
    longest_run_s: float = float("nan")  # one trial of the most tokens; nan when unknown


def estimate_cost(cells: list[CellCost], workers: int, threads: int, device: str,
                  stored: Sequence[StoredRun]) -> Cost:
    """Runs, tokens, FLOPs and wall time of every run the protocols may ask for (an upper bound)."""
    runs = sum(c.max_runs for c in cells)
    tokens = sum(c.max_runs * c.cell.tokens_per_run for c in cells)
    flops = sum(c.max_runs * c.cell.tokens_per_run * flops_per_token(c.cell.shape) for c in cells)
    scale = cells[0].cell.shape
    rates = [r.wall_time_s / r.tokens for r in stored
             if r.scale == scale.name and r.status == "ok" and r.tokens > 0]
    per_token, source = seconds_per_token(scale, threads, device, rates)
    longest = max(c.cell.tokens_per_run for c in cells) * per_token
    return Cost(runs, tokens, flops, tokens * per_token / max(1, workers), source, longest)


def stored_runs(stored: Sequence[StoredRun], cell: Cell) -> int:
    """Runs of this optimizer x scale x ratio among `stored` (any protocol, any seed)."""
    return sum(r.optimizer == cell.optimizer and r.scale == cell.scale and r.ratio == cell.ratio
               for r in stored)


def format_plan(cells: list[CellCost], cost: Cost, settings: dict[str, Any]) -> str:
    """The plan as the user sees it before confirming; the store URLs with their passwords hidden."""
    cell = cells[0].cell
    scale, context = cell.shape, cell.context.label(cell.scale)
    lines = [f"Sweep at {scale.name} ({_params(scale)}), "
             + (f"context {context}, " if context else "")
             + f"protocol {cell.protocol}, {len(cells)} cell{'s' if len(cells) != 1 else ''}:",
             f"  {'cell':16} {'runs (most)':>11} {'stored':>7} {'tokens/run':>12}  protocol"]
    for c in cells:
        lines.append(f"  {c.cell.label:16} {c.max_runs:11d} {c.stored:7d} {c.cell.tokens_per_run:12,}  {c.label}")
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


def _params(scale: Scale) -> str:
    active, total = scale.non_embedding_params, scale.total_non_embedding_params
    return (f"{active:,} non-embedding params" if active == total
            else f"{active:,} active of {total:,} non-embedding params")


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
