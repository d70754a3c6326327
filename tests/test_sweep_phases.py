"""Which protocol a cell gets from what the store holds: Phase I, Phase II (from a smaller scale's
best, only the keys that moved), transfer (Phase II from a smaller ratio), Phase III (predicted),
or a sampler."""
import pytest

from bench.errors import UserError
from bench.model.scales import get_scale
from bench.run.spec import RunSpec
from bench.store.record import StoredRun
from sweeps.plan import Cell
from sweeps.protocols.base import FixedConfig
from sweeps.protocols.coordinate import CoordinateDescent
from sweeps.protocols.phases import make_protocol, study_keys, tuned_cells
from sweeps.protocols.samplers import SamplerSearch

pytestmark = pytest.mark.unit


def stored(rows):
    """Finished seed-0 runs as the store gives them: (optimizer, scale, ratio, loss, hparams)."""
    specs = [(RunSpec(optimizer, scale, ratio, hp), loss) for optimizer, scale, ratio, loss, hp in rows]
    return [StoredRun(spec.key, spec.optimizer, spec.scale, spec.ratio, 0, "ok", loss, 1, 1,
                      get_scale(spec.scale).non_embedding_params, 1.0, dict(spec.hparams))
            for spec, loss in specs]


EMPTY = []  # an empty store


def test_an_empty_store_gives_phase_one_over_every_key_learning_rate_first():
    protocol, grid = make_protocol(Cell("adamw", "cpu-s", 1.0, "coordinate"), 10, EMPTY)
    assert isinstance(protocol, CoordinateDescent) and "Phase I" in protocol.label
    assert set(protocol.keys) == set(grid) and protocol.keys[0] == "learning_rate"


def test_a_tuned_smaller_scale_gives_phase_two_from_its_best_with_the_study_keys():
    runs = stored([("adamw", "cpu-xs", 1.0, 3.0, {"learning_rate": 0.016, "warmup": 0.1}),
                   ("adamw", "cpu-xs", 1.0, 3.5, {"learning_rate": 0.004}),
                   ("adamw", "cpu-xs", 2.0, 2.0, {"learning_rate": 0.064})])  # another ratio
    protocol, _ = make_protocol(Cell("adamw", "cpu-s", 1.0, "coordinate"), 10, runs)
    assert "Phase II from cpu-xs" in protocol.label
    assert protocol.start["learning_rate"] == 0.016 and protocol.start["warmup"] == 0.1
    assert protocol.keys == ["learning_rate", "weight_decay", "train_batch_size"]  # the study's


def test_two_tuned_smaller_scales_give_the_keys_that_moved_between_them():
    runs = stored([("lion", "cpu-xs", 1.0, 3.0, {"learning_rate": 0.004, "beta1": 0.9}),
                   ("lion", "cpu-s", 1.0, 2.8, {"learning_rate": 0.002, "beta1": 0.9})])
    protocol, _ = make_protocol(Cell("lion", "cpu-m", 1.0, "coordinate"), 10, runs)
    assert protocol.keys == ["learning_rate"] and protocol.start["learning_rate"] == 0.002


def test_transfer_starts_from_the_smallest_tuned_ratio_of_the_same_scale_with_the_study_keys():
    runs = stored([("adamw", "cpu-xs", 0.5, 3.4, {"learning_rate": 0.032, "weight_decay": 0.2}),
                   ("adamw", "cpu-xs", 0.5, 3.6, {"learning_rate": 0.004}),
                   ("adamw", "cpu-xs", 2.0, 2.9, {"learning_rate": 0.002}),  # a larger ratio
                   ("adamw", "cpu-s", 0.5, 3.0, {"learning_rate": 0.008})])  # a larger scale
    protocol, _ = make_protocol(Cell("adamw", "cpu-xs", 1.0, "transfer"), 10, runs)
    assert "Phase II from cpu-xs at 0.5x" in protocol.label
    assert protocol.start["learning_rate"] == 0.032 and protocol.start["weight_decay"] == 0.2
    assert protocol.keys == ["learning_rate", "weight_decay", "train_batch_size"]  # the study's
    runs += stored([("adamw", "cpu-xs", 0.25, 3.9, {"learning_rate": 0.016, "warmup": 0.2})])
    for ratio in (1.0, 2.0):  # one anchor for every larger ratio, whatever is tuned in between
        protocol, _ = make_protocol(Cell("adamw", "cpu-xs", ratio, "transfer"), 10, runs)
        assert "Phase II from cpu-xs at 0.25x" in protocol.label
        assert protocol.start["learning_rate"] == 0.016 and protocol.start["warmup"] == 0.2
        assert protocol.keys == ["learning_rate", "weight_decay", "train_batch_size"]


def test_finalists_rerun_at_more_seeds_anchor_transfer_on_their_means():
    """lr 0.032 won 0.5x at seed 0 by luck; with two finalists re-run at seeds 1-2, lr 0.016 has
    the better mean and is the anchor."""
    from dataclasses import replace

    from analysis.tuning import Trace
    from bench.cli.tuning import replay_changes

    lucky, steady = {"learning_rate": 0.032}, {"learning_rate": 0.016}
    runs = stored([("adamw", "cpu-xs", 0.5, 3.40, lucky), ("adamw", "cpu-xs", 0.5, 3.42, steady),
                   ("adamw", "cpu-xs", 0.5, 3.50, {"learning_rate": 0.008})])
    cell = Cell("adamw", "cpu-xs", 1.0, "transfer")
    assert make_protocol(cell, 10, runs)[0].start["learning_rate"] == 0.032
    seeds = [replace(r, run_key=f"{r.run_key}/s{seed}", seed=seed, final_loss=loss)
             for r, losses in ((runs[0], (3.52, 3.50)), (runs[1], (3.43, 3.41)))
             for seed, loss in zip((1, 2), losses)]
    moved = make_protocol(cell, 10, runs + seeds)[0]
    assert moved.start["learning_rate"] == 0.016
    ran = make_protocol(cell, 10, runs)[0].label  # the replay of a search made before says so
    [warning] = replay_changes([Trace("transfer", 0, moved.label, (3.1,), True)], [ran])
    assert f"start: run {runs[1].run_key[:12]}" in warning


def test_transfer_without_a_smaller_ratio_is_phase_two_from_a_smaller_scale_or_refused():
    runs = stored([("adamw", "cpu-xs", 1.0, 3.0, {"learning_rate": 0.016})])
    transfer, _ = make_protocol(Cell("adamw", "cpu-s", 1.0, "transfer"), 10, runs)
    phase2, _ = make_protocol(Cell("adamw", "cpu-s", 1.0, "coordinate"), 10, runs)
    assert (transfer.label, transfer.start, transfer.keys) == (phase2.label, phase2.start, phase2.keys)
    with pytest.raises(UserError, match="tune one first"):
        make_protocol(Cell("adamw", "cpu-xs", 1.0, "transfer"), 10, runs)


def test_study_keys_map_the_study_names_and_default_to_learning_rate():
    from sweeps.grid import load_grid

    assert study_keys("soap", load_grid("soap", "cpu"))[0] == "learning_rate"  # study: 'soape'
    assert study_keys("nadamw", load_grid("nadamw", "cpu")) == []
    assert study_keys("normuon", load_grid("normuon", "cpu")) == ["learning_rate"]


def test_larger_scales_and_other_ladders_never_count_as_tuned():
    runs = stored([("adamw", "cpu-m", 1.0, 3.0, {}), ("adamw", "0.1B", 1.0, 3.0, {})])
    assert tuned_cells(runs, "adamw", get_scale("cpu-s")) == []


def test_predict_fits_over_two_tuned_scales_and_needs_them():
    cell = Cell("adamw", "cpu-m", 1.0, "predict")
    with pytest.raises(UserError, match="needs 2"):
        make_protocol(cell, 10, stored([("adamw", "cpu-xs", 1.0, 3.0, {})]))
    runs = stored([("adamw", s, r, 3.0, {"learning_rate": lr / r})
                   for s, lr in (("cpu-xs", 0.032), ("cpu-s", 0.016)) for r in (1.0, 2.0)])
    protocol, _ = make_protocol(cell, 10, runs)
    assert isinstance(protocol, FixedConfig)
    assert 0 < protocol.config["learning_rate"] < 0.016  # falls on with model size
    RunSpec("adamw", "cpu-m", 1.0, protocol.config)  # a valid run


def test_samplers_get_the_whole_grid_and_the_budget():
    protocol, grid = make_protocol(Cell("muon", "cpu-xs", 1.0, "gp"), 7, EMPTY)
    assert isinstance(protocol, SamplerSearch) and protocol.max_runs == 7 and protocol.grid == grid


def test_the_search_seed_seeds_the_sampler_and_orders_coordinate_descents_keys():
    study, _ = make_protocol(Cell("adamw", "cpu-xs", 1.0, "coordinate"), 10, EMPTY)
    shuffled, _ = make_protocol(Cell("adamw", "cpu-xs", 1.0, "coordinate", search_seed=2), 10, EMPTY)
    assert study.keys[0] == "learning_rate" and sorted(shuffled.keys) == sorted(study.keys)
    assert shuffled.keys != study.keys and shuffled.start == study.start
    assert "key order seed 2" in shuffled.label
    tpe, _ = make_protocol(Cell("adamw", "cpu-xs", 1.0, "tpe", search_seed=5), 10, EMPTY)
    assert tpe.seed == 5
    names = {Cell("adamw", "cpu-xs", 1.0, "tpe", search_seed=s).study_name for s in (0, 5)}
    assert names == {"optbench/cpu-xs/1x/adamw/tpe", "optbench/cpu-xs/1x/adamw/tpe/seed5"}


def test_a_cell_tuned_after_a_transfer_sweep_moves_its_start_and_the_replay_says_so():
    from analysis.tuning import Trace
    from bench.cli.tuning import replay_changes

    runs = stored([("adamw", "cpu-xs", 0.5, 3.4, {"learning_rate": 0.032})])
    cell = Cell("adamw", "cpu-xs", 1.0, "transfer")
    ran = make_protocol(cell, 10, runs)[0].label
    later = make_protocol(cell, 10, runs + stored([("adamw", "cpu-xs", 0.25, 3.6, {})]))[0].label
    assert "at 0.5x" in ran and "at 0.25x" in later
    assert replay_changes([Trace("transfer", 0, ran, (3.1,), True)], [ran]) == []
    [warning] = replay_changes([Trace("transfer", 0, later, (3.1,), True)], [ran])
    assert ran in warning and later in warning
