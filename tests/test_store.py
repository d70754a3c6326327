import math

import pytest
import sqlalchemy as sa

from bench.errors import UserError
from bench.run.spec import RunResult, RunSpec
from bench.store.database import ResultStore

pytestmark = pytest.mark.integration


def _result(seed=0, loss=3.0, status="ok", optimizer="adamw", scale="cpu-xs"):
    spec = RunSpec(optimizer, scale, 1, {}, seed=seed)
    return RunResult(spec.key, spec.to_dict(), status, loss if status == "ok" else None, steps=10, tokens=100,
                     reason="" if status == "ok" else "loss went to nan")


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
                                   "precision", "device", "eval_tokens"]
    assert frame.data.tolist() == ["default", "default"] and frame.precision.tolist() == ["fp32", "fp32"]
    assert frame.status.tolist() == ["ok", "diverged"]
    assert frame.ladder.tolist() == ["cpu", "cpu"]
    assert frame.hparams.iloc[0]["learning_rate"] > 0


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
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar() == 1


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
