"""A cell's bookkeeping: protocol runs at seed 0, then the winner with more seeds; the best is
chosen the same way however the results arrived (fresh or from the store, in any order)."""
import math
from dataclasses import replace

import pytest

from bench.run.spec import RunResult
from bench.store.record import StoredRun, to_frame
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


def store_frame(runs):
    return to_frame(StoredRun.from_result(r) for r in runs)


def other_sweep(config, losses, **context):
    """Results another sweep left in the store: `config` at seeds 0.., one loss each."""
    specs = [replace(CELL.spec(config, seed), **context) for seed in range(len(losses))]
    return [RunResult(s.key, s.to_dict(), "ok", loss) for s, loss in zip(specs, losses)]


def test_the_report_says_when_the_whole_store_crowns_another_config_than_the_sweep():
    """The sweep chose among its own finalists; a store extended by another sweep holds a config
    whose three seeds beat them, which the analysis of the store (and regress --tuned-from) will
    pick: the report must say so rather than leave two answers unexplained."""
    t = tuning(seeds=3, finalists=2)
    finish_all(t, lambda lr, seed: {0.016: 1.00, 0.008: 1.01}.get(lr, 2.0) + seed / 100)
    own = list(t.results.values())
    assert "store holds" not in best_configs([t], store_frame(own))
    text = best_configs([t], store_frame(own + other_sweep({"learning_rate": 0.002}, [0.95] * 3)))
    assert "learning_rate=0.016 (the best mean of 2 finalists)" in text
    assert ("the store holds 3 more runs of this cell (other sweeps); pooled with them (optbench "
            "analyze): another winner, learning_rate=0.002, loss 0.9500 over 3 seeds") in text
    worse = best_configs([t], store_frame(own + other_sweep({"learning_rate": 0.002}, [1.5] * 2)))
    assert "2 more runs" in worse and "the same winner, loss 1.0100 over 3 seeds" in worse


def test_runs_of_another_context_are_not_the_cell_s():
    t = tuning(seeds=3, finalists=2)
    finish_all(t, lambda lr, seed: 1.0 + seed / 100)
    elsewhere = other_sweep({"learning_rate": 0.002}, [0.5] * 3, tokenizer="bpe-1024")
    assert "store holds" not in best_configs([t], store_frame(list(t.results.values()) + elsewhere))
