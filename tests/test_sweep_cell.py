"""A cell's bookkeeping: protocol runs at seed 0, then the winner with more seeds; the best is
chosen the same way however the results arrived (fresh or from the store, in any order)."""
import math

import pytest

from bench.run.spec import RunResult
from sweeps.cell import CellTuning
from sweeps.plan import Cell
from sweeps.protocols.coordinate import CoordinateDescent

pytestmark = pytest.mark.unit

GRID = {"learning_rate": [0.004, 0.008, 0.016]}
CELL = Cell("adamw", "cpu-xs", 0.05, "coordinate")


def tuning(seeds=1):
    return CellTuning(CELL, CoordinateDescent(GRID, {"learning_rate": 0.008}, ["learning_rate"], 10),
                      GRID, seeds)


def result(request, loss, status="ok"):
    return RunResult(request.key, request.spec.to_dict(), status, loss if status == "ok" else None)


def finish_all(t, loss_by_lr, reverse=False):
    while requests := t.wanted():
        for r in (reversed(requests) if reverse else requests):
            t.record(r, result(r, loss_by_lr(r.config["learning_rate"], r.seed)), reused=False)


def test_the_winner_is_rerun_with_the_extra_seeds_then_the_cell_is_done():
    t = tuning(seeds=3)
    finish_all(t, lambda lr, seed: abs(lr - 0.016) + seed / 100)
    assert t.best_config() == {"learning_rate": 0.016}
    assert t.done and len(t.losses) == 3 and len(t.results) == 5
    assert sorted(t.seed_losses()) == [0.0, 0.01, 0.02]


def test_exact_ties_pick_the_same_best_whatever_the_arrival_order():
    a, b = tuning(), tuning()
    finish_all(a, lambda lr, seed: 1.0)
    finish_all(b, lambda lr, seed: 1.0, reverse=True)
    assert a.best_config() == b.best_config()
    assert len(a.approx_best()) == 3  # all within 3e-3 of the best


def test_diverged_runs_are_the_worst_and_never_the_best():
    t = tuning()
    while requests := t.wanted():
        for r in requests:
            diverged = r.config["learning_rate"] == 0.016
            t.record(r, result(r, 2.0 if not diverged else None, "diverged" if diverged else "ok"),
                     reused=False)
    assert t.best_config() != {"learning_rate": 0.016}
    assert sum(math.isinf(v) for v in t.losses.values()) == 1
