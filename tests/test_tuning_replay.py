"""Tuning cost replayed from a real store: sweeps of two protocols sharing their runs, replayed in
the order each protocol asked for its trials (with one worker, the order the sweep started them),
then drawn and exported by `optbench tuning-cost`; and a transfer from the tuned ratio to a larger
one. cpu-xs at 0.05x and 0.06x Chinchilla, seconds a run."""
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.system

STARTED = re.compile(r"started  .* run ([0-9a-f]{20})")


def optbench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def sweep(store_url, journal, *args, ratio="0.05"):
    done = optbench("sweep", "--scale", "cpu-xs", "--ratios", ratio, "--threads", "1", "--workers", "1",
                    "--optimizers", "adamw", "--store", store_url, "--optuna-storage", str(journal),
                    "--yes", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def tuning_cost(store_url, journal, stem, ratio):
    done = optbench("tuning-cost", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", ratio,
                    "--store", store_url, "--optuna-storage", str(journal), "--out", str(stem))
    assert done.returncode == 0, done.stderr[-3000:]
    return done, pd.read_csv(stem.with_suffix(".csv"))


def test_a_replay_asks_for_the_sweeps_trials_in_order_and_the_command_draws_them(store_url, tmp_path):
    journal = tmp_path / "optuna.journal"
    tpe = sweep(store_url, journal, "--protocol", "tpe", "--search-seed", "1", "--max-trials", "4")
    coordinate = sweep(store_url, journal, "--max-trials", "3")
    tpe_order = STARTED.findall(tpe.stderr)
    assert len(tpe_order) == 4 and len(STARTED.findall(coordinate.stderr)) == 2  # the baseline is shared

    stem = tmp_path / "cost"
    done, rows = tuning_cost(store_url, journal, stem, "0.05")
    trials = rows[rows["trial"].notna()]
    assert (trials["seed"] == 0).all() and not (rows["seed"] > 0).any()  # no winner ran at more seeds
    replayed = trials[trials["protocol"] == "tpe"]
    assert list(replayed["search_seed"].unique()) == [1] and list(replayed["run_key"]) == tpe_order
    cd = trials[trials["protocol"] == "coordinate"]
    assert len(cd) == 3 and cd["run_key"].iloc[0] == tpe_order[0]
    assert not cd["finished"].any()  # its budget of 3 stopped it, not convergence
    assert (trials.groupby("protocol")["best_so_far"].is_monotonic_decreasing).all()
    assert "not finished in the store" in done.stdout  # no goal without a finished reference
    assert stem.with_suffix(".png").stat().st_size > 10_000

    # transfer at 0.06x starts from the best config at 0.05x (of either search), and its replay too
    transfer = sweep(store_url, journal, "--protocol", "transfer", "--max-trials", "1", ratio="0.06")
    assert "Phase II from cpu-xs at 0.05x: learning_rate, weight_decay" in transfer.stdout
    done, rows = tuning_cost(store_url, journal, tmp_path / "transfer", "0.06")
    assert [json.loads(c) for c in rows["config"]] == [json.loads(trials.loc[trials["loss"].idxmin(), "config"])]
    assert list(rows["run_key"]) == STARTED.findall(transfer.stderr) and "warning" not in done.stderr


def test_with_finalists_the_replay_picks_the_winner_the_sweep_picked(store_url, tmp_path):
    journal = tmp_path / "optuna.journal"
    done = sweep(store_url, journal, "--max-trials", "4", "--seeds", "3", "--finalists", "2", ratio="0.07")
    line = next(x for x in done.stdout.splitlines() if "(the best mean of 2 finalists)" in x)
    picked = dict(kv.split("=") for kv in line.split()[2:-6])
    cost = optbench("tuning-cost", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.07",
                    "--store", store_url, "--optuna-storage", str(journal), "--out", str(tmp_path / "f"),
                    "--finalists", "2")
    assert cost.returncode == 0, cost.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "f.csv")
    winner = rows[rows["winner"]]
    assert list(winner["seed"]) == [0, 1, 2] and winner["chose_winner"].all()
    config = json.loads(winner["config"].iloc[0])
    assert {k: str(config[k]) for k in picked} == picked
    assert "finalists' means over seeds 0-2" in cost.stdout


def test_without_a_recorded_sweep_it_says_so_in_one_line(store_url, tmp_path):
    done = optbench("tuning-cost", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "1",
                    "--store", store_url, "--optuna-storage", str(tmp_path / "none.journal"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no sweep of adamw at cpu-xs 1x" in done.stderr
