"""The regression check bites: real training runs, a tiny baseline made here, a planted fault.

The baseline is made by the same code as `optbench regress --update-baseline`, with AdamW and Lion
as a sweep tuned them on 2026-12-04 (the committed baseline's configs then), at small budgets of
cpu-xs and three seeds; then `optbench regress --baseline FILE --workers 1 --run-timeout 0` runs
on it in this process, so a fault planted in the optimizer registry is what trains: Lion with its
two betas swapped (the issue's example) must fail with exit code 1 and be named, while every
AdamW run reproduces the baseline (made by two worker processes) to the last bit. That an
unchanged tree passes is CI's own `make regress`.

Budgets: AdamW at 0.1, 0.2 and 0.4x (its law), Lion at 0.4x, where its loss (3.79-4.03 over the
seeds) lies inside AdamW's range and the fault costs 0.3-0.5 nats (4.10-4.54). At smaller budgets
Lion is still in its early plateau and Muon without momentum or with swapped AdamW betas trains
about as well as Muon, so neither would test the mechanism. The configs are pinned here because
the test is of the check, not of a tuning: the Lion of the 12-trial tuning of 2026-12-05 (learning
rate 0.008, batch 32) spread too widely over seeds at 0.4x for three seeds to resolve the fault
(-43% [-69%, +5%]). What the committed baseline itself catches is in results/baselines/README.md.
"""
import dataclasses

import pandas as pd
import pytest

from bench import cli
from bench.optimizers import registry
from bench.run.spec import RunSpec
from sweeps.regress import baseline as files
from sweeps.regress.check import Layout, measure, new_baseline, updated
from sweeps.regress.runs import train_all

pytestmark = pytest.mark.system

LAYOUT = Layout(seeds=(0, 1, 2), threads=1, reference_ratios=(0.1, 0.2, 0.4), ratios=(0.4,),
                optimizers=("adamw", "lion"), ratios_of=())
EVAL_TOKENS = 1 << 13
TUNED = {  # the keys the 2026-12-04 sweep set; the rest are each optimizer's defaults
    "adamw": {"beta1": 0.9, "beta2": 0.98, "epsilon": 1e-10, "learning_rate": 0.016, "max_grad_norm": 1.0,
              "train_batch_size": 32, "warmup": 0.2, "weight_decay": 0.2},
    "lion": {"beta1": 0.9, "beta2": 0.95, "learning_rate": 0.004, "max_grad_norm": 1.0, "train_batch_size": 32,
             "warmup": 0.05, "weight_decay": 0.6},
}


@pytest.fixture(scope="module")
def baseline_path(tmp_path_factory):
    baseline = new_baseline(TUNED, LAYOUT)
    baseline.eval_tokens = EVAL_TOKENS
    runs, seconds = measure(baseline, workers=2)
    path = tmp_path_factory.mktemp("regress") / "baseline.json"
    files.save(updated(baseline, runs, seconds), path)
    return path


def _regress(path, capsys, *extra):
    """One worker with no deadline trains in this process, where the planted fault lives."""
    code = cli.main(["regress", "--baseline", str(path), "--workers", "1", "--run-timeout", "0", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_lion_with_swapped_betas_fails_the_check_by_name(baseline_path, capsys, monkeypatch, tmp_path):
    lion = registry.get("lion")

    def swapped(params, hp, model):
        return lion.build(params, {**hp, "beta1": hp["beta2"], "beta2": hp["beta1"]}, model)

    monkeypatch.setitem(registry._REGISTRY, "lion", dataclasses.replace(lion, build=swapped))
    runs_out = tmp_path / "runs" / "check.csv"
    code, out, err = _regress(baseline_path, capsys, "--runs-out", str(runs_out))
    assert code == 1, out
    progress = [line for line in err.splitlines() if "/12 ETA" in line]  # one line per run, with an ETA
    assert len(progress) == 12 and " 12/12 ETA    0 s " in progress[-1], err
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("adamw", "lion"))}
    assert rows["lion"].endswith("REGRESSION") and "regression: lion" in out
    # nothing else moved: 9 runs (AdamW's, as Lion's 3 moved) give the baseline's losses to the last
    # bit, made on this CPU by a pool of workers
    assert rows["adamw"].endswith("ok") and "\ncpu: " not in out
    assert "losses: 9 of 12 runs equal the baseline's to the last bit; 3 moved" in out
    # --runs-out holds the runs just trained, their losses to the last bit: AdamW's the baseline's
    written = pd.read_csv(runs_out, float_precision="round_trip")
    base = {(r["optimizer"], r["ratio"], r["seed"]): r["final_loss"] for r in files.load(baseline_path).runs}
    same = [base[(r.optimizer, r.ratio, r.seed)] == r.final_loss for r in written.itertuples()]
    assert len(written) == 12 and (written["status"] == "ok").all()
    assert same == list(written["optimizer"] == "adamw")


def test_a_pool_of_workers_gives_the_same_losses_as_this_process():
    specs = [RunSpec("adamw", "cpu-xs", 0.02, {}, seed, eval_tokens=EVAL_TOKENS) for seed in (0, 1)]
    here = [r.final_loss for r in train_all(specs, threads=1, workers=1)]
    pool = [r.final_loss for r in train_all(specs, threads=1, workers=2)]
    assert here == pool and here[0] != here[1]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_hung_run_stops_the_check_at_its_deadline_with_no_verdict(monkeypatch, workers):
    """A run that never returns (bench/run/faults.py: hang) ends the check with one line naming it,
    and the pool's workers, the hung one included, are gone; one worker with a deadline is a pool
    of one."""
    import multiprocessing

    from bench.errors import UserError

    monkeypatch.setenv("OPTBENCH_FAULT", "hang@3:seed=1")  # spawned workers inherit it
    specs = [RunSpec("adamw", "cpu-xs", 0.02, {}, seed, eval_tokens=EVAL_TOKENS) for seed in (0, 1)]
    with pytest.raises(UserError, match=r"^adamw 0.02x seed 1: no result within --run-timeout 20 s"):
        train_all(specs, threads=1, workers=workers, timeout_s=20)
    assert not multiprocessing.active_children()
