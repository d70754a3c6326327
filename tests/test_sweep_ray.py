"""Real sweeps through Ray in a subprocess, as users run them: every run stored once and recorded
in its Optuna study; a rerun trains nothing; a driver killed with SIGKILL at several points resumes
without re-running or losing a finished run; a worker killed mid-trial is retried; runs that raise
or go non-finite are stored as such and count as the worst; a run its environment stops is an
attempt, retried by the next sweep. Tiny budgets (cpu-xs at 0.05x
Chinchilla, a few seconds per run)."""
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from bench.store.database import ResultStore
from sweeps.record import open_storage

pytestmark = pytest.mark.system

STARTED = re.compile(r"started  .* run ([0-9a-f]{20})")
STORED = re.compile(r"stored   .* run ([0-9a-f]{20})")


def sweep_command(store_url, journal, *args, ratio="0.05"):
    return [sys.executable, "-m", "bench.cli", "sweep", "--scale", "cpu-xs", "--ratios", ratio,
            "--threads", "1", "--store", store_url, "--optuna-storage", str(journal), "--yes", *args]


def run(command, env=None):
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_sweep_stores_and_records_each_run_once_and_a_rerun_trains_nothing(store_url, tmp_path):
    journal = tmp_path / "optuna.journal"
    command = sweep_command(store_url, journal, "--optimizers", "adamw,muon", "--protocol", "tpe",
                            "--max-trials", "2", "--seeds", "2", "--workers", "2")
    first = run(command)
    runs = ResultStore(store_url).frame()
    # two tuning configs and one extra seed of the winner per optimizer
    assert runs.groupby(["optimizer", "seed"]).size().to_dict() == {
        ("adamw", 0): 2, ("adamw", 1): 1, ("muon", 0): 2, ("muon", 1): 1}
    assert set(STARTED.findall(first.stderr)) == set(runs["run_key"])
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(open_storage(str(journal)))}
    assert sorted(studies) == ["optbench/cpu-xs/0.05x/adamw/tpe", "optbench/cpu-xs/0.05x/muon/tpe"]
    assert all(s.n_trials == 3 and s.user_attrs["best_loss"] > 0 for s in studies.values())
    assert "Best loss per cell" in first.stdout and "6 runs trained" in first.stdout

    again = run(command)
    assert not STARTED.findall(again.stderr)
    assert sorted(STORED.findall(again.stderr)) == sorted(runs["run_key"])
    assert "0 runs trained, 6 read back" in again.stdout
    assert len(ResultStore(store_url).frame()) == 6


def test_a_sweep_killed_with_sigkill_resumes_without_rerunning_or_losing_runs(store_url, tmp_path):
    """Killed after one of the sweep's three runs is stored, the next one training: the stored run
    is kept, the one in flight is trained again."""
    stored_before_kill = 1
    journal = tmp_path / "optuna.journal"
    command = sweep_command(store_url, journal, "--optimizers", "adamw", "--max-trials", "3",
                            "--workers", "1")
    store = ResultStore(store_url)
    with open(tmp_path / "first.log", "w+") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: len(store.frame()) >= stored_before_kill, first)
        finally:
            kill_session(first)
    before = store.frame()
    kept = dict(zip(before["run_key"], before["created_at"]))
    assert stored_before_kill <= len(kept) < 3

    second = run(command)
    after = store.frame()
    assert after["run_key"].is_unique and len(after) == 3  # the sweep completed its budget
    assert {k: c for k, c in zip(after["run_key"], after["created_at"]) if k in kept} == kept
    trained = set(STARTED.findall(second.stderr))
    assert trained and not trained & set(kept)  # nothing finished before the kill ran again
    assert set(STORED.findall(second.stderr)) == set(kept)
    assert trained | set(kept) == set(after["run_key"])
    study = optuna.load_study(study_name="optbench/cpu-xs/0.05x/adamw/coordinate",
                              storage=open_storage(str(journal)))
    keys = [t.user_attrs["run_key"] for t in study.trials]
    assert sorted(keys) == sorted(after["run_key"])  # the record re-synced, no trial twice


def test_a_worker_killed_mid_trial_is_retried_and_the_sweep_completes(store_url, tmp_path):
    """SIGKILL of the Ray worker process while it trains (as the OOM killer or a lost node does):
    Ray retries the task, the run is stored once with its real result, the sweep ends normally."""
    journal = tmp_path / "optuna.journal"
    command = sweep_command(store_url, journal, "--optimizers", "adamw", "--max-trials", "2",
                            "--workers", "1", ratio="0.2")
    with open(tmp_path / "sweep.log", "w+") as log:
        sweep = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            key = wait_until(lambda: STARTED.search(Path(log.name).read_text()), sweep).group(1)
            worker = wait_until(lambda: worker_running(key), sweep)
            os.kill(worker, signal.SIGKILL)
            assert sweep.wait(timeout=600) == 0, Path(log.name).read_text()[-3000:]
        finally:
            kill_session(sweep)
        output = Path(log.name).read_text()
    runs = ResultStore(store_url).frame()
    assert runs["run_key"].is_unique and len(runs) == 2 and key in set(runs["run_key"])
    assert set(runs["status"]) == {"ok"} and "error    " not in output  # no task error reached the driver
    assert not alive(worker)


def test_runs_that_raise_or_go_non_finite_are_stored_as_failed_and_count_as_the_worst(
        store_url, tmp_path):
    """Of the three learning rates coordinate descent tries first, one raises at its third step
    and one's loss turns NaN (bench/run/faults.py): both are stored with their status and reason,
    recorded as failed trials, and the finite one is the cell's best; the sweep exits 0."""
    journal = tmp_path / "optuna.journal"
    command = sweep_command(store_url, journal, "--optimizers", "adamw", "--max-trials", "3",
                            "--workers", "2")
    faults = "raise@2:learning_rate=0.004;nan@2:learning_rate=0.016"
    done = run(command, env={**os.environ, "OPTBENCH_FAULT": faults})
    runs = ResultStore(store_url).frame()
    lr = runs["hparams"].map(lambda h: h["learning_rate"])
    status = dict(zip(lr, zip(runs["status"], runs["reason"], runs["final_loss"])))
    assert status[0.004][:2] == ("failed", "RuntimeError: injected fault (OPTBENCH_FAULT): raise at step 2")
    assert status[0.016][0] == "diverged" and "nan" in status[0.016][1]
    assert math.isnan(status[0.004][2]) and math.isnan(status[0.016][2])
    assert status[0.008][0] == "ok" and status[0.008][2] > 0
    study = optuna.load_study(study_name="optbench/cpu-xs/0.05x/adamw/coordinate",
                              storage=open_storage(str(journal)))
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL", "FAIL"]
    assert study.best_trial.user_attrs["hparams"]["learning_rate"] == 0.008
    assert "2 diverged/failed" in done.stdout + done.stderr


def test_a_run_its_environment_stops_is_an_attempt_that_stops_its_cell_and_is_retried(store_url, tmp_path):
    """A trial that runs out of memory (bench/run/faults.py: oom) says nothing about its config: it
    is stored as an attempt, not a result, its cell stops (exit 1), and the next sweep trains it."""
    journal = tmp_path / "optuna.journal"
    command = sweep_command(store_url, journal, "--optimizers", "adamw", "--max-trials", "3",
                            "--workers", "2")
    first = subprocess.run(command, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OPTBENCH_FAULT": "oom@2:learning_rate=0.008"})
    assert first.returncode == 1, first.stderr[-3000:]
    assert "environment (out of memory)" in first.stdout and "run again to retry" in first.stdout
    store = ResultStore(store_url)
    rates = {r.hparams["learning_rate"] for r in store.runs()}
    assert 0.008 not in rates
    (attempt,) = [r for what, r, _ in store.history() if what == "attempt"]
    assert attempt.spec["hparams"]["learning_rate"] == 0.008 and "out of memory" in attempt.reason

    run(command)
    runs = store.runs()
    assert {r.hparams["learning_rate"] for r in runs} == {0.004, 0.008, 0.016}
    assert {r.status for r in runs} == {"ok"}


def test_a_sweep_with_seeds_ends_with_an_interval_for_every_speedup(store_url, tmp_path):
    """The finding this reproduces: the README's main job (`make sweep`) ended with speedups and no
    intervals, because its winners had one seed each. With --seeds 2 every winner has a noise
    estimate, so AdamW's law and every speedup get an interval; the table names its context."""
    command = sweep_command(store_url, tmp_path / "optuna.journal", "--optimizers", "adamw,muon",
                            "--max-trials", "2", "--seeds", "2", "--workers", "2", ratio="0.05,0.1,0.2")
    out = run(command).stdout
    section = out[out.index("Context data=default eval=held-out tok=bpe-512 fp32 cpu"):]
    header, table = section.splitlines()[1], section.splitlines()[4:6]
    assert header.startswith("Speedup over AdamW") and "no interval" not in header, section
    assert [line.split()[0] for line in table] == ["adamw", "muon"]
    assert all(line.count("[") == 3 for line in table), section


def wait_until(condition, proc, timeout=300):
    """Poll `condition` until it is truthy (its value is returned) while `proc` still runs."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert proc.poll() is None, "the sweep ended first"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def worker_running(run_key):
    """The pid of the Ray worker whose task (named after the run key) is running, or None."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith("ray::optbench") and run_key in cmdline:
                return int(entry)
    return None


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_session(proc):
    """SIGKILL the sweep's process group, then anything else left in its session: Ray starts its
    workers in process groups of their own (they exit once their raylet dies; this makes sure)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it had ended, and its group with it
        pass
    proc.wait()
    for pid in session_members(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def session_members(sid):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after "pid (comm)": state, ppid, pgrp, session
            pids.append(int(entry))
    return pids
