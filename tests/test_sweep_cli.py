"""`optbench sweep` before anything runs: the plan and its cost, the confirmation rule, bad input
as one line with exit code 2. (Nothing here starts Ray; tests/test_sweep_ray.py does.)"""
import os

import pytest

from bench.cli import main
from bench.cli.sweep import DEFAULT_MAX_TRIALS, parse_optimizers, parse_ratios
from bench.model.scales import get_scale
from bench.paths import cache_dir
from bench.run.estimate import achieved_flops
from bench.store.database import ResultStore

pytestmark = pytest.mark.integration


def sweep(*args, store_url):
    return main(["sweep", "--scale", "cpu-xs", "--store", store_url, *args])


def test_dry_run_prints_the_plan_and_its_cost_and_stores_nothing(store_url, tmp_path, monkeypatch, capsys):
    # Its time estimate needs this machine's training throughput: a few training steps measured
    # once, then cached (bench.run.estimate). Measured here first, so the dry run only reads it.
    monkeypatch.setenv("OPTBENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine caches its rate
    rate = achieved_flops("cpu-xs", threads=1)
    cached = (cache_dir() / "throughput.json").read_text()
    assert sweep("--ratios", "1,2", "--optimizers", "adamw,muon", "--workers", "2", "--threads", "1",
                 "--dry-run", store_url=store_url) == 0
    out = capsys.readouterr().out
    assert "adamw 1x" in out and "muon 2x" in out and "coordinate descent (Phase I)" in out
    runs = 4 * DEFAULT_MAX_TRIALS
    tokens = 2 * DEFAULT_MAX_TRIALS * (get_scale("cpu-xs").tokens(1) + get_scale("cpu-xs").tokens(2))
    assert f"{runs} runs, {tokens:,} tokens" in out
    assert "2 worker(s) x 1 thread(s)" in out
    assert (f"a training burst at cpu-xs on 1 thread(s), measured earlier on this machine (cached in "
            f"{cache_dir() / 'throughput.json'}): {rate.flops_per_s / 1e9:.1f} GFLOP/s per process") in out
    assert (cache_dir() / "throughput.json").read_text() == cached  # read back, not measured again
    assert len(ResultStore(store_url).frame()) == 0  # no run stored
    journal = tmp_path / "optuna.journal"  # the studies' default home, as the plan says
    assert f"Optuna studies: {journal}" in out and not journal.exists()


def test_without_yes_and_without_a_terminal_it_refuses(store_url, capsys):
    assert sweep("--ratios", "0.05", "--optimizers", "adamw", store_url=store_url) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--yes" in err


@pytest.mark.parametrize("args, message", [
    (["--optimizers", "adamw,nosuch"], "unknown optimizer 'nosuch'"),
    (["--ratios", "1,-2"], "--ratios"),
    (["--ratios", "1,x"], "--ratios"),
    (["--max-trials", "0"], "--max-trials must be at least 1"),
    (["--protocol", "grid"], "invalid choice"),
    (["--micro-batch", "-1"], "--micro-batch must be 0 or more"),
    (["--search-seed", "-1"], "--search-seed must be 0 or more"),
    (["--search-seed", "1", "--protocol", "predict"], "has no search to seed"),
    (["--finalists", "0"], "--finalists must be at least 1"),
    (["--finalists", "3"], "give --seeds 2 or more"),
    (["--trial-timeout", "-5"], "--trial-timeout must be 0 (never) or more seconds, got -5"),
    (["--trial-timeout", "nan"], "--trial-timeout must be 0 (never) or more seconds, got nan"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, store_url, capsys):
    assert sweep(*args, "--dry-run", store_url=store_url) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_all_means_every_optimizer_with_a_grid_for_the_ladder():
    names = parse_optimizers("all", "cpu")
    assert {"adamw", "muon", "lion", "soap"} <= set(names)
    assert parse_optimizers("muon, adamw,muon", "cpu") == ["muon", "adamw"]
    assert parse_ratios("1,2,0.5,2") == [1.0, 2.0, 0.5]
