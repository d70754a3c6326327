"""The results store: every run's result with the code version that produced it (results), and
the runs its environment stopped (attempts); the source of truth for analysis.

A result is served only to the code that produced it (bench.run.identity): one of older code is
stale, kept, and served only when asked for (reuse_stale). An attempt is never served. Results come
back as StoredRun records (bench.store.record), one per run key, filtered in SQL.

SQLAlchemy Core over SQLite (WAL mode) under results/ by default; any SQLAlchemy URL (PostgreSQL
for a cluster) works the same way. A schema version in the `meta` table makes an incompatible store
fail with a clear message instead of being overwritten; a version-1 store is migrated in place.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError

from bench.errors import UserError
from bench.paths import default_store_url
from bench.run import identity
from bench.run.failures import ENVIRONMENT_FAILURE, environment_failure
from bench.run.spec import RunResult
from bench.store.record import StoredRun, to_frame
from bench.urls import error_line, hide_passwords, shown_url

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = "2"
UNRECORDED = "unrecorded"  # the code version of a result stored before optbench recorded them

_meta = sa.MetaData()
META = sa.Table("meta", _meta, sa.Column("key", sa.String(64), primary_key=True),
                sa.Column("value", sa.Text, nullable=False))


def _run_table(name: str, *columns: sa.Column) -> sa.Table:
    return sa.Table(
        name, _meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # storing order
        sa.Column("run_key", sa.String(64), nullable=False, index=True),
        sa.Column("optimizer", sa.String(64), nullable=False, index=True),
        sa.Column("scale", sa.String(32), nullable=False, index=True),
        sa.Column("ratio", sa.Float, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *columns,
        sa.Column("optimizer_code", sa.String(64), nullable=False),
        sa.Column("harness_code", sa.String(64), nullable=False),
        sa.Column("result_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )


# What runs gave: ok, diverged or failed (numerics), one row per run key and code version (a
# retried failure adds a row: the newest row of a run key and code version is its result).
RESULTS = _run_table("results", sa.Column("final_loss", sa.Float), sa.Column("steps", sa.Integer),
                     sa.Column("tokens", sa.BigInteger), sa.Column("wall_time_s", sa.Float))
# Runs the environment stopped (no device, out of memory, an import error, a killed worker): kept
# with their reason so a user sees what happened, never served as a result.
ATTEMPTS = _run_table("attempts", sa.Column("reason", sa.Text, nullable=False))


@dataclass(frozen=True)
class Lookup:
    """What the store holds for one run key: the result of the current code (None: none), the
    newest result of other code (stale), and the environment failures of earlier attempts."""

    current: RunResult | None
    stale: RunResult | None
    attempts: list[str]  # their reasons, oldest first


class ResultStore:
    def __init__(self, url: str | None = None):
        self.url = url or default_store_url()
        self.engine = _engine(self.url)
        self._check_schema()

    def _check_schema(self) -> None:
        version = self._create_tables()
        if version not in (None, SCHEMA_VERSION):
            raise UserError(f"results store {shown_url(self.url)} has schema version {version}, this "
                            f"optbench reads {SCHEMA_VERSION}; use another store (--store) or an optbench of "
                            "that version")

    def _create_tables(self, attempts: int = 4) -> str | None:
        """Create what is missing, migrate a version-1 store, and read the schema version. Several
        processes opening a new store at once race to create its tables; the losers retry and
        find them made."""
        for attempt in range(attempts):
            try:
                with self.engine.begin() as conn:
                    _meta.create_all(conn)  # only creates what is missing
                    version = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()
                    if version is None:
                        conn.execute(META.insert().values(key="schema_version", value=SCHEMA_VERSION))
                    elif version == "1":
                        version = _migrate_from_1(conn)
                return version
            except DatabaseError as e:
                if attempt + 1 == attempts:
                    # OperationalError: no server, a refused login, a file that cannot be opened
                    shown = shown_url(self.url)
                    problem = (f"cannot open results store {shown}" if isinstance(e, OperationalError)
                               else f"results store {shown} is not a readable optbench database")
                    raise UserError(f"{problem}: {error_line(e, self.url)}") from None
                time.sleep(0.1 * (attempt + 1))
        return None

    def put(self, result: RunResult) -> bool:
        """Store a run: a result of its code version (False, changing nothing, when that code's
        run finished already; a retried failure adds a row), or an environment failure as an
        attempt."""
        table = ATTEMPTS if result.status == ENVIRONMENT_FAILURE else RESULTS
        try:
            with self.engine.begin() as conn:
                if table is RESULTS:
                    if _newest_status(conn, result.run_key, result.code) == "ok":
                        return False
                conn.execute(table.insert().values(**_row(result, table)))
            return True
        except OperationalError as e:  # disk full, read-only, lost server: the transaction rolled back
            raise UserError(f"cannot write to results store {shown_url(self.url)}: "
                            f"{error_line(e, self.url)}") from None

    def lookup(self, run_key: str) -> Lookup:
        """The current-code result of `run_key`, its newest stale one and its failed attempts."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(RESULTS.c.result_json, RESULTS.c.optimizer, RESULTS.c.optimizer_code,
                                          RESULTS.c.harness_code)
                                .where(RESULTS.c.run_key == run_key).order_by(RESULTS.c.id)).all()
            reasons = conn.execute(sa.select(ATTEMPTS.c.reason).where(ATTEMPTS.c.run_key == run_key)
                                   .order_by(ATTEMPTS.c.id)).scalars().all()
        current = [row.result_json for row in rows
                   if (row.optimizer_code, row.harness_code) == _current_code(row.optimizer)]
        stale = [row.result_json for row in rows if row.result_json not in current]
        return Lookup(_parse(current[-1]) if current else None, _parse(stale[-1]) if stale else None,
                      list(reasons))

    def get(self, run_key: str, reuse_stale: bool = False) -> RunResult | None:
        """The result to serve for `run_key`: the current code's, else (reuse_stale) the newest."""
        found = self.lookup(run_key)
        return found.current or (found.stale if reuse_stale else None)

    def runs(self, *, optimizer: str | Iterable[str] | None = None,
             scale: str | Iterable[str] | None = None, reuse_stale: bool = False) -> list[StoredRun]:
        """The results to serve of the given optimizer(s) and scale(s) (None: any), one per run
        key in storing order: the current code's (reuse_stale: else the newest of other code).

        The filters run in SQL on the table's indexed columns: only the rows served are parsed."""
        return [StoredRun.from_result(_parse(text), created)
                for text, created in self._served(optimizer, scale, reuse_stale)]

    def results(self, *, optimizer: str | Iterable[str] | None = None,
                scale: str | Iterable[str] | None = None, reuse_stale: bool = False) -> list[RunResult]:
        """The results `runs` serves, whole (curves and all)."""
        return [_parse(text) for text, _ in self._served(optimizer, scale, reuse_stale)]

    def count_stale(self, *, optimizer: str | Iterable[str] | None = None,
                    scale: str | Iterable[str] | None = None) -> int:
        """Run keys among these whose every result comes from other code than the current."""
        rows = self._rows(optimizer, scale)
        current = {key for key, is_current, *_ in rows if is_current}
        return len({key for key, *_ in rows} - current)

    def history(self, *, optimizer: str | Iterable[str] | None = None,
                scale: str | Iterable[str] | None = None) -> list[tuple[str, RunResult, str]]:
        """Every stored row of these runs, results then attempts, each in storing order, as (what it
        is to the current code, the run as stored, when stored): "served" (the result analysis
        uses), "replaced" (an earlier try of the same code, retried), "stale" (other code) or
        "attempt" (an environment failure)."""
        rows = self._rows(optimizer, scale)
        served = {i for _, i in self._served_rows(rows, reuse_stale=False)}
        out = []
        for i, (_key, is_current, text, created) in enumerate(rows):
            what = "served" if i in served else "replaced" if is_current else "stale"
            out.append((what, _parse(text), created))
        query = sa.select(ATTEMPTS.c.result_json, ATTEMPTS.c.created_at)
        with self.engine.connect() as conn:
            attempts = conn.execute(_filtered(query, ATTEMPTS, optimizer, scale).order_by(ATTEMPTS.c.id)).all()
        return out + [("attempt", _parse(text), created) for text, created in attempts]

    def frame(self, **filters: Any) -> pd.DataFrame:
        """The runs frame (bench.store.record) of `runs(**filters)`."""
        return to_frame(self.runs(**filters))

    def _served(self, optimizer, scale, reuse_stale: bool) -> list[tuple[str, str]]:
        rows = self._rows(optimizer, scale)
        return [(rows[i][2], rows[i][3]) for _, i in self._served_rows(rows, reuse_stale)]

    @staticmethod
    def _served_rows(rows, reuse_stale: bool) -> list[tuple[bool, int]]:
        """(current?, index) of the row served for each run key, in storing order: its newest
        current-code row, else (reuse_stale) its newest row."""
        newest: dict[str, tuple[bool, int]] = {}
        for i, (key, is_current, *_rest) in enumerate(rows):
            if is_current or (reuse_stale and not newest.get(key, (False, 0))[0]):
                newest[key] = (is_current, i)
        return sorted(newest.values(), key=lambda row: row[1])

    def _rows(self, optimizer, scale) -> list[tuple[str, bool, str, str]]:
        """(run key, current code?, result JSON, created at) of every result row, in storing order."""
        query = sa.select(RESULTS.c.run_key, RESULTS.c.optimizer, RESULTS.c.optimizer_code,
                          RESULTS.c.harness_code, RESULTS.c.result_json, RESULTS.c.created_at)
        with self.engine.connect() as conn:
            rows = conn.execute(_filtered(query, RESULTS, optimizer, scale).order_by(RESULTS.c.id)).all()
        versions = {name: _current_code(name) for name in {row.optimizer for row in rows}}
        return [(row.run_key, (row.optimizer_code, row.harness_code) == versions[row.optimizer],
                 row.result_json, row.created_at) for row in rows]


def _filtered(query, table: sa.Table, optimizer, scale):
    """`query` limited to the optimizer(s) and scale(s) given (None: any)."""
    for column, wanted in ((table.c.optimizer, optimizer), (table.c.scale, scale)):
        if wanted is not None:
            query = query.where(column.in_([wanted] if isinstance(wanted, str) else list(wanted)))
    return query


def _current_code(optimizer: str) -> tuple[str, str] | None:
    """The current code version of an optimizer; None for one this optbench does not know."""
    try:
        code = identity.current(optimizer)
    except UserError:
        return None
    return code.optimizer, code.harness


def _newest_status(conn, run_key: str, code: dict[str, str]) -> str | None:
    return conn.execute(sa.select(RESULTS.c.status).where(
        RESULTS.c.run_key == run_key, RESULTS.c.optimizer_code == code.get("optimizer", UNRECORDED),
        RESULTS.c.harness_code == code.get("harness", UNRECORDED)).order_by(RESULTS.c.id.desc()).limit(1)).scalar()


def _parse(text: str) -> RunResult:
    return RunResult.from_dict(json.loads(text))


def _migrate_from_1(conn) -> str:
    """Version 1 kept one row per run key in `runs`, without code versions: its results move to
    `results` as of unrecorded code (so stale until a user reuses them knowingly), its failures
    the environment caused to `attempts`."""
    old = sa.Table("runs", sa.MetaData(), autoload_with=conn)
    for row in conn.execute(sa.select(old.c.result_json, old.c.created_at).order_by(old.c.created_at)):
        result = _parse(row.result_json)
        if result.status == "failed" and environment_failure(result.reason):
            result.status = ENVIRONMENT_FAILURE
        table = ATTEMPTS if result.status == ENVIRONMENT_FAILURE else RESULTS
        conn.execute(table.insert().values(**{**_row(result, table), "created_at": row.created_at}))
    old.drop(conn)
    conn.execute(META.update().where(META.c.key == "schema_version").values(value=SCHEMA_VERSION))
    return SCHEMA_VERSION


def _engine(url: str) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise UserError(f"bad store URL {shown_url(url)!r}; expected e.g. "
                        "sqlite:///results/optbench.db") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = sa.create_engine(url, connect_args=_connect_args(parsed))
    except (NoSuchModuleError, ImportError) as e:
        raise UserError(f"cannot open store {shown_url(url)!r}: {hide_passwords(str(e), url)}") from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _connect_args(parsed) -> dict[str, Any]:
    # Many Ray workers write at once: wait for the lock rather than fail.
    return {"timeout": 60} if parsed.get_backend_name() == "sqlite" else {}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _row(result: RunResult, table: sa.Table) -> dict[str, Any]:
    spec = result.spec
    row = {
        "run_key": result.run_key, "optimizer": spec["optimizer"], "scale": spec["scale"],
        "ratio": spec["ratio"], "seed": spec["seed"], "status": result.status,
        "optimizer_code": result.code.get("optimizer", UNRECORDED),
        "harness_code": result.code.get("harness", UNRECORDED),
        "result_json": json.dumps(result.to_dict(), allow_nan=True),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if table is ATTEMPTS:
        return {**row, "reason": result.reason}
    return {**row, "final_loss": _finite(result.final_loss), "steps": result.steps,
            "tokens": result.tokens, "wall_time_s": result.wall_time_s}
