"""The results store: every finished run, keyed by run key; the source of truth for analysis.
It gives the runs back as StoredRun records (bench.store.record), filtered in SQL.

SQLAlchemy Core over SQLite (WAL mode) under results/ by default; any SQLAlchemy URL (PostgreSQL
for a cluster) works the same way. Storing a run twice keeps the first row. A schema version in the
`meta` table makes an incompatible store fail with a clear message instead of being overwritten.
"""
from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, OperationalError

from bench.errors import UserError
from bench.paths import default_store_url
from bench.run.spec import RunResult
from bench.store.record import StoredRun, to_frame
from bench.urls import error_line, hide_passwords, shown_url

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = "1"

_meta = sa.MetaData()
META = sa.Table("meta", _meta, sa.Column("key", sa.String(64), primary_key=True),
                sa.Column("value", sa.Text, nullable=False))
RUNS = sa.Table(
    "runs", _meta,
    sa.Column("run_key", sa.String(64), primary_key=True),
    sa.Column("optimizer", sa.String(64), nullable=False, index=True),
    sa.Column("scale", sa.String(32), nullable=False, index=True),
    sa.Column("ratio", sa.Float, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("final_loss", sa.Float),
    sa.Column("steps", sa.Integer),
    sa.Column("tokens", sa.BigInteger),
    sa.Column("wall_time_s", sa.Float),
    sa.Column("result_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
)


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
        """Create what is missing and read the schema version. Several processes opening a new store
        at once race to create its tables; the losers retry and find them made."""
        for attempt in range(attempts):
            try:
                with self.engine.begin() as conn:
                    _meta.create_all(conn)  # only creates what is missing
                    version = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()
                    if version is None:
                        conn.execute(META.insert().values(key="schema_version", value=SCHEMA_VERSION))
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
        """Store a finished run; returns False (and changes nothing) if its key is already stored."""
        try:
            with self.engine.begin() as conn:
                conn.execute(RUNS.insert().values(**_row(result)))
            return True
        except IntegrityError:  # the same run key: the run is already stored, keep the first row
            return False
        except OperationalError as e:  # disk full, read-only, lost server: the transaction rolled back
            raise UserError(f"cannot write to results store {shown_url(self.url)}: "
                            f"{error_line(e, self.url)}") from None

    def get(self, run_key: str) -> RunResult | None:
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(RUNS.c.result_json).where(RUNS.c.run_key == run_key)).scalar()
        return None if text is None else RunResult.from_dict(json.loads(text))

    def runs(self, *, optimizer: str | Iterable[str] | None = None,
             scale: str | Iterable[str] | None = None) -> list[StoredRun]:
        """The stored runs of the given optimizer(s) and scale(s) (None: any).

        The filters run in SQL on the table's indexed columns: only the rows returned are parsed.
        Within an optimizer and scale, SQLite gives the runs in the order they were stored, which
        analysis.cells keeps to break ties between equal losses."""
        query = sa.select(RUNS.c.result_json, RUNS.c.created_at)
        for column, wanted in ((RUNS.c.optimizer, optimizer), (RUNS.c.scale, scale)):
            if wanted is not None:
                query = query.where(column.in_([wanted] if isinstance(wanted, str) else list(wanted)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [StoredRun.from_result(RunResult.from_dict(json.loads(text)), created)
                for text, created in rows]

    def frame(self, **filters: str | Iterable[str] | None) -> pd.DataFrame:
        """The runs frame (bench.store.record) of `runs(**filters)`."""
        return to_frame(self.runs(**filters))


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


def _row(result: RunResult) -> dict[str, Any]:
    spec = result.spec
    return {
        "run_key": result.run_key, "optimizer": spec["optimizer"], "scale": spec["scale"],
        "ratio": spec["ratio"], "seed": spec["seed"], "status": result.status,
        "final_loss": _finite(result.final_loss), "steps": result.steps, "tokens": result.tokens,
        "wall_time_s": result.wall_time_s, "result_json": json.dumps(result.to_dict(), allow_nan=True),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
