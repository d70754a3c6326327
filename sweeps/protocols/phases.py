"""Which protocol each cell runs, and from where, given what the store already holds.

- coordinate: Phase I (every key, from the optimizer's defaults) when no smaller scale of the
  ladder has been tuned at this ratio; else Phase II: from the best config of the largest tuned
  smaller scale, re-sweep only the keys whose optimum moved between our two largest tuned smaller
  scales, or, with only one tuned smaller scale, the keys the study found to move (its
  Analysis/PhaseI/non_stable_keys_by_optimizer.json; learning rate for optimizers it did not run).
- transfer: Phase II across data budgets: from the best config of this scale at its smallest tuned
  ratio below this one (its anchor: tune 1x, then transfer to 2x, 4x and 8x in one sweep, every
  cell from 1x however the sweep's cells finish), over the study's keys; with no smaller ratio
  tuned, coordinate's Phase II from a smaller scale. Its trials are this cell's only: the anchor's
  tuning is paid once for every larger ratio.
- tpe, gp: an Optuna sampler over the whole grid from the defaults, with the same budget.
  The cell's search seed is the sampler's seed; for coordinate descent it orders the keys
  (0: the study's order, most important first; any other: a shuffle of it), so tuning cost can
  be measured over seeds of every protocol (sweeps/replay.py).
- predict: Phase III, every key fitted over the tuned smaller scales and run once.

"Tuned" means: seed-0 runs in the store that finished; a cell's best is its lowest seed-0 loss, or
with finalists (`--finalists`) the finalist with the best mean (analysis.cells.rank_configs).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from analysis.cells import config_key, rank_configs
from analysis.paper.ingest import DEFAULT_DATA_DIR, OPTIMIZER_NAMES
from bench.errors import UserError
from bench.model.scales import Scale, get_scale
from bench.store.record import StoredRun
from sweeps.grid import Config, importance_order, load_grid, snap_config, start_point
from sweeps.plan import Cell
from sweeps.protocols.base import FixedConfig, TuningProtocol
from sweeps.protocols.coordinate import CoordinateDescent
from sweeps.protocols.samplers import SAMPLERS, SamplerSearch
from sweeps.protocols.scaling import TunedCell, nearest_cell, predict_config

PROTOCOLS = ("coordinate", *SAMPLERS, "transfer", "predict")
NON_STABLE_FILE = DEFAULT_DATA_DIR / "Analysis" / "PhaseI" / "non_stable_keys_by_optimizer.json"


@dataclass(frozen=True)
class Tuned:
    scale: str
    ratio: float
    params: int
    hparams: dict[str, Any]
    loss: float
    run_key: str  # its winner's seed-0 run


def make_protocol(cell: Cell, budget: int,
                  stored: Sequence[StoredRun]) -> tuple[TuningProtocol, dict]:
    """The cell's protocol and its grid, given the runs in the store."""
    grid = load_grid(cell.optimizer, cell.grid_ladder)
    start = start_point(cell.optimizer, cell.spec({}).hparams, grid)  # defaults (batch: the shape's)
    if cell.protocol in SAMPLERS:
        return SamplerSearch(cell.protocol, grid, start, budget, cell.search_seed), grid
    smaller = tuned_cells(stored, cell.optimizer, cell.shape)
    if cell.protocol == "predict":
        return _phase3(cell, grid, smaller), grid
    here = [t for t in smaller if t.ratio == cell.ratio]
    if cell.protocol == "transfer":
        return _transfer(cell, grid, budget, stored, here), grid
    if cell.protocol != "coordinate":
        raise UserError(f"unknown protocol {cell.protocol!r}; known: {', '.join(PROTOCOLS)}")
    if not here:
        keys = key_order(importance_order(grid), cell.search_seed)
        return CoordinateDescent(grid, start, keys, budget, f"coordinate descent (Phase I{_order(cell)})"), grid
    return _phase2(cell, grid, budget, here, here[-1].scale), grid


def _phase2(cell: Cell, grid: dict[str, list], budget: int, source: list[Tuned],
            origin: str) -> CoordinateDescent:
    """Coordinate descent from the best of `source[-1]` over the keys that moved between the last
    two `source` cells, or the study's keys when there is one."""
    keys = moved_keys(source, grid) if len(source) >= 2 else study_keys(cell.optimizer, grid)
    keys = key_order(keys, cell.search_seed)
    # the start's run key: a finalist that moves the start within the same cell changes the label,
    # so a replay from another start is flagged (bench.cli.tuning.replay_changes)
    label = (f"coordinate descent (Phase II from {origin}: "
             f"{', '.join(keys) if keys else 'no keys, its best config once'}{_order(cell)}; "
             f"start: run {source[-1].run_key[:12]})")
    return CoordinateDescent(grid, snap_config(source[-1].hparams, grid), keys, budget, label)


def _transfer(cell: Cell, grid: dict[str, list], budget: int, stored: Sequence[StoredRun],
              here: list[Tuned]) -> CoordinateDescent:
    below = tuned_ratios(stored, cell)
    if below:
        return _phase2(cell, grid, budget, below[:1], f"{cell.scale} at {below[0].ratio:g}x")
    if here:
        return _phase2(cell, grid, budget, here, here[-1].scale)
    raise UserError(f"--protocol transfer starts from a tuned cell: the store has {cell.optimizer} tuned "
                    f"neither at {cell.scale} below {cell.ratio:g}x nor at a smaller scale at "
                    f"{cell.ratio:g}x; tune one first (--protocol coordinate)")


def _order(cell: Cell) -> str:
    return f", key order seed {cell.search_seed}" if cell.search_seed else ""


def key_order(keys: list[str], seed: int) -> list[str]:
    """`keys` as given for seed 0, else shuffled by `seed` (the same shuffle on every machine)."""
    keys = list(keys)
    if seed:
        random.Random(seed).shuffle(keys)
    return keys


def tuned_cells(stored: Sequence[StoredRun], optimizer: str, target: Scale) -> list[Tuned]:
    """The best config of every (scale, ratio) of `optimizer` at smaller scales of the same ladder,
    smallest scale first; `stored` holds the runs of one context. Shapes of the user's own have no
    ladder to learn from."""
    if target.ladder not in ("cpu", "paper"):
        return []
    cells: dict[tuple[str, float], list[StoredRun]] = {}
    for r in stored:
        if (r.optimizer == optimizer and r.ladder == target.ladder
                and r.non_embedding_params < target.non_embedding_params and _finished(r)):
            cells.setdefault((r.scale, float(r.ratio)), []).append(r)
    out = [_tuned(runs) for runs in cells.values()]
    return sorted((t for t in out if t), key=lambda t: (t.params, t.ratio))


def tuned_ratios(stored: Sequence[StoredRun], cell: Cell) -> list[Tuned]:
    """The best config of `cell`'s optimizer at its own shape at every ratio below its ratio,
    smallest ratio first."""
    shape = cell.shape
    cells: dict[float, list[StoredRun]] = {}
    for r in stored:
        if (r.optimizer == cell.optimizer and r.scale == shape.name and r.ratio < cell.ratio
                and r.non_embedding_params == shape.non_embedding_params and _finished(r)):
            cells.setdefault(float(r.ratio), []).append(r)
    out = [_tuned(cells[ratio]) for ratio in sorted(cells)]
    return [t for t in out if t]


def _finished(run: StoredRun) -> bool:
    return run.status == "ok" and not math.isnan(run.final_loss)


def _tuned(runs: list[StoredRun]) -> Tuned | None:
    """A cell's winner (analysis.cells.rank_configs: its best seed-0 run, or its best finalist
    on their means; ties go to the lower seed-0 run key); None if no config finished seed 0."""
    first = sorted((r for r in runs if r.seed == 0), key=lambda r: (r.final_loss, r.run_key))
    by_config: dict[str, dict[int, float]] = {config_key(r.hparams): {} for r in first}
    for r in sorted(runs, key=lambda r: -r.final_loss):  # a config's duplicate seed: its best
        if config_key(r.hparams) in by_config:
            by_config[config_key(r.hparams)][r.seed] = float(r.final_loss)
    ranked = rank_configs(by_config)
    if not ranked:
        return None
    best = next(r for r in first if config_key(r.hparams) == ranked[0])
    return Tuned(best.scale, float(best.ratio), int(best.non_embedding_params), dict(best.hparams),
                 float(best.final_loss), best.run_key)


def moved_keys(tuned: list[Tuned], grid: dict[str, list]) -> list[str]:
    """Grid keys whose best value differs between the two largest tuned scales."""
    a, b = (snap_config(t.hparams, grid) for t in tuned[-2:])
    return importance_order(k for k in grid if a.get(k) != b.get(k))


def study_keys(optimizer: str, grid: dict[str, list]) -> list[str]:
    """The study's non-stable keys of `optimizer` that are in the grid (learning rate if the study
    did not run it)."""
    keys = _study_non_stable().get(optimizer, ["learning_rate"])
    return importance_order(k for k in keys if k in grid)


@lru_cache(maxsize=1)
def _study_non_stable() -> dict[str, list[str]]:
    raw = json.loads(NON_STABLE_FILE.read_text())
    return {OPTIMIZER_NAMES.get(name, name): keys for name, keys in raw.items()}


def _phase3(cell: Cell, grid: dict[str, list], smaller: list[Tuned]) -> FixedConfig:
    if len({t.scale for t in smaller}) < 2:
        raise UserError(f"--protocol predict (Phase III) fits hyperparameters over tuned smaller "
                        f"scales; the store has {cell.optimizer} tuned at "
                        f"{len({t.scale for t in smaller})} scale(s) below {cell.scale}, it needs 2")
    points = [TunedCell(t.params, get_scale(t.scale).tokens(t.ratio), snap_config(t.hparams, grid))
              for t in smaller]
    scale = cell.shape
    config = predict_config(points, grid, scale.non_embedding_params, scale.tokens(cell.ratio))
    nearest = nearest_cell(points, scale.non_embedding_params, scale.tokens(cell.ratio)).config
    config = _valid(cell, config, nearest)
    return FixedConfig(config, f"predicted (Phase III) from {len(points)} tuned cells")


def _valid(cell: Cell, config: Config, fallback: Config) -> Config:
    """`config` with every value the RunSpec rejects (a negative learning rate, beta >= 1)
    replaced by `fallback`'s."""
    out = dict(config)
    for key in config:
        try:
            cell.spec({**fallback, key: config[key]})
        except UserError:
            out[key] = fallback[key]
    return out
