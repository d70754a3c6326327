"""Curves: every run records its train loss and lr multiplier every few steps and its held-out loss
at CURVE_POINTS points, the last at the end; `optbench curves` plots a cell's best configs from
the store, and the data it plots are the stored curves."""
import pandas as pd
import pytest

from bench.cli import main
from bench.run.spec import RunSpec
from bench.run.train import CURVE_POINTS, RunOptions, run
from bench.store.database import ResultStore

RUN = ["run", "--scale", "cpu-xs", "--ratio", "0.05", "--threads", "2"]


@pytest.mark.integration
def test_a_run_records_its_held_out_curve_and_its_schedule():
    result = run(RunSpec("adamw", "cpu-xs", 0.05), RunOptions(threads=2, log_every=4))
    steps = [step for step, _ in result.eval_curve]
    assert len(steps) == CURVE_POINTS and steps == sorted(set(steps)) and steps[-1] == result.steps
    assert result.eval_curve[-1][1] == pytest.approx(result.final_loss, abs=0.05)  # a share of the same tokens
    assert [s for s, _ in result.lr_curve] == [s for s, _ in result.curve]
    multipliers = [m for _, m in result.lr_curve]
    assert max(multipliers) == pytest.approx(1.0, abs=0.2) and multipliers[-1] < multipliers[len(multipliers) // 2]


@pytest.mark.integration
def test_curves_plots_the_best_config_of_each_optimizer_with_its_seeds(store_url, tmp_path, capsys):
    for optimizer, seed in [("adamw", 0), ("adamw", 1), ("lion", 0)]:
        assert main([*RUN, "--optimizer", optimizer, "--seed", str(seed), "--store", store_url, "--json"]) == 0
    assert main([*RUN, "--optimizer", "lion", "--set", "lr=1e-5", "--store", store_url, "--json"]) == 0  # barely trains
    capsys.readouterr()
    stem = tmp_path / "curves"
    assert main(["curves", "--store", store_url, "--scale", "cpu-xs", "--ratio", "0.05", "--out", str(stem)]) == 0
    out = capsys.readouterr().out
    assert "ranking best first" in out and (stem.with_suffix(".png")).stat().st_size > 10_000
    plotted = pd.read_csv(stem.with_suffix(".csv"))
    stored = {r.run_key: r for r in ResultStore(store_url).results()}
    lion_default = {k for k, r in stored.items() if r.spec["optimizer"] == "lion" and r.spec["hparams"]["learning_rate"] != 1e-5}
    assert set(plotted["run_key"]) == {k for k, r in stored.items() if r.spec["optimizer"] == "adamw"} | lion_default
    for key, rows in plotted[plotted["curve"] == "held-out"].groupby("run_key"):
        assert list(zip(rows["step"], rows["value"])) == [tuple(p) for p in stored[key].eval_curve]

    # --trials: every config tried, at the tuning seed (0), with the leader at each curve point
    assert main(["curves", "--store", store_url, "--scale", "cpu-xs", "--ratio", "0.05", "--trials",
                 "--out", str(stem)]) == 0
    out = capsys.readouterr().out
    trials = pd.read_csv(stem.with_suffix(".csv"))
    assert set(trials["run_key"]) == {k for k, r in stored.items() if r.spec["seed"] == 0}
    assert "adamw: the final best config led at every point" in out  # one config: nothing to flip
    assert "lion: " in out and (stem.with_suffix(".png")).stat().st_size > 10_000


@pytest.mark.integration
@pytest.mark.parametrize("args, message", [
    ([], "needs --run KEY, or a cell"),
    (["--run", "0123456789abcdef0123"], "no result of run 0123456789abcdef0123"),
    (["--scale", "cpu-xs", "--ratio", "3"], "no stored result at cpu-xs 3x"),
])
def test_curves_of_nothing_is_one_line_and_exit_2(args, message, store_url, capsys):
    assert main(["curves", "--store", store_url, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.unit
def test_leaders_name_a_config_that_leads_mid_run_and_loses_at_the_end():
    from analysis.curves import CURVE_COLUMNS, leaders
    # config "fast" leads at the first two points; "slow" is best at the end (the study's warning)
    points = {"fast": [3.0, 2.5, 2.3], "slow": [3.2, 2.6, 2.2]}
    frame = pd.DataFrame([("muon", config, 0, config, "held-out", step, step * 100, loss, losses[-1])
                          for config, losses in points.items() for step, loss in zip((10, 20, 30), losses)],
                         columns=CURVE_COLUMNS)
    table = leaders(frame)
    assert list(table["leader"]) == ["fast", "fast", "slow"]
    assert list(table["leader_is_final_best"]) == [False, False, True]
    assert table["final_best_loss"].iloc[0] - table["leader_loss"].iloc[0] == pytest.approx(0.2)
