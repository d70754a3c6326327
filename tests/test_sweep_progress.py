"""A sweep's progress line: runs done of the plan's total and an ETA, from the plan's estimate
until runs finish, then from their measured wall times."""
import io
import math

import pytest

from bench.run.spec import RunResult
from sweeps.cell import CellTuning, Request
from sweeps.plan import Cell
from sweeps.progress import Progress
from sweeps.protocols.coordinate import CoordinateDescent

pytestmark = pytest.mark.unit

GRID = {"learning_rate": [0.004, 0.008, 0.016]}


def _tuning():
    cell = Cell("adamw", "cpu-xs", 0.05, "coordinate")
    return CellTuning(cell, CoordinateDescent(GRID, {"learning_rate": 0.008}, ["learning_rate"], 10), GRID)


def test_the_progress_line_counts_runs_of_the_total_with_an_eta_from_the_estimate_then_the_runs():
    log = io.StringIO()
    progress = Progress(total=4, estimate_s=120.0, workers=2, stream=log)  # 30 s a run, 2 at once
    tuning = _tuning()
    first, second = (Request(tuning.cell.spec(c, 0, "cpu"), c, 0) for c in
                     ({"learning_rate": 0.008}, {"learning_rate": 0.004}))
    progress.started(tuning, first)
    assert "0 of 4 runs" in log.getvalue() and "ETA 60 s at most" in log.getvalue()
    result = RunResult(first.key, first.spec.to_dict(), "ok", 3.5, wall_time_s=90.0)
    progress.finished(tuning, first, result, reused=False)
    progress.finished(tuning, second, RunResult(second.key, second.spec.to_dict(), "ok", 3.6), reused=True)
    line = log.getvalue().splitlines()[-1]
    assert "2 of 4 runs" in line and "1 trained, 1 from store" in line
    assert "ETA 1.5 min at most" in line  # 2 runs left at the 90 s measured, 2 at once
    progress.close()
    assert "2 of 4 runs: 1 trained, 1 from store, 0 running" in log.getvalue().splitlines()[-1]


def test_the_eta_weighs_the_runs_left_by_their_tokens():
    """A sweep trains its small ratios first: after a 0.25x run took 10 s, the 1x run left (4x
    the tokens: 1,310,720 against 327,680 at cpu-xs) needs 40 s, not another 10."""
    log = io.StringIO()
    small, large = (CellTuning(Cell("adamw", "cpu-xs", ratio, "coordinate"),
                               CoordinateDescent(GRID, {"learning_rate": 0.008}, ["learning_rate"], 10), GRID)
                    for ratio in (0.25, 1.0))
    tokens = [t.cell.shape.tokens(t.cell.ratio) for t in (small, large)]
    assert tokens == [327_680, 1_310_720]
    progress = Progress(total=2, estimate_s=math.nan, workers=1, stream=log, total_tokens=sum(tokens))
    request = Request(small.cell.spec({"learning_rate": 0.008}, 0, "cpu"), {"learning_rate": 0.008}, 0)
    progress.started(small, request)
    assert "ETA" not in log.getvalue()  # no estimate and nothing measured yet: no guess
    progress.finished(small, request, RunResult(request.key, request.spec.to_dict(), "ok", 3.5,
                                                wall_time_s=10.0), reused=False)
    assert "1 of 2 runs" in log.getvalue().splitlines()[-1] and "ETA 40 s at most" in log.getvalue()
