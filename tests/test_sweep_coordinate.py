"""Coordinate descent (the study's Phase I/II) on synthetic losses: what it visits, when it moves,
when it stops, and that it is a pure function of the losses (what makes a sweep resumable)."""
import json
import math

import pytest

from analysis.cells import config_key
from sweeps.protocols.coordinate import CoordinateDescent

pytestmark = pytest.mark.unit

GRID = {"learning_rate": [0.001, 0.002, 0.004, 0.008, 0.016], "warmup": [0.0, 0.05, 0.1],
        "beta2": [0.9, 0.95, 0.99]}
START = {"learning_rate": 0.004, "warmup": 0.05, "beta2": 0.95}
ORDER = ["learning_rate", "warmup", "beta2"]


def bowl(config):
    """Separable, minimum at lr 0.016, warmup 0.1, beta2 0.99."""
    return (abs(math.log2(config["learning_rate"] / 0.016)) + 10 * abs(config["warmup"] - 0.1)
            + 10 * abs(config["beta2"] - 0.99))


def drive(protocol, loss=bowl):
    """Answer every proposal until done; returns the losses and the batches in order."""
    losses, batches = {}, []
    while (batch := protocol.propose(losses)) is not None:
        batches.append(batch)
        for c in batch:
            losses[config_key(c)] = loss(c)
    return losses, batches


def best(losses):
    return min(losses.items(), key=lambda kv: kv[1])


def test_finds_the_optimum_of_a_separable_loss_and_stops():
    cd = CoordinateDescent(GRID, START, ORDER, budget=100)
    losses, _ = drive(cd)
    assert best(losses) == (config_key({"learning_rate": 0.016, "warmup": 0.1, "beta2": 0.99}), 0.0)
    # pass 1 sweeps every key (start + 4 + 2 + 2); pass 2 re-sweeps lr and warmup around the moved
    # centre (4 + 2 new configs; beta2's are known) and moves nothing, so the walk ends
    assert len(losses) == 1 + 4 + 2 + 2 + 4 + 2


def test_sweeps_the_first_key_before_the_next_nearest_values_first():
    cd = CoordinateDescent(GRID, START, ORDER, budget=100)
    _, batches = drive(cd)
    assert batches[0] == [START]
    assert [c["learning_rate"] for c in batches[1]] == [0.002, 0.008, 0.001, 0.016]
    assert all(c["warmup"] == 0.05 for c in batches[1])
    assert {c["learning_rate"] for c in batches[2]} == {0.016}  # moved to the best lr
    assert [c["warmup"] for c in batches[2]] == [0.0, 0.1]


def test_the_budget_cuts_the_walk_short():
    cd = CoordinateDescent(GRID, START, ORDER, budget=3)
    losses, batches = drive(cd)
    assert len(losses) == 3
    assert [c["learning_rate"] for b in batches for c in b] == [0.004, 0.002, 0.008]


def test_moves_only_on_a_strict_improvement_and_ties_keep_the_centre():
    flat = lambda c: 1.0  # noqa: E731
    cd = CoordinateDescent(GRID, START, ORDER, budget=100)
    losses, _ = drive(cd, flat)
    # every key swept once around the start, then done: nothing beat the centre
    assert len(losses) == 1 + 4 + 2 + 2


def test_diverged_runs_count_as_the_worst_loss():
    def diverges_above(c):
        return math.inf if c["learning_rate"] > 0.004 else bowl(c)

    losses, _ = drive(CoordinateDescent(GRID, START, ORDER, budget=100), diverges_above)
    assert json.loads(best(losses)[0])["learning_rate"] == 0.004


def test_replaying_partial_losses_asks_for_exactly_the_missing_configs():
    full, batches = drive(CoordinateDescent(GRID, START, ORDER, budget=100))
    # interrupted halfway through the third step: only two of its runs had finished
    known = [c for b in batches[:2] for c in b] + batches[2][:1]
    partial = {config_key(c): full[config_key(c)] for c in known}
    again = CoordinateDescent(GRID, START, ORDER, budget=100).propose(partial)
    assert again == batches[2][1:]


def test_phase_two_sweeps_only_its_keys_from_its_start():
    start = {"learning_rate": 0.016, "warmup": 0.0, "beta2": 0.9}
    losses, batches = drive(CoordinateDescent(GRID, start, ["learning_rate"], budget=100))
    assert {c["warmup"] for b in batches for c in b} == {0.0}
    assert len(losses) == len(GRID["learning_rate"])


def test_phase_two_with_no_keys_runs_its_start_once():
    cd = CoordinateDescent(GRID, START, [], budget=100)
    losses, batches = drive(cd)
    assert batches == [[START]] and cd.max_runs == 1
