"""A shipped optimizer's grid amended for one sweep (`--space NAME=FILE`, sweeps.grid.amend_grid):
the keys the file lists replace the shipped values, "start" moves where the search begins, the
search gets an Optuna study of its own, and bad files are one line with exit code 2."""
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from bench.cli import main
from bench.store.database import ResultStore
from sweeps.grid import load_grid, space_label, start_point, use_spaces
from sweeps.record import open_storage

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = load_grid("adamw", "cpu")
SHIPPED_PAPER = load_grid("adamw", "paper")


def _file(tmp_path, name="space.json", **content):
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return str(path)


@pytest.fixture(autouse=True)
def _no_amendment_left():
    yield
    use_spaces([], [])


@pytest.mark.unit
def test_the_keys_it_lists_replace_the_shipped_values_and_the_rest_stay(tmp_path):
    use_spaces([f"adamw={_file(tmp_path, cpu={'warmup': [62, 125, 250, 500]}, start={'warmup': 250})}"], ["adamw"])
    grid = load_grid("adamw", "cpu")
    assert grid["warmup"] == [62, 125, 250, 500]
    assert {k: v for k, v in grid.items() if k != "warmup"} == {k: v for k, v in SHIPPED.items() if k != "warmup"}
    assert load_grid("adamw", "paper") == SHIPPED_PAPER  # only the ladder it names
    assert start_point("adamw", {"warmup": 0.05, "learning_rate": 0.008}, grid)["warmup"] == 250
    assert load_grid("nadamw", "cpu")["warmup"] == SHIPPED["warmup"]  # only the named optimizer


@pytest.mark.unit
def test_each_amendment_has_its_own_label_and_none_has_none(tmp_path):
    labels = []
    for start in (125, 250):
        use_spaces([f"adamw={_file(tmp_path, cpu={'warmup': [125, 250]}, start={'warmup': start})}"], ["adamw"])
        labels.append(space_label("adamw"))
    use_spaces([], ["adamw"])
    assert len(set(labels)) == 2 and all(len(label) == 8 for label in labels)
    assert space_label("adamw") == "" and load_grid("adamw", "cpu") == SHIPPED


@pytest.mark.integration
@pytest.mark.parametrize("content, message", [
    ({"grids": {}}, "unknown key 'grids'"),
    ({"cpu": {"warmup": 250}}, "'cpu' must map hyperparameters to non-empty lists"),
    ({"cpu": {"warmup_steps": [250]}}, "unknown hyperparameter 'warmup_steps' for adamw"),
    ({"cpu": {"warmup": [-1]}}, "(cpu grid)"),
    ({"start": {"beta1": 1.5}}, "(start)"),
    ({"start": [250]}, "'start' must map hyperparameters to values"),
    ({"start": {"decay": 0.5}}, "start 'decay' is on none of adamw's grids"),
])
def test_a_bad_amendment_is_one_line_with_exit_code_2(content, message, tmp_path, capsys):
    store = tmp_path / "store.db"
    sweep = ["sweep", "--scale", "cpu-xs", "--ratios", "0.05", "--optimizers", "adamw,muon",
             "--store", f"sqlite:///{store}", "--dry-run", "--space", f"adamw={_file(tmp_path, **content)}"]
    assert main(sweep) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert main([*sweep[:-1], f"adamw={tmp_path / 'missing.json'}"]) == 2
    assert "No such file" in capsys.readouterr().err


@pytest.mark.system
def test_an_amended_sweep_runs_on_its_grid_from_its_start_in_a_study_of_its_own(store_url, tmp_path):
    journal = tmp_path / "optuna.journal"
    space = _file(tmp_path, cpu={"learning_rate": [0.004, 0.016], "warmup": [3]}, start={"learning_rate": 0.016})
    sweep = [sys.executable, "-m", "bench.cli", "sweep", "--scale", "cpu-xs", "--ratios", "0.05",
             "--optimizers", "adamw", "--workers", "1", "--threads", "1", "--store", store_url,
             "--optuna-storage", str(journal), "--yes"]
    for extra in (["--max-trials", "2", "--space", f"adamw={space}"], ["--max-trials", "1"]):
        done = subprocess.run([*sweep, *extra], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert ("adamw: grid amended by" in done.stdout) == ("--space" in extra)
    runs = ResultStore(store_url).frame().sort_values("created_at")
    hparams = [json.loads(h) if isinstance(h, str) else h for h in runs["hparams"]]
    amended, shipped = hparams[:2], hparams[2:]
    assert [h["learning_rate"] for h in amended] == [0.016, 0.004] and {h["warmup"] for h in amended} == {3}
    assert len(shipped) == 1 and shipped[0]["warmup"] == SHIPPED["warmup"][2]  # the shipped start, 0.05
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(open_storage(str(journal))))
    assert names[0] == "optbench/cpu-xs/0.05x/adamw/coordinate"
    assert names[1].startswith("optbench/cpu-xs/0.05x/adamw/coordinate/space-") and len(names) == 2


@pytest.mark.unit
def test_agreement_reads_a_winner_at_the_end_of_the_amended_grid(tmp_path):
    from bench.cli.agreement import _grid_ends, _grids, _off_grid

    winner = {"warmup": 500}
    shipped = _grids(["adamw"], "cpu")["adamw"]
    assert _grid_ends(shipped, winner, {"warmup"}) == "" and _off_grid(shipped, winner) == "warmup=500"
    use_spaces([f"adamw={_file(tmp_path, cpu={'warmup': [62, 125, 250, 500]})}"], [])
    amended = _grids(["adamw"], "cpu")["adamw"]
    assert _grid_ends(amended, winner, {"warmup"}) == "warmup=500 (highest)" and _off_grid(amended, winner) == ""


@pytest.mark.integration
def test_agreement_names_the_amended_grids_in_its_context(tmp_path, capsys):
    baseline = str(ROOT / "results" / "baselines" / "regress-cpu-xs.json")
    space = _file(tmp_path, cpu={"warmup": [62, 125]})
    out = tmp_path / "agreement"
    assert main(["agreement", "--baseline", baseline, "--no-plots", "--n-boot", "100", "--out", str(out)]) == 0
    assert "grids amended" not in capsys.readouterr().out
    assert main(["agreement", "--baseline", baseline, "--no-plots", "--n-boot", "100", "--out", str(out),
                 "--space", f"adamw={space}", "--space", f"lion={space}"]) == 0
    assert "; grids amended (--space): adamw, lion" in capsys.readouterr().out
    assert "grids amended (--space): adamw, lion" in (tmp_path / "agreement.md").read_text()
