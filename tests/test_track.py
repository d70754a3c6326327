"""`--track tensorboard|mlflow|wandb`: a tiny real run sent to each tracker and read back with the
tracker's own reader, point for point against the stored result; sending twice adds nothing; a
missing package is one line before training; a tracker failing at send time costs only its copy;
a sweep sends every run once, also when rerun (bench/track.py)."""
import json
import os
import subprocess
import sys

import pytest

from bench.cli import main
from bench.model.scales import get_scale
from bench.store.database import ResultStore
from bench.track import config, run_name

RUN = ["run", "--optimizer", "adamw", "--scale", "cpu-xs", "--ratio", "0.05", "--threads", "1"]


@pytest.fixture
def results(tmp_path, monkeypatch, results_dir):
    """Tracker output under this test's folder (the session's tokenizer and shards reused), and no
    tracker setting of the user's environment."""
    monkeypatch.setenv("OPTBENCH_CACHE", str(results_dir / "cache"))
    monkeypatch.setenv("OPTBENCH_RESULTS", str(tmp_path))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_DIR", "WANDB_PROJECT", "OPTBENCH_FAULT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return tmp_path


def stored(store_url):
    (result,) = ResultStore(store_url).results()
    return result


def tokens(result, step):
    return step * result.spec["hparams"]["train_batch_size"] * get_scale("cpu-xs").seq_len


@pytest.mark.integration
def test_tensorboard_holds_the_curves_config_and_final_metrics_of_the_stored_run(results, store_url, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    assert main([*RUN, "--store", store_url, "--track", "tensorboard"]) == 0
    result = stored(store_url)
    logdir = results / "tensorboard" / run_name(result)
    assert f"tracked       tensorboard: sent to {logdir}" in capsys.readouterr().out
    events = EventAccumulator(str(logdir))
    events.Reload()
    for tag, curve in [("train_loss", result.curve), ("eval_loss", result.eval_curve), ("lr", result.lr_curve)]:
        by_step = [(e.step, e.value) for e in events.Scalars(f"by_step/{tag}")]
        assert [s for s, _ in by_step] == [s for s, _ in curve]
        assert [v for _, v in by_step] == pytest.approx([v for _, v in curve], rel=1e-6)  # float32 there
        assert [e.step for e in events.Scalars(f"by_tokens/{tag}")] == [tokens(result, s) for s, _ in curve]
    assert events.Scalars("final/eval_loss")[0].value == pytest.approx(result.final_loss, rel=1e-6)
    assert events.Scalars("final/bits_per_byte")[0].value == pytest.approx(result.bits_per_byte, rel=1e-6)
    session = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = dict(session.session_start_info.hparams)
    assert hparams["run_key"].string_value == result.run_key and hparams["status"].string_value == "ok"
    assert hparams["hparams.learning_rate"].number_value == result.spec["hparams"]["learning_rate"]

    files = sorted(p.name for p in logdir.iterdir())
    assert main([*RUN, "--store", store_url, "--track", "tensorboard"]) == 0  # served, and already sent
    assert "tensorboard: already in" in capsys.readouterr().out
    assert sorted(p.name for p in logdir.iterdir()) == files


@pytest.mark.integration
def test_mlflow_holds_the_params_curves_and_final_metrics_of_the_stored_run(results, store_url, monkeypatch,
                                                                           capsys):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "optbench-test")
    for _ in range(2):  # trained and sent, then served from the store and not sent again
        assert main([*RUN, "--store", store_url, "--track", "mlflow", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "ok"  # --json output stays one object
    result = stored(store_url)
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")  # the default store
    experiment = client.get_experiment_by_name("optbench-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_name(result) and run.info.status == "FINISHED"
    assert run.data.tags["optbench.run_key"] == result.run_key and run.data.tags["optbench.status"] == "ok"
    assert json.loads(run.data.tags["optbench.code"]) == result.code
    assert run.data.params == {k: str(v) for k, v in config(result).items()}
    assert run.data.params["hparams.train_batch_size"] == "32" and run.data.params["optimizer"] == "adamw"
    for name, curve in [("train_loss", result.curve), ("eval_loss", result.eval_curve), ("lr", result.lr_curve)]:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        assert history == [tuple(p) for p in curve]
    steps = sorted({s for s, _ in result.curve + result.eval_curve})
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "tokens"))
    assert history == [(s, tokens(result, s)) for s in steps]
    assert run.data.metrics["final/eval_loss"] == result.final_loss
    assert run.data.metrics["final/bits_per_byte"] == result.bits_per_byte
    assert run.data.metrics["final/wall_time_s"] == result.wall_time_s
    assert run.data.metrics["final/tokens_per_s"] == result.tokens_per_s


@pytest.mark.integration
def test_wandb_offline_holds_the_history_of_the_stored_run(results, store_url, capsys):
    pytest.importorskip("wandb")
    for _ in range(2):
        assert main([*RUN, "--store", store_url, "--track", "wandb"]) == 0
    out = capsys.readouterr().out
    assert out.count("wandb: sent to project 'optbench'") == 1 and out.count("wandb: already in") == 1
    (rundir,) = (results / "wandb").glob("offline-run-*")
    # wandb's own reader of its transaction log
    wandb = os.path.join(os.path.dirname(sys.executable), "wandb")
    records = subprocess.run([wandb, "leet", "inspect", "--json", str(rundir)], capture_output=True, text=True,
                             timeout=120, check=True).stdout
    history = [r["history"] for r in map(json.loads, records.splitlines()) if r["type"] == "history"]
    rows = {h["step"].get("num", 0): h["item"] for h in history}
    result = stored(store_url)
    for name, curve in [("train_loss", result.curve), ("eval_loss", result.eval_curve), ("lr", result.lr_curve)]:
        assert [(s, rows[s][name]) for s, _ in curve] == [tuple(p) for p in curve]
    assert all(row["tokens"] == tokens(result, step) for step, row in rows.items())
    (config_record,) = [r["run"]["config"]["update"] for r in map(json.loads, records.splitlines()) if r["type"] == "run"]
    assert config_record["run_key"] == result.run_key and config_record["hparams.learning_rate"] == 0.008


@pytest.mark.integration
def test_a_diverged_run_is_sent_with_its_status_and_an_environment_failure_is_not(results, store_url, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("OPTBENCH_FAULT", "nan@2:seed=1;oom@2:seed=2")
    assert main([*RUN, "--seed", "1", "--store", store_url, "--track", "mlflow", "--json"]) == 1
    assert main([*RUN, "--seed", "2", "--store", store_url, "--track", "mlflow", "--json"]) == 1
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("optbench").experiment_id])
    assert run.data.tags["optbench.status"] == "diverged" and run.info.status == "FAILED"
    assert run.data.params["seed"] == "1"
    (attempt,) = [r for what, r, _ in ResultStore(store_url).history() if what == "attempt"]
    assert attempt.spec["seed"] == 2  # stored as an attempt, not a result, and not sent


@pytest.mark.integration
def test_a_tracker_failing_at_send_time_warns_in_one_line_and_the_result_is_stored(results, store_url, capsys):
    (results / "tensorboard").write_text("")  # a file where its folder goes: no event file can be written
    assert main([*RUN, "--store", store_url, "--track", "tensorboard", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "warning: --track tensorboard did not take run" in err, err
    assert json.loads(out) == json.loads(json.dumps(stored(store_url).to_dict()))  # stored, printed as ever


@pytest.mark.integration
def test_a_missing_tracker_package_is_one_line_and_leaves_the_stored_result(results, store_url, monkeypatch,
                                                                            capsys):
    assert main([*RUN, "--store", store_url, "--json"]) == 0
    before = stored(store_url).to_dict()
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: importing it fails
    assert main([*RUN, "--store", store_url, "--track", "tensorboard,mlflow"]) == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1
    assert "--track mlflow needs the mlflow-skinny package: pip install 'mlflow-skinny==" in err
    assert stored(store_url).to_dict() == before
    assert not (results / "tensorboard").exists()  # checked before anything is sent


@pytest.mark.integration
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_an_unknown_tracker_is_one_line_and_exit_code_2(command, store_url, capsys):
    args = RUN if command == "run" else ["sweep", "--scale", "cpu-xs", "--dry-run"]
    assert main([*args, "--store", store_url, "--track", "mlflow,neptune"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown tracker 'neptune': choose from tensorboard, mlflow, wandb" in err


@pytest.mark.system
def test_a_sweep_sends_every_run_once_also_when_rerun_with_track_added(results, store_url):
    """First without --track (as a user who adds it later), then twice with it: every run of the
    store in each tracker exactly once, the reused ones included."""
    from mlflow import MlflowClient

    command = [sys.executable, "-m", "bench.cli", "sweep", "--scale", "cpu-xs", "--ratios", "0.05",
               "--optimizers", "adamw", "--max-trials", "2", "--workers", "2", "--threads", "1",
               "--store", store_url, "--optuna-storage", str(results / "optuna.journal"), "--yes"]
    for track in ([], ["--track", "tensorboard,mlflow"], ["--track", "mlflow", "--track", "tensorboard"]):
        done = subprocess.run(command + track, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and "warning" not in done.stderr, done.stderr[-3000:]
    assert "Results sent to mlflow: experiment 'optbench'" in done.stdout
    runs = ResultStore(store_url).results()
    assert len(runs) == 2
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    tracked = client.search_runs([client.get_experiment_by_name("optbench").experiment_id])
    assert sorted(r.data.tags["optbench.run_key"] for r in tracked) == sorted(r.run_key for r in runs)
    assert sorted(p.name for p in (results / "tensorboard").iterdir()) == sorted(run_name(r) for r in runs)
    assert all(len(list((results / "tensorboard" / run_name(r)).glob("events.*"))) == 2 for r in runs)
