"""The optbench command as users run it: a real process, real store, one-line errors with exit 2."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.system

OPTBENCH = [sys.executable, "-m", "bench.cli"]


def _run(*args, store=None):
    env = dict(os.environ)
    return subprocess.run([*OPTBENCH, *args, *(["--store", store] if store else [])],
                          capture_output=True, text=True, env=env, timeout=600)


def test_run_prints_json_and_stores_the_result_once(store_url):
    p = _run("run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.15", "--set", "lr=8e-3",
             "--json", store=store_url)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["status"] == "ok" and out["final_loss"] < out["unigram_loss"]
    again = json.loads(_run("run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.15",
                            "--json", store=store_url).stdout)
    assert again["run_key"] == out["run_key"]  # lr=8e-3 is the default: the same run, read back
    from bench.store.database import ResultStore

    assert len(ResultStore(store_url).frame()) == 1


def test_run_prints_a_readable_result_with_the_unigram_baseline(store_url):
    p = _run("run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.05", store=store_url)
    assert p.returncode == 0
    assert "unigram" in p.stdout and "stored in" in p.stdout


def test_scales_json_lists_both_ladders():
    rows = json.loads(_run("scales", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["0.1B"]["ladder"] == "paper" and by_name["0.1B"]["non_embedding_params"] == 134_217_728
    assert by_name["cpu-xs"]["ladder"] == "cpu"


@pytest.mark.parametrize("args", [
    ["run", "--optimizer", "sgd9", "--scale", "cpu-xs"],
    ["run", "--optimizer", "adamw", "--scale", "9B"],
    ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--set", "beta1=2"],
    ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--set", "nokey"],
    ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "-3"],
    ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--data", "text:/nonexistent/*.txt"],
    ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--tokenizer", "/nonexistent/tokenizer.json"],
    ["frobnicate"],
])
def test_bad_input_is_one_line_and_exit_code_2(args, store_url):
    p = _run(*args, store=store_url if args[0] == "run" else None)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("optbench: error:")


def test_a_corrupt_store_is_refused_before_training_and_kept(tmp_path):
    path = tmp_path / "bad.db"
    path.write_bytes(b"garbage" * 64)
    p = _run("run", "--optimizer", "adamw", "--scale", "cpu-xs", store=f"sqlite:///{path}")
    assert p.returncode == 2 and "not a readable optbench database" in p.stderr
    assert path.read_bytes() == b"garbage" * 64
