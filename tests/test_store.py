import json
import math

import pytest
import sqlalchemy as sa

from bench.errors import UserError
from bench.run.identity import current
from bench.run.spec import RunResult, RunSpec
from bench.store.database import ResultStore

pytestmark = pytest.mark.integration


def _result(seed=0, loss=3.0, status="ok", optimizer="adamw", scale="cpu-xs"):
    spec = RunSpec(optimizer, scale, 1, {}, seed=seed)
    return RunResult(spec.key, spec.to_dict(), status, loss if status == "ok" else None, steps=10, tokens=100,
                     reason="" if status == "ok" else "loss went to nan", code=current(optimizer).as_dict())


def test_storing_a_run_twice_keeps_one_row(store_url):
    store = ResultStore(store_url)
    assert store.put(_result()) is True
    assert store.put(_result(loss=9.9)) is False
    frame = store.frame()
    assert len(frame) == 1 and frame.final_loss[0] == 3.0
    assert store.get(_result().run_key).final_loss == 3.0


def test_frame_has_the_columns_analysis_reads(store_url):
    store = ResultStore(store_url)
    store.put(_result(seed=0))
    store.put(_result(seed=1, status="diverged"))
    frame = store.frame().sort_values("seed")
    assert list(frame.columns) == ["run_key", "optimizer", "scale", "ladder", "ratio", "seed", "status",
                                   "final_loss", "steps", "tokens", "non_embedding_params", "wall_time_s",
                                   "hparams", "created_at", "reason", "data", "eval_data", "tokenizer",
                                   "precision", "device", "eval_tokens", "arch", "hardware"]
    assert frame.data.tolist() == ["default", "default"] and frame.precision.tolist() == ["fp32", "fp32"]
    assert frame.arch.tolist() == ["llama", "llama"]
    assert frame.status.tolist() == ["ok", "diverged"]
    assert frame.ladder.tolist() == ["cpu", "cpu"]
    assert frame.hparams.iloc[0]["learning_rate"] > 0
    assert frame.hardware.tolist() == ["", ""]  # these results do not say


def test_the_hardware_a_run_ran_on_reads_back(store_url):
    store = ResultStore(store_url)
    store.put(RunResult(**{**_result().to_dict(), "hardware": "AMD EPYC"}))
    assert store.frame().hardware.tolist() == ["AMD EPYC"]


def test_runs_are_read_back_filtered_by_optimizer_and_scale_in_the_order_stored(store_url):
    store = ResultStore(store_url)
    for optimizer, scale, seed in [("adamw", "cpu-xs", 2), ("lion", "cpu-xs", 0), ("adamw", "cpu-s", 0),
                                   ("adamw", "cpu-xs", 0), ("adamw", "cpu-xs", 1)]:
        store.put(_result(seed, optimizer=optimizer, scale=scale))
    assert [r.seed for r in store.runs(optimizer="adamw", scale="cpu-xs")] == [2, 0, 1]
    assert len(store.runs(optimizer=["adamw", "lion"], scale="cpu-xs")) == 4
    assert [(r.optimizer, r.scale) for r in store.runs(scale=["cpu-s"])] == [("adamw", "cpu-s")]
    assert store.runs(optimizer="muon") == [] and len(store.runs()) == 5


def test_a_diverged_run_reads_back_with_no_loss_and_its_reason(store_url):
    store = ResultStore(store_url)
    store.put(_result(status="diverged"))
    (run,) = store.runs()
    assert math.isnan(run.final_loss) and run.reason == "loss went to nan"
    assert run.ladder == "cpu" and run.created_at and run.hparams["learning_rate"] > 0


def test_store_from_another_schema_version_is_refused_and_left_intact(store_url):
    store = ResultStore(store_url)
    store.put(_result())
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(UserError, match="schema version 99"):
        ResultStore(store_url)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM results")).scalar() == 1


def test_a_file_that_is_not_a_database_is_a_user_error_and_not_overwritten(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(UserError, match="not a readable optbench database"):
        ResultStore(f"sqlite:///{path}")
    assert path.read_bytes() == b"not a database" * 100


@pytest.mark.parametrize("url", ["nosuchdb://x", "::::"])
def test_bad_store_urls_are_user_errors(url):
    with pytest.raises(UserError):
        ResultStore(url)


def test_sqlite_store_uses_wal(store_url):
    store = ResultStore(store_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def _old_code(result: RunResult) -> RunResult:
    return RunResult(**{**result.to_dict(), "code": {"optimizer": "v0", "harness": "v0"}})


def test_a_result_of_other_code_is_stale_kept_and_served_only_when_asked(store_url):
    store = ResultStore(store_url)
    store.put(_old_code(_result(seed=0, loss=3.5)))
    store.put(_old_code(_result(seed=1, loss=3.6)))
    store.put(_result(seed=1, loss=3.1))  # seed 1 re-trained by the current code
    assert [r.final_loss for r in store.runs()] == [3.1]
    assert [r.final_loss for r in store.runs(reuse_stale=True)] == [3.5, 3.1]
    assert store.count_stale() == 1
    found = store.lookup(_result(seed=0).run_key)
    assert found.current is None and found.stale.final_loss == 3.5
    assert store.get(_result(seed=0).run_key) is None
    assert store.get(_result(seed=0).run_key, reuse_stale=True).final_loss == 3.5
    assert sorted(what for what, _, _ in store.history()) == ["served", "stale", "stale"]


def test_a_retried_failure_adds_a_row_and_the_newest_is_served(store_url):
    store = ResultStore(store_url)
    assert store.put(_result(status="diverged"))
    assert store.put(_result(loss=3.2))  # --retry-failed
    assert not store.put(_result(loss=3.3))  # a finished run is stored once
    assert [r.final_loss for r in store.runs()] == [3.2]
    assert sorted(what for what, _, _ in store.history()) == ["replaced", "served"]


def test_an_environment_failure_is_an_attempt_never_a_result(store_url):
    store = ResultStore(store_url)
    failed = RunResult(**{**_result().to_dict(), "status": "error", "final_loss": None,
                          "reason": "environment (out of memory): OutOfMemoryError: x"})
    assert store.put(failed) and store.put(failed)
    assert store.runs() == [] and store.get(failed.run_key) is None
    assert store.lookup(failed.run_key).attempts == [failed.reason] * 2


V1_RUNS = """CREATE TABLE runs (run_key VARCHAR(64) PRIMARY KEY, optimizer VARCHAR(64) NOT NULL,
 scale VARCHAR(32) NOT NULL, ratio FLOAT NOT NULL, seed INTEGER NOT NULL, status VARCHAR(16) NOT NULL,
 final_loss FLOAT, steps INTEGER, tokens BIGINT, wall_time_s FLOAT, result_json TEXT NOT NULL,
 created_at VARCHAR(32) NOT NULL)"""


def test_a_version_1_store_is_migrated_its_results_stale_and_its_environment_failures_attempts(tmp_path):
    """Version 1 stored every failure as a result and recorded no code: its results move over as
    of unrecorded code, and the failure its environment caused (the finding: `run --device cuda`
    on a CPU machine stored as failed and served forever) becomes an attempt."""
    url = f"sqlite:///{tmp_path / 'v1.db'}"
    ok, cuda = _result(seed=0), _result(seed=1, status="failed")
    cuda.reason = "AssertionError: Torch not compiled with CUDA enabled"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)"))
        conn.execute(sa.text("INSERT INTO meta VALUES ('schema_version', '1')"))
        conn.execute(sa.text(V1_RUNS))
        for i, r in enumerate((ok, cuda)):
            conn.execute(sa.text("INSERT INTO runs VALUES (:k, 'adamw', 'cpu-xs', 1.0, :s, :st, :l, 10, 100, "
                                 "1.0, :j, :t)"),
                         {"k": r.run_key, "s": r.spec["seed"], "st": r.status, "l": r.final_loss,
                          "j": json.dumps({k: v for k, v in r.to_dict().items() if k != "code"}),
                          "t": f"2026-01-0{i + 1}T00:00:00+00:00"})
    store = ResultStore(url)
    assert store.runs() == [] and store.count_stale() == 1
    (old,) = store.runs(reuse_stale=True)
    assert old.final_loss == 3.0 and old.created_at == "2026-01-01T00:00:00+00:00"
    assert store.lookup(cuda.run_key).attempts == [cuda.reason]
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT value FROM meta")).scalar() == "2"
        assert not sa.inspect(conn).has_table("runs")
    assert ResultStore(url).count_stale() == 1  # opening it again changes nothing
