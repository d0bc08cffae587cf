"""records/db.py and records/types.py on SQLite and PostgreSQL: write transactions that
serialise read-then-write, readers that never block writers, timestamps that keep their
instant whatever the server's time zone, and row counts that survive the driver.

The race tests release two threads with a barrier, 200 times, each reading a counter and
writing it back plus one: every increment must count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import OperationalError, StatementError
from sqlmodel import Session, SQLModel, col

from config import Settings
from demo.seed import IndividualSpec, create_individual
from records.db import make_engine, write_session, write_transaction
from records.tables import AuditEvent, Subscription
from records.types import NaiveDatetimeError, UTCDateTime
from rules.platform import refund_quote
from tests.postgres import SERVER_TIMEZONE, PgCluster

ROUNDS = 200
_meta = MetaData()  # not SQLModel.metadata: these tables are the tests', not the schema's
counter = Table("test_counter", _meta, Column("id", Integer, primary_key=True),
                Column("value", Integer, nullable=False))


def race(engine: Engine, open_session: Callable[[Engine], Session], *,
         for_update: bool = True) -> tuple[int, list[BaseException]]:
    """Two threads, released together ROUNDS times, each doing read -> +1 -> write in its
    own transaction. Returns the final counter and the errors the threads met."""
    _meta.drop_all(engine)
    _meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(counter).values(id=1, value=0))
    barrier, errors = threading.Barrier(2), list[BaseException]()

    def increment() -> None:
        for _ in range(ROUNDS):
            barrier.wait(timeout=30)
            try:
                with open_session(engine) as session:
                    read = select(counter.c.value).where(counter.c.id == 1)
                    value = session.execute(
                        read.with_for_update() if for_update else read).scalar_one()
                    session.execute(update(counter).where(counter.c.id == 1)
                                    .values(value=value + 1))
                    session.commit()
            except Exception as exc:  # noqa: BLE001 (reported by the test)
                errors.append(exc)

    threads = [threading.Thread(target=increment) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    with engine.connect() as conn:
        return int(conn.execute(select(counter.c.value)).scalar_one()), errors


def test_write_session_makes_read_then_write_exact(engine: Engine) -> None:
    """write_session (BEGIN IMMEDIATE on SQLite) + with_for_update (FOR UPDATE on
    PostgreSQL, ignored by SQLite): 400 increments, 400 counted, no error."""
    final, errors = race(engine, write_session)
    assert errors == []
    assert final == 2 * ROUNDS


def test_without_the_lock_updates_are_lost(engine: Engine, settings: Settings) -> None:
    """The same race without what makes it exact loses updates (so the test above would
    catch their removal). SQLite: the engine as it was before (the driver begins the
    transaction at the first write, the reads hold no lock) silently loses about half.
    PostgreSQL: a plain read (no FOR UPDATE) at READ COMMITTED does the same.
    (With our SQLite engine, a plain Session begins DEFERRED at the first read; the late
    writer of a collision then fails with "database is locked" instead of losing.)"""
    if engine.dialect.name == "sqlite":
        legacy = create_engine(settings.database_url,
                               connect_args={"check_same_thread": False, "timeout": 10})
        try:
            final, errors = race(legacy, Session)
        finally:
            legacy.dispose()
    else:
        final, errors = race(engine, write_session, for_update=False)
    assert errors == []
    assert final < 2 * ROUNDS


@pytest.mark.sqlite_only  # PostgreSQL locks rows (FOR UPDATE), not the database
def test_write_session_holds_the_write_lock_from_begin(settings: Settings) -> None:
    """A write_session that has only read already excludes other writers on SQLite."""
    impatient = make_engine(settings.database_url, busy_timeout_seconds=0.2)
    try:
        _meta.create_all(impatient)
        with write_session(impatient) as writer:
            writer.execute(select(counter.c.value)).all()
            with pytest.raises(OperationalError, match="locked"), \
                    write_transaction(impatient) as other:
                other.execute(insert(counter).values(id=7, value=0))
    finally:
        impatient.dispose()


def test_a_reader_never_blocks_a_writer(settings: Settings) -> None:
    """An open read-only Session (its transaction begun, a snapshot held) lets a writer
    commit at once: on SQLite it begins DEFERRED, not IMMEDIATE."""
    impatient = make_engine(settings.database_url, busy_timeout_seconds=0.5)
    try:
        _meta.create_all(impatient)
        with impatient.begin() as conn:
            conn.execute(insert(counter).values(id=1, value=0))
        with Session(impatient) as reader:
            assert reader.execute(select(counter.c.value)).scalar_one() == 0
            assert reader.in_transaction()
            started = time.monotonic()
            with write_transaction(impatient) as conn:
                conn.execute(update(counter).values(value=1))
            assert time.monotonic() - started < 0.5
    finally:
        impatient.dispose()


@pytest.mark.sqlite_only  # PostgreSQL at READ COMMITTED lets it write (records/db.py)
def test_a_reader_that_writes_after_another_writer_committed_is_refused(
    settings: Settings,
) -> None:
    """A plain Session begins DEFERRED at its first read: once another writer commits,
    SQLite refuses its write ("database is locked") rather than let it act on what it
    read. (Were its read outside the transaction, the stale write would go through.)"""
    impatient = make_engine(settings.database_url, busy_timeout_seconds=0.5)
    try:
        _meta.create_all(impatient)
        with impatient.begin() as conn:
            conn.execute(insert(counter).values(id=1, value=0))
        with Session(impatient) as reader:
            seen = reader.execute(select(counter.c.value)).scalar_one()
            with write_transaction(impatient) as conn:
                conn.execute(update(counter).values(value=10))
            with pytest.raises(OperationalError, match="locked"):
                reader.execute(update(counter).values(value=seen + 1))
        with impatient.connect() as conn:
            assert conn.execute(select(counter.c.value)).scalar_one() == 10
    finally:
        impatient.dispose()


@pytest.mark.sqlite_only  # on PostgreSQL writers lock rows, not the database
def test_this_process_writers_take_turns_on_a_mutex(settings: Settings) -> None:
    """A writer of this process that finds another one in its transaction waits on the
    process's mutex (one per database file, whatever the engine), not in SQLite's busy
    handler: it never meets the busy timeout, however long the first one holds on."""
    first = make_engine(settings.database_url, busy_timeout_seconds=0.1)
    second = make_engine(settings.database_url, busy_timeout_seconds=0.1)  # same file
    try:
        _meta.create_all(first)
        with first.begin() as conn:
            conn.execute(insert(counter).values(id=1, value=0))
        holding, errors = threading.Event(), list[BaseException]()

        def other_writer() -> None:
            holding.wait(timeout=10)
            try:
                with write_transaction(second) as conn:
                    conn.execute(update(counter).values(value=counter.c.value + 1))
            except Exception as exc:  # noqa: BLE001 (reported by the test)
                errors.append(exc)

        thread = threading.Thread(target=other_writer)
        thread.start()
        with write_transaction(first) as conn:
            conn.execute(update(counter).values(value=counter.c.value + 1))
            holding.set()
            # Five busy timeouts: without the mutex the other writer gives up meanwhile.
            time.sleep(0.5)
        thread.join(timeout=10)
        assert errors == []
        with first.connect() as conn:
            assert conn.execute(select(counter.c.value)).scalar_one() == 2
    finally:
        first.dispose()
        second.dispose()


def test_insert_select_row_count_is_reported(engine: Engine) -> None:
    """psycopg forgets an INSERT's row count when its cursor closes: the engines keep it
    (the transfer metrics count staged rows with it)."""
    _meta.create_all(engine)
    with write_transaction(engine) as conn:
        conn.execute(insert(counter).values(id=1, value=5))
        copied = conn.execute(insert(counter).from_select(
            ["id", "value"], select(counter.c.id + 10, counter.c.value)))
        assert copied.rowcount == 1


# -- timestamps ------------------------------------------------------------------------


def test_every_datetime_column_is_utc_aware() -> None:
    """Tables added later are caught too: a bare `datetime` field maps to a naive
    DateTime, which shifts on a PostgreSQL server outside UTC."""
    naive = [f"{table.name}.{column.name}" for table in SQLModel.metadata.tables.values()
             for column in table.columns
             if isinstance(column.type, DateTime) and not isinstance(column.type, UTCDateTime)]
    assert naive == [], "use Field(sa_type=UTCDateTime) (records/types.py)"
    assert any(isinstance(c.type, UTCDateTime)
               for t in SQLModel.metadata.tables.values() for c in t.columns)


def test_timestamps_keep_their_instant_and_refuse_naive(engine: Engine) -> None:
    paris = timezone(timedelta(hours=2))
    at = datetime(2026, 7, 1, 14, 30, 15, 123456, tzinfo=paris)
    with write_session(engine) as session:
        session.add(AuditEvent(at=at, kind="probe"))
        session.commit()
        back = session.execute(
            select(col(AuditEvent.at)).where(col(AuditEvent.at) == at)).scalar_one()
    assert back == at and back.tzinfo == UTC and back.hour == 12
    with write_session(engine) as session:
        session.add(AuditEvent(at=datetime(2026, 7, 1, 12), kind="naive"))
        with pytest.raises(StatementError) as raised:
            session.commit()
    assert isinstance(raised.value.orig, NaiveDatetimeError)


@pytest.fixture
def new_york_engine(pg_cluster: PgCluster) -> Iterator[Engine]:
    name = pg_cluster.create_database()
    engine = make_engine(pg_cluster.url(name))
    yield engine
    engine.dispose()
    pg_cluster.drop_database(name)


def test_periods_and_refunds_do_not_shift_on_a_new_york_server(
    new_york_engine: Engine, tmp_path: Path,
) -> None:
    """PostgreSQL with TimeZone America/New_York (the test cluster's, tests/postgres.py):
    a subscription period reads back the same instant and the refund quote is the one
    computed in UTC. A naive `timestamp` column would move by the server's offset, as the
    control at the end shows."""
    engine = new_york_engine
    with engine.connect() as conn:
        assert conn.execute(text("SHOW TimeZone")).scalar_one() == SERVER_TIMEZONE
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = datetime(2026, 12, 1, tzinfo=UTC)
    at = datetime(2026, 11, 16, tzinfo=UTC)  # half-way: half of 3000 back
    with write_session(engine) as session:
        user = create_individual(session, tmp_path, IndividualSpec(
            email="ny@example.com", price_minor=3000, period_start=start, period_end=end))
        session.commit()
        sub = session.execute(select(Subscription).where(
            col(Subscription.account_id) == user.account_id)).scalar_one()
        assert (sub.period_start, sub.period_end) == (start, end)
        assert sub.period_start.tzinfo == UTC
        quote = refund_quote(session, user, at)
    assert quote is not None
    assert quote.amount_minor == 1500
    assert (quote.period_start, quote.period_end) == (start, end)
    assert quote.seconds_left == 15 * 86400 and quote.period_seconds == 30 * 86400

    control = Table("test_naive", MetaData(), Column("id", Integer, primary_key=True),
                    Column("at", postgresql.TIMESTAMP(timezone=False)))
    control.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(control).values(id=1, at=start))
        stored = conn.execute(select(control.c.at)).scalar_one()
    assert stored.replace(tzinfo=UTC) != start  # 2026-10-31 20:00: four hours early
