"""Engines, write transactions and schema creation, for SQLite (the embedded default) and
PostgreSQL (`postgresql+psycopg://...`).

Write transactions. pysqlite starts a transaction only at the first write, so on SQLite a
read before it holds no lock and two writers can both act on what they read. Our SQLite
engines take transaction control from the driver (SQLAlchemy's documented recipe:
`isolation_level = None` on connect, our own BEGIN in the `begin` event), so:

- `Session(engine)` / `engine.begin()` begin DEFERRED: a read-only transaction takes no
  write lock and never blocks a writer (WAL mode). If it writes after reading while
  another writer committed in between, SQLite refuses the write ("database is locked")
  instead of letting it act on a stale read.
- `write_session(engine)` / `write_transaction(engine)` begin IMMEDIATE: the write lock is
  taken at BEGIN, before the first read, so writers run one after the other and each reads
  what the previous one committed. Use them for every transaction that writes.

On PostgreSQL both begin with a plain BEGIN (READ COMMITTED): where a read decides a write,
read with `.with_for_update()` (SQLite ignores it, where IMMEDIATE already holds the lock),
or make the write one conditional statement and check its row count.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, create_engine

import records.console_auth  # noqa: F401  (the admin console's sign-in tables)
from records import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

if TYPE_CHECKING:
    from config import Settings

# How long a SQLite writer waits for the write lock before "database is locked". Keep it
# below the activities' heartbeat timeout (10 s, workflows/options.py): a DB call that
# waits longer than that gets its activity timed out and retried while still running.
DEFAULT_BUSY_TIMEOUT_SECONDS = 8.0

# The worker runs up to 50 activities at once (worker.py), each holding at most one
# connection while it runs a transaction: 10 kept open, up to 40 more while busy.
POOL_SIZE = 10
MAX_OVERFLOW = 40

_BEGIN = "invites_sqlite_begin"  # execution option read by the SQLite `begin` hook

# `result.rowcount` of an INSERT (e.g. INSERT ... SELECT ... ON CONFLICT DO NOTHING) is
# only kept by SQLAlchemy with this option: psycopg forgets it once the cursor closes.
_OPTIONS = {"preserve_rowcount": True}


def make_engine(
    url: str, *, busy_timeout_seconds: float = DEFAULT_BUSY_TIMEOUT_SECONDS,
    foreign_keys: bool = True,
) -> Engine:
    """An engine for `url`. `foreign_keys=False` is for migrations only: SQLite's batch
    mode recreates tables, which enforced foreign keys would refuse."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, busy_timeout_seconds, foreign_keys)
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE,
                         max_overflow=MAX_OVERFLOW, execution_options=_OPTIONS)


def engine_from(settings: Settings) -> Engine:
    """The engine every process builds from its settings."""
    return make_engine(settings.database_url,
                       busy_timeout_seconds=settings.db_busy_timeout_seconds)


def _switch_to_wal(cur: Any, within_seconds: float) -> None:
    """PRAGMA journal_mode=WAL, retried: on a new file, first connections at the same
    instant (processes starting together) meet each other's switch, and SQLite answers
    "database is locked" at once, without its busy handler (tests/test_migrations.py)."""
    deadline = time.monotonic() + within_seconds
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_engine(url: str, busy_timeout_seconds: float, foreign_keys: bool) -> Engine:
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, execution_options=_OPTIONS,
                           connect_args={"check_same_thread": False,
                                         "timeout": busy_timeout_seconds})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # We emit BEGIN ourselves (`_on_begin`); the driver's own BEGIN comes too late.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        _switch_to_wal(cur, busy_timeout_seconds)  # readers and one writer side by side
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
        cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


_WRITER_ATTR = "_invites_writer"  # the engine's writer, made once (see _writer)
_LOCK_ATTR = "_invites_writers_lock"


def _writer(engine: Engine) -> Engine:
    """The same engine (and pool) whose transactions begin IMMEDIATE on SQLite. Made once
    per engine and kept on it: `execution_options()` builds a new engine object each call,
    which showed in the worker's profile at one call per write transaction."""
    writer: Engine | None = engine.__dict__.get(_WRITER_ATTR)
    if writer is None:
        writer = engine.execution_options(**{_BEGIN: "IMMEDIATE"})
        setattr(engine, _WRITER_ATTR, writer)
    return writer


_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _writers_in_turn(engine: Engine) -> AbstractContextManager[object]:
    """On SQLite, this process's writers take turns on a mutex before BEGIN IMMEDIATE.
    SQLite's own busy handler makes a waiting writer sleep up to 100 ms between tries,
    so under contention the lock sits free while waiters sleep; a mutex hands it on at
    once. Other processes still meet at SQLite's lock (busy_timeout). One mutex per
    database URL (engines of one file share it), looked up once per engine."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    lock: threading.RLock | None = engine.__dict__.get(_LOCK_ATTR)
    if lock is None:
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(str(engine.url), threading.RLock())
        setattr(engine, _LOCK_ATTR, lock)
    return lock


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A Session for a transaction that writes: on SQLite each of its transactions (a new
    one after every commit) begins IMMEDIATE. `with write_session(engine) as session:`."""
    with _writers_in_turn(engine), Session(_writer(engine)) as session:
        yield session


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """Like `engine.begin()` (a Core connection, committed on exit, rolled back on error),
    beginning IMMEDIATE on SQLite. `with write_transaction(engine) as conn:`."""
    with _writers_in_turn(engine), _writer(engine).begin() as conn:
        yield conn


def insert_for(bind: Engine | Connection, table: Table) -> Any:
    """INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL)."""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(bind.dialect.name)
    if dialect is None:
        raise RuntimeError(f"no ON CONFLICT insert for database {bind.dialect.name!r}")
    return dialect.insert(table)


_PREPARED: dict[tuple[str, Hashable], Any] = {}


def prepared(bind: Engine | Connection, key: Hashable, build: Callable[[], Any]) -> Any:
    """The statement `build()` makes, built once per dialect and `key` and then reused
    with bind parameters (`conn.execute(stmt, {...})`). Building a Core statement costs
    more than running it on a small table (an upsert with RETURNING: ~220 us to build,
    ~40 us to run on SQLite): the hot statements of the activities are built once."""
    full = (bind.dialect.name, key)
    stmt = _PREPARED.get(full)
    if stmt is None:
        stmt = _PREPARED[full] = build()  # a race builds it twice: the same statement
    return stmt


def init_db(engine: Engine) -> None:
    """Make the schema ready, or refuse to start. SQLite: created or migrated to the
    latest revision on the spot. PostgreSQL and others: only checked, since only
    migrations (`make migrate`) change such a database. See records/schema.py."""
    from records import schema

    if engine.dialect.name == "sqlite":
        schema.ensure_sqlite_schema(engine)
    else:
        schema.check_at_head(engine)


def as_utc(dt: datetime) -> datetime:
    """A datetime in UTC; a naive one is taken to be UTC already. Columns read back aware
    (records/types.py), so this is for values from elsewhere (payloads, old callers)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
