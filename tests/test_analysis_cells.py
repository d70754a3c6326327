"""From runs (the store's frame) to cells, and the one-parameter ablations around a centre."""
import math
from dataclasses import replace

import pytest

from analysis.cells import hardware_note, on_tuning_seed, summarize_cells
from analysis.sensitivity import one_d_ablations
from bench.errors import UserError
from bench.store.record import StoredRun, to_frame

pytestmark = pytest.mark.unit


def _run(loss, lr=0.01, seed=0, status="ok", optimizer="adamw", scale="cpu-s", ratio=1.0,
         params=100_000, **hp):
    return StoredRun(f"{optimizer}-{scale}-{ratio}-{lr}-{seed}-{hp}", optimizer, scale, ratio, seed,
                     status, loss, 100, 1000, params, 1.0, {"learning_rate": lr, **hp})


def test_finalists_are_compared_on_their_means_and_the_winner_averaged_over_its_seeds():
    """Two configs re-run at the same seeds (--finalists 2): lr 0.01 won seed 0 by luck, lr 0.02
    wins on the mean; the configs tried once rank after both at the tuning seed, even the best."""
    runs = to_frame([_run(2.00, lr=0.01, seed=0), _run(2.10, lr=0.01, seed=1),
                     _run(2.02, lr=0.02, seed=0), _run(2.06, lr=0.02, seed=1),
                     _run(1.999, lr=0.04, seed=0), _run(2.30, lr=0.08, seed=0)])
    cell = summarize_cells(runs).iloc[0]
    assert cell["hparams"] == {"learning_rate": 0.02}
    assert cell["loss"] == pytest.approx(2.04) and cell["n_seeds"] == 2
    assert cell["losses"] == (2.02, 2.06) and cell["tuning_loss"] == 2.02
    assert cell["loss_sd"] == pytest.approx(0.0282843, rel=1e-5)
    assert cell["n_configs"] == 4 and cell["n_runs"] == 6
    assert [c["hparams"]["learning_rate"] for c in cell["approx_best"]] == [0.04, 0.01]



def test_on_tuning_seed_chooses_as_the_study_did_from_the_same_runs():
    """The finalists' runs above read by the study's rule: lr 0.04's single seed-0 loss is the
    best, so it wins; the finalists keep only their seed-0 runs, and nothing else changes."""
    runs = to_frame([_run(2.00, lr=0.01, seed=0), _run(2.10, lr=0.01, seed=1),
                     _run(2.02, lr=0.02, seed=0), _run(2.06, lr=0.02, seed=1),
                     _run(1.999, lr=0.04, seed=0), _run(2.30, lr=0.08, seed=0),
                     _run(3.00, lr=0.01, seed=0, optimizer="muon"), _run(3.10, lr=0.01, seed=1, optimizer="muon")])
    kept = on_tuning_seed(runs)
    assert sorted(kept["run_key"]) == sorted(runs["run_key"][[0, 2, 4, 5, 6, 7]])
    cells = summarize_cells(kept).set_index("optimizer")
    assert cells.loc["adamw", "hparams"] == {"learning_rate": 0.04} and cells.loc["adamw", "n_seeds"] == 1
    assert cells.loc["muon", "losses"] == (3.00, 3.10)  # a lone winner keeps its seeds

def test_a_finalist_with_a_diverged_seed_loses_to_those_that_finished_every_seed():
    runs = to_frame([_run(2.00, lr=0.01, seed=0), _run(2.01, lr=0.01, seed=1),
                     _run(9.00, lr=0.01, seed=2, status="diverged"),
                     _run(2.02, lr=0.02, seed=0), _run(2.06, lr=0.02, seed=1), _run(2.07, lr=0.02, seed=2)])
    cell = summarize_cells(runs).iloc[0]
    assert cell["hparams"] == {"learning_rate": 0.02} and cell["n_seeds"] == 3


def test_a_winner_rerun_at_more_seeds_does_not_lose_to_a_lucky_single_seed_config():
    """The winner's curse as a sweep met it (AdamW cpu-xs 1x): lr 0.008 won at seed 0 and its
    seeds 1-2 came out worse, so its 3-seed mean is above lr 0.016's single seed-0 loss. The cell
    is still lr 0.008's, with its 3 seeds (and so a noise estimate)."""
    runs = to_frame([_run(3.2700, lr=0.008, seed=0), _run(3.2760, lr=0.008, seed=1),
                     _run(3.2766, lr=0.008, seed=2), _run(3.2720, lr=0.016, seed=0)])
    cell = summarize_cells(runs).iloc[0]
    assert cell["hparams"] == {"learning_rate": 0.008} and cell["n_seeds"] == 3
    assert cell["loss"] == pytest.approx(3.2742)
    assert cell["tuning_loss"] == 3.2700  # what it won on: the gap to its mean is the curse
    assert [c["hparams"]["learning_rate"] for c in cell["approx_best"]] == [0.008, 0.016]


def test_diverged_and_failed_runs_are_counted_and_never_averaged():
    runs = to_frame([_run(2.0, seed=0), _run(7.5, seed=1, status="diverged"),
                         _run(math.nan, seed=2, status="failed")])
    cell = summarize_cells(runs).iloc[0]
    assert cell["loss"] == 2.0 and cell["n_seeds"] == 1
    assert (cell["n_ok"], cell["n_diverged"], cell["n_failed"]) == (1, 1, 1)


def test_a_cell_where_everything_diverged_keeps_its_counts_and_has_no_loss():
    runs = to_frame([_run(2.0), _run(9.0, optimizer="lion", status="diverged"),
                         _run(math.nan, optimizer="lion", lr=0.02, status="diverged")])
    lion = summarize_cells(runs).set_index("optimizer").loc["lion"]
    assert math.isnan(lion["loss"]) and lion["n_seeds"] == 0 and lion["n_diverged"] == 2
    assert lion["hparams"] == {} and lion["approx_best"] == []


def test_approximately_best_configs_are_those_within_3e_3():
    runs = to_frame([_run(2.000, lr=0.01), _run(2.002, lr=0.02), _run(2.0035, lr=0.04)])
    cell = summarize_cells(runs).iloc[0]
    assert [c["hparams"]["learning_rate"] for c in cell["approx_best"]] == [0.01, 0.02]


def test_cells_are_ordered_adamw_first_then_by_model_size_and_ratio():
    rows = [_run(2.0, optimizer="muon", scale="cpu-l", ratio=2.0, params=900_000),
            _run(2.0, optimizer="muon", scale="cpu-s", ratio=1.0),
            _run(2.0, optimizer="adamw", scale="cpu-l", params=900_000)]
    cells = summarize_cells(to_frame(rows))
    assert list(zip(cells.optimizer, cells.scale)) == [("adamw", "cpu-l"), ("muon", "cpu-s"),
                                                       ("muon", "cpu-l")]


def test_a_frame_without_the_needed_columns_is_a_user_error():
    with pytest.raises(UserError, match="final_loss"):
        summarize_cells(to_frame([_run(2.0)]).drop(columns=["final_loss"]))


def test_ablations_are_found_around_the_config_with_most_one_parameter_neighbours():
    centre = dict(lr=0.01, wd=0.1)
    runs = to_frame([
        _run(2.00, **centre, seed=0), _run(2.02, **centre, seed=1),
        _run(2.05, lr=0.02, wd=0.1), _run(8.0, lr=0.04, wd=0.1, status="diverged"),
        _run(2.03, lr=0.01, wd=0.0),
        _run(1.99, lr=0.02, wd=0.0),  # differs in two: not an ablation of the centre
    ]).assign(hparams=lambda f: f["hparams"].map(lambda h: {"lr": h["learning_rate"], "wd": h["wd"]}))
    abl = one_d_ablations(runs)
    lr = abl[abl.param == "lr"].sort_values("value")
    assert list(lr.value) == [0.01, 0.02, 0.04]
    assert list(lr.is_centre) == [True, False, False]
    assert lr.loss.iloc[0] == pytest.approx(2.01)  # the centre's seeds, averaged
    assert list(lr.diverged) == [False, False, True]
    assert set(abl.param) == {"lr", "wd"} and (abl.cell_best == 1.99).all()


def test_runs_from_several_kinds_of_hardware_are_named_with_their_counts():
    def on(hardware, seed):
        return replace(_run(3.0, seed=seed), hardware=hardware)

    def frame(*runs):
        return to_frame(runs)

    assert hardware_note(frame(on("AMD EPYC", 0), on("AMD EPYC", 1), on("", 2))) is None
    note = hardware_note(frame(on("Xeon", 0), on("AMD EPYC", 1), on("AMD EPYC", 2), on("", 3)))
    assert note.startswith("these runs come from 2 kinds of hardware: AMD EPYC (2 runs); Xeon (1 run)")
