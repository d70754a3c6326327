"""The store under faults: concurrent writers, a full disk, a truncated file, PostgreSQL."""
import multiprocessing as mp

import pytest
import sqlalchemy as sa
from pg_server import USER, local_postgres

from bench.errors import UserError
from bench.run.identity import current
from bench.run.spec import RunResult, RunSpec
from bench.store.database import ResultStore

pytestmark = pytest.mark.system


def _result(seed: int, loss: float = 3.0) -> RunResult:
    spec = RunSpec("adamw", "cpu-xs", 1, {}, seed=seed)
    return RunResult(spec.key, spec.to_dict(), "ok", loss, steps=1, tokens=1, code=current("adamw").as_dict())


def _writer(url: str, worker: int, n: int) -> None:
    store = ResultStore(url)
    for i in range(n):
        store.put(_result(seed=worker * 1000 + i))
        store.put(_result(seed=worker * 1000 + i, loss=9.0))  # a duplicate must change nothing


def _concurrent_writes(url: str) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, w, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    frame = ResultStore(url).frame()
    assert len(frame) == 400 and frame.run_key.is_unique
    assert (frame.final_loss == 3.0).all()


def test_eight_processes_writing_fifty_runs_each_into_sqlite_lose_and_duplicate_nothing(store_url):
    _concurrent_writes(store_url)


def test_a_full_disk_during_a_write_is_a_user_error_and_keeps_what_was_stored(tmp_path):
    url = f"sqlite:///{tmp_path / 'full.db'}"
    store = ResultStore(url)
    store.put(_result(0))
    with store.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

    def cap_pages(dbapi_conn, _record):  # SQLite's own "database or disk is full" (SQLITE_FULL)
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    sa.event.listen(store.engine, "connect", cap_pages)
    store.engine.dispose()
    with pytest.raises(UserError, match="cannot write to results store .*full"):
        for seed in range(1, 200):
            store.put(RunResult(**{**_result(seed).to_dict(), "reason": "x" * 20000}))
    again = ResultStore(url)
    assert again.get(_result(0).run_key).final_loss == 3.0


def test_a_truncated_database_file_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "cut.db"
    store = ResultStore(f"sqlite:///{path}")
    for seed in range(30):
        store.put(_result(seed))
    store.engine.dispose()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"cut.db{suffix}").unlink(missing_ok=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    before = path.read_bytes()
    with pytest.raises(UserError, match="not a readable optbench database"):
        ResultStore(f"sqlite:///{path}").frame()
    assert path.read_bytes() == before


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on loopback (tests/postgres.py); skipped if unavailable."""
    with local_postgres() as (host, port):
        yield f"postgresql+psycopg://{USER}@{host}:{port}/postgres"


def test_eight_processes_writing_into_postgresql_lose_and_duplicate_nothing(postgres_url):
    _concurrent_writes(postgres_url)
