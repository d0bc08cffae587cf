"""Engine construction and schema creation. SQLite by default (WAL, busy timeout so the
parallel transfer activities can write side by side), any SQLAlchemy URL otherwise."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, event
from sqlmodel import Session, SQLModel, create_engine

from models import tables  # noqa: F401  (registers the tables on SQLModel.metadata)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
            # pysqlite would only BEGIN at the first write: we emit BEGIN ourselves.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            mode = conn.get_execution_options().get("sqlite_begin", "")
            conn.exec_driver_sql(f"BEGIN {mode}".strip())

        return engine
    return create_engine(url, pool_pre_ping=True)


def write_session(engine: Engine) -> Session:
    """A session for a transaction that reads in order to write. On SQLite it begins
    IMMEDIATE (the write lock is taken before the first read, so no other writer can
    slip in between the read and the write); elsewhere a plain transaction, where the
    callers lock rows that decide a write with SELECT ... FOR UPDATE."""
    if engine.dialect.name == "sqlite":
        return Session(engine.execution_options(sqlite_begin="IMMEDIATE"))
    return Session(engine)


def init_db(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)


def as_utc(dt: datetime) -> datetime:
    """SQLite hands datetimes back naive; every stored datetime is UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
