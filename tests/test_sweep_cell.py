"""A cell's bookkeeping: protocol runs at seed 0, then the winner with more seeds; the best is
chosen the same way however the results arrived (fresh or from the store, in any order)."""
import math

import pytest

from bench.run.spec import RunResult
from sweeps.cell import CellTuning
from sweeps.plan import Cell
from sweeps.protocols.coordinate import CoordinateDescent
from sweeps.report import best_configs

pytestmark = pytest.mark.unit

GRID = {"learning_rate": [0.004, 0.008, 0.016]}
CELL = Cell("adamw", "cpu-xs", 0.05, "coordinate")


def tuning(seeds=1, finalists=1):
    return CellTuning(CELL, CoordinateDescent(GRID, {"learning_rate": 0.008}, ["learning_rate"], 10),
                      GRID, seeds, finalists=finalists)


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


def test_finalists_are_rerun_with_the_extra_seeds_and_the_best_mean_wins():
    """lr 0.016 is lucky at seed 0 only: the two best at seed 0 get seeds 1-2, the worst does not,
    and the winner is the better mean, whose extra seeds are the ones the report averages."""
    lucky = {(0.016, 0): 1.00, (0.016, 1): 1.10, (0.016, 2): 1.10,
             (0.008, 0): 1.01, (0.008, 1): 1.02, (0.008, 2): 1.02}
    t = tuning(seeds=3, finalists=2)
    finish_all(t, lambda lr, seed: lucky.get((lr, seed), 2.0))
    assert t.done and len(t.results) == 3 + 2 * 2
    assert t.best_config() == {"learning_rate": 0.008}
    assert sorted(t.seed_losses()) == [1.01, 1.02, 1.02]
    assert "learning_rate=0.008 (the best mean of 2 finalists)" in best_configs([t])


def test_finalists_skip_configs_that_trained_to_the_same_seed_0_loss():
    t = tuning(seeds=2, finalists=2)
    finish_all(t, lambda lr, seed: {0.004: 1.05}.get(lr, 1.00) + seed / 100)
    rerun = sorted(r.spec["hparams"]["learning_rate"] for r in t.results.values() if r.spec["seed"] == 1)
    assert rerun == [0.004, 0.008]  # 0.016's seed-0 loss is 0.008's to the last bit


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
