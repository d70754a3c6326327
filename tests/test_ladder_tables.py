"""examples/ladder_cell_table.py, behind docs/LADDER.md's cpu-s tables: which config is each
optimizer's winner and its finalists, that a run found in two files must agree with itself and that
runs of two machines do not mix; the command that runs a config (the probe search's and the
re-run's); the re-run's ETA, its --set, and its plan with --by-mean and --at-ratio; and the gap
figure's checks of its labels and of the study's cell; the study's agreement with itself."""
import argparse
import json

import pandas as pd
import pytest

from bench.cli.run import parse_sets
from examples import ladder_cell_table as lct
from examples import ladder_gap_figure, ladder_probe_search, ladder_rerun, study_agreement

pytestmark = pytest.mark.unit


def _runs(rows):
    return pd.DataFrame([{"optimizer": o, "scale": "cpu-s", "ratio": 1.0, "seed": seed,
                          "final_loss": loss, "hparams": json.dumps({"learning_rate": lr})}
                         for o, lr, seed, loss in rows])


def _write(tmp_path, name, rows):
    path = tmp_path / name
    _runs(rows).to_csv(path, index=False)
    return str(path)


LUCKY = [("adamw", 0.01, 0, 2.60), ("adamw", 0.01, 1, 2.80), ("adamw", 0.01, 2, 2.80),
         ("adamw", 0.02, 0, 2.65), ("adamw", 0.02, 1, 2.66), ("adamw", 0.02, 2, 2.67),
         ("adamw", 0.04, 0, 2.62), ("adamw", 0.04, 1, 2.40)]  # best mean, but on fewer seeds


def test_seed_zero_and_mean_choose_different_winners(tmp_path):
    runs = lct.read_runs([_write(tmp_path, "a.csv", LUCKY)])
    lr = {by_mean: json.loads(lct.winners(runs, "cpu-s", by_mean)["adamw"].name)["learning_rate"]
          for by_mean in (False, True)}
    assert lr == {False: 0.01, True: 0.02}
    assert list(lct.winners(runs, "cpu-s", True)["adamw"].index) == [0, 1, 2]


def test_finalists_are_the_best_at_seed_zero_and_the_first_is_the_winner(tmp_path):
    runs = lct.read_runs([_write(tmp_path, "a.csv", LUCKY)])
    top = {k: [json.loads(c)["learning_rate"] for c in lct.finalists(runs, "cpu-s", k)["adamw"]]
           for k in (1, 2, 5)}
    assert top == {1: [0.01], 2: [0.01, 0.04], 5: [0.01, 0.04, 0.02]}  # seed 1's 2.40 plays no part
    assert lct.finalists(runs, "cpu-s", 1)["adamw"][0] == lct.winners(runs, "cpu-s")["adamw"].name


def test_a_run_in_two_files_is_counted_once(tmp_path):
    runs = lct.read_runs([_write(tmp_path, "a.csv", LUCKY), _write(tmp_path, "b.csv", LUCKY[:3])])
    assert len(runs) == len(LUCKY)


def test_seeds_keep_only_their_runs(tmp_path):
    runs = lct.read_runs([_write(tmp_path, "a.csv", LUCKY)], seeds=[1, 2])
    assert sorted(zip(runs.seed, runs.final_loss)) == [(1, 2.40), (1, 2.66), (1, 2.80), (2, 2.67), (2, 2.80)]


def test_a_run_that_differs_between_files_stops_the_table(tmp_path, capsys):
    changed = [("adamw", 0.01, 0, 2.61)]
    with pytest.raises(SystemExit) as stop:
        lct.read_runs([_write(tmp_path, "a.csv", LUCKY), _write(tmp_path, "b.csv", changed)])
    assert stop.value.code == 2
    assert "differ between files" in capsys.readouterr().err


def test_runs_from_two_machines_stop_the_table(tmp_path, capsys):
    """Files without a hardware column count as one unrecorded machine: theirs mix with none."""
    amd = _runs(LUCKY[3:]).assign(hardware="AMD EPYC")
    path = tmp_path / "amd.csv"
    amd.to_csv(path, index=False)
    assert len(lct.read_runs([str(path)])) == len(LUCKY) - 3
    with pytest.raises(SystemExit) as stop:
        lct.read_runs([_write(tmp_path, "a.csv", LUCKY[:3]), str(path)])
    assert stop.value.code == 2
    assert "more than one machine (unrecorded, AMD EPYC)" in capsys.readouterr().err


def test_batch_keeps_one_cpu_s_batch_and_every_cpu_xs_run_of_the_optimizers(tmp_path):
    rows = _runs(LUCKY[:2])
    rows.loc[1, "hparams"] = json.dumps({"learning_rate": 0.01, "train_batch_size": 64})
    rows.loc[0, "hparams"] = json.dumps({"learning_rate": 0.01, "train_batch_size": 16})
    xs = rows.assign(scale="cpu-xs")
    other = xs.iloc[:1].assign(optimizer="lion")
    path = tmp_path / "a.csv"
    pd.concat([rows, xs, other]).to_csv(path, index=False)
    runs = lct.read_runs([str(path)], batch=64, optimizers=["muon"])
    assert sorted(zip(runs.scale, runs.seed)) == [("cpu-s", 1), ("cpu-xs", 0), ("cpu-xs", 1)]


def test_ratio_keeps_its_runs_and_stops_without_adamw_there(tmp_path, capsys):
    rows = _runs(LUCKY[:2] + [("lion", 0.01, 0, 2.7), ("lion", 0.01, 1, 2.8)])
    rows.loc[1, "ratio"] = rows.loc[2, "ratio"] = 0.25
    rows.loc[3, "ratio"] = 0.5
    path = tmp_path / "a.csv"
    rows.to_csv(path, index=False)
    runs = lct.read_runs([str(path)], ratio=0.25)
    assert sorted(zip(runs.optimizer, runs.seed)) == [("adamw", 1), ("lion", 0)]
    with pytest.raises(SystemExit) as stop:
        lct.read_runs([str(path)], ratio=0.5)
    assert stop.value.code == 2
    assert "no AdamW run at cpu-s ratio 0.5" in capsys.readouterr().err


def test_a_winner_is_rerun_with_its_config_as_stored():
    config = {"learning_rate": 0.0005, "decay": None, "decay_roles": "hidden,head", "epsilon": 1e-25,
              "partition_grads_into_blocks": True, "variant": "study", "train_batch_size": 4}
    args = argparse.Namespace(scale="cpu-s", model="m.toml", store="sqlite:///s.db", ratio=1.0)
    cmd = ladder_probe_search.command(args, "soap", config, seed=2)
    assert cmd[cmd.index("--seed") + 1] == "2"
    assert parse_sets([cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]) == config


def test_the_gap_figure_stops_without_a_label_per_table(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        ladder_gap_figure.main("a.csv", str(tmp_path / "f.png"), against=["b.csv", "c.csv"],
                               labels=["a", "b"])
    assert stop.value.code == 2
    assert "3 tables need as many --labels" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


def test_the_rerun_eta_waits_for_a_trained_run():
    seconds = lambda text: float(text.split()[1])  # noqa: E731
    assert ladder_rerun.eta([], done=2, left=3, jobs=2) == "ETA ?"  # read back from the store only: no pace yet
    assert seconds(ladder_rerun.eta([], done=5, left=0, jobs=2)) == 0
    one, two = (seconds(ladder_rerun.eta([300.0], done=1, left=4, jobs=j)) for j in (1, 2))
    assert two < one
    # half the runs so far were read back: half the runs left are expected to be
    assert seconds(ladder_rerun.eta([300.0], done=2, left=4, jobs=1)) < one


def test_a_rerun_changes_a_key_for_the_named_optimizers_only(tmp_path, capsys):
    runs = lct.read_runs([_write(tmp_path, "a.csv", LUCKY + [("lion", 0.001, 0, 2.7)])])
    top = ladder_rerun.changed(lct.finalists(runs, "cpu-s", 2), ["lion"], parse_sets(["lr=0.002"]))
    assert top["adamw"] == lct.finalists(runs, "cpu-s", 2)["adamw"]
    assert json.loads(top["lion"][0]) == {"learning_rate": 0.002}  # the alias names the key it changes
    # AdamW's two finalists differ only in the learning rate: set, they are one config
    same = ladder_rerun.changed(lct.finalists(runs, "cpu-s", 2), ["adamw"], parse_sets(["lr=0.5"]))
    assert len(same["adamw"]) == 1
    for argv, error in ((["--set", "learning_rate=0.002"], "--set needs --optimizers"),
                        (["--optimizers", "lion", "--set", "0.002"], "bad --set '0.002'")):
        with pytest.raises(SystemExit) as stop:  # without --optimizers it would change AdamW's too
            ladder_rerun.main(argv + ["--model", "m.toml", "--store", "s", "a.csv"])
        assert stop.value.code == 2
        assert error in capsys.readouterr().err


def test_a_rerun_by_mean_at_another_ratio_runs_each_winner_there_slowest_first(tmp_path, capsys):
    rows = _runs(LUCKY + [("lion", 0.001, 0, 2.70), ("lion", 0.001, 1, 2.70),
                          ("lion", 0.002, 0, 2.60), ("lion", 0.002, 1, 2.90)])
    rows["wall_time_s"] = [100.0] * len(LUCKY) + [500.0] * 4
    rows.to_csv(tmp_path / "a.csv", index=False)
    common = ["--model", "m.toml", "--store", "s", str(tmp_path / "a.csv")]
    todo = ladder_rerun.plan(*ladder_rerun.arguments(["--by-mean", "--at-ratio", "2", "--seeds", "0,1", *common]))
    assert [(name, seed) for name, _, seed, _ in todo] == [("lion", 0), ("adamw", 0), ("lion", 1), ("adamw", 1)]
    for name, _, _, cmd in todo:  # each at 2x, with its config of the best mean (not seed 0's)
        assert cmd[cmd.index("--ratio") + 1] == "2.0"
        assert parse_sets([cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]) == {
            "learning_rate": {"adamw": 0.02, "lion": 0.001}[name]}
    halved = ladder_rerun.plan(*ladder_rerun.arguments(["--by-mean", "--lr-factor", "0.5", *common]))
    assert {name: cmd[cmd.index("--set") + 1] for name, _, _, cmd in halved} == {  # AdamW's too
        "adamw": "learning_rate=0.01", "lion": "learning_rate=0.0005"}
    for argv, error in ((["--by-mean", "--finalists", "2"], "--by-mean re-runs one config per optimizer"),
                        (["--lr-factor", "0.5", "--optimizers", "lion", "--set", "lr=0.1"], "give one of them")):
        with pytest.raises(SystemExit) as stop:
            ladder_rerun.arguments([*argv, *common])
        assert stop.value.code == 2
        assert error in capsys.readouterr().err


def test_the_gap_figure_stops_on_tables_against_two_cells_of_the_study(tmp_path, capsys):
    table = pd.DataFrame({"optimizer": ["adamw", "lion"], "cpu_s_gap": [0.0, 0.01], "cpu_s_lo": [None, 0.0],
                          "cpu_s_hi": [None, 0.02], "study_gap": [0.0, 0.02], "study_scale": "0.1B"})
    for ratio in (1, 2):
        table.assign(study_ratio=ratio).to_csv(tmp_path / f"{ratio}x.csv", index=False)
    with pytest.raises(SystemExit) as stop:
        ladder_gap_figure.main(str(tmp_path / "1x.csv"), str(tmp_path / "f.png"), against=[str(tmp_path / "2x.csv")],
                               labels=["1x", "2x"])
    assert stop.value.code == 2
    assert "different cells of the study" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


def test_the_study_s_agreement_compares_each_cell_over_the_optimizers_it_shares_with_the_anchor():
    cells = pd.DataFrame({("0.1B", 1.0): [0.0, 0.01, 0.02, -0.03], ("0.1B", 2.0): [0.0, 0.02, 0.03, -0.01],
                          ("0.3B", 1.0): [0.0, -0.01, -0.02, None]}, index=["adamw", "lion", "sophia", "muon"])
    table = study_agreement.agreement(cells, ("0.1B", 1.0)).set_index(["scale", "ratio"])
    assert table.loc[("0.1B", 2.0)].tolist() == [4, 1.0]  # the same order
    assert table.loc[("0.3B", 1.0)].tolist() == [3, -1.0]  # reversed, over the three it ran


def test_a_table_with_one_seed_prints_its_agreement_without_an_interval(tmp_path, capsys):
    rows = [("adamw", 0.01, 0, 2.70), ("lion", 0.01, 0, 2.72), ("muon", 0.01, 0, 2.60)]
    lct.main(str(tmp_path / "t.csv"), [_write(tmp_path, "a.csv", rows)], by_mean=False, batch=None,
             optimizers=None, ratio=1.0, study_ratio=2.0)
    line = capsys.readouterr().out.strip()
    assert "against the study's 0.1B 2x" in line and "(one seed of adamw, lion, muon: no interval)" in line
    assert "[" not in line  # a bootstrap over one seed would print a zero-width interval
    assert pd.read_csv(tmp_path / "t.csv").study_ratio.eq(2.0).all()


def test_a_table_given_where_a_runs_file_belongs_exits_2_with_one_line(tmp_path, capsys):
    pd.DataFrame({"optimizer": ["adamw"], "cpu_s_gap": [0.0]}).to_csv(tmp_path / "table.csv", index=False)
    for path, error in ((tmp_path / "table.csv", "is not a runs file (no scale, ratio, seed"),
                        (tmp_path / "absent.csv", "cannot read")):
        with pytest.raises(SystemExit) as stop:
            lct.read_runs([str(path)])
        assert stop.value.code == 2
        assert error in capsys.readouterr().err
