"""A sweep's Optuna record, served by optuna-dashboard (`make dashboard`) as a user opens it: every
trial there with its held-out curve as intermediate values, each hyperparameter with its real
range (log where the grid is geometric)."""
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pg_server import free_port

from sweeps.grid import load_grid

pytestmark = pytest.mark.system

DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _serve(journal: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([str(DASHBOARD), str(journal), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_the_dashboard_serves_a_sweeps_trials_with_their_real_ranges(tmp_path, store_url):
    journal = tmp_path / "optuna.journal"
    sweep = [sys.executable, "-m", "bench.cli", "sweep", "--scale", "cpu-xs", "--ratios", "0.05",
             "--optimizers", "adamw", "--max-trials", "2", "--workers", "1", "--threads", "1",
             "--store", store_url, "--optuna-storage", str(journal), "--yes"]
    done = subprocess.run(sweep, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    port = free_port()
    server = _serve(journal, port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.2)
        (study,) = studies
        assert study["study_name"] == "optbench/cpu-xs/0.05x/adamw/coordinate"
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(detail["trials"]) == 2 and {t["state"] for t in detail["trials"]} == {"Complete"}
    space = {p["name"]: p["distribution"] for p in detail["union_search_space"]}
    rates = load_grid("adamw", "cpu")["learning_rate"]
    assert space["learning_rate"] == {"type": "FloatDistribution", "low": min(rates), "high": max(rates),
                                      "step": None, "log": True}
    assert space["train_batch_size"]["type"] == "IntDistribution" and space["train_batch_size"]["log"]
    assert space["beta1"]["type"] == "FloatDistribution" and not space["beta1"]["log"]
    assert all("run_key" in {a["key"] for a in t["user_attrs"]} for t in detail["trials"])
    assert detail["has_intermediate_values"]  # the held-out curve, its last point at the end of the run
    steps = [[v["step"] for v in t["intermediate_values"]] for t in detail["trials"]]
    assert all(len(s) == 8 and s == sorted(s) for s in steps)
