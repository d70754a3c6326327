"""Real sweeps through Ray in a subprocess, as users run them: every run stored once and recorded
in its Optuna study; a rerun trains nothing; a sweep killed with SIGKILL resumes without re-running
or losing a finished run. Tiny budgets (cpu-xs at 0.05x Chinchilla, a few seconds per run)."""
import os
import re
import signal
import subprocess
import sys
import time

import optuna

from bench.store import ResultStore
from sweeps.record import open_storage

STARTED = re.compile(r"started  .* run ([0-9a-f]{20})")
STORED = re.compile(r"stored   .* run ([0-9a-f]{20})")


def sweep_command(store_url, journal, *args):
    return [sys.executable, "-m", "bench.cli", "sweep", "--scale", "cpu-xs", "--ratios", "0.05",
            "--threads", "1", "--store", store_url, "--optuna-storage", str(journal), "--yes", *args]


def run(command):
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
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
    journal = tmp_path / "optuna.journal"
    command = sweep_command(store_url, journal, "--optimizers", "adamw", "--max-trials", "3",
                            "--workers", "1")
    store = ResultStore(store_url)
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_a_stored_run(store, first)
        finally:
            kill_session(first)
    before = store.frame()
    kept = dict(zip(before["run_key"], before["created_at"]))
    assert 1 <= len(kept) < 3

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


def wait_for_a_stored_run(store, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not len(store.frame()):
        assert proc.poll() is None, "the sweep ended before a run was stored"
        assert time.monotonic() < deadline, "no run stored in time"
        time.sleep(0.2)


def kill_session(proc):
    """SIGKILL the sweep's process group, then anything else left in its session: Ray starts its
    workers in process groups of their own (they exit once their raylet dies; this makes sure)."""
    os.killpg(proc.pid, signal.SIGKILL)
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
