"""Optuna TPE/GP as budgeted alternatives: the budget, the baseline first, and proposals that are
a function of the losses alone (so a resumed sweep replays them)."""
import math

import pytest

from analysis.cells import config_key
from sweeps.protocols.samplers import ROUND_SIZE, SamplerSearch

pytestmark = pytest.mark.unit

GRID = {"learning_rate": [0.001, 0.002, 0.004, 0.008, 0.016, 0.032], "warmup": [0.0, 0.05, 0.1],
        "clip": [0.0, 1.0]}
START = {"learning_rate": 0.004, "warmup": 0.05, "clip": 1.0}


def loss(c):
    return abs(math.log2(c["learning_rate"] / 0.016)) + 5 * abs(c["warmup"] - 0.1) + c.get("clip", 0.0)


def drive(search, until=None):
    losses, asked = {}, []
    while (batch := search.propose(losses)) is not None:
        asked += batch
        for c in batch[: None if until is None else max(0, until - len(losses))]:
            losses[config_key(c)] = loss(c)
        if until is not None and len(losses) >= until:
            break
    return losses, asked


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_runs_the_budget_of_distinct_configs_starting_at_the_baseline(sampler):
    losses, asked = drive(SamplerSearch(sampler, GRID, START, budget=6))
    assert asked[0] == START
    assert len(losses) == 6 and len({config_key(c) for c in asked}) == 6
    assert all(c[k] in GRID[k] for c in asked for k in GRID)


def test_replay_after_an_interruption_proposes_the_same_configs():
    full, asked = drive(SamplerSearch("tpe", GRID, START, budget=10))
    # a fresh search told only the runs of the first round plus one: asks for the rest of round 2
    partial = {config_key(c): full[config_key(c)] for c in asked[:ROUND_SIZE + 1]}
    again = SamplerSearch("tpe", GRID, START, budget=10)
    assert again.propose(partial) == asked[ROUND_SIZE + 1:2 * ROUND_SIZE]


def test_a_diverged_run_before_any_finished_one_does_not_stop_the_search():
    search = SamplerSearch("tpe", GRID, START, budget=8)
    losses = {}
    while (batch := search.propose(losses)) is not None:
        for c in batch:
            losses[config_key(c)] = math.inf if c["learning_rate"] >= 0.004 and len(losses) < 4 else loss(c)
    assert len(losses) == 8


def test_a_grid_smaller_than_the_budget_ends_when_exhausted():
    tiny = {"learning_rate": [0.004, 0.008], "warmup": [0.05]}
    losses, _ = drive(SamplerSearch("tpe", tiny, {"learning_rate": 0.004, "warmup": 0.05}, budget=10))
    assert len(losses) == 2


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_a_larger_budget_extends_a_smaller_ones_trials_and_the_seed_changes_them(sampler):
    """What lets tuning cost be replayed from the store whatever budget a sweep ran with."""
    _, short = drive(SamplerSearch(sampler, GRID, START, budget=7, seed=3))
    _, long = drive(SamplerSearch(sampler, GRID, START, budget=14, seed=3))
    assert len(short) == 7 and long[:7] == short
    _, other = drive(SamplerSearch(sampler, GRID, START, budget=7, seed=4))
    assert other[0] == START and other != short
